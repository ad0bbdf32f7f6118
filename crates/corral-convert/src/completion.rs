//! `/v1/completions` ↔ `/api/generate`: the legacy text-completion request, answer and stream.

mod stream;

use serde_json::{json, Value};

use crate::ollama::{self, Think};
use crate::openai::{self, Prompt};
use crate::params::{self, take, Sampling};
use crate::tools::finish_reason;
use crate::usage::usage;
use crate::{ConvertError, ResponseMeta};

pub use stream::{CompletionChunker, CompletionStream};

impl openai::CompletionRequest {
    /// Whether the client asked for a stream (OpenAI's default is no).
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the client asked for a usage chunk at the end of the stream.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

/// Converts an OpenAI completion request into Ollama's `/api/generate` request.
///
/// The prompt must be one text (a one-element list is accepted); token prompts, `n` or
/// `best_of` above 1 and `echo` are refused with 400 rather than silently ignored.
/// `logprobs: N` becomes `logprobs:true` with `top_logprobs:N`.
/// Sampling fields go to `options` as for chat; Ollama fields a client adds (`options`,
/// `keep_alive`, `think`, `reasoning_effort`, `format`, `raw`, `system`, `template`, `images`,
/// `context`, `truncate`, `shift`, top-level option names) are carried.
pub fn completion_request(req: openai::CompletionRequest) -> Result<ollama::GenerateRequest, ConvertError> {
    let stream = req.is_stream();
    let mut extra = req.extra;
    params::one_choice(req.n, "n")?;
    params::one_choice(req.best_of, "best_of")?;
    if req.echo == Some(true) {
        return Err(ConvertError::invalid("'echo' is not supported", "echo"));
    }
    let prompt = match req.prompt {
        None => String::new(),
        Some(Prompt::Text(text)) => text,
        Some(Prompt::Texts(mut texts)) if texts.len() <= 1 => texts.pop().unwrap_or_default(),
        Some(Prompt::Texts(_)) => {
            return Err(ConvertError::invalid(
                "Ollama takes one prompt per request; send a single string",
                "prompt",
            ))
        }
        Some(Prompt::Tokens(_) | Prompt::TokenBatches(_)) => {
            return Err(ConvertError::invalid(
                "token prompts are not supported; send text",
                "prompt",
            ))
        }
    };
    let think = match take::<String>(&mut extra, "reasoning_effort")? {
        Some(effort) => {
            extra.remove("think");
            Some(params::think_from_effort(&effort, "reasoning_effort")?)
        }
        None => take::<Think>(&mut extra, "think")?,
    };
    let options = params::options(
        &mut extra,
        Sampling {
            temperature: req.temperature,
            top_p: req.top_p,
            num_predict: params::token_limit(req.max_tokens, "max_tokens")?,
            stop: req.stop,
            seed: req.seed,
            frequency_penalty: req.frequency_penalty,
            presence_penalty: req.presence_penalty,
        },
    )?;
    Ok(ollama::GenerateRequest {
        model: req.model,
        prompt: Some(prompt),
        suffix: req.suffix,
        system: take(&mut extra, "system")?,
        template: take(&mut extra, "template")?,
        context: take(&mut extra, "context")?,
        stream: Some(stream),
        raw: take(&mut extra, "raw")?,
        format: take(&mut extra, "format")?,
        keep_alive: take(&mut extra, "keep_alive")?,
        images: take(&mut extra, "images")?,
        options,
        think,
        truncate: take(&mut extra, "truncate")?,
        shift: take(&mut extra, "shift")?,
        logprobs: req.logprobs.map(|_| true),
        top_logprobs: req.logprobs.filter(|n| *n > 0),
    })
}

/// Converts Ollama's non-streamed generate answer into a `text_completion`.
///
/// Thinking goes to the reasoning field chosen in `meta` on the choice (not part of OpenAI's
/// schema, but kept rather than lost).
pub fn completion(resp: ollama::GenerateResponse, meta: &ResponseMeta) -> openai::Completion {
    let metrics = resp.metrics();
    let (reasoning_content, reasoning) = match resp.thinking.filter(|t| !t.is_empty()) {
        Some(text) => meta.reasoning.place(text),
        None => (None, None),
    };
    let mut offset = 0;
    openai::Completion {
        id: meta.id.clone(),
        object: "text_completion".to_owned(),
        created: meta.created,
        model: meta.model.clone(),
        system_fingerprint: meta.system_fingerprint.clone(),
        choices: vec![openai::CompletionChoice {
            text: resp.response,
            index: 0,
            logprobs: completion_logprobs(resp.logprobs, &mut offset),
            finish_reason: Some(finish_reason(resp.done_reason.as_deref(), false)),
            reasoning_content,
            reasoning,
        }],
        usage: Some(usage(&metrics)),
    }
}

/// Ollama's logprob entries in the legacy completions shape: parallel `tokens`,
/// `token_logprobs`, `top_logprobs` (token → logprob maps) and `text_offset` lists.
/// `offset` is the character offset of the first token, advanced past the last one.
pub(crate) fn completion_logprobs(native: Option<Value>, offset: &mut usize) -> Option<Value> {
    let Some(Value::Array(entries)) = native else {
        return None;
    };
    if entries.is_empty() {
        return None;
    }
    let mut tokens = Vec::with_capacity(entries.len());
    let mut token_logprobs = Vec::with_capacity(entries.len());
    let mut top_logprobs = Vec::with_capacity(entries.len());
    let mut text_offset = Vec::with_capacity(entries.len());
    for entry in entries {
        let token = entry
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        text_offset.push(*offset);
        *offset += token.chars().count();
        token_logprobs.push(entry.get("logprob").cloned().unwrap_or(Value::Null));
        top_logprobs.push(match entry.get("top_logprobs") {
            Some(Value::Array(alternatives)) => Value::Object(
                alternatives
                    .iter()
                    .filter_map(|alt| {
                        let token = alt.get("token")?.as_str()?.to_owned();
                        Some((token, alt.get("logprob").cloned().unwrap_or(Value::Null)))
                    })
                    .collect(),
            ),
            _ => Value::Null,
        });
        tokens.push(token);
    }
    Some(json!({
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": text_offset,
    }))
}
