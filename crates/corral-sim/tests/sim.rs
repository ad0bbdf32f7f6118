//! The simulator against the reference: wire shapes, error texts, model state, slots and
//! faults, over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use awc::Client;
use bytes::Bytes;
use corral_sim::{Faults, SimConfig, SimHandle, SimModel};
use futures_util::StreamExt;
use serde_json::{json, Value};

fn client() -> Client {
    Client::builder().disable_timeout().finish()
}

async fn post(sim: &SimHandle, path: &str, body: &Value) -> (u16, String, Bytes) {
    let mut resp = client()
        .post(format!("{}{path}", sim.url()))
        .send_json(body)
        .await
        .unwrap();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (resp.status().as_u16(), ct, resp.body().limit(1 << 24).await.unwrap())
}

fn lines(body: &[u8]) -> Vec<Value> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

fn chat(model: &str, n: i64, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}], "stream": stream, "options": {"num_predict": n}})
}

#[actix_web::test]
async fn chat_streams_ndjson_and_ends_with_metrics() {
    let sim = SimHandle::start(SimConfig::default()).await.unwrap();
    let (status, ct, body) = post(&sim, "/api/chat", &chat("llama3.2", 4, true)).await;
    assert_eq!((status, ct.as_str()), (200, "application/x-ndjson"));
    let all = lines(&body);
    assert_eq!(all.len(), 5);
    for chunk in &all[..4] {
        assert_eq!(chunk["done"], false);
        assert_eq!(chunk["message"]["role"], "assistant");
        assert!(chunk.get("eval_count").is_none(), "no metrics before the end");
    }
    let last = &all[4];
    assert_eq!(last["done_reason"], "length");
    for key in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(last[key].as_u64().is_some(), "{key} in {last}");
    }
    let keys: Vec<&str> = last.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        &keys[..5],
        ["model", "created_at", "message", "done", "done_reason"],
        "Go field order"
    );
    assert_eq!(last["model"], "llama3.2", "the model is echoed as sent");
}

#[actix_web::test]
async fn stream_false_aggregates_and_thinking_models_think() {
    let sim = SimHandle::start(SimConfig::default()).await.unwrap();
    let (status, ct, body) = post(&sim, "/api/chat", &chat("qwen3", 3, false)).await;
    assert_eq!((status, ct.as_str()), (200, "application/json; charset=utf-8"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["done"], true);
    assert!(v["message"]["content"].as_str().unwrap().split(' ').count() >= 3);
    assert!(
        v["message"]["thinking"].is_string(),
        "thinking on by default for a thinking model"
    );
    let mut no_think = chat("qwen3", 3, false);
    no_think["think"] = json!(false);
    let (_, _, body) = post(&sim, "/api/chat", &no_think).await;
    assert!(serde_json::from_slice::<Value>(&body).unwrap()["message"]
        .get("thinking")
        .is_none());
    let mut think = chat("llama3.2", 3, false);
    think["think"] = json!(true);
    let (status, _, body) = post(&sim, "/api/chat", &think).await;
    assert_eq!(status, 400);
    assert_eq!(&body[..], br#"{"error":"\"llama3.2\" does not support thinking"}"#);
}

#[actix_web::test]
async fn errors_follow_the_reference_table() {
    let sim = SimHandle::start(SimConfig::default()).await.unwrap();
    let cases = [
        (
            "/api/chat",
            json!({"model": "", "messages": []}),
            400,
            "model is required",
        ),
        (
            "/api/generate",
            json!({"model": "", "prompt": "x"}),
            404,
            "model '' not found",
        ),
        (
            "/api/chat",
            json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "model 'nope' not found",
        ),
        (
            "/api/embed",
            json!({"model": "nope", "input": "x"}),
            404,
            "model \"nope\" not found, try pulling it first",
        ),
        (
            "/api/show",
            json!({"model": "nope"}),
            404,
            "model 'nope:latest' not found",
        ),
        (
            "/api/copy",
            json!({"source": "nope", "destination": "b"}),
            404,
            "model \"nope\" not found",
        ),
        (
            "/api/chat",
            json!({"model": "all-minilm", "messages": [{"role": "user", "content": "x"}]}),
            400,
            "\"all-minilm\" does not support chat",
        ),
        (
            "/api/chat",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}], "keep_alive": "abc"}),
            400,
            "time: invalid duration \"abc\"",
        ),
        (
            "/api/chat",
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "x"}], "options": {"temperature": "hot"}}),
            500,
            "option \"temperature\" must be of type float32",
        ),
    ];
    for (path, body, status, message) in cases {
        let (got, _, bytes) = post(&sim, path, &body).await;
        assert_eq!(got, status, "{path} {body}");
        assert_eq!(
            serde_json::from_slice::<Value>(&bytes).unwrap()["error"],
            message,
            "{path} {body}"
        );
    }
    let mut resp = client()
        .post(format!("{}/api/chat", sim.url()))
        .send_body("")
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(&resp.body().await.unwrap()[..], br#"{"error":"missing request body"}"#);
    let mut resp = client().get(format!("{}/api/nothing", sim.url())).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(&resp.body().await.unwrap()[..], b"404 page not found");
}

