//! Golden tests: every fixture converted and compared with its checked-in expected output.

use corral_convert::ollama::{ChatResponse, EmbedResponse, GenerateResponse};
use corral_convert::openai::{ChatCompletionRequest, CompletionRequest, EmbeddingRequest};
use corral_convert::{
    chat_completion, chat_request, completion, completion_request, embedding_request, embedding_response,
    error_from_native, parse_request, parse_upstream, ChatStream, CompletionStream, ConvertError, EncodingFormat,
};
use serde_json::{json, Value};

use crate::{chat_meta, check, completion_meta, inputs, pretty, report};

/// Converts `input` whole, then byte by byte, asserts both agree, and returns the text.
fn run_stream<S>(
    input: &[u8],
    mut new: impl FnMut() -> S,
    push: fn(&mut S, &[u8]) -> Vec<u8>,
    finish: fn(&mut S) -> Vec<u8>,
) -> String {
    let mut whole = new();
    let mut out = push(&mut whole, input);
    out.extend(finish(&mut whole));
    let mut bytewise = new();
    let mut out2 = Vec::new();
    for b in input {
        out2.extend(push(&mut bytewise, std::slice::from_ref(b)));
    }
    out2.extend(finish(&mut bytewise));
    assert_eq!(out, out2, "byte-by-byte input changed the output");
    String::from_utf8(out).unwrap()
}

fn error_json(e: &ConvertError) -> String {
    pretty(&json!({ "status": e.status(), "kind": e.kind(), "body": e.to_openai() }))
}

#[test]
fn chat_streams() {
    let mut failures = Vec::new();
    for input in inputs("chat_stream", ".jsonl") {
        let bytes = std::fs::read(&input).unwrap();
        let sse = run_stream(
            &bytes,
            || ChatStream::new(chat_meta(), true),
            ChatStream::push,
            ChatStream::finish,
        );
        assert!(
            sse.ends_with("data: [DONE]\n\n") || sse.contains("data: {\"error\":"),
            "{}",
            input.display()
        );
        check(&input, ".sse", &sse, &mut failures);
    }
    report(failures);
}

#[test]
fn generate_streams() {
    let mut failures = Vec::new();
    for input in inputs("generate_stream", ".jsonl") {
        let bytes = std::fs::read(&input).unwrap();
        let sse = run_stream(
            &bytes,
            || CompletionStream::new(completion_meta(), true),
            CompletionStream::push,
            CompletionStream::finish,
        );
        check(&input, ".sse", &sse, &mut failures);
    }
    report(failures);
}

#[test]
fn chat_answers() {
    let mut failures = Vec::new();
    for input in inputs("chat", ".json") {
        let native: ChatResponse = parse_upstream(&std::fs::read(&input).unwrap()).unwrap();
        check(
            &input,
            ".out.json",
            &pretty(&chat_completion(native, &chat_meta())),
            &mut failures,
        );
    }
    report(failures);
}

#[test]
fn generate_answers() {
    let mut failures = Vec::new();
    for input in inputs("generate", ".json") {
        let native: GenerateResponse = parse_upstream(&std::fs::read(&input).unwrap()).unwrap();
        check(
            &input,
            ".out.json",
            &pretty(&completion(native, &completion_meta())),
            &mut failures,
        );
    }
    report(failures);
}

#[test]
fn chat_requests() {
    let mut failures = Vec::new();
    for input in inputs("chat_request", ".json") {
        let converted = parse_request::<ChatCompletionRequest>(&std::fs::read(&input).unwrap()).and_then(chat_request);
        let text = match converted {
            Ok(native) => pretty(&native),
            Err(e) => error_json(&e),
        };
        check(&input, ".out.json", &text, &mut failures);
    }
    report(failures);
}

#[test]
fn completion_requests() {
    let mut failures = Vec::new();
    for input in inputs("completion_request", ".json") {
        let converted =
            parse_request::<CompletionRequest>(&std::fs::read(&input).unwrap()).and_then(completion_request);
        let text = match converted {
            Ok(native) => pretty(&native),
            Err(e) => error_json(&e),
        };
        check(&input, ".out.json", &text, &mut failures);
    }
    report(failures);
}

#[test]
fn embedding_requests() {
    let mut failures = Vec::new();
    for input in inputs("embedding_request", ".json") {
        let converted = parse_request::<EmbeddingRequest>(&std::fs::read(&input).unwrap()).and_then(embedding_request);
        let text = match converted {
            Ok((native, format)) => pretty(&json!({ "request": native, "encoding_format": format!("{format:?}") })),
            Err(e) => error_json(&e),
        };
        check(&input, ".out.json", &text, &mut failures);
    }
    report(failures);
}

#[test]
fn embed_answers() {
    let mut failures = Vec::new();
    for input in inputs("embed", ".json") {
        let native: EmbedResponse = parse_upstream(&std::fs::read(&input).unwrap()).unwrap();
        let float = embedding_response(native.clone(), "fixture-model", EncodingFormat::Float);
        let base64 = embedding_response(native, "fixture-model", EncodingFormat::Base64);
        // Serialised directly (not through `json!`), so `f32`s keep their short form.
        check(
            &input,
            ".out.json",
            &format!("{}{}", pretty(&float), pretty(&base64)),
            &mut failures,
        );
    }
    report(failures);
}

#[test]
fn native_errors() {
    let mut failures = Vec::new();
    for input in inputs("errors", ".txt") {
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        let status: u16 = name.split('_').next().unwrap().parse().unwrap();
        let body = error_from_native(status, &std::fs::read(&input).unwrap());
        check(
            &input,
            ".out.json",
            &pretty(&json!({ "status": status, "body": body })),
            &mut failures,
        );
    }
    report(failures);
}

/// Base64 embeddings decode back to the same `f32` values.
#[test]
fn base64_embeddings_round_trip() {
    use base64::Engine as _;
    let native = EmbedResponse {
        embeddings: vec![vec![0.5, -1.25, 3.0e-7]],
        ..Default::default()
    };
    let out = serde_json::to_value(embedding_response(native, "m", EncodingFormat::Base64)).unwrap();
    let Value::String(text) = &out["data"][0]["embedding"] else {
        panic!("not base64: {out}")
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).unwrap();
    let back: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(back, vec![0.5, -1.25, 3.0e-7]);
}
