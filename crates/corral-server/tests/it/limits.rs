//! Limits per key, user and group over real HTTP: requests, tokens, concurrency and budgets
//! refuse the right request with a 429 in each route's shape and let requests in again when
//! the window turns (the limit clock is frozen and moved by the test, never waited for);
//! bad input; three replicas on one PostgreSQL sharing one key's requests per minute, and a
//! replica cut off from it catching up on what the others spent meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use corral_server::Shared;
use corral_sim::{SimConfig, SimHandle};
use corral_store::test_support::TestDb;
use serde_json::{json, Value};

use crate::support::{chat_body, client, read_lines, settings_for, sim, Gateway, Relay};

/// A minute's start plus one second: 2026-12-02 10:30:01 UTC.
const T0: i64 = 1_796_207_401_000;

struct Reply {
    status: StatusCode,
    headers: actix_web::http::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn call(method: Method, url: &str, bearer: Option<&str>, body: Option<&Value>) -> Reply {
    let mut req = client().request(method, url);
    if let Some(token) = bearer {
        req = req.insert_header(("Authorization", format!("Bearer {token}")));
    }
    let mut resp = match body {
        Some(b) => req.send_json(b).await,
        None => req.send().await,
    }
    .unwrap();
    let bytes = resp.body().limit(64 * 1024 * 1024).await.unwrap();
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// Signs up the first account (an admin) on `gw`; its session token.
async fn admin(gw: &Gateway) -> String {
    let body = json!({"email": "admin@example.com", "password": "correct horse", "name": "Admin"});
    let r = call(Method::POST, &gw.at("/api/v1/auths/signup"), None, Some(&body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["token"].as_str().unwrap().to_owned()
}

/// A user made by the admin, signed in: its id and session token.
async fn user(gw: &Gateway, admin: &str, email: &str) -> (String, String) {
    let body = json!({"email": email, "password": "correct horse", "name": "U", "role": "user"});
    let r = call(Method::POST, &gw.at("/api/v1/auths/add"), Some(admin), Some(&body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let body = json!({"email": email, "password": "correct horse"});
    let r = call(Method::POST, &gw.at("/api/v1/auths/signin"), None, Some(&body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["token"].as_str().unwrap().to_owned(),
    )
}

/// A new API key of the session's user: the key and its id.
async fn new_key(gw: &Gateway, token: &str) -> (String, String) {
    let r = call(
        Method::POST,
        &gw.at("/api/v1/auths/api_key"),
        Some(token),
        Some(&json!({"name": "limits"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    (
        r.body["api_key"].as_str().unwrap().to_owned(),
        r.body["id"].as_str().unwrap().to_owned(),
    )
}

async fn set_limits(gw: &Gateway, admin: &str, scope: &str, id: &str, limits: Value) {
    let url = gw.at(&format!("/api/v1/limits/{scope}/{id}"));
    let r = call(Method::PUT, &url, Some(admin), Some(&limits)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn native_chat(gw: &Gateway, key: &str) -> Reply {
    call(
        Method::POST,
        &gw.at("/api/chat"),
        Some(key),
        Some(&chat_body("llama3.2", 5, false)),
    )
    .await
}

async fn openai_chat(gw: &Gateway, key: &str) -> Reply {
    let body = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5});
    call(Method::POST, &gw.at("/v1/chat/completions"), Some(key), Some(&body)).await
}

/// Waits (at most ten seconds) until `/api/v1/limits/me` says `cond`.
async fn until_me(gw: &Gateway, key: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let me = call(Method::GET, &gw.at("/api/v1/limits/me?model=llama3.2"), Some(key), None).await;
        assert_eq!(me.status, StatusCode::OK, "{}", me.body);
        if cond(&me.body) {
            return me.body;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{what}: {}", me.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_refused(r: &Reply, openai: bool, code: &str, kind: &str) {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!(retry >= 1, "Retry-After {retry}");
    if openai {
        assert_eq!(r.body["error"]["code"], code, "{}", r.body);
        assert_eq!(r.body["error"]["type"], kind, "{}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().len() > 10);
    } else {
        assert!(r.body["error"].as_str().is_some(), "Ollama's shape: {}", r.body);
    }
}

/// Settings for `sim` where users may use every model.
fn open_models(sim: &SimHandle) -> corral_config::Settings {
    let mut settings = settings_for(&[&sim.url()]);
    settings.auth.bypass_model_access_control = true;
    settings
}

async fn gateway(db: &TestDb, sim: &SimHandle) -> (Gateway, Arc<Shared>) {
    let (gw, shared) = Gateway::with_auth_state(open_models(sim), &db.url).await;
    shared.limiter.clock.set_ms(T0);
    (gw, shared)
}

/// A chat through the instance's own OpenAI layer (`/ollama/v1`), passed through.
async fn ollama_v1_chat(gw: &Gateway, key: &str) -> Reply {
    let body = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5});
    call(
        Method::POST,
        &gw.at("/ollama/v1/chat/completions"),
        Some(key),
        Some(&body),
    )
    .await
}

#[actix_web::test]
async fn requests_per_minute_refuse_the_one_over_on_both_apis_and_reset_with_the_minute() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let (gw, shared) = gateway(&db, &sim).await;
    let admin = admin(&gw).await;
    let (_, token) = user(&gw, &admin, "u@example.com").await;
    let (key, key_id) = new_key(&gw, &token).await;
    set_limits(&gw, &admin, "key", &key_id, json!({"requests_per_minute": 3})).await;

    // OpenAI's answers carry the headers, as OpenAI's own do.
    let first = openai_chat(&gw, &key).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.header("x-ratelimit-limit-requests"), Some("3"));
    assert_eq!(first.header("x-ratelimit-remaining-requests"), Some("2"));
    assert_eq!(first.header("x-ratelimit-reset-requests"), Some("59s"));
    // Ollama's have none (no Ollama client reads them): only a refusal carries them.
    let second = native_chat(&gw, &key).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.header("x-ratelimit-remaining-requests"), None);
    assert_eq!(second.header("x-ratelimit-limit-requests"), None);
    let passed = ollama_v1_chat(&gw, &key).await;
    assert_eq!(passed.status, StatusCode::OK, "{}", passed.body);
    assert_eq!(passed.header("x-ratelimit-remaining-requests"), Some("0"));

    let native = native_chat(&gw, &key).await;
    assert_refused(&native, false, "", "");
    assert_eq!(native.header("retry-after"), Some("59"));
    assert_eq!(native.header("x-ratelimit-limit-requests"), Some("3"));
    assert_eq!(native.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(native.header("x-ratelimit-reset-requests"), Some("59s"));
    let openai = openai_chat(&gw, &key).await;
    assert_refused(&openai, true, "rate_limit_exceeded", "requests");
    // The instance's own OpenAI layer, passed through: OpenAI's shape too.
    let passed = ollama_v1_chat(&gw, &key).await;
    assert_refused(&passed, true, "rate_limit_exceeded", "requests");
    assert_eq!(passed.header("x-ratelimit-remaining-requests"), Some("0"));
    // An instance named in the path is no way around the limit.
    for path in ["/ollama/api/chat/0", "/ollama/api/generate/0"] {
        let body = json!({"model": "llama3.2", "prompt": "hi", "messages": [{"role": "user", "content": "hi"}], "stream": false});
        let pinned = call(Method::POST, &gw.at(path), Some(&key), Some(&body)).await;
        assert_refused(&pinned, false, "", "");
        assert_eq!(pinned.header("x-ratelimit-remaining-requests"), Some("0"), "{path}");
    }
    let mut resp = client()
        .get(gw.at("/metrics"))
        .insert_header(("Authorization", format!("Bearer {admin}")))
        .send()
        .await
        .unwrap();
    let metrics = String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap();
    assert!(
        metrics.contains("corral_rate_limited_total{kind=\"requests\"} 5"),
        "{metrics}"
    );
    // The session of the same user is not the key: it has no limit.
    assert_eq!(native_chat(&gw, &token).await.status, StatusCode::OK);

    // Half a minute later: still the same window.
    shared.limiter.clock.set_ms(T0 + 30_000);
    let later = native_chat(&gw, &key).await;
    assert_eq!(later.header("retry-after"), Some("29"));
    assert_eq!(later.header("x-ratelimit-reset-requests"), Some("29s"));
    // The next minute lets it in again.
    shared.limiter.clock.set_ms(T0 + 59_000);
    let again = openai_chat(&gw, &key).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.header("x-ratelimit-remaining-requests"), Some("2"));
    let pinned = call(
        Method::POST,
        &gw.at("/ollama/api/chat/0"),
        Some(&key),
        Some(&chat_body("llama3.2", 2, false)),
    )
    .await;
    assert_eq!(pinned.status, StatusCode::OK, "{}", pinned.body);
    assert_eq!(pinned.header("x-ratelimit-remaining-requests"), None);
    let me = call(Method::GET, &gw.at("/api/v1/limits/me"), Some(&key), None).await;
    assert_eq!(me.body["limits"][0]["requests"]["remaining"], 1, "{}", me.body);
    gw.stop().await;
}

/// An instance's own `x-ratelimit-*` headers (another gateway's behind it, say) do not reach a
/// limited caller beside Corral's: the caller's limits stand in their place, every other header
/// of the instance passes.
#[actix_web::test]
async fn an_instance_s_own_limit_headers_give_way_to_the_caller_s() {
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
        x-ratelimit-limit-requests: 999\r\nx-ratelimit-remaining-requests: 998\r\n\
        x-ratelimit-limit-tokens: 77\r\nx-instance: kept\r\ntransfer-encoding: chunked\r\n\r\n";
    const BODY: &str = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    let db = TestDb::sqlite();
    let url = crate::sockets::chunked_instance_with_head(HEAD, crate::sockets::chunks_of(BODY, &[40]));
    let mut settings = settings_for(&[&url]);
    settings.auth.bypass_model_access_control = true;
    settings.balance.health_interval = 0.0;
    let (gw, _shared) = Gateway::with_auth_state(settings, &db.url).await;
    let admin = admin(&gw).await;
    let (_, token) = user(&gw, &admin, "u@example.com").await;
    let (key, key_id) = new_key(&gw, &token).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let url = gw.at("/ollama/v1/chat/completions");

    // Not limited: the instance's answer as it came.
    let r = call(Method::POST, &url, Some(&key), Some(&body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("999"));
    assert_eq!(r.header("x-instance"), Some("kept"));

    set_limits(&gw, &admin, "key", &key_id, json!({"requests_per_minute": 5})).await;
    let r = call(Method::POST, &url, Some(&key), Some(&body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let all = |name: &str| -> Vec<&str> { r.headers.get_all(name).map(|v| v.to_str().unwrap()).collect() };
    assert_eq!(all("x-ratelimit-limit-requests"), ["5"]);
    assert_eq!(all("x-ratelimit-remaining-requests"), ["4"]);
    assert_eq!(all("x-ratelimit-reset-requests").len(), 1);
    assert_eq!(
        all("x-ratelimit-limit-tokens"),
        Vec::<&str>::new(),
        "no tokens limit, none shown"
    );
    assert_eq!(all("x-instance"), ["kept"]);
    assert_eq!(r.body["choices"][0]["message"]["content"], "hi");
    gw.stop().await;
}

#[actix_web::test]
async fn tokens_per_minute_count_what_the_instance_reported() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let (gw, shared) = gateway(&db, &sim).await;
    let admin = admin(&gw).await;
    let (user_id, token) = user(&gw, &admin, "u@example.com").await;
    let (key, _) = new_key(&gw, &token).await;
    // Per user: the key and the session count together.
    set_limits(&gw, &admin, "user", &user_id, json!({"tokens_per_minute": 20})).await;

    let first = native_chat(&gw, &key).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let used = first.body["prompt_eval_count"].as_u64().unwrap() + first.body["eval_count"].as_u64().unwrap();
    let me = until_me(&gw, &key, "the first request's tokens are counted", |me| {
        me["limits"][0]["tokens"]["remaining"].as_u64() == Some(20u64.saturating_sub(used))
    })
    .await;
    assert_eq!(me["limits"][0]["scope"], "user");
    // Still under: one more passes (and ends over the limit).
    if used < 20 {
        let second = openai_chat(&gw, &token).await;
        assert_eq!(second.status, StatusCode::OK, "{}", second.body);
        assert_eq!(second.header("x-ratelimit-limit-tokens"), Some("20"));
        until_me(&gw, &key, "spent", |me| me["limits"][0]["tokens"]["remaining"] == 0).await;
    }
    let native = native_chat(&gw, &key).await;
    assert_refused(&native, false, "", "");
    assert_eq!(native.header("x-ratelimit-remaining-tokens"), Some("0"));
    assert_eq!(native.header("x-ratelimit-reset-tokens"), Some("59s"));
    let openai = openai_chat(&gw, &token).await;
    assert_refused(&openai, true, "rate_limit_exceeded", "tokens");

    shared.limiter.clock.set_ms(T0 + 60_000);
    assert_eq!(native_chat(&gw, &key).await.status, StatusCode::OK);
    gw.stop().await;
}

#[actix_web::test]
async fn concurrency_holds_until_the_running_answer_ends() {
    let db = TestDb::sqlite();
    let sim = SimHandle::start(SimConfig {
        tokens_per_sec: 40.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (gw, _shared) = gateway(&db, &sim).await;
    let admin = admin(&gw).await;
    let (user_id, token) = user(&gw, &admin, "u@example.com").await;
    let (key, _) = new_key(&gw, &token).await;
    let group = call(
        Method::POST,
        &gw.at("/api/v1/groups/create"),
        Some(&admin),
        Some(&json!({"name": "interns", "user_ids": [user_id]})),
    )
    .await;
    assert_eq!(group.status, StatusCode::OK, "{}", group.body);
    let group_id = group.body["id"].as_str().unwrap();
    set_limits(&gw, &admin, "group", group_id, json!({"concurrent_requests": 1})).await;

    let mut running = client()
        .post(gw.at("/api/chat"))
        .insert_header(("Authorization", format!("Bearer {key}")))
        .send_json(&chat_body("llama3.2", 40, true))
        .await
        .unwrap();
    assert_eq!(running.status(), StatusCode::OK);
    assert_eq!(read_lines(&mut running, 1, Duration::from_secs(10)).await.len(), 1);
    let native = native_chat(&gw, &key).await;
    assert_refused(&native, false, "", "");
    assert_eq!(native.header("retry-after"), Some("1"));
    let openai = openai_chat(&gw, &token).await;
    assert_refused(&openai, true, "rate_limit_exceeded", "requests");
    // The stream ends: the slot is free again.
    let _ = running.body().limit(1 << 20).await;
    until_me(&gw, &key, "the stream's end releases it", |me| {
        me["limits"][0]["concurrent_requests"]["in_flight"] == 0
    })
    .await;
    assert_eq!(native_chat(&gw, &key).await.status, StatusCode::OK);
    gw.stop().await;
}

#[actix_web::test]
async fn a_spent_budget_is_insufficient_quota_for_its_models_until_the_next_period() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let (gw, shared) = gateway(&db, &sim).await;
    let admin = admin(&gw).await;
    let (_, token) = user(&gw, &admin, "u@example.com").await;
    let (key, key_id) = new_key(&gw, &token).await;
    let budget = json!({"budget": {"tokens": 10, "period": "day", "models": ["llama3.2"]}});
    set_limits(&gw, &admin, "key", &key_id, budget).await;

    assert_eq!(native_chat(&gw, &key).await.status, StatusCode::OK);
    until_me(&gw, &key, "the budget is spent", |me| {
        me["limits"][0]["budget"]["remaining"] == 0
    })
    .await;
    let native = native_chat(&gw, &key).await;
    assert_refused(&native, false, "", "");
    assert!(
        native.body["error"].as_str().unwrap().contains("budget"),
        "{}",
        native.body
    );
    // 10:30:01 to midnight.
    assert_eq!(
        native.header("retry-after"),
        Some(&*(13 * 3600 + 29 * 60 + 59).to_string())
    );
    assert_eq!(native.header("x-ratelimit-reset-tokens"), Some("13h29m59s"));
    let openai = openai_chat(&gw, &key).await;
    assert_refused(&openai, true, "insufficient_quota", "insufficient_quota");
    // Another model is outside this budget.
    let embed = call(
        Method::POST,
        &gw.at("/api/embed"),
        Some(&key),
        Some(&json!({"model": "all-minilm", "input": "hi"})),
    )
    .await;
    assert_eq!(embed.status, StatusCode::OK, "{}", embed.body);
    // Tomorrow.
    shared.limiter.clock.set_ms(T0 + 14 * 3_600_000);
    assert_eq!(openai_chat(&gw, &key).await.status, StatusCode::OK);
    gw.stop().await;
}

#[actix_web::test]
async fn bad_limits_are_refused_naming_the_field_and_nothing_is_saved() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let (gw, _) = gateway(&db, &sim).await;
    let admin = admin(&gw).await;
    let (user_id, token) = user(&gw, &admin, "u@example.com").await;
    let (_, key_id) = new_key(&gw, &token).await;
    let put = |path: String, body: Value| {
        let url = gw.at(&path);
        let admin = admin.clone();
        async move { call(Method::PUT, &url, Some(&admin), Some(&body)).await }
    };
    let cases = [
        (json!({"requests_per_minute": -1}), "requests_per_minute"),
        (json!({"tokens_per_minute": 1e30}), "tokens_per_minute"),
        (json!({"concurrent_requests": 0}), "concurrent_requests"),
        (
            json!({"requests_per_minute": 5, "budget": {"tokens": 100, "period": "fortnight"}}),
            "budget.period",
        ),
        (json!({"budget": {"tokens": -100, "period": "day"}}), "budget.tokens"),
        (
            json!({"budget": {"tokens": 100, "period": "day", "reset": "whenever"}}),
            "budget.reset",
        ),
        (json!({"rpm": 5}), "rpm"),
        (json!("sixty"), "body"),
    ];
    for (body, field) in cases {
        let r = put(format!("/api/v1/limits/user/{user_id}"), body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.body);
        assert!(r.body["error"].as_str().unwrap().contains(field), "{body}: {}", r.body);
    }
    let r = put("/api/v1/limits/team/x".to_owned(), json!({"requests_per_minute": 5})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body["error"].as_str().unwrap().contains("scope"), "{}", r.body);
    for scope in ["key", "user", "group"] {
        let r = put(
            format!("/api/v1/limits/{scope}/no-such-id"),
            json!({"requests_per_minute": 5}),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{scope}: {}", r.body);
        assert!(r.body["error"].as_str().unwrap().contains("id"), "{}", r.body);
    }
    // A revoked key is gone.
    let r = call(
        Method::DELETE,
        &gw.at(&format!("/api/v1/auths/api_keys/{key_id}")),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = put(
        format!("/api/v1/limits/key/{key_id}"),
        json!({"requests_per_minute": 5}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    // Nothing was saved.
    let all = call(Method::GET, &gw.at("/api/v1/limits"), Some(&admin), None).await;
    assert_eq!(all.body, json!([]));
    // A good one round-trips, and goes.
    let good = json!({"requests_per_minute": 5, "tokens_per_minute": null, "concurrent_requests": null,
                      "budget": {"tokens": 100, "period": "week", "reset": "rolling", "models": []}});
    let r = put(format!("/api/v1/limits/user/{user_id}"), good.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let url = gw.at(&format!("/api/v1/limits/user/{user_id}"));
    let r = call(Method::GET, &url, Some(&admin), None).await;
    assert_eq!(r.body["budget"], good["budget"]);
    assert_eq!(r.body["requests_per_minute"], 5);
    // Users may not set their own.
    let r = call(Method::PUT, &url, Some(&token), Some(&json!({}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(
        call(Method::DELETE, &url, Some(&admin), None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        call(Method::DELETE, &url, Some(&admin), None).await.status,
        StatusCode::NOT_FOUND
    );
    gw.stop().await;
}

/// Three replicas on one PostgreSQL, one key limited to 60 requests a minute, requests sent
/// to each in turn at a steady pace: the number admitted in the minute is within the stated
/// bound, `60 + (N-1) x r x 2 x (sync + one database round)` with `r` each replica's rate.
#[actix_web::test]
async fn three_replicas_admit_about_sixty_a_minute_between_them() {
    let Some(db) = TestDb::postgres() else { return };
    let sim = sim().await;
    let settings = open_models(&sim);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let (gw, shared) = Gateway::with_auth_state(settings.clone(), &db.url).await;
        shared.limiter.clock.set_ms(T0);
        replicas.push((gw, shared));
    }
    let admin = admin(&replicas[0].0).await;
    let (_, token) = user(&replicas[0].0, &admin, "u@example.com").await;
    let (key, key_id) = new_key(&replicas[0].0, &token).await;
    set_limits(
        &replicas[0].0,
        &admin,
        "key",
        &key_id,
        json!({"requests_per_minute": 60}),
    )
    .await;
    // Every replica knows the key and its limit.
    for (gw, _) in &replicas {
        until_me(gw, &key, "the limit reached every replica", |me| {
            me["limits"][0]["limits"]["requests_per_minute"] == 60
        })
        .await;
    }

    let offered = 120;
    let pace = Duration::from_millis(25);
    let start = Instant::now();
    let mut admitted = 0;
    let mut per_replica = [0u32; 3];
    for i in 0..offered {
        let (gw, _) = &replicas[i % 3];
        let r = native_chat(gw, &key).await;
        match r.status {
            StatusCode::OK => {
                admitted += 1;
                per_replica[i % 3] += 1;
            }
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}: {}", r.body),
        }
        tokio::time::sleep(pace).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Each replica's rate of offered requests bounds the rate it admits at.
    let rate = (offered as f64 / 3.0) / elapsed;
    let sync = corral_server::limits::SYNC.as_secs_f64();
    let lag = 2.0 * (sync + 0.25);
    let bound = 60 + 2 * (rate * lag).ceil() as u32;
    eprintln!(
        "three replicas, 60 requests a minute: {offered} offered over {elapsed:.1}s ({rate:.1}/s per replica), \
         {admitted} admitted ({per_replica:?} per replica); stated bound {bound}"
    );
    assert!(admitted >= 60, "the limit lets 60 in: {admitted}");
    assert!(admitted <= bound, "{admitted} admitted, over the bound {bound}");

    // The next minute, each replica lets the key in again.
    for (gw, shared) in &replicas {
        shared.limiter.clock.set_ms(T0 + 60_000);
        assert_eq!(native_chat(gw, &key).await.status, StatusCode::OK);
    }
    for (gw, _) in replicas {
        gw.stop().await;
    }
}

/// A replica cut off from the database while another spends a day's budget, and back hours
/// later, reads the hours it missed at its first sync (not a minute later, when the once a
/// minute read of every budget hour comes round).
#[actix_web::test]
async fn a_replica_back_from_an_outage_reads_the_budget_spent_meanwhile() {
    let Some(db) = TestDb::postgres() else { return };
    let sim = sim().await;
    let relay = Relay::in_front_of(&db.url);
    let (b, b_shared) = Gateway::with_auth_state(open_models(&sim), &db.url).await;
    let (a, a_shared) = Gateway::with_auth_state(open_models(&sim), &relay.route(&db.url)).await;
    for shared in [&a_shared, &b_shared] {
        shared.limiter.clock.set_ms(T0);
    }
    let admin = admin(&b).await;
    let (_, token) = user(&b, &admin, "u@example.com").await;
    let (key, key_id) = new_key(&b, &token).await;
    let budget = json!({"budget": {"tokens": 10, "period": "day"}});
    set_limits(&b, &admin, "key", &key_id, budget).await;
    until_me(&a, &key, "the budget reached the other replica", |me| {
        me["limits"][0]["budget"]["remaining"] == 10
    })
    .await;

    relay.cut();
    assert_eq!(native_chat(&b, &key).await.status, StatusCode::OK);
    until_me(&b, &key, "the budget is spent", |me| {
        me["limits"][0]["budget"]["remaining"] == 0
    })
    .await;
    // Three hours on, the same day: the spent hour is older than a sync's usual read-back.
    for shared in [&a_shared, &b_shared] {
        shared.limiter.clock.set_ms(T0 + 3 * 3_600_000);
    }
    // The cut-off replica's sync under way fails (a query waits five seconds for a connection)
    // and the next one starts three hours on.
    tokio::time::sleep(Duration::from_millis(6000)).await;
    relay.restore();
    until_me(
        &a,
        &key,
        "the replica back from the outage saw the spent budget",
        |me| me["limits"][0]["budget"]["remaining"] == 0,
    )
    .await;
    assert_refused(&native_chat(&a, &key).await, false, "", "");
    b.stop().await;
    a.stop().await;
}
