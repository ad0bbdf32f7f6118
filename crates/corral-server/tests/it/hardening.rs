//! Hardening: what an attacker or a broken instance could do, and what the gateway answers.

use actix_web::http::StatusCode;
use corral_sim::{Faults, SimConfig, SimHandle};
use serde_json::{json, Value};

use corral_store::test_support::TestDb;

use crate::support::{body_of, client, lines, settings_for, Gateway};

/// A chat asking for a tool whose one required argument is a boolean: the simulator calls it
/// with `{"done": true}`.
fn tool_chat(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Are we there yet?"}],
        "stream": true,
        "tools": [{
            "type": "function",
            "function": {
                "name": "finish",
                "description": "Say whether the work is done.",
                "parameters": {
                    "type": "object",
                    "properties": {"done": {"type": "boolean"}},
                    "required": ["done"],
                },
            },
        }],
    })
}

#[actix_web::test]
async fn a_tool_call_saying_done_then_a_dead_instance_is_not_a_clean_end() {
    // The instance dies right after the tool-call chunk, before its final object.
    let sim = SimHandle::start(SimConfig {
        faults: Faults {
            drop_after_chunks: Some(1),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::in_front_of(&sim.url()).await;
    for path in ["/api/chat", "/ollama/api/chat", "/ollama/api/chat/0"] {
        let mut resp = client()
            .post(gw.at(path))
            .send_json(&tool_chat("llama3.2"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let all = lines(&body_of(&mut resp).await);
        assert_eq!(
            all[0]["message"]["tool_calls"][0]["function"]["arguments"],
            json!({"done": true}),
            "{path}: {all:?}"
        );
        let last = all.last().unwrap();
        assert!(
            last["error"].is_string(),
            "{path}: the truncated stream looked complete: {all:?}"
        );
        assert!(all.iter().all(|l| l["done"] != json!(true)), "{path}: {all:?}");
    }
    // Without the fault the same chat ends with its final object and no error line.
    sim.set_faults(Faults::default());
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&tool_chat("llama3.2"))
        .await
        .unwrap();
    let all = lines(&body_of(&mut resp).await);
    assert_eq!(all.last().unwrap()["done"], json!(true), "{all:?}");
    assert!(all.iter().all(|l| l.get("error").is_none()), "{all:?}");
    gw.stop().await;
}

/// A sign-in attempt from `xff` (the address a trusted proxy names), with its status and
/// `Retry-After`.
async fn sign_in(gw: &Gateway, email: &str, password: &str, xff: Option<&str>) -> (StatusCode, Option<String>, Value) {
    let mut req = client().post(gw.at("/api/v1/auths/signin"));
    if let Some(addr) = xff {
        req = req.insert_header(("X-Forwarded-For", addr));
    }
    let mut resp = req
        .send_json(&json!({"email": email, "password": password}))
        .await
        .unwrap();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = serde_json::from_slice(&body_of(&mut resp).await).unwrap_or(Value::Null);
    (resp.status(), retry, body)
}

async fn sign_up(gw: &Gateway, email: &str, password: &str) -> String {
    let mut resp = client()
        .post(gw.at("/api/v1/auths/signup"))
        .send_json(&json!({"email": email, "password": password, "name": "Boss"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn strangers_cannot_lock_the_owner_out_and_proxies_are_trusted_only_when_configured() {
    let db = TestDb::sqlite();
    let sim = crate::support::sim().await;
    let mut settings = settings_for(&[&sim.url()]);
    settings.server.forwarded_allow_ips = vec!["127.0.0.1".to_owned()];
    let gw = Gateway::with_auth(settings, &db.url).await;
    sign_up(&gw, "boss@example.com", "the right one").await;
    // A stranger behind the proxy guesses 15 times, and is refused the 16th.
    for _ in 0..15 {
        let (status, _, _) = sign_in(&gw, "boss@example.com", "guess", Some("198.51.100.66")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (status, retry, body) = sign_in(&gw, "boss@example.com", "guess", Some("198.51.100.66")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(retry.is_some());
    // The owner, from their own address, still gets in.
    let (status, _, body) = sign_in(&gw, "boss@example.com", "the right one", Some("203.0.113.5")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["token"].is_string());
    gw.stop().await;

    // With no trusted proxy, the header is the client's own word and is ignored: sixteen
    // attempts "from" sixteen addresses are one address's sixteen.
    let db = TestDb::sqlite();
    let gw = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    sign_up(&gw, "boss@example.com", "the right one").await;
    for i in 0..15 {
        let (status, _, _) = sign_in(&gw, "boss@example.com", "guess", Some(&format!("198.51.100.{i}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let (status, _, _) = sign_in(&gw, "boss@example.com", "guess", Some("198.51.100.99")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    gw.stop().await;
}

#[actix_web::test]
async fn a_sign_in_storm_is_bounded_and_key_holders_are_not_slowed() {
    let db = TestDb::sqlite();
    let sim = crate::support::sim().await;
    let mut settings = settings_for(&[&sim.url()]);
    settings.auth.password_workers = 1;
    settings.auth.password_queue = 2;
    settings.server.max_unauthenticated_per_address = 0;
    let gw = Gateway::with_auth(settings, &db.url).await;
    let token = sign_up(&gw, "admin@example.com", "the right one").await;
    let mut resp = client()
        .post(gw.at("/api/v1/auths/api_key"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send()
        .await
        .unwrap();
    let key: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    let key = key["api_key"].as_str().unwrap().to_owned();
    // 200 sign-ins at once, for unknown emails, each a different one (no per-account limit).
    let storm = (0..200).map(|i| {
        let gw_url = gw.url.clone();
        async move {
            let mut resp = client()
                .post(format!("{gw_url}/api/v1/auths/signin"))
                .insert_header(("X-Forwarded-For", format!("198.51.{}.{}", i / 200, i % 200)))
                .send_json(&json!({"email": format!("nobody{i}@example.com"), "password": "x"}))
                .await
                .unwrap();
            let status = resp.status();
            let retry = resp.headers().contains_key("retry-after");
            let body: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
            (status, retry, body)
        }
    });
    let chat = async {
        let mut resp = client()
            .post(gw.at("/api/chat"))
            .insert_header(("Authorization", format!("Bearer {key}")))
            .send_json(&crate::support::chat_body("llama3.2", 3, false))
            .await
            .unwrap();
        (resp.status(), body_of(&mut resp).await)
    };
    let (answers, (chat_status, _)) = futures_util::future::join(futures_util::future::join_all(storm), chat).await;
    assert_eq!(chat_status, StatusCode::OK, "the key holder was held up by the storm");
    let mut refused_busy = 0;
    for (status, retry, body) in answers {
        match status {
            StatusCode::BAD_REQUEST => assert!(body["detail"].is_string(), "{body}"),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                assert!(retry, "{body}");
                assert!(body["detail"].is_string(), "{body}");
                refused_busy += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    // One thread and two places: most of a burst of 200 is turned away at once.
    assert!(refused_busy >= 150, "only {refused_busy} of 200 were turned away");
    gw.stop().await;
}

/// Sends a request head declaring `declared` body bytes, then only `sent` of them, and returns
/// what the gateway answers (status line and body), waiting at most `wait`.
async fn partial_body(addr: &str, path: &str, declared: usize, sent: usize) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: corral\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; sent]).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= pos + 4 + len {
                    break;
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a partial body");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[actix_web::test]
async fn a_body_that_never_arrives_gets_a_json_408_and_strangers_cannot_hold_many_open() {
    let db = TestDb::sqlite();
    let sim = crate::support::sim().await;
    let mut settings = settings_for(&[&sim.url()]);
    settings.server.body_read_timeout = 2.0;
    settings.server.max_unauthenticated_per_address = 4;
    let gw = Gateway::with_auth(settings, &db.url).await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    for path in ["/api/v1/auths/signin", "/api/v1/auths/signup"] {
        let (status, body) = partial_body(&addr, path, 100, 10).await;
        assert_eq!(status, 408, "{path}: {body}");
        assert!(body["detail"].as_str().unwrap().contains("did not arrive"), "{body}");
    }
    // Six slow bodies at once from one address: four are held until their deadline (408),
    // the two past the cap are refused at once (429 with Retry-After), all in JSON.
    let held: Vec<_> = (0..6)
        .map(|_| {
            let addr = addr.clone();
            actix_rt::spawn(async move { partial_body(&addr, "/api/v1/auths/signin", 100, 1).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for h in held {
        let (status, body) = h.await.unwrap();
        assert!(body["detail"].is_string(), "{status}: {body}");
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![408, 408, 408, 408, 429, 429]);
    // Once they are answered, the address may come in again.
    let resp = client().get(gw.at("/api/version")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    gw.stop().await;
}

#[actix_web::test]
async fn a_wrong_key_on_the_public_version_route_is_a_401() {
    let db = TestDb::sqlite();
    let sim = crate::support::sim().await;
    let gw = Gateway::with_auth(settings_for(&[&sim.url()]), &db.url).await;
    let token = sign_up(&gw, "admin@example.com", "the right one").await;
    for path in ["/api/version", "/ollama/api/version"] {
        // No credential: public, as the reference has it.
        let resp = client().get(gw.at(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        // A credential that does not verify: refused, so "verify connection" fails.
        for bad in [
            "sk-0123456789abcdef0123456789abcdef",
            "not.a.jwt",
            "eyJhbGciOiJub25lIn0.e30.",
        ] {
            let mut resp = client()
                .get(gw.at(path))
                .insert_header(("Authorization", format!("Bearer {bad}")))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path} {bad}");
            let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
            assert!(v["detail"].is_string(), "{v}");
        }
        let resp = client()
            .get(gw.at(path))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    gw.stop().await;
}

#[actix_web::test]
async fn a_root_delete_deletes_from_every_holder_and_says_where_it_failed() {
    let a = crate::support::sim().await;
    let b = crate::support::sim().await;
    let gw = Gateway::start(settings_for(&[&a.url(), &b.url()])).await;
    let resp = client()
        .delete(gw.at("/api/delete"))
        .send_json(&json!({"model": "llama3.2"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for sim in [&a, &b] {
        assert_eq!(sim.stats().requests.get("/api/delete"), Some(&1));
    }
    // Gone everywhere: the merged listing no longer has it, and a second delete is Ollama's 404.
    let mut resp = client().get(gw.at("/api/tags")).send().await.unwrap();
    let tags: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert!(
        tags["models"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["name"] != "llama3.2:latest"),
        "{tags}"
    );
    let resp = client()
        .delete(gw.at("/api/delete"))
        .send_json(&json!({"model": "llama3.2"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // One holder fails: the answer names it.
    b.set_faults(Faults {
        error_rate: 1.0,
        error_status: 500,
        error_route: Some("/api/delete".to_owned()),
        ..Faults::default()
    });
    let mut resp = client()
        .delete(gw.at("/api/delete"))
        .send_json(&json!({"model": "all-minilm"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert!(v["error"].as_str().unwrap().contains("instance 1"), "{v}");
    assert_eq!(v["results"][0]["status"], true, "{v}");
    assert_eq!(v["results"][1]["status"], false, "{v}");
    gw.stop().await;
}

#[actix_web::test]
async fn a_connection_disabled_through_the_admin_api_is_never_contacted() {
    let a = crate::support::sim().await;
    let b = crate::support::sim().await;
    let mut settings = settings_for(&[&a.url(), &b.url()]);
    settings.balance.health_interval = 0.05;
    let db = TestDb::sqlite();
    let gw = Gateway::with_store(settings, &db.url).await;
    let mut resp = client()
        .post(gw.at("/ollama/config/update"))
        .send_json(&json!({
            "ENABLE_OLLAMA_API": true,
            "OLLAMA_BASE_URLS": [a.url(), b.url()],
            "OLLAMA_API_CONFIGS": {"1": {"enable": false}},
        }))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{:?}", body_of(&mut resp).await);
    // A check or a listing that began before the change may still reach it: let two health
    // rounds pass before counting.
    a.reset_stats();
    let rounds = crate::support::eventually(|| a.stats().requests.get("/api/version").copied().unwrap_or(0) >= 2).await;
    assert!(rounds, "the health checker never ran");
    b.reset_stats();
    a.reset_stats();
    // Listings, version and chats, while the health checker runs its rounds on instance 0.
    for path in ["/api/tags", "/api/ps", "/api/version", "/ollama/api/tags", "/v1/models"] {
        let resp = client().get(gw.at(path)).send().await.unwrap();
        assert!(resp.status().is_success(), "{path}");
    }
    let resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&crate::support::chat_body("llama3.2", 2, false))
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let checked =
        crate::support::eventually(|| a.stats().requests.get("/api/version").copied().unwrap_or(0) >= 5).await;
    assert!(checked, "the health checker never ran five rounds");
    assert_eq!(
        b.stats().requests,
        Default::default(),
        "the disabled instance was contacted"
    );
    gw.stop().await;
}

/// Sends `raw` as it is and returns the status and the JSON body of the answer.
async fn raw_exchange(addr: &str, raw: Vec<u8>) -> (u16, Option<String>, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything: a write error is fine.
    let _ = stream.write_all(&raw).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let content_type = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-type:")
            .map(|v| v.trim().to_owned())
    });
    (status, content_type, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[actix_web::test]
async fn the_http_layers_own_refusals_are_json_too() {
    let sim = crate::support::sim().await;
    let gw = Gateway::in_front_of(&sim.url()).await;
    let addr = gw.url.trim_start_matches("http://").to_owned();
    let big_header = format!(
        "GET /api/tags HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let mut many = String::from("GET /api/tags HTTP/1.1\r\nHost: x\r\n");
    for i in 0..1000 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let smuggled =
        "POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    for (what, raw, want) in [
        ("a 1 MB header", big_header, 431),
        ("1,000 headers", many, 431),
        ("Content-Length with Transfer-Encoding", smuggled.to_owned(), 400),
    ] {
        let (status, content_type, body) = raw_exchange(&addr, raw.into_bytes()).await;
        assert_eq!(status, want, "{what}");
        assert_eq!(content_type.as_deref(), Some("application/json"), "{what}");
        assert!(
            body["detail"].is_string() && body["error"].is_string(),
            "{what}: {body}"
        );
    }
    // The connection wrapper leaves ordinary answers alone.
    let resp = client().get(gw.at("/api/tags")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // An unknown path says so in both fields (its `detail` was a bare "Not Found").
    let mut resp = client().get(gw.at("/no/such/route")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert!(v["detail"].as_str().unwrap().contains("/no/such/route"), "{v}");
    // A served path with another method: a JSON 405 naming the allowed ones.
    let mut resp = client().delete(gw.at("/api/tags")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers().get("allow").unwrap(), "GET, HEAD");
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert!(v["detail"].is_string(), "{v}");
    gw.stop().await;
}