#[actix_web::test]
async fn load_eviction_and_ps() {
    let sim = SimHandle::start(SimConfig {
        models: vec![SimModel::chat("a"), SimModel::chat("b"), SimModel::chat("c")],
        max_loaded: 2,
        load_time: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    for m in ["a", "b", "a", "c"] {
        let (status, _, _) = post(&sim, "/api/chat", &chat(m, 1, false)).await;
        assert_eq!(status, 200);
    }
    assert_eq!(sim.stats().cold_loads, 3, "a, b, c; the second a was warm");
    let mut loaded = sim.loaded_models();
    loaded.sort();
    assert_eq!(loaded, vec!["a:latest", "c:latest"], "b was least recently used");
    let mut resp = client().get(format!("{}/api/ps", sim.url())).send().await.unwrap();
    let ps: Value = resp.json().await.unwrap();
    assert_eq!(ps["models"].as_array().unwrap().len(), 2);
    assert!(ps["models"][0]["expires_at"].as_str().unwrap().contains('T'));
    let (_, _, body) = post(
        &sim,
        "/api/generate",
        &json!({"model": "a", "prompt": "", "keep_alive": 0}),
    )
    .await;
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["done_reason"], "unload");
    assert_eq!(sim.loaded_models(), vec!["c:latest"]);
}

#[actix_web::test]
async fn the_last_request_on_a_path_outlives_later_requests_elsewhere() {
    let sim = SimHandle::start(SimConfig::default()).await.unwrap();
    let (status, _, _) = post(&sim, "/api/chat", &chat("llama3.2", 1, false)).await;
    assert_eq!(status, 200);
    // A gateway's listing after the chat: the last request overall, not the last chat.
    let mut resp = client().get(format!("{}/api/ps", sim.url())).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.body().await.unwrap();
    assert_eq!(sim.stats().last_request.unwrap().path, "/api/ps");
    let chat_seen = sim.last_request_to("/api/chat").unwrap();
    assert_eq!(
        (chat_seen.method.as_str(), chat_seen.json.unwrap()["model"].as_str()),
        ("POST", Some("llama3.2"))
    );
    let url = format!("{}/_sim/last_request?path=/api/chat", sim.url());
    let seen: Value = client().get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen["path"], "/api/chat");
    let url = format!("{}/_sim/last_request?path=/api/embed", sim.url());
    let none: Value = client().get(url).send().await.unwrap().json().await.unwrap();
    assert_eq!(none, Value::Null, "nothing was asked on that path");
    sim.reset_stats();
    assert!(sim.last_request_to("/api/chat").is_none(), "a reset forgets them too");
}

