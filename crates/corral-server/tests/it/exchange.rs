//! One record per model-running request, with the instance's own token counts.

use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use corral_server::exchange::{Finished, Observer, Outcome, Route};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::{body_of, chat_body, client, eventually, lines, settings_for, sim, Gateway};

#[derive(Default)]
struct Seen(Mutex<Vec<Finished>>);

impl Observer for Seen {
    fn finished(&self, record: &Finished) {
        self.0.lock().unwrap().push(record.clone());
    }
}

impl Seen {
    fn take(&self) -> Vec<Finished> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The `usage` of an OpenAI answer, or of the last SSE event that has one.
fn openai_usage(body: &[u8]) -> (u64, u64) {
    let text = String::from_utf8_lossy(body);
    let usage = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .chain(std::iter::once(text.as_ref()))
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v.get("usage").cloned())
        .last()
        .unwrap();
    (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap_or(0),
    )
}

#[actix_web::test]
async fn every_model_running_route_is_recorded_once_with_the_instances_counts() {
    let sim = sim().await;
    let seen = Arc::new(Seen::default());
    let gw = Gateway::watched(settings_for(&[&sim.url()]), seen.clone()).await;
    let c = client();
    let mut expected: Vec<(Route, bool, u64, u64)> = Vec::new();

    for stream in [true, false] {
        let mut resp = c
            .post(gw.at("/api/chat"))
            .send_json(&chat_body("llama3.2", 5, stream))
            .await
            .unwrap();
        let body = body_of(&mut resp).await;
        let last = lines(&body).pop().unwrap();
        expected.push((
            Route::Chat,
            stream,
            last["prompt_eval_count"].as_u64().unwrap(),
            last["eval_count"].as_u64().unwrap(),
        ));
    }
    let mut resp = c
        .post(gw.at("/ollama/api/generate"))
        .send_json(&json!({"model": "llama3.2", "prompt": "hello there", "options": {"num_predict": 4}}))
        .await
        .unwrap();
    let last = lines(&body_of(&mut resp).await).pop().unwrap();
    expected.push((
        Route::Generate,
        true,
        last["prompt_eval_count"].as_u64().unwrap(),
        last["eval_count"].as_u64().unwrap(),
    ));
    let mut resp = c
        .post(gw.at("/api/embed"))
        .send_json(&json!({"model": "all-minilm", "input": ["one two", "three"]}))
        .await
        .unwrap();
    let embed: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    expected.push((Route::Embed, false, embed["prompt_eval_count"].as_u64().unwrap(), 0));

    for stream in [true, false] {
        let mut resp = c
            .post(gw.at("/v1/chat/completions"))
            .send_json(&json!({
                "model": "llama3.2",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": stream,
                "stream_options": {"include_usage": true},
                "max_tokens": 6,
            }))
            .await
            .unwrap();
        let (p, o) = openai_usage(&body_of(&mut resp).await);
        expected.push((Route::OpenAiChat, stream, p, o));
    }
    let mut resp = c
        .post(gw.at("/v1/embeddings"))
        .send_json(&json!({"model": "all-minilm", "input": "a b c"}))
        .await
        .unwrap();
    let (p, _) = openai_usage(&body_of(&mut resp).await);
    expected.push((Route::OpenAiEmbeddings, false, p, 0));
    let mut resp = c
        .post(gw.at("/ollama/v1/chat/completions"))
        .send_json(&json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (p, o) = openai_usage(&body_of(&mut resp).await);
    expected.push((Route::OllamaV1, false, p, o));

    assert!(eventually(|| seen.0.lock().unwrap().len() >= expected.len()).await);
    let records = seen.take();
    let got: Vec<(Route, bool, u64, u64)> = records
        .iter()
        .map(|r| (r.route, r.streamed, r.input_tokens, r.output_tokens))
        .collect();
    assert_eq!(got, expected);
    for r in &records {
        assert_eq!(
            (r.status, r.outcome, r.estimated),
            (200, Outcome::Completed, false),
            "{r:?}"
        );
        assert_eq!((r.instance, r.attempts), (Some(0), 1));
        assert!(r.input_tokens > 0);
        assert!(r.ttft.is_some() && r.overhead.is_some(), "{r:?}");
    }
    assert_eq!(records[0].model_run, "llama3.2:latest");
    assert_eq!(records[0].model_asked, "llama3.2");
}

#[actix_web::test]
async fn a_stream_the_client_cuts_is_cancelled_with_what_was_relayed_and_a_refusal_is_failed() {
    let sim = corral_sim::SimHandle::start(corral_sim::SimConfig {
        tokens_per_sec: 50.0,
        ..corral_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let seen = Arc::new(Seen::default());
    let gw = Gateway::watched(settings_for(&[&sim.url()]), seen.clone()).await;
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body("llama3.2", 200, true))
        .await
        .unwrap();
    for _ in 0..3 {
        resp.next().await.unwrap().unwrap();
    }
    drop(resp);
    assert!(eventually(|| !seen.0.lock().unwrap().is_empty()).await);
    let cut = seen.take().pop().unwrap();
    assert_eq!(cut.outcome, Outcome::Cancelled);
    assert!(cut.estimated);
    assert!(cut.output_tokens >= 3 && cut.output_tokens < 200, "{cut:?}");

    let resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body("no-such-model", 2, false))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(eventually(|| !seen.0.lock().unwrap().is_empty()).await);
    let refused = seen.take().pop().unwrap();
    assert_eq!(
        (refused.status, refused.outcome, refused.instance),
        (404, Outcome::Failed, None)
    );
}
