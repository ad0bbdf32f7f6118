//! Using the converter alone: an OpenAI chat completion request becomes the body of an
//! Ollama `/api/chat`, and Ollama's NDJSON stream becomes OpenAI's server-sent events,
//! chunk by chunk, however the bytes are split.
//!
//! Run with `cargo run -p corral-convert --example openai_to_ollama`.

#![allow(clippy::print_stdout)] // An example shows its results.

use corral_convert::openai::ChatCompletionRequest;
use corral_convert::{chat_request, parse_request, ChatStream, ResponseMeta};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let body = br#"{"model":"llama3.2","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"stream":true,"max_tokens":20,"temperature":0.2}"#;
    let request: ChatCompletionRequest = parse_request(body)?;
    let meta = ResponseMeta::new("chatcmpl-example", request.model.clone(), 1_761_991_200);
    let include_usage = request.include_usage();
    let native = chat_request(request)?;
    println!("POST /api/chat {}\n", serde_json::to_string(&native)?);

    // What an Ollama instance streams back, split at awkward places as a network would.
    let upstream: [&[u8]; 3] = [
        br#"{"model":"llama3.2","created_at":"2025-11-01T10:00:00Z","message":{"role":"assistant","content":"Hel"#,
        b"lo!\"},\"done\":false}\n{\"model\":\"llama3.2\",\"created_at\":\"2025-11-01T10:00:01Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},",
        br#""done":true,"done_reason":"stop","prompt_eval_count":12,"eval_count":2}"#,
    ];
    let mut stream = ChatStream::new(meta, include_usage);
    for piece in upstream {
        print!("{}", String::from_utf8(stream.push(piece))?);
    }
    print!("{}", String::from_utf8(stream.finish())?);
    assert!(stream.is_done());
    Ok(())
}