#[actix_web::test]
async fn slots_queue_and_a_full_queue_answers_503() {
    let sim = SimHandle::start(SimConfig {
        tokens_per_sec: 20.0,
        num_parallel: 1,
        max_queue: 1,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let fire = || {
        let url = format!("{}/api/chat", sim.url());
        async move {
            client()
                .post(url)
                .send_json(&chat("llama3.2", 10, false))
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (a, b, c) = futures_util::join!(fire(), fire(), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fire().await
    });
    let mut statuses = vec![a, b, c];
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 200, 503], "one served, one queued, one refused");
    assert_eq!(sim.stats().max_in_flight, 3);
}

#[actix_web::test]
async fn a_required_key_is_enforced() {
    let sim = SimHandle::start(SimConfig {
        api_key: Some("s3".to_owned()),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let resp = client().get(format!("{}/api/tags", sim.url())).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client()
        .get(format!("{}/api/tags", sim.url()))
        .bearer_auth("s3")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[actix_web::test]
async fn faults_error_drop_and_mid_stream_error() {
    let sim = SimHandle::start(SimConfig::default()).await.unwrap();
    sim.set_faults(Faults {
        error_rate: 1.0,
        error_status: 503,
        error_message: "busy".to_owned(),
        ..Faults::default()
    });
    let (status, _, body) = post(&sim, "/api/chat", &chat("llama3.2", 3, true)).await;
    assert_eq!((status, &body[..]), (503, &br#"{"error":"busy"}"#[..]));
    sim.set_faults(Faults {
        error_after_chunks: Some(2),
        ..Faults::default()
    });
    let (status, _, body) = post(&sim, "/api/chat", &chat("llama3.2", 5, true)).await;
    let all = lines(&body);
    assert_eq!(status, 200);
    assert_eq!(all.len(), 3);
    assert!(all[2]["error"].is_string());
    sim.set_faults(Faults {
        drop_after_chunks: Some(2),
        ..Faults::default()
    });
    let c = client();
    let mut resp = c
        .post(format!("{}/api/chat", sim.url()))
        .send_json(&chat("llama3.2", 5, true))
        .await
        .unwrap();
    let mut got = Vec::new();
    // awc reports a connection dropped inside a chunked body as a plain end of body (curl
    // reports it as "transfer closed with outstanding read data"), so the test looks at
    // what arrived: two chunks and no final object.
    while let Some(Ok(b)) = resp.next().await {
        got.extend_from_slice(&b);
    }
    assert!(!lines(&got).iter().any(|l| l["done"] == true));
    assert_eq!(lines(&got).len(), 2);
}

#[actix_web::test]
async fn embeddings_are_normalised_and_deterministic() {
    let sim = SimHandle::start(SimConfig::default()).await.unwrap();
    let (_, _, body) = post(
        &sim,
        "/api/embed",
        &json!({"model": "all-minilm", "input": ["a", "b", "a"], "dimensions": 8}),
    )
    .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    let vecs = v["embeddings"].as_array().unwrap();
    assert_eq!(vecs.len(), 3);
    assert_eq!(vecs[0], vecs[2]);
    let norm: f64 = vecs[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap().powi(2))
        .sum();
    assert!((norm - 1.0).abs() < 1e-9);
    assert_eq!(vecs[0].as_array().unwrap().len(), 8);
    let (_, _, body) = post(&sim, "/api/embed", &json!({"model": "all-minilm", "input": []})).await;
    assert_eq!(&body[..], br#"{"model":"all-minilm","embeddings":[]}"#);
}

#[actix_web::test]
async fn management_changes_the_model_list() {
    let sim = SimHandle::start(SimConfig::default()).await.unwrap();
    let (status, _, body) = post(&sim, "/api/pull", &json!({"name": "mistral"})).await;
    assert_eq!(status, 200);
    let all = lines(&body);
    assert_eq!(all[0]["status"], "pulling manifest");
    assert!(all.iter().any(|l| l.get("completed").is_some()));
    assert!(all[1].get("completed").is_none(), "completed is omitted while 0");
    assert_eq!(all.last().unwrap()["status"], "success");
    let (_, _, body) = post(&sim, "/api/pull", &json!({"model": "nonexistent"})).await;
    assert_eq!(
        lines(&body).last().unwrap()["error"],
        "pull model manifest: file does not exist"
    );
    let (status, _, body) = post(&sim, "/api/copy", &json!({"source": "mistral", "destination": "m2"})).await;
    assert_eq!((status, body.len()), (200, 0), "copy answers an empty 200");
    let (status, _, _) = post(
        &sim,
        "/api/create",
        &json!({"model": "mario", "from": "m2", "stream": false}),
    )
    .await;
    assert_eq!(status, 200);
    let mut resp = client()
        .delete(format!("{}/api/delete", sim.url()))
        .send_json(&json!({"model": "m2"}))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.body().await.unwrap().is_empty());
    let mut resp = client().get(format!("{}/api/tags", sim.url())).send().await.unwrap();
    let tags: Value = resp.json().await.unwrap();
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"mistral:latest") && names.contains(&"mario:latest") && !names.contains(&"m2:latest"),
        "{names:?}"
    );
}

#[actix_web::test]
async fn blobs_check_their_digest() {
    let sim = SimHandle::start(SimConfig::default()).await.unwrap();
    let data = b"GGUF fake model bytes";
    let digest = format!("sha256:{}", hex_sha(data));
    let url = format!("{}/api/blobs/{digest}", sim.url());
    assert_eq!(client().head(&url).send().await.unwrap().status().as_u16(), 404);
    assert_eq!(
        client()
            .post(&url)
            .send_body(&data[..])
            .await
            .unwrap()
            .status()
            .as_u16(),
        201
    );
    assert_eq!(client().head(&url).send().await.unwrap().status().as_u16(), 200);
    let wrong = format!("{}/api/blobs/sha256:{}", sim.url(), "0".repeat(64));
    assert_eq!(
        client()
            .post(&wrong)
            .send_body(&data[..])
            .await
            .unwrap()
            .status()
            .as_u16(),
        400
    );
    let bad = format!("{}/api/blobs/sha256:xyz", sim.url());
    assert_eq!(
        client()
            .post(&bad)
            .send_body(&data[..])
            .await
            .unwrap()
            .status()
            .as_u16(),
        400
    );
}

fn hex_sha(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[actix_web::test]
async fn openai_layer_streams_sse_with_usage() {
    let sim = SimHandle::start(SimConfig::default()).await.unwrap();
    let body = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": true, "max_tokens": 3, "stream_options": {"include_usage": true}});
    let (status, ct, bytes) = post(&sim, "/v1/chat/completions", &body).await;
    assert_eq!((status, ct.as_str()), (200, "text/event-stream"));
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e[6..]).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 3);
    let (status, _, bytes) = post(
        &sim,
        "/v1/chat/completions",
        &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap()["error"]["type"],
        "not_found_error"
    );
}
