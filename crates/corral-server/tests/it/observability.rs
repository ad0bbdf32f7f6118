//! What an operator watches: `/metrics` after known traffic, request ids, trace context
//! (continued, passed upstream, exported over OTLP), and a real Prometheus scraping Corral.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::http::StatusCode;
use corral_config::Slots;
use corral_sim::{SimConfig, SimHandle, SimModel};

use crate::support::{body_of, chat_body, client, settings_for, Gateway};

async fn plain_sim() -> SimHandle {
    SimHandle::start(SimConfig {
        models: vec![SimModel::chat("llama3.2")],
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

/// `/metrics` as (name with sorted labels) → value.
async fn scrape(gw: &Gateway) -> BTreeMap<String, f64> {
    let mut resp = client().get(gw.at("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(body_of(&mut resp).await.to_vec()).unwrap();
    parse(&text)
}

fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let key = match series.split_once('{') {
            None => series.to_owned(),
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                labels.sort_unstable();
                format!("{name}{{{}}}", labels.join(","))
            }
        };
        out.insert(key, value.parse().unwrap());
    }
    out
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// Sum of every series of `name` whose labels include all of `with`.
fn sum(m: &BTreeMap<String, f64>, name: &str, with: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name) && with.iter().all(|w| k.contains(w)))
        .map(|(_, v)| v)
        .sum()
}

async fn chat(gw: &Gateway, model: &str, stream: bool) -> StatusCode {
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&chat_body(model, 3, stream))
        .await
        .unwrap();
    let _ = body_of(&mut resp).await;
    resp.status()
}

