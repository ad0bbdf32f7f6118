//! Usage metering end to end: the tokens recorded equal what the simulator served, per user
//! and key, on every model-running route; a cut stream is recorded as cancelled with what was
//! relayed; records survive a database outage under load; the usage API's access, formats and
//! refusals.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use corral_sim::{SimConfig, SimHandle};
use corral_store::test_support::TestDb;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::{chat_body, client, settings_for, sim, Gateway, Relay};

/// A credential: a session token or an API key.
type Cred = String;

async fn call(
    gw: &Gateway,
    method: Method,
    path: &str,
    cred: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String, Vec<u8>) {
    let mut req = client().request(method, gw.at(path));
    if let Some(cred) = cred {
        req = req.insert_header(("Authorization", format!("Bearer {cred}")));
    }
    let mut resp = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    }
    .unwrap();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = resp.body().limit(64 << 20).await.unwrap();
    (resp.status(), ct, bytes.to_vec())
}

async fn json_of(gw: &Gateway, path: &str, cred: &str) -> (StatusCode, Value) {
    let (status, _, body) = call(gw, Method::GET, path, Some(cred), None).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn post(gw: &Gateway, path: &str, cred: Option<&str>, body: Value) -> Value {
    let (status, _, bytes) = call(gw, Method::POST, path, cred, Some(body)).await;
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "{path}: {value}");
    value
}

/// Signs up `email` (the first account becomes admin); its token and user id.
async fn signup(gw: &Gateway, email: &str) -> (Cred, String) {
    let body = post(
        gw,
        "/api/v1/auths/signup",
        None,
        json!({"email": email, "password": "correct horse", "name": email}),
    )
    .await;
    (
        body["token"].as_str().unwrap().to_owned(),
        body["id"].as_str().unwrap().to_owned(),
    )
}

/// A new API key of the session's user: the key and its id.
async fn new_key(gw: &Gateway, token: &str) -> (Cred, String) {
    let body = post(gw, "/api/v1/auths/api_key", Some(token), json!({"name": "usage"})).await;
    (
        body["api_key"].as_str().unwrap().to_owned(),
        body["id"].as_str().unwrap().to_owned(),
    )
}

/// Settings for a metered gateway whose users may use every model.
fn metered(upstream: &str) -> corral_config::Settings {
    let mut settings = settings_for(&[upstream]);
    settings.usage.flush_interval = 0.05;
    settings.auth.default_user_role = "user".to_owned();
    settings.auth.bypass_model_access_control = true;
    settings
}

/// One request of every model-running kind, streamed and not; returns how many were sent.
async fn mixed_run(gw: &Gateway, cred: &str) -> usize {
    let chat = |stream: bool| json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi there"}], "stream": stream, "max_tokens": 6});
    let requests = [
        ("/api/chat", chat_body("llama3.2", 5, true)),
        ("/api/chat", chat_body("llama3.2", 7, false)),
        (
            "/api/generate",
            json!({"model": "llama3.2", "prompt": "hello there", "options": {"num_predict": 4}}),
        ),
        (
            "/ollama/api/generate",
            json!({"model": "llama3.2", "prompt": "a b c d e", "stream": false}),
        ),
        (
            "/api/embed",
            json!({"model": "all-minilm", "input": ["one two", "three"]}),
        ),
        ("/api/embeddings", json!({"model": "all-minilm", "prompt": "x y"})),
        ("/v1/chat/completions", chat(true)),
        ("/v1/chat/completions", chat(false)),
        (
            "/v1/completions",
            json!({"model": "llama3.2", "prompt": "hi", "max_tokens": 3, "stream": true}),
        ),
        (
            "/v1/completions",
            json!({"model": "llama3.2", "prompt": "hi", "max_tokens": 3}),
        ),
        (
            "/v1/embeddings",
            json!({"model": "all-minilm", "input": ["a b c", "d"]}),
        ),
        ("/ollama/v1/chat/completions", chat(true)),
        ("/ollama/v1/chat/completions", chat(false)),
        (
            "/ollama/v1/completions",
            json!({"model": "llama3.2", "prompt": "hi", "max_tokens": 2, "stream": true}),
        ),
    ];
    for (path, body) in &requests {
        let (status, _, bytes) = call(gw, Method::POST, path, Some(cred), Some(body.clone())).await;
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(status, StatusCode::OK, "{path}: {text}");
        if path.starts_with("/ollama/v1/") && body["stream"] == true {
            // The gateway asked for the usage event and took it out: the client did not ask.
            assert!(!text.contains("\"usage\""), "{path}: {text}");
            assert!(text.ends_with("data: [DONE]\n\n"), "{path}: {text}");
        }
    }
    // Asked for by the client, the usage event stays.
    let mut asked = chat(true);
    asked["stream_options"] = json!({"include_usage": true});
    let (status, _, bytes) = call(gw, Method::POST, "/ollama/v1/chat/completions", Some(cred), Some(asked)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&bytes).contains("\"usage\""));
    requests.len() + 1
}

