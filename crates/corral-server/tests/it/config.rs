//! Configuration in the database: the admin API, persistence across restarts, validation,
//! replicas sharing one PostgreSQL, and a database outage.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use corral_store::test_support::TestDb;
use serde_json::{json, Value};

use crate::support::{body_of, chat_body, client, dead_url, settings_for, sim, Gateway, Relay};

async fn get_config(gw: &Gateway) -> Value {
    let mut resp = client().get(gw.at("/ollama/config")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    serde_json::from_slice(&body_of(&mut resp).await).unwrap()
}

async fn update(gw: &Gateway, body: &Value) -> (StatusCode, Value) {
    let mut resp = client()
        .post(gw.at("/ollama/config/update"))
        .send_json(body)
        .await
        .unwrap();
    let status = resp.status();
    (status, serde_json::from_slice(&body_of(&mut resp).await).unwrap())
}

async fn chat_status(gw: &Gateway, model: &str) -> StatusCode {
    client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body(model, 2, false))
        .await
        .unwrap()
        .status()
}

/// Saved through the API, served at once, and still there after a restart.
async fn survives_a_restart(db: &TestDb) {
    let sim = corral_sim::SimHandle::start(corral_sim::SimConfig {
        api_key: Some("k".to_owned()),
        ..Default::default()
    })
    .await
    .unwrap();
    let base = settings_for(&[&dead_url()]);
    let a = Gateway::with_store(base.clone(), &db.url).await;
    assert_eq!(get_config(&a).await["ENABLE_OLLAMA_API"], true);
    let (status, saved) = update(
        &a,
        &json!({"OLLAMA_BASE_URLS": [sim.url()], "OLLAMA_API_CONFIGS": {"0": {"prefix_id": "x", "key": "k"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(
        saved["ENABLE_OLLAMA_API"], true,
        "omitting ENABLE_OLLAMA_API keeps Ollama on"
    );
    assert_eq!(
        saved["OLLAMA_API_CONFIGS"]["0"]["key"], "********",
        "keys are never returned"
    );
    assert_eq!(
        chat_status(&a, "x.llama3.2").await,
        StatusCode::OK,
        "applied without a restart"
    );
    // The masked key, sent back as the admin page shows it, stands for the saved key of the
    // same URL, and for no other.
    let verify = |url: String| {
        let a = &a;
        async move {
            let mut resp = client()
                .post(a.at("/ollama/verify"))
                .send_json(&json!({ "url": url, "key": "********" }))
                .await
                .unwrap();
            (resp.status(), body_of(&mut resp).await)
        }
    };
    let (status, body) = verify(sim.url()).await;
    assert_eq!(status, StatusCode::OK, "the saved key was sent: {body:?}");
    let (status, body) = verify(dead_url()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}");
    let masked =
        json!({"OLLAMA_BASE_URLS": [sim.url()], "OLLAMA_API_CONFIGS": {"0": {"prefix_id": "x", "key": "********"}}});
    let (status, saved) = update(&a, &masked).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(chat_status(&a, "x.llama3.2").await, StatusCode::OK, "the key was kept");
    let moved = json!({"OLLAMA_BASE_URLS": [dead_url()], "OLLAMA_API_CONFIGS": {"0": {"key": "********"}}});
    let (status, err) = update(&a, &moved).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("OLLAMA_API_CONFIGS.0.key"),
        "{err}"
    );
    assert_eq!(chat_status(&a, "x.llama3.2").await, StatusCode::OK, "nothing changed");
    a.stop().await;

    let b = Gateway::with_store(base, &db.url).await;
    let config = get_config(&b).await;
    assert_eq!(config["OLLAMA_BASE_URLS"], json!([sim.url()]));
    assert_eq!(config["OLLAMA_API_CONFIGS"]["0"]["prefix_id"], "x");
    assert_eq!(
        chat_status(&b, "x.llama3.2").await,
        StatusCode::OK,
        "the saved key survived too"
    );
    b.stop().await;
}

#[actix_web::test]
async fn saved_configuration_survives_a_restart_on_sqlite() {
    survives_a_restart(&TestDb::sqlite()).await;
}

#[actix_web::test]
async fn saved_configuration_survives_a_restart_on_postgres() {
    let Some(db) = TestDb::postgres() else { return };
    survives_a_restart(&db).await;
}

/// The `Authorization` header of the last chat the simulator received.
fn last_authorization(sim: &corral_sim::SimHandle) -> Option<String> {
    let last = sim.last_request_to("/api/chat")?;
    last.headers
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value)
}

/// Connection keys are sealed in the database, still sent after a restart, sealed at start-up when a
/// release before sealing left them in clear, and a changed secret key disables the connection instead of
/// failing the gateway.
async fn keys_are_sealed_at_rest(db: &TestDb) {
    const KEY: &str = "sk-upstream-b1d3f0a2c9";
    let sim = corral_sim::SimHandle::start(corral_sim::SimConfig {
        api_key: Some(KEY.to_owned()),
        ..Default::default()
    })
    .await
    .unwrap();
    let raw = corral_store::Store::open(&db.url, 1).unwrap();
    let rows_hold_no_key = || {
        let rows = raw.raw_connection_rows();
        assert!(!rows.is_empty());
        for (idx, url, config) in rows {
            assert!(
                !config.contains(KEY) && !url.contains(KEY),
                "connection {idx} holds the key in clear: {config}"
            );
        }
    };
    let mut base = settings_for(&[&dead_url()]);
    base.auth.secret_key = "the gateway's secret".to_owned();
    let save = json!({"OLLAMA_BASE_URLS": [sim.url()], "OLLAMA_API_CONFIGS": {"0": {"prefix_id": "x", "key": KEY}}});

    let a = Gateway::with_store(base.clone(), &db.url).await;
    let (status, saved) = update(&a, &save).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    rows_hold_no_key();
    a.stop().await;

    // After a restart the gateway opens the key and sends it.
    let b = Gateway::with_store(base.clone(), &db.url).await;
    assert_eq!(chat_status(&b, "x.llama3.2").await, StatusCode::OK);
    assert_eq!(last_authorization(&sim), Some(format!("Bearer {KEY}")));
    b.stop().await;

    // A row as the release before sealing left it: sealed at start-up, and the key still works.
    raw.put_raw_connection_rows(true, &[(&sim.url(), json!({"prefix_id": "x", "key": KEY}))]);
    assert!(raw.raw_connection_rows()[0].2.contains(KEY), "the old row is in clear");
    let c = Gateway::with_store(base.clone(), &db.url).await;
    rows_hold_no_key();
    assert_eq!(chat_status(&c, "x.llama3.2").await, StatusCode::OK);
    assert_eq!(last_authorization(&sim), Some(format!("Bearer {KEY}")));
    c.stop().await;

    // The secret key changed: the gateway starts, the connection whose key no longer opens is disabled
    // (never contacted without its key), and no request gets a 5xx.
    let mut rotated = base.clone();
    rotated.auth.secret_key = "a new secret".to_owned();
    let d = Gateway::with_store(rotated, &db.url).await;
    let config = get_config(&d).await;
    assert_eq!(config["OLLAMA_API_CONFIGS"]["0"]["enable"], false, "{config}");
    assert!(config["OLLAMA_API_CONFIGS"]["0"].get("key").is_none(), "{config}");
    sim.reset_stats();
    let status = chat_status(&d, "x.llama3.2").await;
    assert!(status.is_client_error(), "{status}");
    let requests = sim.stats().requests;
    assert!(
        !requests.contains_key("/api/chat") && !requests.contains_key("/api/tags"),
        "the disabled connection was asked: {requests:?}"
    );
    // Rotation: the admin enters the key again, and it is sealed under the new secret key.
    let (status, saved) = update(&d, &save).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(chat_status(&d, "x.llama3.2").await, StatusCode::OK);
    assert_eq!(last_authorization(&sim), Some(format!("Bearer {KEY}")));
    rows_hold_no_key();
    d.stop().await;
}

#[actix_web::test]
async fn connection_keys_are_sealed_at_rest_on_sqlite() {
    keys_are_sealed_at_rest(&TestDb::sqlite()).await;
}

#[actix_web::test]
async fn connection_keys_are_sealed_at_rest_on_postgres() {
    let Some(db) = TestDb::postgres() else { return };
    keys_are_sealed_at_rest(&db).await;
}

#[actix_web::test]
async fn updates_are_validated_whole_and_a_failed_one_changes_nothing() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let gw = Gateway::with_store(settings_for(&[&sim.url()]), &db.url).await;
    let before = get_config(&gw).await;
    for (body, names) in [
        (
            json!({"OLLAMA_BASE_URLS": [sim.url(), "ftp://nope"], "OLLAMA_API_CONFIGS": {}}),
            "OLLAMA_BASE_URLS[1]",
        ),
        (
            json!({"OLLAMA_BASE_URLS": [sim.url()], "OLLAMA_API_CONFIGS": {"3": {"key": "k"}}}),
            "OLLAMA_API_CONFIGS.3",
        ),
        (
            json!({"OLLAMA_BASE_URLS": [sim.url()], "OLLAMA_API_CONFIGS": {"0": {"enable": "yes"}}}),
            "OLLAMA_API_CONFIGS.0",
        ),
        (
            json!({"OLLAMA_BASE_URLS": [sim.url()], "OLLAMA_API_CONFIGS": {"http://elsewhere:1": {}}}),
            "OLLAMA_API_CONFIGS.http://elsewhere:1",
        ),
        (json!({"OLLAMA_BASE_URLS": "http://a:1"}), "OLLAMA_BASE_URLS"),
        (
            json!({"ENABLE_OLLAMA_API": "maybe", "OLLAMA_BASE_URLS": []}),
            "ENABLE_OLLAMA_API",
        ),
    ] {
        let (status, err) = update(&gw, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            err["error"].as_str().unwrap().contains(names),
            "{names} not named in {err}"
        );
        assert_eq!(get_config(&gw).await, before, "nothing changed after {body}");
    }
    let mut resp = client()
        .post(gw.at("/ollama/config/update"))
        .content_type("application/json")
        .send_body("{oops")
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(serde_json::from_slice::<Value>(&body_of(&mut resp).await).unwrap()["error"].is_string());

    // Settings keyed by URL (the legacy form) attach to that URL's connection.
    let (status, saved) = update(
        &gw,
        &json!({"ENABLE_OLLAMA_API": true, "OLLAMA_BASE_URLS": [sim.url()], "OLLAMA_API_CONFIGS": {sim.url(): {"prefix_id": "p"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["OLLAMA_API_CONFIGS"]["0"]["prefix_id"], "p");
    assert_eq!(chat_status(&gw, "p.llama3.2").await, StatusCode::OK);
    gw.stop().await;

    let mut open = settings_for(&[&sim.url()]);
    open.server.host = "0.0.0.0".to_owned();
    let gw = Gateway::with_store(open, &db.url).await;
    let resp = client().get(gw.at("/ollama/config")).send().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "admin routes need loopback until auth exists"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn a_change_through_one_replica_is_served_by_the_other_within_two_seconds() {
    let Some(db) = TestDb::postgres() else { return };
    let sim = sim().await;
    let a = Gateway::with_store(settings_for(&[&dead_url()]), &db.url).await;
    let b = Gateway::with_store(settings_for(&[&dead_url()]), &db.url).await;
    let (status, _) = update(&a, &json!({"OLLAMA_BASE_URLS": [sim.url()], "OLLAMA_API_CONFIGS": {}})).await;
    assert_eq!(status, StatusCode::OK);
    let start = Instant::now();
    while get_config(&b).await["OLLAMA_BASE_URLS"] != json!([sim.url()]) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "replica B did not see the change within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        chat_status(&b, "llama3.2").await,
        StatusCode::OK,
        "B routes with the new configuration"
    );
    a.stop().await;
    b.stop().await;
}

#[actix_web::test]
async fn during_a_database_outage_chats_go_on_and_admin_writes_get_503() {
    let Some(db) = TestDb::postgres() else { return };
    let relay = Relay::in_front_of(&db.url);
    let sim = sim().await;
    let gw = Gateway::with_store(settings_for(&[&sim.url()]), &relay.route(&db.url)).await;
    assert_eq!(chat_status(&gw, "llama3.2").await, StatusCode::OK);

    relay.cut();
    for _ in 0..3 {
        assert_eq!(
            chat_status(&gw, "llama3.2").await,
            StatusCode::OK,
            "proxying goes on without the database"
        );
    }
    let (status, err) = update(&gw, &json!({"OLLAMA_BASE_URLS": [sim.url()], "OLLAMA_API_CONFIGS": {}})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert!(err["error"].as_str().unwrap().contains("database"), "{err}");

    relay.restore();
    let start = Instant::now();
    loop {
        let (status, body) = update(
            &gw,
            &json!({"OLLAMA_BASE_URLS": [sim.url()], "OLLAMA_API_CONFIGS": {"0": {"prefix_id": "back"}}}),
        )
        .await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "writes did not recover: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(chat_status(&gw, "back.llama3.2").await, StatusCode::OK);
    gw.stop().await;
}
