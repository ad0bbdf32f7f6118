//! A whole Ollama `/api/chat` answer (`stream:false`) as a `chat.completion`.

use serde_json::{json, Value};

use crate::tools::{finish_reason, tool_call};
use crate::usage::usage;
use crate::{ollama, openai, ResponseMeta};

/// Converts Ollama's non-streamed chat answer into a `chat.completion`.
///
/// Content is `null` when the answer is only tool calls (as OpenAI sends it); thinking goes to
/// the field chosen in `meta`; tool calls keep their ids (or get `call_<id>_<n>`) and carry
/// JSON-string arguments; `finish_reason` follows [`crate::finish_reason`]; `usage` carries the
/// standard and the extra timing fields.
pub fn chat_completion(resp: ollama::ChatResponse, meta: &ResponseMeta) -> openai::ChatCompletion {
    let metrics = resp.metrics();
    let message = resp.message;
    let tool_calls: Option<Vec<openai::ToolCall>> = message.tool_calls.filter(|c| !c.is_empty()).map(|calls| {
        calls
            .into_iter()
            .zip(0u32..)
            .map(|(call, position)| tool_call(call, &meta.id, position, None))
            .collect()
    });
    let made_tool_calls = tool_calls.is_some();
    let (reasoning_content, reasoning) = match message.thinking.filter(|t| !t.is_empty()) {
        Some(text) => meta.reasoning.place(text),
        None => (None, None),
    };
    let content = if message.content.is_empty() && made_tool_calls {
        None
    } else {
        Some(message.content)
    };
    openai::ChatCompletion {
        id: meta.id.clone(),
        object: "chat.completion".to_owned(),
        created: meta.created,
        model: meta.model.clone(),
        system_fingerprint: meta.system_fingerprint.clone(),
        choices: vec![openai::ChatChoice {
            index: 0,
            message: openai::AssistantMessage {
                role: "assistant".to_owned(),
                content,
                reasoning_content,
                reasoning,
                tool_calls,
            },
            logprobs: chat_logprobs(resp.logprobs),
            finish_reason: Some(finish_reason(resp.done_reason.as_deref(), made_tool_calls)),
        }],
        usage: Some(usage(&metrics)),
    }
}

/// Ollama's logprob entries already have OpenAI's chat shape (`token`, `logprob`, `bytes`,
/// `top_logprobs`); OpenAI wraps them in `{"content": […]}`.
pub(crate) fn chat_logprobs(native: Option<Value>) -> Option<Value> {
    match native? {
        Value::Null => None,
        Value::Array(entries) if entries.is_empty() => None,
        entries => Some(json!({ "content": entries })),
    }
}
