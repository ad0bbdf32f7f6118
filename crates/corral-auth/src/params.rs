//! Applying a workspace model's saved `params` to a request body, as in the reference's sections 4.1 and 4.3.
//!
//! Both functions work on `serde_json::Value` bodies and leave non-object inputs alone.
//! A value that cannot be cast (for example `"temperature": "warm"`) is passed through unchanged, so the upstream
//! reports the error; the reference would crash with a 500 instead.

use serde_json::{Map, Number, Value};

#[cfg(test)]
mod tests;

/// Params that only mean something to Open WebUI's own pipeline and are never forwarded.
const OWUI_ONLY_KEYS: [&str; 5] = [
    "stream_response",
    "stream_delta_chunk_size",
    "function_calling",
    "reasoning_tags",
    "system",
];

/// How a known param is converted before it is written.
#[derive(Clone, Copy)]
enum Cast {
    Float,
    Int,
    Bool,
    Str,
    Stop,
    Verbatim,
}

/// Ollama option casts (`apply_model_params_to_body_ollama`'s mappings).
fn ollama_cast(key: &str) -> Cast {
    match key {
        "temperature" | "top_p" | "mirostat_eta" | "mirostat_tau" | "min_p" | "repeat_penalty" | "presence_penalty"
        | "frequency_penalty" => Cast::Float,
        "mirostat" | "num_ctx" | "num_batch" | "num_keep" | "num_predict" | "repeat_last_n" | "top_k" | "num_gpu"
        | "num_thread" => Cast::Int,
        "use_mmap" | "use_mlock" => Cast::Bool,
        "stop" => Cast::Stop,
        _ => Cast::Verbatim,
    }
}

/// OpenAI top-level casts (`apply_model_params_to_body_openai`'s mappings).
fn openai_cast(key: &str) -> Cast {
    match key {
        "temperature" | "top_p" | "min_p" | "frequency_penalty" | "presence_penalty" => Cast::Float,
        "max_tokens" => Cast::Int,
        "reasoning_effort" => Cast::Str,
        "stop" => Cast::Stop,
        _ => Cast::Verbatim,
    }
}

/// Applies model params to a native Ollama request body (`/api/chat`).
///
/// In order: Open WebUI-only keys are dropped; `custom_params` (string values JSON-parsed when they parse) is
/// deep-merged over the params; `max_tokens` becomes `num_predict`; `format`, `keep_alive` (JSON-parsed when they
/// are strings that parse) and `think` move to the body's root, overriding the client; every other non-null param
/// is cast and written into `options`, overriding the client's option of the same name.
///
/// Deviations from the reference, all deliberate: `stop` strings decode only `\n`, `\t`, `\\` and `\"` and keep
/// non-ASCII text intact (the reference's `unicode_escape` mangles it); a string `stop` becomes a one-element
/// list (the reference splits it into characters); the strings `"false"` and `"0"` cast to `false` (Python's
/// truthiness says `true`); `think` keeps Ollama's levels `"low"`, `"medium"` and `"high"`, as upstream does since
/// February 2026.
pub fn apply_params_ollama(params: &Value, body: &mut Value) {
    let Some(mut params) = prepare(params) else {
        return;
    };
    let Value::Object(body) = body else {
        return;
    };
    if let Some(max_tokens) = params.remove("max_tokens") {
        if !max_tokens.is_null() {
            params.insert("num_predict".to_owned(), max_tokens);
        }
    }
    for key in ["format", "keep_alive", "think"] {
        let Some(value) = params.remove(key) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let value = match key {
            "think" => cast_think(value),
            _ => parse_json_string(value),
        };
        body.insert(key.to_owned(), value);
    }
    // `insert` keeps an existing key's position, so the body's key order is preserved.
    if !matches!(body.get("options"), Some(Value::Object(_))) {
        body.insert("options".to_owned(), Value::Object(Map::new()));
    }
    let Some(Value::Object(options)) = body.get_mut("options") else {
        return;
    };
    write_params(params, options, ollama_cast);
}

