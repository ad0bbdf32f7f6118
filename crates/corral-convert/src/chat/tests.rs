//! Unit tests of the chat converters; golden fixtures live in `tests/it`.

use expect_test::{expect, Expect};

use crate::ollama::{self, ChatResponse, Message};
use crate::openai::ChatCompletionRequest;
use crate::{chat_completion, parse_request, ChatChunker, ChatStream, ReasoningField, ResponseMeta};

fn meta() -> ResponseMeta {
    ResponseMeta::new("chatcmpl-1", "m", 7)
}

fn check_stream(meta: ResponseMeta, include_usage: bool, input: &str, expect: Expect) {
    let mut stream = ChatStream::new(meta, include_usage);
    let mut out = stream.push(input.as_bytes());
    out.extend(stream.finish());
    expect.assert_eq(&String::from_utf8(out).unwrap());
}

#[test]
fn without_usage_and_with_both_reasoning_fields() {
    check_stream(
        meta().with_reasoning(ReasoningField::Both),
        false,
        concat!(
            r#"{"message":{"role":"assistant","content":"","thinking":"hm"},"done":false}"#,
            "\n\n\r\n",
            r#"{"message":{"role":"assistant","content":"ok"},"done":true,"done_reason":"stop","eval_count":1}"#,
            "\n",
        ),
        expect![[r#"
            data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning_content":"hm","reasoning":"hm"},"logprobs":null,"finish_reason":null}]}

            data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"ok"},"logprobs":null,"finish_reason":null}]}

            data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

            data: [DONE]

        "#]],
    );
}

#[test]
fn error_objects_and_empty_errors() {
    // An OpenAI-shaped error line keeps its message; an empty error string is not an error.
    check_stream(
        meta(),
        false,
        concat!(
            r#"{"error":"","message":{"role":"assistant","content":"a"},"done":false}"#,
            "\n",
            r#"{"error":{"message":"quota","type":"x"}}"#,
            "\n",
            r#"{"message":{"role":"assistant","content":"never"},"done":true}"#,
            "\n",
        ),
        expect![[r#"
            data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"a"},"logprobs":null,"finish_reason":null}]}

            data: {"error":{"message":"quota","type":"api_error","param":null,"code":null}}

        "#]],
    );
}

#[test]
fn input_after_the_end_is_ignored() {
    let mut stream = ChatStream::new(meta(), false);
    let done = r#"{"message":{"role":"assistant","content":""},"done":true,"done_reason":"stop"}"#;
    let out = stream.push(format!("{done}\n{done}\n{{partial").as_bytes());
    assert!(stream.is_done());
    assert_eq!(String::from_utf8(out).unwrap().matches("[DONE]").count(), 1);
    assert!(stream.push(b"more\n").is_empty());
    assert!(stream.finish().is_empty());
}

#[test]
fn empty_input_is_an_early_end() {
    let mut stream = ChatStream::new(meta(), true);
    assert!(stream.push(b"").is_empty());
    assert!(!stream.is_done());
    let out = String::from_utf8(stream.finish()).unwrap();
    assert!(
        out.starts_with(r#"data: {"error":{"message":"the upstream stream ended before its final object""#),
        "{out}"
    );
}

#[test]
fn chunker_steps_return_none_when_nothing_to_say() {
    let mut c = ChatChunker::new(meta(), false);
    assert!(c.reasoning_chunk(Some(String::new()), None).is_none());
    assert!(c.content_chunk(String::new(), Some(vec![]), None).is_none());
    assert!(c.usage_chunk(&ollama::Metrics::default()).is_none());
    assert_eq!(
        c.opening_chunk().unwrap().choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    assert!(c.opening_chunk().is_none());
    let chunk = c.content_chunk("x".to_owned(), None, None).unwrap();
    assert_eq!(chunk.choices[0].delta.role, None);
}

#[test]
fn tool_call_indexes_count_over_the_whole_stream() {
    let call = |name: &str| ollama::ToolCall {
        id: None,
        function: ollama::ToolCallFunction {
            index: Some(0),
            name: name.to_owned(),
            arguments: serde_json::json!({}),
        },
    };
    let mut c = ChatChunker::new(meta(), false);
    let first = c.content_chunk(String::new(), Some(vec![call("a")]), None).unwrap();
    let second = c
        .content_chunk(String::new(), Some(vec![call("b"), call("c")]), None)
        .unwrap();
    let calls = second.choices[0].delta.tool_calls.clone().unwrap();
    assert_eq!(first.choices[0].delta.tool_calls.as_ref().unwrap()[0].index, Some(0));
    assert_eq!(calls.iter().map(|c| c.index.unwrap()).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(calls[1].id.as_deref(), Some("call_chatcmpl-1_2"));
    assert_eq!(
        c.finish_chunk(Some("length")).choices[0].finish_reason.as_deref(),
        Some("length")
    );
    assert_eq!(
        c.finish_chunk(Some("stop")).choices[0].finish_reason.as_deref(),
        Some("tool_calls")
    );
}

#[test]
fn answer_with_reasoning_field_and_empty_content() {
    let resp = ChatResponse {
        message: Message {
            role: "assistant".to_owned(),
            thinking: Some("t".to_owned()),
            ..Message::default()
        },
        done: true,
        ..ChatResponse::default()
    };
    let out = chat_completion(resp, &meta().with_reasoning(ReasoningField::Reasoning));
    let message = &out.choices[0].message;
    assert_eq!(message.content.as_deref(), Some(""));
    assert_eq!(
        (message.reasoning.as_deref(), message.reasoning_content.as_deref()),
        (Some("t"), None)
    );
    assert_eq!(out.choices[0].finish_reason.as_deref(), Some("stop"));
}

#[test]
fn request_helpers() {
    let req: ChatCompletionRequest =
        parse_request(br#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#).unwrap();
    assert!(req.is_stream() && req.include_usage());
    let req: ChatCompletionRequest = parse_request(br#"{"model":"m","messages":[]}"#).unwrap();
    assert!(!req.is_stream() && !req.include_usage());
    let err = parse_request::<ChatCompletionRequest>(b"  ").unwrap_err();
    assert_eq!(
        (err.status(), err.kind(), err.to_string().as_str()),
        (400, "invalid_json", "request body is empty")
    );
}