#[actix_web::test]
async fn metrics_count_known_traffic_exactly() {
    let a = plain_sim().await;
    let b = plain_sim().await;
    let mut settings = settings_for(&[&a.url(), &b.url()]);
    settings.balance.policy = "round_robin".to_owned();
    settings.balance.failures_to_eject = 1;
    settings.balance.ejection_time = 600.0;
    settings.balance.health_interval = 0.0;
    let gw = Gateway::start(settings).await;
    assert_eq!(
        client().get(gw.at("/api/tags")).send().await.unwrap().status(),
        StatusCode::OK
    );
    // Instance 1 dies: the first request routed there fails over to 0 and ejects it.
    b.stop().await;
    for stream in [false, true, false, true] {
        assert_eq!(chat(&gw, "llama3.2", stream).await, StatusCode::OK);
    }
    // An error: a model nobody holds.
    assert_eq!(chat(&gw, "no-such-model", false).await, StatusCode::NOT_FOUND);

    let m = scrape(&gw).await;
    let ok = r#"corral_requests_total{instance="0",model="llama3.2:latest",route="chat",status="2xx"}"#;
    assert_eq!(get(&m, ok), 4.0, "{m:#?}");
    // The unknown model is a request too, answered by no instance; the client's made-up name
    // is not a label (one series for every such name).
    let unknown = r#"corral_requests_total{instance="",model="(unknown)",route="chat",status="4xx"}"#;
    assert_eq!(get(&m, unknown), 1.0, "{m:#?}");
    assert_eq!(sum(&m, "corral_requests_total", &[]), 5.0, "{m:#?}");
    assert_eq!(get(&m, r#"corral_ejections_total{instance="1"}"#), 1.0, "{m:#?}");
    assert_eq!(
        get(&m, r#"corral_failovers_total{model="llama3.2:latest"}"#),
        1.0,
        "{m:#?}"
    );
    assert_eq!(
        get(&m, r#"corral_retried_requests_total{model="llama3.2:latest"}"#),
        1.0
    );
    assert_eq!(
        get(&m, r#"corral_upstream_errors_total{instance="1",kind="connect"}"#),
        1.0,
        "{m:#?}"
    );
    // Every histogram counted each request once.
    for h in [
        "corral_request_duration_seconds_count",
        "corral_time_to_first_token_seconds_count",
        "corral_queue_wait_seconds_count",
    ] {
        assert_eq!(
            get(&m, &format!(r#"{h}{{model="llama3.2:latest"}}"#)),
            4.0,
            "{h}: {m:#?}"
        );
    }
    assert_eq!(get(&m, "corral_overhead_seconds_count"), 4.0);
    assert_eq!(
        get(&m, r#"corral_request_outcomes_total{kind="completed"}"#),
        4.0,
        "{m:#?}"
    );
    // Three content chunks asked each time: the simulator counts them as output tokens.
    let out = r#"corral_tokens_total{instance="0",model="llama3.2:latest",type="output"}"#;
    assert_eq!(get(&m, out), 12.0, "{m:#?}");
    assert!(
        get(
            &m,
            r#"corral_tokens_total{instance="0",model="llama3.2:latest",type="input"}"#
        ) > 0.0
    );
    // Every HTTP request, by family and class: the listing, four chats, the 404.
    assert_eq!(
        get(&m, r#"corral_http_requests_total{family="ollama",status="2xx"}"#),
        5.0,
        "{m:#?}"
    );
    assert_eq!(
        get(&m, r#"corral_http_requests_total{family="ollama",status="4xx"}"#),
        1.0
    );
    // State read at the scrape.
    assert_eq!(
        get(&m, r#"corral_instance_health{instance="1",state="ejected"}"#),
        1.0,
        "{m:#?}"
    );
    assert_eq!(get(&m, r#"corral_instance_health{instance="0",state="healthy"}"#), 1.0);
    assert_eq!(get(&m, r#"corral_instance_in_flight{instance="0"}"#), 0.0);
    assert!(get(&m, "corral_process_resident_memory_bytes") > 0.0);
    assert!(get(&m, "corral_process_open_fds") > 0.0);
    assert_eq!(get(&m, "corral_config_revision"), -1.0);
    assert!(get(&m, "corral_catalogue_refreshes_total") >= 1.0);
    gw.stop().await;
}

#[actix_web::test]
async fn a_queued_request_is_counted_waiting_and_then_served() {
    let sim = SimHandle::start(SimConfig {
        models: vec![SimModel::chat("llama3.2")],
        tokens_per_sec: 20.0,
        faults: corral_sim::Faults {
            latch_after_chunks: Some(1),
            ..corral_sim::Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut settings = settings_for(&[&sim.url()]);
    settings.balance.slots = Slots::Fixed(1);
    let gw = Gateway::start(settings).await;
    assert_eq!(
        client().get(gw.at("/api/tags")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let first = actix_rt::spawn({
        let url = gw.at("/api/chat");
        async move {
            let mut r = client()
                .post(url)
                .send_json(&chat_body("llama3.2", 2, true))
                .await
                .unwrap();
            body_of(&mut r).await
        }
    });
    let mut m = BTreeMap::new();
    for _ in 0..200 {
        m = scrape(&gw).await;
        if get(&m, r#"corral_in_flight{instance="0",model="llama3.2:latest"}"#) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = actix_rt::spawn({
        let url = gw.at("/api/chat");
        async move {
            let mut r = client()
                .post(url)
                .send_json(&chat_body("llama3.2", 2, false))
                .await
                .unwrap();
            body_of(&mut r).await
        }
    });
    for _ in 0..200 {
        m = scrape(&gw).await;
        if get(&m, r#"corral_queue_depth{model="llama3.2:latest"}"#) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(&m, r#"corral_queue_depth{model="llama3.2:latest"}"#), 1.0, "{m:#?}");
    assert_eq!(
        get(&m, r#"corral_slots_limit{instance="0",model="llama3.2:latest"}"#),
        1.0,
        "{m:#?}"
    );
    sim.release_latch();
    first.await.unwrap();
    second.await.unwrap();
    let m = scrape(&gw).await;
    assert_eq!(sum(&m, "corral_requests_total", &["status=\"2xx\""]), 2.0, "{m:#?}");
    assert_eq!(
        get(&m, r#"corral_queue_wait_seconds_count{model="llama3.2:latest"}"#),
        2.0
    );
    // One waited longer than 10 ms (it waited for the latch), one did not wait.
    assert_eq!(
        get(
            &m,
            r#"corral_queue_wait_seconds_bucket{le="0.01",model="llama3.2:latest"}"#
        ),
        1.0,
        "{m:#?}"
    );
    assert_eq!(get(&m, r#"corral_queue_depth{model="llama3.2:latest"}"#), 0.0);
    gw.stop().await;
}

#[actix_web::test]
async fn request_ids_and_trace_context_are_kept_when_valid_and_replaced_when_not() {
    let sim = plain_sim().await;
    let gw = Gateway::in_front_of(&sim.url()).await;
    // A valid id comes back as it was.
    let resp = client()
        .get(gw.at("/api/tags"))
        .insert_header(("X-Request-Id", "abc-123"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers().get("x-request-id").unwrap(), "abc-123");
    // No id: a new one.
    let resp = client().get(gw.at("/api/tags")).send().await.unwrap();
    let fresh = resp.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert_eq!(fresh.len(), 36, "{fresh}");
    // Too long, or control characters: replaced, never echoed (sent raw: clients refuse to).
    let long = "a".repeat(129);
    for bad in [long.as_str(), "bad\x01id", "bad\x7fid", "bad id"] {
        let head = raw_get(
            &gw,
            &format!("X-Request-Id: {bad}\r\ntraceparent: 00-{bad}-00f067aa0ba902b7-01\r\n"),
        )
        .await;
        assert!(!head.contains(bad), "{head}");
        assert!(!head.contains("traceparent"), "{head}");
        if head.starts_with("HTTP/1.1 400") {
            // The HTTP parser itself refuses some control characters in a header (a JSON 400).
            continue;
        }
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap_or_else(|| panic!("{head}"));
        assert_eq!(id.trim().len(), 36, "{head}");
    }
    gw.stop().await;
}

/// `GET /api/tags` with these raw header lines; the answer's head, lower-cased names.
async fn raw_get(gw: &Gateway, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gw.url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /api/tags HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .map(|l| match l.split_once(':') {
            Some((n, v)) => format!("{}:{v}", n.to_ascii_lowercase()),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[actix_web::test]
async fn metrics_need_the_token_or_an_admin_off_loopback() {
    let sim = plain_sim().await;
    let mut settings = settings_for(&[&sim.url()]);
    // Configured for all addresses (the test still connects over loopback).
    settings.server.host = "0.0.0.0".to_owned();
    settings.metrics.token = "scrape-secret".to_owned();
    let gw = Gateway::start(settings.clone()).await;
    let resp = client().get(gw.at("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = client()
        .get(gw.at("/metrics"))
        .insert_header(("Authorization", "Bearer wrong"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
    let resp = client()
        .get(gw.at("/metrics"))
        .insert_header(("Authorization", "Bearer scrape-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    gw.stop().await;
    settings.metrics.enable = false;
    settings.metrics.token = String::new();
    settings.server.host = "127.0.0.1".to_owned();
    let gw = Gateway::start(settings).await;
    let resp = client().get(gw.at("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    gw.stop().await;
}

/// An OTLP/HTTP receiver: every export request's body, decoded with the official protobuf
/// definitions.
fn otlp_receiver() -> (
    String,
    std::sync::mpsc::Receiver<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>,
) {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || loop {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                let mut body = vec![0u8; len];
                conn.read_exact(&mut body).unwrap();
                let decoded: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest =
                    prost::Message::decode(body.as_slice()).unwrap();
                let _ = tx.send(decoded);
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
            });
        }
    });
    (url, rx)
}

#[actix_web::test]
async fn spans_reach_an_otlp_receiver_with_the_genai_attributes_and_the_clients_trace() {
    let (endpoint, spans) = otlp_receiver();
    let sim = plain_sim().await;
    let mut settings = settings_for(&[&sim.url()]);
    settings.server.workers = 1;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let telemetry = corral_server::telemetry::Telemetry::otlp(&endpoint).unwrap();
    let corral = corral_server::Corral::new(settings)
        .open_access()
        .with_telemetry(telemetry);
    corral.start();
    let shared = corral.shared().clone();
    let server = corral.server(listener).unwrap();
    let handle = server.handle();
    actix_rt::spawn(server);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut resp = client()
        .post(format!("{url}/api/chat"))
        .insert_header(("traceparent", format!("00-{trace}-00f067aa0ba902b7-01")))
        .send_json(&chat_body("llama3.2", 3, true))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let _ = body_of(&mut resp).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    actix_rt::task::spawn_blocking(move || shared.telemetry.flush())
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Ok(export) = spans.recv_timeout(Duration::from_secs(5)) {
        for rs in export.resource_spans {
            for ss in rs.scope_spans {
                seen.extend(ss.spans);
            }
        }
        if seen.iter().any(|s| s.name.starts_with("POST")) {
            break;
        }
    }
    let server_span = seen
        .iter()
        .find(|s| s.name == "POST /api/chat")
        .unwrap_or_else(|| panic!("{seen:#?}"));
    assert_eq!(hex(&server_span.trace_id), trace, "the client's trace is continued");
    let attr = |name: &str| {
        server_span
            .attributes
            .iter()
            .find(|a| a.key == name)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
            .unwrap_or_else(|| panic!("no {name}: {server_span:#?}"))
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    assert_eq!(attr("gen_ai.system"), V::StringValue("ollama".to_owned()));
    assert_eq!(attr("gen_ai.request.model"), V::StringValue("llama3.2".to_owned()));
    assert_eq!(
        attr("gen_ai.response.model"),
        V::StringValue("llama3.2:latest".to_owned())
    );
    assert_eq!(attr("gen_ai.usage.output_tokens"), V::IntValue(3));
    assert!(matches!(attr("gen_ai.usage.input_tokens"), V::IntValue(n) if n > 0));
    for child in ["routing", "upstream call", "completion"] {
        let span = seen
            .iter()
            .find(|s| s.name == child)
            .unwrap_or_else(|| panic!("no {child}: {seen:#?}"));
        assert_eq!(span.parent_span_id, server_span.span_id, "{child}");
        assert_eq!(hex(&span.trace_id), trace);
    }
    handle.stop(false).await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A real Prometheus server scrapes the gateway every second and answers a PromQL query over
/// its metrics. Prometheus comes from the Debian package (`cargo xtask test` installs it).
#[actix_web::test]
async fn a_real_prometheus_scrapes_corral_and_answers_promql() {
    let prometheus = std::path::Path::new("/usr/bin/prometheus");
    if !prometheus.exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install prometheus (Debian package)"
        );
        eprintln!("skipped: /usr/bin/prometheus is not installed (apt-get install prometheus)");
        return;
    }
    let sim = plain_sim().await;
    let gw = Gateway::in_front_of(&sim.url()).await;
    for stream in [false, true, false] {
        assert_eq!(chat(&gw, "llama3.2", stream).await, StatusCode::OK);
    }
    let dir = tempfile::tempdir().unwrap();
    let target = gw.url.trim_start_matches("http://");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: corral\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(prometheus)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let query = "sum(corral_requests_total{model=\"llama3.2:latest\",status=\"2xx\"})";
    let mut answer = None;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(mut resp) = client()
            .get(format!("http://127.0.0.1:{port}/api/v1/query"))
            .query(&[("query", query)])
            .unwrap()
            .send()
            .await
        else {
            continue;
        };
        let Ok(body) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        if let Some(v) = body["data"]["result"][0]["value"][1].as_str() {
            answer = Some(v.to_owned());
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        answer.as_deref(),
        Some("3"),
        "Prometheus answered {query} from Corral's /metrics"
    );
    gw.stop().await;
}