/// Waits until the buffer is written and `requests` records are in.
async fn written(gw: &Gateway, admin: &str, requests: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let (_, status) = json_of(gw, "/api/v1/usage/status", admin).await;
        if status["pending"] == 0 && status["written"].as_u64() >= Some(requests) {
            return status;
        }
        last = status;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("usage records not written: {last}");
}

fn row_key(row: &Value, fields: &[&str]) -> Vec<String> {
    fields
        .iter()
        .map(|f| row[*f].as_str().unwrap_or("-").to_owned())
        .collect()
}

async fn metering_is_exact(db: TestDb) {
    let sim = sim().await;
    let gw = Gateway::with_auth(metered(&sim.url()), &db.url).await;
    let (admin, admin_id) = signup(&gw, "admin@example.com").await;
    post(
        &gw,
        "/api/v1/auths/admin/config",
        Some(&admin),
        json!({"ENABLE_SIGNUP": true}),
    )
    .await;
    let (alice, alice_id) = signup(&gw, "alice@example.com").await;
    let (bob, bob_id) = signup(&gw, "bob@example.com").await;
    let group = post(
        &gw,
        "/api/v1/groups/create",
        Some(&admin),
        json!({"name": "team", "user_ids": [alice_id]}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (alice_k1, alice_k1_id) = new_key(&gw, &alice).await;
    let (alice_k2, alice_k2_id) = new_key(&gw, &alice).await;
    let (bob_k, bob_k_id) = new_key(&gw, &bob).await;
    let callers = [
        (&admin, &admin_id, "-".to_owned()),
        (&alice, &alice_id, "-".to_owned()),
        (&alice_k1, &alice_id, alice_k1_id),
        (&alice_k2, &alice_id, alice_k2_id),
        (&bob_k, &bob_id, bob_k_id),
        (&bob, &bob_id, "-".to_owned()),
    ];
    // What the simulator served, per user and key.
    let mut expected: BTreeMap<Vec<String>, (u64, u64, u64)> = BTreeMap::new();
    let mut sent = 0u64;
    for (cred, user, key) in &callers {
        sim.reset_stats();
        let n = mixed_run(&gw, cred).await as u64;
        let stats = sim.stats();
        let e = expected.entry(vec![(*user).clone(), key.clone()]).or_default();
        *e = (e.0 + n, e.1 + stats.prompt_tokens, e.2 + stats.completion_tokens);
        assert!(stats.prompt_tokens > 0 && stats.completion_tokens > 0);
        sent += n;
    }
    let status = written(&gw, &admin, sent).await;
    assert_eq!(status["dropped"], 0, "{status}");

    let (code, total) = json_of(&gw, "/api/v1/usage", &admin).await;
    assert_eq!(code, StatusCode::OK, "{total}");
    let total = &total["rows"][0];
    let sum = |i: usize| expected.values().map(|e| [e.0, e.1, e.2][i]).sum::<u64>();
    eprintln!(
        "metered {} requests: {} prompt and {} completion tokens recorded; the simulator served {} and {}",
        total["requests"],
        total["prompt_tokens"],
        total["completion_tokens"],
        sum(1),
        sum(2)
    );
    assert_eq!(total["requests"], sent);
    assert_eq!(total["prompt_tokens"], sum(1));
    assert_eq!(total["completion_tokens"], sum(2));
    assert_eq!(total["cancelled"], 0);
    // The legacy `/api/embeddings` gives no counts: its records say so.
    assert_eq!(total["estimated"], callers.len());

    let (_, by_key) = json_of(&gw, "/api/v1/usage?group_by=user,key", &admin).await;
    let got: BTreeMap<Vec<String>, (u64, u64, u64)> = by_key["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                row_key(r, &["user", "key"]),
                (
                    r["requests"].as_u64().unwrap(),
                    r["prompt_tokens"].as_u64().unwrap(),
                    r["completion_tokens"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(got, expected);

    // Alice's requests count under her group; the others under none.
    let (_, by_group) = json_of(&gw, "/api/v1/usage?group_by=group", &admin).await;
    let team = by_group["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["group"] == group.as_str())
        .unwrap()
        .clone();
    let alice_sent: u64 = expected
        .iter()
        .filter(|(k, _)| k[0] == alice_id)
        .map(|(_, e)| e.0)
        .sum();
    assert_eq!(team["requests"], alice_sent);
    let (_, filtered) = json_of(&gw, &format!("/api/v1/usage?group={group}"), &admin).await;
    assert_eq!(filtered["rows"][0]["requests"], alice_sent);
    let (_, by_route) = json_of(&gw, "/api/v1/usage?group_by=model,instance,day", &admin).await;
    assert_eq!(by_route["rows"].as_array().unwrap().len(), 2, "{by_route}");

    // A user sees only their own usage.
    let (_, own) = json_of(&gw, "/api/v1/usage?group_by=user", &bob_k).await;
    assert_eq!(own["rows"].as_array().unwrap().len(), 1, "{own}");
    assert_eq!(own["rows"][0]["user"], bob_id.as_str());
    let (code, refused) = json_of(&gw, &format!("/api/v1/usage?user={alice_id}"), &bob).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{refused}");
    let (code, _) = json_of(&gw, "/api/v1/usage/status", &bob).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, me) = json_of(&gw, "/api/v1/usage/me", &alice_k1).await;
    assert_eq!(code, StatusCode::OK, "{me}");
    assert_eq!(me["total"]["requests"], alice_sent);
    assert_eq!(me["today"]["requests"], alice_sent);

    // CSV, asked for by parameter or by `Accept`.
    let (code, ct, csv) = call(
        &gw,
        Method::GET,
        "/api/v1/usage?group_by=user&format=csv",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert!(ct.starts_with("text/csv"), "{ct}");
    let csv = String::from_utf8(csv).unwrap();
    assert!(
        csv.starts_with("user,requests,prompt_tokens,completion_tokens,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let mut req = client().get(gw.at("/api/v1/usage"));
    req = req
        .insert_header(("Authorization", format!("Bearer {admin}")))
        .insert_header(("Accept", "text/csv"));
    let mut resp = req.send().await.unwrap();
    let body = resp.body().await.unwrap();
    assert!(String::from_utf8_lossy(&body).starts_with("requests,"));

    // Bad input is a 400 that names the parameter.
    for (query, field) in [
        ("from=yesterday", "from"),
        ("to=2026-02-30", "to"),
        ("group_by=user,colour", "group_by"),
        ("instance=first", "instance"),
        ("format=xml", "format"),
        ("colour=red", "colour"),
        ("from=2026-12-05&to=2026-12-01", "to"),
    ] {
        let (code, body) = json_of(&gw, &format!("/api/v1/usage?{query}"), &admin).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{query}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(&format!("{field}:")), "{query}: {body}");
    }
}

#[actix_web::test]
async fn metering_is_exact_on_sqlite() {
    metering_is_exact(TestDb::sqlite()).await;
}

#[actix_web::test]
async fn metering_is_exact_on_postgres() {
    let Some(db) = TestDb::postgres() else { return };
    metering_is_exact(db).await;
}

#[actix_web::test]
async fn a_cut_stream_is_recorded_as_cancelled_with_what_was_relayed() {
    let sim = SimHandle::start(SimConfig {
        tokens_per_sec: 50.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let db = TestDb::sqlite();
    let gw = Gateway::with_auth(metered(&sim.url()), &db.url).await;
    let (admin, _) = signup(&gw, "admin@example.com").await;
    let cut = |path: &'static str, body: Value| {
        let admin = admin.clone();
        let url = gw.at(path);
        async move {
            let mut resp = client()
                .post(url)
                .insert_header(("Authorization", format!("Bearer {admin}")))
                .send_json(&body)
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let mut seen = Vec::new();
            while seen.iter().filter(|b| **b == b'\n').count() < 6 {
                seen.extend_from_slice(&resp.next().await.unwrap().unwrap());
            }
        }
    };
    cut("/api/chat", chat_body("llama3.2", 200, true)).await;
    cut(
        "/ollama/v1/chat/completions",
        json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": true, "max_tokens": 200}),
    )
    .await;
    written(&gw, &admin, 2).await;
    let (_, report) = json_of(&gw, "/api/v1/usage?group_by=model", &admin).await;
    let row = &report["rows"][0];
    assert_eq!(
        (
            row["requests"].as_u64(),
            row["cancelled"].as_u64(),
            row["estimated"].as_u64()
        ),
        (Some(2), Some(2), Some(2)),
        "{report}"
    );
    // Each relayed line counts as a token: at least what the client read, far from the 400 asked.
    let relayed = row["completion_tokens"].as_u64().unwrap();
    assert!((6..400).contains(&relayed), "{report}");
    assert_eq!(sim.stats().completion_tokens, 0, "the simulator finished neither");
    let store = corral_store::Store::open(&db.url, 1).unwrap();
    let records = store.usage_records().unwrap();
    assert!(records
        .iter()
        .all(|r| r.cancelled && r.estimated && r.status == 200 && r.context.streamed));
    assert_eq!(
        records.iter().map(|r| r.context.route.as_str()).collect::<Vec<_>>(),
        ["chat", "ollama_v1"]
    );
}

#[actix_web::test]
async fn usage_survives_a_database_outage_under_load() {
    let Some(db) = TestDb::postgres() else { return };
    let sim = sim().await;
    let relay = Relay::in_front_of(&db.url);
    let gw = Gateway::with_auth(metered(&sim.url()), &relay.route(&db.url)).await;
    let (admin, _) = signup(&gw, "admin@example.com").await;
    let (key, _) = new_key(&gw, &admin).await;
    sim.reset_stats();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..8usize {
        let (url_chat, url_oai, key, stop) = (
            gw.at("/api/chat"),
            gw.at("/v1/chat/completions"),
            key.clone(),
            stop.clone(),
        );
        load.push(actix_rt::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (url, body) = if (sent as usize + worker).is_multiple_of(2) {
                    (&url_chat, chat_body("llama3.2", 1 + worker, sent.is_multiple_of(3)))
                } else {
                    (
                        &url_oai,
                        json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": sent % 3 == 1, "max_tokens": 3}),
                    )
                };
                let mut resp = client()
                    .post(url)
                    .insert_header(("Authorization", format!("Bearer {key}")))
                    .send_json(&body)
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                resp.body().await.unwrap();
                sent += 1;
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.cut();
    // Served on during the outage; the records wait in memory.
    let mut during = Value::Null;
    for _ in 0..400 {
        let (_, status) = json_of(&gw, "/api/v1/usage/status", &admin).await;
        if status["database_failing"] == true && status["pending"].as_u64() > Some(100) {
            during = status;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(during["database_failing"], true, "{during}");
    relay.restore();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for worker in load {
        sent += worker.await.unwrap();
    }
    let status = written(&gw, &admin, sent).await;
    let stats = sim.stats();
    let store = corral_store::Store::open(&db.url, 1).unwrap();
    let total = &store
        .usage_report(&corral_store::UsageQuery {
            from_ms: 0,
            to_ms: i64::MAX,
            key: None,
            ..corral_store::UsageQuery::default()
        })
        .unwrap()[0];
    eprintln!(
        "outage: {sent} requests, {} buffered at the cut's height; recorded {} requests, {} prompt and {} completion tokens; the simulator served {} and {}; status {status}",
        during["pending"], total.requests, total.input_tokens, total.output_tokens, stats.prompt_tokens, stats.completion_tokens
    );
    assert_eq!(status["dropped"], 0);
    assert_eq!(total.requests as u64, sent);
    assert_eq!(total.input_tokens as u64, stats.prompt_tokens);
    assert_eq!(total.output_tokens as u64, stats.completion_tokens);
}

#[actix_web::test]
async fn records_past_the_retention_period_are_pruned() {
    let sim = sim().await;
    let db = TestDb::sqlite();
    let store = corral_store::Store::open(&db.url, 1).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let context = std::sync::Arc::new(
        corral_store::UsageContext {
            id: 0,
            user_id: None,
            key_id: None,
            groups: vec!["g".to_owned()],
            model_asked: "llama3.2".to_owned(),
            model_run: "llama3.2:latest".to_owned(),
            instance: Some(0),
            route: "chat".to_owned(),
            streamed: false,
        }
        .identified(),
    );
    let record = |seq: i64, days_ago: i64| corral_store::UsageRecord {
        at_ms: now - days_ago * 86_400_000,
        seq,
        context: context.clone(),
        status: 200,
        cancelled: false,
        estimated: false,
        input_tokens: 1,
        output_tokens: 1,
        ttft_ms: None,
        duration_ms: 1,
    };
    store.insert_usage(&[record(1, 40), record(2, 5)]).unwrap();
    let mut settings = metered(&sim.url());
    settings.usage.retention_days = 30;
    let _gw = Gateway::with_store(settings, &db.url).await;
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids = store
            .usage_records()
            .unwrap()
            .into_iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>();
        if ids.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(ids, [2], "the recent record stays, the old one is pruned");
}
