//! Replicas on one PostgreSQL: a key revoked through one is refused by the others, pushed by
//! `LISTEN`/`NOTIFY` (the delay over 100 revocations is printed, not asserted) or, with
//! notifications off, picked up by polling; readiness (`/ready`).

use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use corral_store::test_support::TestDb;
use serde_json::{json, Value};

use crate::support::{client, dead_url, settings_for, sim, Gateway};

async fn call(method: Method, url: &str, bearer: Option<&str>, body: Option<&Value>) -> (StatusCode, Value) {
    let mut req = client().request(method, url);
    if let Some(token) = bearer {
        req = req.insert_header(("Authorization", format!("Bearer {token}")));
    }
    let mut resp = match body {
        Some(b) => req.send_json(b).await,
        None => req.send().await,
    }
    .unwrap();
    let bytes = resp.body().await.unwrap();
    (resp.status(), serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Signs up the first account (an admin) on `gw`; its session token.
async fn admin(gw: &Gateway) -> String {
    let body = json!({"email": "admin@example.com", "password": "correct horse", "name": "Admin"});
    let (status, body) = call(Method::POST, &gw.at("/api/v1/auths/signup"), None, Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// A new API key of the session's user: the key and its id.
async fn new_key(gw: &Gateway, token: &str) -> (String, String) {
    let body = json!({"name": "replicas"});
    let (status, body) = call(Method::POST, &gw.at("/api/v1/auths/api_key"), Some(token), Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["api_key"].as_str().unwrap().to_owned(),
        body["id"].as_str().unwrap().to_owned(),
    )
}

async fn status_with(gw: &Gateway, key: &str) -> StatusCode {
    call(Method::GET, &gw.at("/api/tags"), Some(key), None).await.0
}

/// Waits until every one of `gateways` answers `key` with `want`, for at most 10 seconds.
async fn until_all(gateways: &[&Gateway], key: &str, want: StatusCode) -> Duration {
    let start = Instant::now();
    for gw in gateways {
        loop {
            if status_with(gw, key).await == want {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{} still does not answer {want}",
                gw.url
            );
            tokio::task::yield_now().await;
        }
    }
    start.elapsed()
}

/// Revokes `changes` keys through A and measures how long until B and C both refuse each.
async fn revocations_reach_the_other_replicas(notify: bool, changes: usize) -> Option<Vec<Duration>> {
    let db = TestDb::postgres()?;
    let sim = sim().await;
    let mut settings = settings_for(&[&sim.url()]);
    settings.database.notify = notify;
    let a = Gateway::with_auth(settings.clone(), &db.url).await;
    let b = Gateway::with_auth(settings.clone(), &db.url).await;
    let c = Gateway::with_auth(settings, &db.url).await;
    let token = admin(&a).await;
    let mut keys = Vec::new();
    for _ in 0..changes {
        keys.push(new_key(&a, &token).await);
    }
    let (last, _) = keys.last().unwrap().clone();
    until_all(&[&b, &c], &last, StatusCode::OK).await;

    let mut delays = Vec::new();
    for (key, id) in &keys {
        let url = a.at(&format!("/api/v1/auths/api_keys/{id}"));
        let (status, body) = call(Method::DELETE, &url, Some(&token), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            status_with(&a, key).await,
            StatusCode::UNAUTHORIZED,
            "A refuses at once"
        );
        delays.push(until_all(&[&b, &c], key, StatusCode::UNAUTHORIZED).await);
    }
    a.stop().await;
    b.stop().await;
    c.stop().await;
    Some(delays)
}

fn report(what: &str, mut delays: Vec<Duration>) {
    delays.sort();
    let at = |q: f64| delays[((delays.len() as f64 * q).ceil() as usize).clamp(1, delays.len()) - 1];
    eprintln!(
        "{what}: {} revocations on A refused by B and C after p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        delays.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        delays.last().unwrap().as_secs_f64() * 1e3,
    );
}

#[actix_web::test]
async fn a_key_revoked_on_a_is_refused_by_b_and_c_through_notifications() {
    let Some(delays) = revocations_reach_the_other_replicas(true, 100).await else {
        return;
    };
    report("LISTEN/NOTIFY", delays);
}

#[actix_web::test]
async fn with_notifications_off_polling_still_carries_revocations() {
    let Some(delays) = revocations_reach_the_other_replicas(false, 5).await else {
        return;
    };
    report("polling", delays);
}

/// `/ready`'s answer once it is 200, or its last answer after two seconds.
async fn ready_soon(gw: &Gateway) -> (StatusCode, Value) {
    let mut last = call(Method::GET, &gw.at("/ready"), None, None).await;
    for _ in 0..100 {
        if last.0 == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        last = call(Method::GET, &gw.at("/ready"), None, None).await;
    }
    last
}

#[actix_web::test]
async fn an_instance_never_heard_from_does_not_make_the_replica_ready() {
    // Health checks off, and the instance never answers a listing: its health is only a default.
    let mut settings = settings_for(&[&dead_url()]);
    settings.balance.health_interval = 0.0;
    let gw = Gateway::start(settings).await;
    let (status, body) = call(Method::GET, &gw.at("/ready"), None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["checks"]["instances"],
        json!({"enabled": 1, "healthy": 0}),
        "{body}"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn ready_says_what_is_wrong() {
    let sim = sim().await;
    let gw = Gateway::start(settings_for(&[&sim.url()])).await;
    // Ready once the instance has answered (the first catalogue refresh, right after start).
    let (status, body) = ready_soon(&gw).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["checks"]["instances"], json!({"enabled": 1, "healthy": 1}));
    assert_eq!(body["checks"]["database"], "none");
    gw.stop().await;

    // The only instance is dead: once it is ejected, the replica is not ready, and says why.
    let mut settings = settings_for(&[&dead_url()]);
    settings.balance.health_interval = 0.05;
    settings.balance.failures_to_eject = 1;
    settings.balance.ejection_time = 60.0;
    let gw = Gateway::start(settings).await;
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, body) = call(Method::GET, &gw.at("/ready"), None, None).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            last = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last["ready"], false, "{last}");
    assert!(last["reason"].as_str().unwrap().contains("healthy"), "{last}");
    // Liveness stays up.
    assert_eq!(call(Method::GET, &gw.at("/health"), None, None).await.0, StatusCode::OK);
    gw.stop().await;
}

#[actix_web::test]
async fn ready_with_a_database_reports_it_answering() {
    let db = TestDb::sqlite();
    let sim = sim().await;
    let gw = Gateway::with_store(settings_for(&[&sim.url()]), &db.url).await;
    let (status, body) = ready_soon(&gw).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["database"], "answering", "{body}");
    gw.stop().await;
}

#[actix_web::test]
async fn a_replica_that_lost_the_database_catches_up_when_it_is_back() {
    let Some(db) = TestDb::postgres() else { return };
    let sim = sim().await;
    let settings = settings_for(&[&sim.url()]);
    let a = Gateway::with_auth(settings.clone(), &db.url).await;
    let token = admin(&a).await;
    let (key, id) = new_key(&a, &token).await;
    // B reaches the database through a relay the test cuts.
    let relay = crate::support::Relay::start("127.0.0.1:5432".parse().unwrap());
    let b = Gateway::with_auth(settings, &relay.route(&db.url)).await;
    until_all(&[&b], &key, StatusCode::OK).await;

    relay.cut();
    let url = a.at(&format!("/api/v1/auths/api_keys/{id}"));
    let (status, body) = call(Method::DELETE, &url, Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Without its database B serves with what it knew; once back, it reloads and refuses.
    assert_eq!(status_with(&b, &key).await, StatusCode::OK, "B cannot know yet");
    relay.restore();
    let start = Instant::now();
    loop {
        if status_with(&b, &key).await == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "B never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}
