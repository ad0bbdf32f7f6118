//! Tool calls from Ollama's shape to OpenAI's, and the `finish_reason` rule.

use serde_json::Value;

use crate::{ollama, openai};

/// OpenAI's `finish_reason` for Ollama's `done_reason`.
///
/// `length` wins; otherwise an answer that made tool calls is `tool_calls`, and anything else
/// `stop`. Ollama's other reasons (`load`, `unload`, for a request with no prompt) are not
/// among OpenAI's values, which typed clients check, so they are `stop` too.
pub fn finish_reason(done_reason: Option<&str>, made_tool_calls: bool) -> String {
    match done_reason.filter(|r| !r.is_empty()) {
        Some("length") => "length",
        _ if made_tool_calls => "tool_calls",
        _ => "stop",
    }
    .to_owned()
}

/// One native tool call as OpenAI's: the id kept (or `call_<response id>_<position>` when
/// Ollama gave none) and the arguments as a JSON string.
///
/// `position` counts calls over the whole response; `index` is set only in stream deltas.
pub(crate) fn tool_call(
    call: ollama::ToolCall,
    response_id: &str,
    position: u32,
    index: Option<u32>,
) -> openai::ToolCall {
    let id = match call.id {
        Some(id) if !id.is_empty() => id,
        _ => format!("call_{response_id}_{position}"),
    };
    let arguments = match call.function.arguments {
        Value::String(text) => text,
        Value::Null => "{}".to_owned(),
        other => other.to_string(),
    };
    openai::ToolCall {
        index,
        id: Some(id),
        kind: "function".to_owned(),
        function: openai::FunctionCall {
            name: call.function.name,
            arguments,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons() {
        let cases = [
            (Some("stop"), false, "stop"),
            (Some("stop"), true, "tool_calls"),
            (Some("length"), true, "length"),
            (Some("length"), false, "length"),
            (None, false, "stop"),
            (Some(""), true, "tool_calls"),
            (Some("load"), false, "stop"),
            (Some("unload"), true, "tool_calls"),
            (Some("something new"), false, "stop"),
        ];
        for (reason, tools, want) in cases {
            assert_eq!(finish_reason(reason, tools), want, "{reason:?} {tools}");
        }
    }

    #[test]
    fn ids_and_arguments() {
        let call = |id: Option<&str>, args: Value| ollama::ToolCall {
            id: id.map(str::to_owned),
            function: ollama::ToolCallFunction {
                index: Some(0),
                name: "f".to_owned(),
                arguments: args,
            },
        };
        let kept = tool_call(
            call(Some("call_x"), serde_json::json!({"b": 1, "a": "<"})),
            "chatcmpl-1",
            3,
            None,
        );
        assert_eq!(kept.id.as_deref(), Some("call_x"));
        assert_eq!(kept.function.arguments, r#"{"b":1,"a":"<"}"#);
        let made = tool_call(call(None, Value::Null), "chatcmpl-1", 3, Some(3));
        assert_eq!(made.id.as_deref(), Some("call_chatcmpl-1_3"));
        assert_eq!(made.function.arguments, "{}");
        assert_eq!(made.index, Some(3));
        let text = tool_call(call(Some(""), Value::String("{\"q\":1}".to_owned())), "r", 0, None);
        assert_eq!(text.id.as_deref(), Some("call_r_0"));
        assert_eq!(text.function.arguments, "{\"q\":1}");
    }
}
