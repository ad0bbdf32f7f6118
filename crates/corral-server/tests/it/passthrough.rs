//! The streaming pass-through: chunks relayed whole and unbuffered, errors passed on,
//! cancellation, bad input and dead upstreams.

use std::time::Duration;

use actix_web::http::StatusCode;
use corral_sim::{Faults, SimConfig, SimHandle};
use serde_json::{json, Value};

use crate::support::{body_of, chat_body, client, dead_url, eventually, lines, read_lines, settings_for, sim, Gateway};

#[actix_web::test]
async fn a_200_chunk_stream_arrives_whole_chunk_for_chunk() {
    let sim = sim().await;
    let gw = Gateway::in_front_of(&sim.url()).await;
    let c = client();
    let direct = body_of(
        &mut c
            .post(format!("{}/api/chat", sim.url()))
            .send_json(&chat_body("llama3.2", 200, true))
            .await
            .unwrap(),
    )
    .await;
    for path in ["/api/chat", "/ollama/api/chat"] {
        let mut resp = c
            .post(gw.at(path))
            .send_json(&chat_body("llama3.2", 200, true))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers().get("content-type").unwrap(), "application/x-ndjson");
        let through = body_of(&mut resp).await;
        let (direct, through) = (lines(&direct), lines(&through));
        assert_eq!(through.len(), 201, "200 content chunks and the final one");
        assert_eq!(direct.len(), through.len());
        for (d, t) in direct.iter().zip(&through) {
            assert_eq!(d["message"], t["message"], "same chunk, same content");
            assert_eq!(d["done"], t["done"]);
        }
        assert_eq!(through.last().unwrap()["done_reason"], "length");
    }
    gw.stop().await;
}

#[actix_web::test]
async fn chunks_are_relayed_before_the_upstream_finishes() {
    let sim = SimHandle::start(SimConfig {
        faults: Faults {
            latch_after_chunks: Some(5),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::in_front_of(&sim.url()).await;
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body("llama3.2", 20, true))
        .await
        .unwrap();
    // The simulator holds the rest of the stream until the latch is released.
    let first = read_lines(&mut resp, 5, Duration::from_secs(5)).await;
    assert_eq!(
        first.len(),
        5,
        "five chunks reached the client while the upstream waits"
    );
    sim.release_latch();
    let rest = read_lines(&mut resp, 16, Duration::from_secs(5)).await;
    assert_eq!(rest.len(), 16);
    let last: Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(last["done"], true);
    gw.stop().await;
}

#[actix_web::test]
async fn an_upstream_404_reaches_the_client_unchanged() {
    let sim = sim().await;
    let gw = Gateway::in_front_of(&sim.url()).await;
    let c = client();
    let body = json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]});
    let mut direct = c
        .post(format!("{}/api/chat", sim.url()))
        .send_json(&body)
        .await
        .unwrap();
    // Pinned to the instance, so the gateway forwards instead of answering from its catalogue.
    let mut through = c.post(gw.at("/ollama/api/chat/0")).send_json(&body).await.unwrap();
    assert_eq!(through.status(), StatusCode::NOT_FOUND);
    assert_eq!(direct.status(), through.status());
    let through_body = body_of(&mut through).await;
    assert_eq!(body_of(&mut direct).await, through_body);
    assert_eq!(&through_body[..], br#"{"error":"model 'no-such-model' not found"}"#);
    gw.stop().await;
}

