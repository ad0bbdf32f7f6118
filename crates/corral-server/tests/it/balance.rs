//! Routing that beats random: the loaded instance first, failover before the first byte,
//! ejection of dead and busy instances, no retry once bytes flowed, and the status view.

use std::time::Duration;

use actix_web::http::StatusCode;
use corral_config::Slots;
use corral_sim::{Faults, SimConfig, SimHandle, SimModel};
use serde_json::Value;

use crate::support::{body_of, chat_body, client, lines, read_lines, settings_for, Gateway};

async fn plain_sim() -> SimHandle {
    SimHandle::start(SimConfig {
        models: vec![SimModel::chat("llama3.2")],
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

async fn chat(gw: &Gateway) -> StatusCode {
    client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body("llama3.2", 2, false))
        .await
        .unwrap()
        .status()
}

fn chats(sim: &SimHandle) -> u64 {
    sim.stats().requests.get("/api/chat").copied().unwrap_or(0)
}

async fn status(gw: &Gateway) -> Value {
    let mut resp = client().get(gw.at("/ollama/status")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    serde_json::from_slice(&body_of(&mut resp).await).unwrap()
}

async fn warm(gw: &Gateway) {
    let resp = client().get(gw.at("/api/tags")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[actix_web::test]
async fn model_affinity_sends_requests_where_the_model_is_loaded() {
    let cold = plain_sim().await;
    let loaded = SimHandle::start(SimConfig {
        models: vec![SimModel::chat("llama3.2")],
        loaded: vec!["llama3.2".to_owned()],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(settings_for(&[&cold.url(), &loaded.url()])).await;
    warm(&gw).await;
    for _ in 0..10 {
        assert_eq!(chat(&gw).await, StatusCode::OK);
    }
    assert_eq!(
        (chats(&cold), chats(&loaded)),
        (0, 10),
        "every request went to the warm instance"
    );
    assert_eq!(cold.stats().cold_loads, 0);
    gw.stop().await;
}

#[actix_web::test]
async fn a_dead_instance_is_failed_over_and_ejected() {
    let a = plain_sim().await;
    let b = plain_sim().await;
    let mut settings = settings_for(&[&a.url(), &b.url()]);
    settings.balance.policy = "round_robin".to_owned();
    let gw = Gateway::start(settings).await;
    warm(&gw).await;
    b.stop().await;
    for i in 0..10 {
        assert_eq!(
            chat(&gw).await,
            StatusCode::OK,
            "request {i} failed over to the live instance"
        );
    }
    assert_eq!(chats(&a), 10);
    let s = status(&gw).await;
    assert_eq!(s["instances"][1]["health"], "ejected", "{s}");
    assert_eq!(s["instances"][0]["health"], "healthy");
    let mut resp = client().get(gw.at("/ollama/api/tags")).send().await.unwrap();
    let tags: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    // While it is out it is not asked; what it listed last stands, marked ejected.
    let expected = serde_json::json!({"0": "healthy", "1": "ejected"});
    assert_eq!(
        tags["models"][0]["health"], expected,
        "the dead one is shown as ejected: {tags}"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn a_model_can_have_its_own_policy() {
    let a = plain_sim().await;
    let b = plain_sim().await;
    let mut settings = settings_for(&[&a.url(), &b.url()]);
    settings
        .balance
        .per_model
        .insert("llama3.2:latest".to_owned(), "round_robin".to_owned());
    let gw = Gateway::start(settings).await;
    warm(&gw).await;
    for _ in 0..10 {
        assert_eq!(chat(&gw).await, StatusCode::OK);
    }
    assert_eq!(
        (chats(&a), chats(&b)),
        (5, 5),
        "round robin for this model, where the default would stick to one"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn a_fast_503_instance_is_ejected_and_its_requests_retried() {
    let a = plain_sim().await;
    let busy = plain_sim().await;
    busy.set_faults(Faults {
        error_rate: 1.0,
        error_status: 503,
        error_message: "server busy, please try again.  maximum pending requests exceeded".to_owned(),
        error_route: Some("/api/chat".to_owned()),
        ..Faults::default()
    });
    let mut settings = settings_for(&[&a.url(), &busy.url()]);
    settings.balance.policy = "round_robin".to_owned();
    let gw = Gateway::start(settings).await;
    warm(&gw).await;
    for _ in 0..20 {
        assert_eq!(
            chat(&gw).await,
            StatusCode::OK,
            "the 503 was retried on the other instance"
        );
    }
    assert_eq!(
        busy.stats().injected_errors,
        3,
        "three failures eject it; then it is left alone"
    );
    assert_eq!(chats(&a), 20);
    assert_eq!(status(&gw).await["instances"][1]["health"], "ejected");
    let mut resp = client().get(gw.at("/ollama/api/tags")).send().await.unwrap();
    let tags: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    let expected = serde_json::json!({"0": "healthy", "1": "ejected"});
    assert_eq!(
        tags["models"][0]["health"], expected,
        "the busy one still lists its models: {tags}"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn nothing_is_retried_once_bytes_reached_the_client() {
    let faults = Faults {
        drop_after_chunks: Some(2),
        ..Faults::default()
    };
    let a = SimHandle::start(SimConfig {
        models: vec![SimModel::chat("llama3.2")],
        faults: faults.clone(),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let b = SimHandle::start(SimConfig {
        models: vec![SimModel::chat("llama3.2")],
        faults,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(settings_for(&[&a.url(), &b.url()])).await;
    warm(&gw).await;
    for _ in 0..5 {
        let mut resp = client()
            .post(gw.at("/api/chat"))
            .send_json(&chat_body("llama3.2", 10, true))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let all = lines(&body_of(&mut resp).await);
        assert_eq!(all.len(), 3, "two chunks, then a clean error: {all:?}");
        assert!(all[2]["error"].is_string());
    }
    assert_eq!(chats(&a) + chats(&b), 5, "one upstream attempt per request");
    gw.stop().await;
}

#[actix_web::test]
async fn the_status_view_shows_loaded_models_and_requests_in_flight() {
    let sim = SimHandle::start(SimConfig {
        models: vec![SimModel::chat("llama3.2")],
        tokens_per_sec: 20.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(settings_for(&[&sim.url()])).await;
    warm(&gw).await;
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body("llama3.2", 200, true))
        .await
        .unwrap();
    assert_eq!(read_lines(&mut resp, 1, Duration::from_secs(5)).await.len(), 1);
    let s = status(&gw).await;
    let me = &s["instances"][0];
    assert_eq!(me["in_flight"], 1, "{s}");
    assert_eq!(me["in_flight"].as_u64(), Some(sim.stats().in_flight));
    assert_eq!(me["loaded"], serde_json::json!(sim.loaded_models()), "{s}");
    assert_eq!(me["reachable"], true);
    assert!(me["ttft_ms"].as_f64().is_some());
    assert_eq!(s["policy"], "model_affinity");
    drop(resp);
    gw.stop().await;
}

/// Status and `Retry-After` of one 20-token chat (about a second at 20 tokens/s).
async fn timed_chat(url: String) -> (StatusCode, Option<String>) {
    let body = chat_body("llama3.2", 20, false);
    let resp = client().post(url).send_json(&body).await.unwrap();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status(), retry)
}

#[actix_web::test]
async fn when_every_slot_is_taken_requests_queue_and_a_full_queue_gets_503() {
    let (sim, gw, url) = latched_one_slot(|u| {
        let mut s = settings_for(&[u]);
        s.balance.queue_size = 1;
        s
    })
    .await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // A holds the only slot (its stream stops after the first chunk until the latch opens).
    let _a = queued_chat(url.clone(), None, "a".to_owned(), tx.clone());
    assert_eq!(rx.recv().await.unwrap().0, "a");
    // B waits for the slot; C finds the queue full.
    let _b = queued_chat(url.clone(), None, "b".to_owned(), tx.clone());
    until("b queued", async || waiting(&gw, "llama3.2:latest").await == 1).await;
    let (c, retry) = timed_chat(url.clone()).await;
    assert_eq!(c, StatusCode::SERVICE_UNAVAILABLE, "the third found the queue full");
    assert!(retry.is_some(), "a 503 from the queue says when to retry");
    assert!(rx.try_recv().is_err(), "B did not start while A held the slot");
    // Listings never queue.
    assert_eq!(
        client().get(gw.at("/api/tags")).send().await.unwrap().status(),
        StatusCode::OK
    );
    sim.release_latch();
    assert_eq!(
        rx.recv().await.unwrap().0,
        "b",
        "the second ran once the first gave the slot back"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn a_wait_past_the_queue_timeout_gets_503_with_retry_after() {
    let (sim, gw, url) = latched_one_slot(|u| {
        let mut s = settings_for(&[u]);
        s.balance.queue_timeout = 0.3;
        s
    })
    .await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _a = queued_chat(url.clone(), None, "a".to_owned(), tx.clone());
    assert_eq!(rx.recv().await.unwrap().0, "a");
    // While A holds the slot (the latch is shut), the second waits out the queue timeout.
    let second = timed_chat(url.clone()).await;
    assert_eq!(second.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.1.as_deref(), Some("1"));
    assert_eq!(
        sim.stats().requests.get("/api/chat").copied(),
        Some(1),
        "the refused request never reached the instance"
    );
    sim.release_latch();
    gw.stop().await;
}

#[actix_web::test]
async fn active_checks_eject_a_silent_instance_and_bring_it_back() {
    let a = plain_sim().await;
    let b = plain_sim().await;
    let b_addr = b.addr();
    let mut settings = settings_for(&[&a.url(), &b.url()]);
    settings.balance.health_interval = 0.1;
    settings.balance.failures_to_eject = 2;
    settings.balance.ejection_time = 0.3;
    let gw = Gateway::start(settings).await;
    b.stop().await;
    until("active checks eject the instance without any traffic", async || {
        status(&gw).await["instances"][1]["health"] == "ejected"
    })
    .await;
    let _b = SimHandle::start_on(
        SimConfig {
            models: vec![SimModel::chat("llama3.2")],
            ..SimConfig::default()
        },
        b_addr,
    )
    .await
    .unwrap();
    until("a good check after the ejection brings it back", async || {
        status(&gw).await["instances"][1]["health"] == "healthy"
    })
    .await;
    gw.stop().await;
}

#[actix_web::test]
async fn show_and_unload_run_nothing_so_they_wait_for_no_slot() {
    let (sim, gw, url) = latched_one_slot(|u| {
        let mut s = settings_for(&[u]);
        s.balance.queue_timeout = 0.3;
        s
    })
    .await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _a = queued_chat(url.clone(), None, "a".to_owned(), tx.clone());
    assert_eq!(rx.recv().await.unwrap().0, "a");
    // While the chat holds the only slot (the latch is shut, so it cannot end), a show and an
    // unload answer, where another chat waits past the queue timeout and gets a 503.
    let show = client()
        .post(gw.at("/api/show"))
        .send_json(&serde_json::json!({ "model": "llama3.2" }))
        .await
        .unwrap()
        .status();
    assert_eq!(show, StatusCode::OK, "a show waited for the chat's slot");
    let mut resp = client()
        .post(gw.at("/api/generate"))
        .send_json(&serde_json::json!({ "model": "llama3.2", "prompt": "", "keep_alive": 0 }))
        .await
        .unwrap();
    let unload: Value = resp.json().await.unwrap();
    assert_eq!(unload["done_reason"], "unload", "{unload}");
    assert_eq!(
        timed_chat(url).await.0,
        StatusCode::SERVICE_UNAVAILABLE,
        "the slot was really taken"
    );
    sim.release_latch();
    until("the slot is given back", async || {
        status(&gw).await["instances"][0]["in_flight"] == 0
    })
    .await;
    gw.stop().await;
}

/// Sends `body` to `url` over a connection of its own and keeps the connection; dropping the
/// returned stream closes it, as a client that gives up does.
async fn send_and_hold(url: &str, body: &Value) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut conn = tokio::net::TcpStream::connect(authority).await.unwrap();
    let body = body.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    conn
}

#[actix_web::test]
async fn a_client_that_leaves_before_its_answer_gives_back_its_slot_and_its_place_in_the_queue() {
    let (sim, gw, url) = latched_one_slot(|u| {
        let mut s = settings_for(&[u]);
        s.balance.queue_timeout = 30.0;
        s
    })
    .await;
    // A non-streamed chat that cannot end (the latch is shut) and whose client leaves once it
    // runs: its slot comes back, so the instance's generation was dropped with it.
    let conn = send_and_hold(&url, &chat_body("llama3.2", 40, false)).await;
    until("the chat runs on the instance", async || sim.stats().in_flight == 1).await;
    drop(conn);
    until("the slot is given back", async || {
        status(&gw).await["instances"][0]["in_flight"] == 0
    })
    .await;
    let sent_before = sim.stats().requests.get("/api/chat").copied().unwrap_or(0);
    // While a chat holds the slot, a request that waits in the queue and is then abandoned
    // leaves the queue and never reaches the instance.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let holder = queued_chat(url.clone(), None, "holder".to_owned(), tx.clone());
    assert_eq!(rx.recv().await.unwrap().0, "holder");
    let conn = send_and_hold(&url, &chat_body("llama3.2", 20, false)).await;
    until("the second request queued", async || {
        waiting(&gw, "llama3.2:latest").await == 1
    })
    .await;
    drop(conn);
    until("the abandoned request left the queue", async || {
        waiting(&gw, "llama3.2:latest").await == 0
    })
    .await;
    sim.release_latch();
    holder.await.unwrap();
    let sent = sim.stats().requests.get("/api/chat").copied().unwrap_or(0) - sent_before;
    assert_eq!(sent, 1, "only the chat whose client stayed was sent: {:?}", sim.stats());
    gw.stop().await;
}

#[actix_web::test]
async fn listings_do_not_wait_on_an_ejected_instance() {
    let a = plain_sim().await;
    // Accepts connections (the kernel does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let mut settings = settings_for(&[&a.url(), &silent_url]);
    settings.balance.health_interval = 0.1;
    settings.balance.failures_to_eject = 1;
    settings.balance.ejection_time = 60.0;
    // Every listing asks the instances again.
    settings.ollama.models_cache_ttl = 0;
    let gw = Gateway::start(settings).await;
    until("the silent instance is ejected", async || {
        status(&gw).await["instances"][1]["health"] == "ejected"
    })
    .await;
    // Take every connection made to it so far (checks, the first listings); any later one
    // would be a listing waiting on an instance that is out.
    silent.set_nonblocking(true).unwrap();
    let mut before = Vec::new();
    while let Ok((conn, _)) = silent.accept() {
        before.push(conn);
    }
    for path in ["/api/tags", "/api/version", "/api/ps", "/ollama/api/tags"] {
        for _ in 0..3 {
            let resp = client().get(gw.at(path)).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
        }
    }
    let mut after = 0;
    while silent.accept().is_ok() {
        after += 1;
    }
    assert_eq!(after, 0, "listings asked the ejected instance {after} times");
    drop(silent);
    gw.stop().await;
}

/// Requests waiting in the gateway's queue for `model`, from the status view.
async fn waiting(gw: &Gateway, model: &str) -> u64 {
    status(gw).await["queues"][model]["waiting"].as_u64().unwrap_or(0)
}

/// Polls the gateway's status and the simulator's counters until `cond` holds; a test that
/// never gets there fails after many rounds instead of hanging.
async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..1000 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[actix_web::test]
async fn auto_slots_learn_that_an_instance_runs_four_at_once() {
    let sim = SimHandle::start(SimConfig {
        models: vec![SimModel::chat("llama3.2")],
        loaded: vec!["llama3.2".to_owned()],
        num_parallel: 4,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::start(settings_for(&[&sim.url()])).await;
    warm(&gw).await;
    assert_eq!(status(&gw).await["slots"], "auto", "auto is the default");
    const AT_ONCE: usize = 8;
    let mut sent = 0;
    for round in 1..=8 {
        // Every stream the simulator starts stops after its first chunk until released, so
        // the requests the gateway lets in are all at the instance at once.
        sim.set_faults(Faults {
            latch_after_chunks: Some(1),
            ..Faults::default()
        });
        let handles: Vec<_> = (0..AT_ONCE)
            .map(|_| {
                let url = gw.at("/api/chat");
                actix_rt::spawn(async move {
                    let mut resp = client()
                        .post(url)
                        .send_json(&chat_body("llama3.2", 3, true))
                        .await
                        .unwrap();
                    (resp.status(), lines(&body_of(&mut resp).await))
                })
            })
            .collect();
        sent += AT_ONCE;
        // Each request is either at the instance or in the gateway's queue.
        until("every request reached the instance or the queue", async || {
            sim.stats().in_flight + waiting(&gw, "llama3.2:latest").await == AT_ONCE as u64
        })
        .await;
        sim.release_latch();
        for h in handles {
            let (code, body) = h.await.unwrap();
            assert_eq!(code, StatusCode::OK);
            assert_eq!(body.last().unwrap()["done"], true, "{body:?}");
        }
        let most = sim.stats().max_in_flight;
        if most >= 4 {
            let learned = &status(&gw).await["instances"][0]["learned_slots"]["llama3.2:latest"];
            assert!(learned.as_u64().is_some_and(|n| n >= 4), "{learned}");
            assert!(most <= 6, "round {round}: far past the instance's slots: {most}");
            assert!(sent <= 6 * AT_ONCE, "learned within {sent} requests");
            eprintln!("4 at once after {round} rounds, {sent} requests; most at once {most}; learned {learned}");
            gw.stop().await;
            return;
        }
    }
    panic!(
        "after {sent} requests the instance never got 4 at once: {:?}",
        sim.stats()
    );
}

/// A simulator that runs one request at a time at 20 tokens/s, whose streams stop after the
/// first chunk until the latch is released, behind a gateway with one slot.
async fn latched_one_slot(settings: impl FnOnce(&str) -> corral_config::Settings) -> (SimHandle, Gateway, String) {
    let sim = SimHandle::start(SimConfig {
        models: vec![SimModel::chat("llama3.2")],
        tokens_per_sec: 20.0,
        faults: Faults {
            latch_after_chunks: Some(1),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut s = settings(&sim.url());
    s.balance.slots = Slots::Fixed(1);
    let gw = Gateway::start(s).await;
    warm(&gw).await;
    let url = gw.at("/api/chat");
    (sim, gw, url)
}

/// Sends a streamed chat as `bearer` (if any); reports `label` on `tx` with the answer's
/// queue-wait header once its headers arrive, then reads it to the end.
fn queued_chat(
    url: String,
    bearer: Option<String>,
    label: String,
    tx: tokio::sync::mpsc::UnboundedSender<(String, Option<String>)>,
) -> actix_rt::task::JoinHandle<()> {
    actix_rt::spawn(async move {
        let mut req = client().post(url);
        if let Some(b) = bearer {
            req = req.insert_header(("Authorization", format!("Bearer {b}")));
        }
        let mut resp = req.send_json(&chat_body("llama3.2", 2, true)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let waited = resp
            .headers()
            .get("x-corral-queue-wait-ms")
            .map(|v| v.to_str().unwrap().to_owned());
        let _ = tx.send((label, waited));
        let _ = body_of(&mut resp).await;
    })
}

#[actix_web::test]
async fn the_queue_lets_requests_in_exactly_in_the_order_they_came() {
    let (sim, gw, url) = latched_one_slot(|u| settings_for(&[u])).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _first = queued_chat(url.clone(), None, "holder".to_owned(), tx.clone());
    assert_eq!(rx.recv().await.unwrap(), ("holder".to_owned(), None), "it did not wait");
    let mut handles = Vec::new();
    for i in 1..=4u64 {
        handles.push(queued_chat(url.clone(), None, format!("r{i}"), tx.clone()));
        until("the request queued", async || {
            waiting(&gw, "llama3.2:latest").await == i
        })
        .await;
    }
    sim.release_latch();
    let mut order = Vec::new();
    let mut waits = Vec::new();
    for _ in 1..=4 {
        let (label, waited) = rx.recv().await.unwrap();
        order.push(label);
        waits.push(waited);
    }
    assert_eq!(order, ["r1", "r2", "r3", "r4"], "first come, first served");
    assert!(
        waits
            .iter()
            .all(|w| w.as_ref().is_some_and(|ms| ms.parse::<u64>().is_ok())),
        "a queued answer says how long it waited: {waits:?}"
    );
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(waiting(&gw, "llama3.2:latest").await, 0);
    gw.stop().await;
}

/// Signs up `email` and returns its session token and user id.
async fn account(gw: &Gateway, email: &str) -> (String, String) {
    let mut resp = client()
        .post(gw.at("/api/v1/auths/signup"))
        .send_json(&serde_json::json!({"email": email, "password": "correct horse", "name": email}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    (
        body["token"].as_str().unwrap().to_owned(),
        body["id"].as_str().unwrap().to_owned(),
    )
}

async fn admin_post(gw: &Gateway, admin: &str, path: &str, body: Value) {
    let resp = client()
        .post(gw.at(path))
        .insert_header(("Authorization", format!("Bearer {admin}")))
        .send_json(&body)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
}

async fn admin_status(gw: &Gateway, admin: &str) -> Value {
    let mut resp = client()
        .get(gw.at("/ollama/status"))
        .insert_header(("Authorization", format!("Bearer {admin}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    serde_json::from_slice(&body_of(&mut resp).await).unwrap()
}

/// A simulator whose streams wait on its latch after one chunk, behind a gateway with one
/// slot and accounts: Alice (the admin) and Bob (a user), as (token, id).
async fn alice_and_bob_on_one_slot(
    tune: impl FnOnce(&mut corral_config::Settings),
) -> (
    corral_store::test_support::TestDb,
    SimHandle,
    Gateway,
    [(String, String); 2],
) {
    let db = corral_store::test_support::TestDb::sqlite();
    let sim = SimHandle::start(SimConfig {
        models: vec![SimModel::chat("llama3.2")],
        tokens_per_sec: 20.0,
        faults: Faults {
            latch_after_chunks: Some(1),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut settings = settings_for(&[&sim.url()]);
    settings.balance.slots = Slots::Fixed(1);
    settings.auth.bypass_model_access_control = true;
    tune(&mut settings);
    let gw = Gateway::with_auth(settings, &db.url).await;
    // The first account is the admin; sign-up is opened again for the second.
    let alice = account(&gw, "alice@example.com").await;
    admin_post(
        &gw,
        &alice.0,
        "/api/v1/auths/admin/config",
        serde_json::json!({"ENABLE_SIGNUP": true}),
    )
    .await;
    let bob = account(&gw, "bob@example.com").await;
    admin_post(
        &gw,
        &alice.0,
        "/api/v1/users/update/role",
        serde_json::json!({"id": bob.1, "role": "user"}),
    )
    .await;
    (db, sim, gw, [alice, bob])
}

#[actix_web::test]
async fn one_users_twenty_waiting_requests_do_not_hold_back_another_users_one() {
    let (_db, sim, gw, [(alice, alice_id), (bob, bob_id)]) = alice_and_bob_on_one_slot(|_| {}).await;
    let url = gw.at("/api/chat");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _holder = queued_chat(url.clone(), Some(alice.clone()), "holder".to_owned(), tx.clone());
    assert_eq!(rx.recv().await.unwrap().0, "holder");
    let mut handles = Vec::new();
    for i in 1..=20u64 {
        handles.push(queued_chat(
            url.clone(),
            Some(alice.clone()),
            format!("alice{i}"),
            tx.clone(),
        ));
        until("alice's request queued", async || {
            admin_status(&gw, &alice).await["queues"]["llama3.2:latest"]["waiting"] == i
        })
        .await;
    }
    handles.push(queued_chat(
        url.clone(),
        Some(bob.clone()),
        "bob".to_owned(),
        tx.clone(),
    ));
    until("bob's request queued", async || {
        admin_status(&gw, &alice).await["queues"]["llama3.2:latest"]["waiting"] == 21
    })
    .await;
    let users = &admin_status(&gw, &alice).await["queues"]["llama3.2:latest"]["users"];
    assert_eq!(users[&alice_id], 20, "{users}");
    assert_eq!(users[&bob_id], 1, "{users}");
    sim.release_latch();
    // The holder's end lets in the next, whose end lets in the one after: bob's request
    // starts within those two.
    let mut order = Vec::new();
    for _ in 0..2 {
        order.push(rx.recv().await.unwrap().0);
    }
    assert!(order.contains(&"bob".to_owned()), "{order:?}");
    assert_eq!(order[0], "alice1", "alice's own requests keep their order: {order:?}");
    gw.stop().await;
}

#[actix_web::test]
async fn openai_answers_that_waited_say_how_long_streamed_or_not() {
    let (sim, gw, url) = latched_one_slot(|u| settings_for(&[u])).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _holder = queued_chat(url, None, "holder".to_owned(), tx);
    assert_eq!(rx.recv().await.unwrap().0, "holder");
    let ask = |stream: bool| {
        let url = gw.at("/v1/chat/completions");
        actix_rt::spawn(async move {
            let body = serde_json::json!({
                "model": "llama3.2",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2,
                "stream": stream,
            });
            let mut resp = client().post(url).send_json(&body).await.unwrap();
            let waited = resp
                .headers()
                .get("x-corral-queue-wait-ms")
                .map(|v| v.to_str().unwrap().to_owned());
            let _ = body_of(&mut resp).await;
            (resp.status(), waited)
        })
    };
    let whole = ask(false);
    until("the first waits", async || waiting(&gw, "llama3.2:latest").await == 1).await;
    let streamed = ask(true);
    until("the second waits", async || waiting(&gw, "llama3.2:latest").await == 2).await;
    sim.release_latch();
    for h in [whole, streamed] {
        let (code, waited) = h.await.unwrap();
        assert_eq!(code, StatusCode::OK);
        assert!(waited.is_some_and(|ms| ms.parse::<u64>().is_ok()));
    }
    gw.stop().await;
}

#[actix_web::test]
async fn a_groups_queue_weight_lets_its_members_in_that_many_per_turn() {
    let (_db, sim, gw, [(alice, _), (bob, bob_id)]) = alice_and_bob_on_one_slot(|s| {
        s.balance.queue_weights.insert("gold".to_owned(), 3);
    })
    .await;
    admin_post(
        &gw,
        &alice,
        "/api/v1/groups/create",
        serde_json::json!({"name": "gold", "user_ids": [bob_id]}),
    )
    .await;
    let url = gw.at("/api/chat");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _holder = queued_chat(url.clone(), Some(alice.clone()), "holder".to_owned(), tx.clone());
    assert_eq!(rx.recv().await.unwrap().0, "holder");
    let mut handles = Vec::new();
    // Alice's requests wait first, then Bob's: Bob's group lets him in three per turn.
    for (i, (who, token)) in std::iter::repeat_n(("alice", &alice), 4)
        .chain(std::iter::repeat_n(("bob", &bob), 6))
        .enumerate()
    {
        handles.push(queued_chat(
            url.clone(),
            Some(token.clone()),
            who.to_owned(),
            tx.clone(),
        ));
        let n = i as u64 + 1;
        until("the request queued", async || {
            admin_status(&gw, &alice).await["queues"]["llama3.2:latest"]["waiting"] == n
        })
        .await;
    }
    sim.release_latch();
    let mut order = Vec::new();
    for _ in 0..10 {
        order.push(rx.recv().await.unwrap().0);
    }
    assert_eq!(
        order,
        ["alice", "bob", "bob", "bob", "alice", "bob", "bob", "bob", "alice", "alice"],
        "one of Alice's per turn, three of Bob's"
    );
    gw.stop().await;
}