/// Applies model params to an OpenAI-style request body (`/v1/completions`, `/v1/chat/completions`).
///
/// The same key removal and `custom_params` merge as [`apply_params_ollama`]; then every non-null param is cast
/// and written at the top level, overriding the client's value.
pub fn apply_params_openai(params: &Value, body: &mut Value) {
    let Some(params) = prepare(params) else {
        return;
    };
    let Value::Object(body) = body else {
        return;
    };
    write_params(params, body, openai_cast);
}

/// Copies `params` without Open WebUI-only keys, with `custom_params` merged in; `None` unless an object.
fn prepare(params: &Value) -> Option<Map<String, Value>> {
    let Value::Object(params) = params else {
        return None;
    };
    let mut params = params.clone();
    if let Some(Value::Object(custom)) = params.remove("custom_params") {
        let custom = custom.into_iter().map(|(k, v)| (k, parse_json_string(v))).collect();
        deep_merge(&mut params, custom);
    }
    // Stripped after the merge too, so `custom_params` cannot smuggle them in.
    for key in OWUI_ONLY_KEYS {
        params.remove(key);
    }
    Some(params)
}

fn write_params(params: Map<String, Value>, target: &mut Map<String, Value>, cast_for: fn(&str) -> Cast) {
    for (key, value) in params {
        if value.is_null() {
            continue;
        }
        let value = cast(cast_for(&key), value);
        target.insert(key, value);
    }
}

/// Merges `source` into `target`: objects merge recursively, anything else replaces.
fn deep_merge(target: &mut Map<String, Value>, source: Map<String, Value>) {
    for (key, value) in source {
        match (target.get_mut(&key), value) {
            (Some(Value::Object(t)), Value::Object(s)) => deep_merge(t, s),
            (_, value) => {
                target.insert(key, value);
            }
        }
    }
}

/// A string that parses as JSON becomes the parsed value; anything else is unchanged.
fn parse_json_string(value: Value) -> Value {
    match value {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        other => other,
    }
}

fn cast(cast: Cast, value: Value) -> Value {
    match cast {
        Cast::Float => to_float(&value).unwrap_or(value),
        Cast::Int => to_int(&value).unwrap_or(value),
        Cast::Bool => Value::Bool(truthy(&value)),
        Cast::Str => match value {
            Value::Number(n) => Value::String(n.to_string()),
            other => other,
        },
        Cast::Stop => decode_stop(value),
        Cast::Verbatim => value,
    }
}

fn to_float(value: &Value) -> Option<Value> {
    let f = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => return None,
    };
    Number::from_f64(f).map(Value::Number)
}

fn to_int(value: &Value) -> Option<Value> {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(value.clone()),
        Value::Number(n) => {
            let f = n.as_f64()?.trunc();
            // Python's int() truncates toward zero; the range check keeps the cast exact.
            (f.is_finite() && f.abs() < 9.0e15).then(|| Value::from(f as i64))
        }
        Value::String(s) => s.trim().parse::<i64>().ok().map(Value::from),
        Value::Bool(b) => Some(Value::from(i64::from(*b))),
        _ => None,
    }
}

/// Python truthiness, except that the strings `false` and `0` (any case, trimmed) are false.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => {
            let s = s.trim();
            !(s.is_empty() || s.eq_ignore_ascii_case("false") || s == "0")
        }
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn cast_think(value: Value) -> Value {
    match &value {
        Value::String(s) if ["low", "medium", "high"].contains(&s.trim().to_ascii_lowercase().as_str()) => value,
        _ => Value::Bool(truthy(&value)),
    }
}

fn decode_stop(value: Value) -> Value {
    match value {
        Value::String(s) => Value::Array(vec![Value::String(decode_escapes(&s))]),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Value::String(decode_escapes(&s)),
                    other => other,
                })
                .collect(),
        ),
        other => other,
    }
}

/// Decodes the escapes `\n`, `\t`, `\\` and `\"` that the UI's text fields produce; any other backslash is kept.
fn decode_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}
