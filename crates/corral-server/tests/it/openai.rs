//! The OpenAI-compatible API at the root, converted by Corral from Ollama's native API.

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use corral_sim::{Faults, SimConfig, SimHandle, SimModel};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::{body_of, client, settings_for, sim, Gateway};

/// The `data:` payloads of an SSE body.
fn events(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[actix_web::test]
async fn a_streamed_chat_is_converted_chunk_by_chunk_with_usage() {
    let sim = sim().await;
    let gw = Gateway::in_front_of(&sim.url()).await;
    let mut resp = client()
        .post(gw.at("/v1/chat/completions"))
        .send_json(&json!({
            "model": "llama3.2",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 30,
        }))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers().get("content-type").unwrap(), "text/event-stream");
    let body = body_of(&mut resp).await;
    let events = events(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let ids: std::collections::BTreeSet<&str> = chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one id per stream");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"
        && c["model"] == "llama3.2"
        && c["system_fingerprint"] == "fp_ollama"));
    let content: usize = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert_eq!(content, 30, "one chunk per native chunk");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0].get("finish_reason").filter(|f| !f.is_null()))
        .collect();
    assert_eq!(finish, vec!["length"]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 30);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + 30
    );
    gw.stop().await;
}

#[actix_web::test]
async fn sse_events_leave_the_gateway_while_the_upstream_still_generates() {
    let sim = SimHandle::start(SimConfig {
        faults: Faults {
            latch_after_chunks: Some(3),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::in_front_of(&sim.url()).await;
    let mut resp = client()
        .post(gw.at("/v1/chat/completions"))
        .send_json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": true, "max_tokens": 10}))
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while events(&got).len() < 3 {
        let next = tokio::time::timeout_at(deadline, resp.next()).await;
        let Ok(Some(Ok(chunk))) = next else {
            panic!("only {:?} before the latch", String::from_utf8_lossy(&got))
        };
        got.extend_from_slice(&chunk);
    }
    sim.release_latch();
    let rest = body_of(&mut resp).await;
    got.extend_from_slice(&rest);
    assert_eq!(events(&got).last().unwrap(), "[DONE]");
    gw.stop().await;
}

#[actix_web::test]
async fn errors_come_back_in_openai_shape() {
    let sim = SimHandle::start(SimConfig {
        models: vec![SimModel::chat("llama3.2"), SimModel::embedding("all-minilm")],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::in_front_of(&sim.url()).await;
    let c = client();
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "/v1/chat/completions",
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            b"".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            b"[1,2]".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            br#"{"messages":[{"role":"user","content":"x"}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            br#"{"model":"llama3.2","messages":[]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            br#"{"model":"llama3.2","messages":"x"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            br#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#.to_vec(),
            StatusCode::NOT_FOUND,
            "not_found_error",
        ),
        (
            "/v1/completions",
            br#"{"model":"llama3.2","prompt":"x","n":3}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        (
            "/v1/embeddings",
            br#"{"model":"all-minilm","input":"x","encoding_format":"hex"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
        // The upstream's own refusal, reshaped: an embedding model cannot chat.
        (
            "/v1/chat/completions",
            br#"{"model":"all-minilm","messages":[{"role":"user","content":"x"}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
        ),
    ];
    for (path, body, status, kind) in cases {
        let mut resp = c
            .post(gw.at(path))
            .insert_header(("content-type", "application/json"))
            .send_body(body.clone())
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
        assert_eq!(resp.status(), status, "{path} {}: {v}", String::from_utf8_lossy(&body));
        assert_eq!(v["error"]["type"], kind, "{v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    // Values OpenAI refuses are refused with the field named, not passed on to mean
    // something else to Ollama.
    for (path, body, param) in [
        (
            "/v1/chat/completions",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}),
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -5}),
            "max_completion_tokens",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}], "n": 0}),
            "n",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "llama3.2", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            "/v1/completions",
            json!({"model": "llama3.2", "prompt": "x", "stop": ["a", 3]}),
            "stop",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
            "temperature",
        ),
    ] {
        let mut resp = c.post(gw.at(path)).send_json(&body).await.unwrap();
        let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }
    let mut resp = c.get(gw.at("/v1/models/nope")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");
    // Paths the OpenAI API does not have here, and served paths with another method, answer
    // in OpenAI's shape too.
    for (method, path, status) in [
        (Method::POST, "/v1/responses", StatusCode::NOT_FOUND),
        (Method::GET, "/v1/models/", StatusCode::NOT_FOUND),
        (Method::GET, "/v1/chat/completions", StatusCode::METHOD_NOT_ALLOWED),
        (Method::DELETE, "/v1/models/llama3.2", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let mut resp = c.request(method.clone(), gw.at(path)).send().await.unwrap();
        let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
        assert_eq!(resp.status(), status, "{method} {path}: {v}");
        assert_eq!(
            v["error"]["type"],
            if status == StatusCode::NOT_FOUND {
                "not_found_error"
            } else {
                "invalid_request_error"
            },
            "{v}"
        );
        assert!(v["error"]["message"].as_str().unwrap().contains(path), "{v}");
    }
    // The merged models list gives each model the instance's `modified_at` as `created`.
    let mut resp = c.get(gw.at("/v1/models")).send().await.unwrap();
    let list: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    let mut resp = c.get(format!("{}/api/tags", sim.url())).send().await.unwrap();
    let tags: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    let modified = tags["models"][0]["modified_at"].as_str().unwrap();
    let want = chrono::DateTime::parse_from_rfc3339(modified).unwrap().timestamp();
    let name = tags["models"][0]["model"].as_str().unwrap();
    let entry = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == name)
        .unwrap();
    assert_eq!(entry["created"], want, "{list}");
    let mut resp = c.get(gw.at(&format!("/v1/models/{name}"))).send().await.unwrap();
    let one: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert_eq!(one["created"], want, "{one}");
    gw.stop().await;
}

