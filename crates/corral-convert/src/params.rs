//! Request pieces shared by the chat and completion converters: options, stop sequences,
//! reasoning effort, and the Ollama-specific fields a client may add to an OpenAI request.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::ollama::Think;
use crate::openai::Stop;
use crate::ConvertError;

/// Top-level request fields that are Ollama option names.
///
/// OpenAI has no such fields, but clients written for Ollama's `/v1` (and Open WebUI's model
/// parameters) send them at top level; they go into `options`.
const OPTION_KEYS: &[&str] = &[
    "num_keep",
    "num_predict",
    "top_k",
    "min_p",
    "typical_p",
    "repeat_last_n",
    "repeat_penalty",
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "use_mmap",
    "num_thread",
];

/// The OpenAI sampling fields that become Ollama options.
#[derive(Debug, Default)]
pub(crate) struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub num_predict: Option<i64>,
    pub stop: Option<Stop>,
    pub seed: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
}

/// Removes `key` from the extra fields and reads it as `T`; `null` counts as absent.
pub(crate) fn take<T: DeserializeOwned>(extra: &mut Map<String, Value>, key: &str) -> Result<Option<T>, ConvertError> {
    match extra.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value)
            .map(Some)
            .map_err(|e| ConvertError::invalid(format!("invalid value for '{key}': {e}"), key)),
    }
}

/// Ollama's `options`, built in three layers, later ones winning: the client's own `options`
/// object, then top-level Ollama option names, then the OpenAI fields.
/// `None` when nothing was set, so Modelfile defaults apply.
pub(crate) fn options(extra: &mut Map<String, Value>, s: Sampling) -> Result<Option<Map<String, Value>>, ConvertError> {
    let mut opts: Map<String, Value> = take(extra, "options")?.unwrap_or_default();
    for key in OPTION_KEYS {
        match extra.remove(*key) {
            None | Some(Value::Null) => {}
            Some(value) => {
                opts.insert((*key).to_owned(), value);
            }
        }
    }
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            opts.insert(key.to_owned(), value);
        }
    };
    set("temperature", s.temperature.map(Value::from));
    set("top_p", s.top_p.map(Value::from));
    set("num_predict", s.num_predict.map(Value::from));
    set("seed", s.seed.map(Value::from));
    set("frequency_penalty", s.frequency_penalty.map(Value::from));
    set("presence_penalty", s.presence_penalty.map(Value::from));
    set("stop", stop(s.stop).map(Value::from));
    Ok((!opts.is_empty()).then_some(opts))
}

/// Stop sequences as Ollama's array; empty strings are dropped (they would stop at once).
fn stop(stop: Option<Stop>) -> Option<Vec<String>> {
    let list = match stop? {
        Stop::One(s) => vec![s],
        Stop::Many(list) => list,
    };
    let list: Vec<String> = list.into_iter().filter(|s| !s.is_empty()).collect();
    (!list.is_empty()).then_some(list)
}

/// `think` from OpenAI's reasoning effort, mapped as Ollama's own `/v1` does.
pub(crate) fn think_from_effort(effort: &str, param: &str) -> Result<Think, ConvertError> {
    let level = |s: &str| Ok(Think::Level(s.to_owned()));
    match effort {
        "none" => Ok(Think::Enabled(false)),
        "minimal" => level("low"),
        "low" | "medium" | "high" | "max" => level(effort),
        "xhigh" | "ultra" => level("max"),
        other => Err(ConvertError::invalid(
            format!(
                "invalid reasoning value: {other:?} (must be \"minimal\", \"low\", \"medium\", \"high\", \"xhigh\", \"ultra\", \"max\", or \"none\")"
            ),
            param,
        )),
    }
}

/// Refuses `n` (or `best_of`) above 1: Ollama makes one choice per request, and answering
/// with fewer choices than asked would be silently wrong.
pub(crate) fn one_choice(value: Option<u32>, param: &str) -> Result<(), ConvertError> {
    match value {
        Some(n) if n != 1 => Err(ConvertError::invalid(
            format!("'{param}' must be 1: Ollama generates one choice per request"),
            param,
        )),
        _ => Ok(()),
    }
}

/// A token limit as Ollama's `num_predict`: OpenAI's limits are at least 1 (Ollama reads 0
/// and negative numbers otherwise: nothing, or no limit at all).
pub(crate) fn token_limit(value: Option<i64>, param: &str) -> Result<Option<i64>, ConvertError> {
    match value {
        Some(n) if n < 1 => Err(ConvertError::invalid(
            format!("'{param}' must be at least 1, got {n}"),
            param,
        )),
        other => Ok(other),
    }
}