#[actix_web::test]
async fn a_client_that_drops_a_stream_cancels_the_upstream() {
    let sim = SimHandle::start(SimConfig {
        tokens_per_sec: 50.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::in_front_of(&sim.url()).await;
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body("llama3.2", 1000, true))
        .await
        .unwrap();
    assert_eq!(read_lines(&mut resp, 2, Duration::from_secs(5)).await.len(), 2);
    assert_eq!(sim.stats().cancelled, 0);
    drop(resp);
    assert!(
        eventually(|| sim.stats().cancelled == 1).await,
        "the simulator saw the cancellation: {:?}",
        sim.stats()
    );
    gw.stop().await;
}

#[actix_web::test]
async fn malformed_json_gets_a_4xx_json_error() {
    let sim = sim().await;
    let gw = Gateway::in_front_of(&sim.url()).await;
    let c = client();
    for (path, body) in [
        ("/api/chat", "{not json"),
        ("/api/generate", "[1, 2]"),
        ("/ollama/api/chat", "\"just a string\""),
        ("/api/embed", ""),
        ("/api/show", "{\"model\": 12}"),
    ] {
        let mut resp = c
            .post(gw.at(path))
            .content_type("application/json")
            .send_body(body)
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path} {body:?}");
        let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
        assert!(v["error"].as_str().unwrap().len() > 5, "{v}");
    }
    let stats = sim.stats();
    let forwarded: u64 = stats
        .requests
        .iter()
        .filter(|(route, _)| !matches!(route.as_str(), "/api/tags" | "/api/ps"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(forwarded, 0, "nothing bad reached the upstream: {:?}", stats.requests);
    gw.stop().await;
}

#[actix_web::test]
async fn an_unreachable_upstream_gets_a_json_502() {
    let dead = dead_url();
    let gw = Gateway::in_front_of(&dead).await;
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body("llama3.2", 3, true))
        .await
        .unwrap();
    // No instance ever listed it: unknown (a typo is not an outage), in Ollama's words.
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert!(v["error"].as_str().unwrap().contains("not found"), "{v}");
    // Pinned to the dead instance, the connection error itself is reported.
    let mut resp = client()
        .post(gw.at("/ollama/api/chat/0"))
        .send_json(&chat_body("llama3.2", 3, true))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert!(v["error"].as_str().unwrap().contains("unreachable"), "{v}");
    // The instance's address is internal: logged, not told to clients.
    let addr = dead.trim_start_matches("http://");
    assert!(!v.to_string().contains(addr), "{v}");
    gw.stop().await;
}

#[actix_web::test]
async fn slow_headers_time_out_with_a_json_504_but_a_slow_stream_is_not_cut() {
    let sim = SimHandle::start(SimConfig {
        faults: Faults {
            header_delay: Duration::from_millis(1500),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut settings = settings_for(&[&sim.url()]);
    settings.upstream.first_byte_timeout = 0.5;
    let gw = Gateway::start(settings).await;
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body("llama3.2", 3, true))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert!(v["error"].is_string());
    gw.stop().await;

    // 10 tokens/s for 15 chunks takes 1.5 s, three times the idle timeout, and is never cut.
    let slow = SimHandle::start(SimConfig {
        tokens_per_sec: 10.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut settings = settings_for(&[&slow.url()]);
    settings.upstream.idle_timeout = 0.5;
    let gw = Gateway::start(settings).await;
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body("llama3.2", 15, true))
        .await
        .unwrap();
    let all = lines(&body_of(&mut resp).await);
    assert_eq!(all.len(), 16);
    assert_eq!(all.last().unwrap()["done"], true);
    gw.stop().await;
}

#[actix_web::test]
async fn a_stalled_stream_ends_with_an_error_line() {
    let sim = SimHandle::start(SimConfig {
        faults: Faults {
            stall_after_chunks: Some(3),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut settings = settings_for(&[&sim.url()]);
    settings.upstream.idle_timeout = 0.5;
    let gw = Gateway::start(settings).await;
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body("llama3.2", 10, true))
        .await
        .unwrap();
    let all = lines(&body_of(&mut resp).await);
    assert_eq!(all.len(), 4, "three chunks and the error line: {all:?}");
    assert!(all[3]["error"].as_str().unwrap().contains("sent nothing"));
    gw.stop().await;
}

#[actix_web::test]
async fn upstream_sees_its_own_host_and_no_client_credentials() {
    let sim = sim().await;
    let gw = Gateway::in_front_of(&sim.url()).await;
    let resp = client()
        .post(gw.at("/api/chat"))
        .insert_header(("Authorization", "Bearer client-secret"))
        .insert_header(("Cookie", "token=abc"))
        .send_json(&chat_body("llama3.2", 2, false))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let last = sim.last_request_to("/api/chat").unwrap();
    let header = |name: &str| {
        last.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("host").unwrap(), sim.addr().to_string());
    assert_eq!(header("authorization"), None);
    assert_eq!(header("cookie"), None);
    gw.stop().await;
}

#[actix_web::test]
async fn root_and_status_routes_answer_locally() {
    let gw = Gateway::in_front_of(&dead_url()).await;
    let c = client();
    let mut resp = c.get(gw.at("/")).send().await.unwrap();
    assert_eq!(body_of(&mut resp).await, "Ollama is running");
    assert_eq!(c.head(gw.at("/")).send().await.unwrap().status(), StatusCode::OK);
    let mut resp = c.get(gw.at("/ollama/")).send().await.unwrap();
    assert_eq!(body_of(&mut resp).await, r#"{"status":true}"#);
    let mut resp = c.get(gw.at("/health")).send().await.unwrap();
    assert_eq!(body_of(&mut resp).await, r#"{"status":true}"#);
    let mut resp = c.get(gw.at("/no/such/route")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert!(v["error"].is_string());
    gw.stop().await;
}

#[actix_web::test]
async fn cors_preflight_is_answered() {
    let gw = Gateway::in_front_of(&dead_url()).await;
    let resp = client()
        .request(actix_web::http::Method::OPTIONS, gw.at("/api/chat"))
        .insert_header(("Origin", "https://app.example"))
        .insert_header(("Access-Control-Request-Method", "POST"))
        .insert_header(("Access-Control-Request-Headers", "content-type,authorization"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(
        resp.headers().get("access-control-allow-origin").unwrap(),
        "https://app.example"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn cors_headers_answer_browsers_and_only_vary_is_sent_to_the_rest() {
    let gw = Gateway::in_front_of(&dead_url()).await;
    let c = client();
    // A browser's request: the origin reflected, credentials allowed, the answer's headers exposed.
    let resp = c
        .get(gw.at("/"))
        .insert_header(("Origin", "https://app.example"))
        .send()
        .await
        .unwrap();
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(header("access-control-allow-credentials").as_deref(), Some("true"));
    let exposed = header("access-control-expose-headers").unwrap();
    assert!(exposed.contains("content-type"), "{exposed}");
    // The request id is set outside the CORS layer, and a browser may read it too.
    assert!(header("x-request-id").is_some());
    assert!(exposed.ends_with(", x-request-id"), "{exposed}");
    assert!(header("vary").unwrap().contains("Origin"));
    // A script's request (no Origin): no CORS header, only the Vary a cache needs.
    let resp = c.get(gw.at("/")).send().await.unwrap();
    assert!(resp.status().is_success());
    for name in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
    ] {
        assert!(resp.headers().get(name).is_none(), "{name} sent without an Origin");
    }
    assert_eq!(
        resp.headers().get("vary").unwrap(),
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn url_idx_variants_pin_the_instance_and_refuse_bad_indices() {
    let a = sim().await;
    let b = sim().await;
    let gw = Gateway::start(settings_for(&[&a.url(), &b.url()])).await;
    let c = client();
    let resp = c
        .post(gw.at("/ollama/api/chat/1"))
        .send_json(&chat_body("llama3.2", 2, false))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(b.stats().requests.get("/api/chat").copied().unwrap_or(0), 1);
    assert_eq!(a.stats().requests.get("/api/chat").copied().unwrap_or(0), 0);
    let resp = c
        .post(gw.at("/ollama/api/chat/-1"))
        .send_json(&chat_body("llama3.2", 2, false))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "negative indices count from the end");
    assert_eq!(b.stats().requests.get("/api/chat").copied().unwrap_or(0), 2);
    for (path, status) in [
        ("/ollama/api/chat/7", StatusCode::NOT_FOUND),
        ("/ollama/api/chat/abc", StatusCode::BAD_REQUEST),
    ] {
        let mut resp = c
            .post(gw.at(path))
            .send_json(&chat_body("llama3.2", 2, false))
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{path}");
        let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
        assert!(v["error"].is_string());
    }
    gw.stop().await;
}

#[actix_web::test]
async fn delete_forwards_its_body_and_owui_answers_true() {
    let sim = sim().await;
    let gw = Gateway::in_front_of(&sim.url()).await;
    let c = client();
    let copy = json!({"source": "llama3.2", "destination": "llama-copy"});
    let mut resp = c.post(gw.at("/ollama/api/copy")).send_json(&copy).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_of(&mut resp).await, "true");
    let resp = c
        .delete(gw.at("/api/delete"))
        .send_json(&json!({"model": "llama-copy"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "root delete keeps Ollama's empty 200");
    let resp = c
        .delete(gw.at("/api/delete"))
        .send_json(&json!({"model": "llama-copy"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "the body reached the upstream");
    gw.stop().await;
}

#[actix_web::test]
async fn an_upstream_that_drops_mid_stream_ends_with_an_error_line_not_a_clean_end() {
    let sim = SimHandle::start(SimConfig {
        faults: Faults {
            drop_after_chunks: Some(2),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::in_front_of(&sim.url()).await;
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body("llama3.2", 10, true))
        .await
        .unwrap();
    let all = lines(&body_of(&mut resp).await);
    assert_eq!(all.len(), 3, "two chunks and the error line: {all:?}");
    assert!(
        all[2]["error"].as_str().unwrap().contains("before it was complete"),
        "{all:?}"
    );
    // Non-streamed answers are checked against their declared length instead; an upstream
    // mid-stream error line is itself a proper end and passes through untouched.
    sim.set_faults(Faults {
        error_after_chunks: Some(1),
        ..Faults::default()
    });
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body("llama3.2", 10, true))
        .await
        .unwrap();
    let all = lines(&body_of(&mut resp).await);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all[1]["error"].as_str().unwrap().contains("simulated fault"));
    gw.stop().await;
}

#[actix_web::test]
async fn long_jobs_are_not_cut_by_the_first_byte_timeout_and_known_blobs_are_not_resent() {
    use sha2::Digest;
    let sim = SimHandle::start(SimConfig {
        models: vec![corral_sim::SimModel::chat("llama3.2")],
        registry: vec![corral_sim::SimModel::chat("qwen3")],
        // Paces the pull: it ends after about 160 ms.
        tokens_per_sec: 50.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut settings = settings_for(&[&sim.url()]);
    settings.upstream.first_byte_timeout = 0.05;
    let gw = Gateway::start(settings).await;
    // A pull that does not stream answers only when it is done, past the first-byte deadline.
    let mut resp = client()
        .post(gw.at("/api/pull"))
        .send_json(&json!({ "model": "qwen3", "stream": false }))
        .await
        .unwrap();
    let body = body_of(&mut resp).await;
    assert_eq!(resp.status(), StatusCode::OK, "{body:?}");
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["status"], "success");
    // A streamed pull is still held to it: its headers come at once.
    let mut resp = client()
        .post(gw.at("/api/pull"))
        .send_json(&json!({ "model": "qwen3" }))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(lines(&body_of(&mut resp).await).last().unwrap()["status"], "success");

    // An upload of a blob the instance has gets Ollama's 200 (the gateway asks first, as Ollama
    // drops the connection under an upload it does not read).
    let blob = vec![7u8; 8 << 20];
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&blob)));
    let url = gw.at(&format!("/api/blobs/{digest}"));
    let first = client().post(&url).send_body(blob.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let uploads = || sim.stats().requests.get("/api/blobs").copied().unwrap_or(0);
    let blob_path = format!("/api/blobs/{digest}");
    let last_method = || sim.last_request_to(&blob_path).map(|r| r.method).unwrap_or_default();
    for n in 1..=2 {
        let before = uploads();
        let again = client().post(&url).send_body(blob.clone()).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        // The instance was only asked whether it has the blob: one HEAD, and no second upload.
        assert_eq!(
            (uploads() - before, last_method()),
            (1, "HEAD".to_owned()),
            "repeat {n}: the simulator received more than the question"
        );
    }
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    let mut bad = client()
        .post(gw.at(&format!("/api/blobs/sha256:{}", "0".repeat(64))))
        .send_body(blob)
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST, "{:?}", body_of(&mut bad).await);
    gw.stop().await;
}