#[actix_web::test]
async fn an_upstream_that_breaks_off_mid_stream_ends_with_an_error_event() {
    let sim = SimHandle::start(SimConfig {
        faults: Faults {
            drop_after_chunks: Some(4),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::in_front_of(&sim.url()).await;
    let mut resp = client()
        .post(gw.at("/v1/chat/completions"))
        .send_json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": true, "max_tokens": 20}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let events = events(&body_of(&mut resp).await);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        last["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{events:?}"
    );
    assert!(!events.contains(&"[DONE]".to_owned()));
    gw.stop().await;
}

#[actix_web::test]
async fn completions_and_embeddings_are_converted() {
    let sim = SimHandle::start(SimConfig {
        models: vec![SimModel::chat("llama3.2"), SimModel::embedding("all-minilm")],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(settings_for(&[&sim.url()])).await;
    let c = client();
    let mut resp = c
        .post(gw.at("/v1/completions"))
        .send_json(&json!({"model": "llama3.2", "prompt": "Say", "max_tokens": 5, "stream": true}))
        .await
        .unwrap();
    let events = events(&body_of(&mut resp).await);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "text_completion");
    let mut resp = c
        .post(gw.at("/v1/embeddings"))
        .send_json(&json!({"model": "all-minilm", "input": ["a", "b"]}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["model"], "all-minilm");
    let mut resp = c.get(gw.at("/v1/models")).send().await.unwrap();
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["owned_by"], "library");
    gw.stop().await;
}

#[actix_web::test]
async fn a_model_asked_for_during_an_outage_is_not_called_missing() {
    let sim = crate::support::sim().await;
    let gw = Gateway::in_front_of(&sim.url()).await;
    let resp = client().get(gw.at("/v1/models/llama3.2")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The instance stops answering its listings: the model it had is not "missing" but
    // unavailable for now, and a typo is still a typo.
    sim.set_faults(Faults {
        error_rate: 1.0,
        error_status: 500,
        error_route: Some("/api/tags".to_owned()),
        ..Faults::default()
    });
    // Once the catalogue is refreshed without it (the next background refresh).
    let mut answer = None;
    for _ in 0..200 {
        let mut resp = client()
            .post(gw.at("/v1/chat/completions"))
            .send_json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}))
            .await
            .unwrap();
        if resp.status() == StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let retry = resp.headers().get("retry-after").cloned();
        let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
        answer = Some((resp.status(), retry, v));
        break;
    }
    let (status, retry, v) = answer.expect("the catalogue was never refreshed");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(retry.is_some(), "{v}");
    let mut resp = client().get(gw.at("/v1/models/llama3.2")).send().await.unwrap();
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["type"], "api_error", "{v}");
    let mut resp = client()
        .post(gw.at("/v1/chat/completions"))
        .send_json(&json!({"model": "lama3.2", "messages": [{"role": "user", "content": "hi"}]}))
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "a typo is a 404, not a retryable error: {v}"
    );
    assert_eq!(v["error"]["code"], "model_not_found", "{v}");
    gw.stop().await;
}
