//! Graceful drain, on the real binary: SIGTERM lets streams in flight finish, refuses new
//! connections, writes the buffered key use times, and exits 0; during the shutdown delay
//! `/ready` answers 503 while requests are still served; a request still queued when the grace
//! period ends gets a 503 with `Retry-After`; a second signal exits at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_sim::{Faults, SimConfig, SimHandle};

/// A gateway process, killed however the test ends.
struct Gateway {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn corral(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", dir)
        .env("RUST_LOG", "warn");
    cmd
}

/// Creates an admin and returns two of its API keys.
fn keys(dir: &std::path::Path) -> (String, String) {
    let mut create = corral(dir)
        .args(["user", "create", "--admin", "--email", "ada@example.com"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    create
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    let out = create.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = || {
        let out = corral(dir)
            .args(["key", "create", "--user", "ada@example.com"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    (key(), key())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `corral serve` in front of `sim` with extra settings `env`, and waits until it is ready.
fn start(sim: &SimHandle, env: &[(&str, &str)]) -> (Gateway, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (key1, key2) = keys(dir.path());
    let port = free_port();
    let child = corral(dir.path())
        .args(["serve", "--port", &port.to_string(), "--no-simulator"])
        .env("OLLAMA_BASE_URL", sim.url())
        .env("CORRAL_SERVER__WORKERS", "2")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let gateway = Gateway { child, port, dir };
    let mut last = None;
    for _ in 0..200 {
        last = request(port, "GET", "/ready", None, "").ok();
        if last.as_ref().is_some_and(|(status, _)| *status == 200) {
            return (gateway, key1, key2);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the gateway never became ready: {last:?}");
}

/// One HTTP/1.0 request on a new connection: the status and the body.
fn request(port: u16, method: &str, path: &str, key: Option<&str>, body: &str) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    send(&mut conn, "HTTP/1.0", method, path, key, body)?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn send(
    conn: &mut TcpStream,
    version: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> std::io::Result<()> {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "{method} {path} {version}\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one answer with a `Content-Length` from a kept-alive connection: status, headers, body.
fn read_answer(reader: &mut BufReader<TcpStream>) -> (u16, String, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the connection closed mid-answer: {head}"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

fn signal(gateway: &Gateway, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &gateway.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{name} failed");
}

/// Waits until a new connection is refused, which says the signal was taken. A connection made
/// before is answered; one the kernel took in the instant the listener closed is closed
/// unanswered, which a client sees as a refusal too.
fn wait_until_refused(port: u16) {
    for _ in 0..200 {
        match request(port, "GET", "/ready", None, "") {
            Err(_) | Ok((0, _)) => return,
            Ok((status, _)) => assert!(status == 200 || status == 503, "answered {status}"),
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("new connections were still accepted 5 s after SIGTERM");
}

/// Waits for the process to end, within `limit`.
fn exit_status(gateway: &mut Gateway, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = gateway.child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < limit, "the gateway did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const CHAT: &str = r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#;

/// Opens a streamed chat and reads its head and first `chunks` lines.
fn stream(port: u16, key: &str, chunks: usize) -> BufReader<TcpStream> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    send(&mut conn, "HTTP/1.0", "POST", "/api/chat", Some(key), CHAT).unwrap();
    let mut reader = BufReader::new(conn);
    let mut head = String::new();
    reader.read_line(&mut head).unwrap();
    assert!(head.contains(" 200 "), "{head}");
    let mut seen = 0;
    while seen < chunks {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        if line.starts_with('{') {
            seen += 1;
        }
    }
    reader
}

/// Reads a stream to its end and checks it ended cleanly.
fn finishes(mut stream: BufReader<TcpStream>) {
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    let last = rest.lines().rfind(|l| l.starts_with('{')).unwrap();
    assert!(last.contains("\"done\":true"), "the stream was cut: {rest}");
    assert!(!rest.contains("\"error\""), "{rest}");
}

fn latched(after: usize) -> SimHandle {
    SimHandle::spawn_thread(
        SimConfig {
            default_chunks: 6,
            faults: Faults {
                latch_after_chunks: Some(after),
                ..Faults::default()
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap()
}

#[test]
fn sigterm_lets_streams_finish_refuses_new_connections_and_flushes_key_use() {
    let sim = latched(2);
    // Two requests run at once on the one instance.
    let (mut gateway, key1, key2) = start(&sim, &[("CORRAL_BALANCE__SLOTS", "2")]);
    let port = gateway.port;
    let dir = gateway.dir.path().to_owned();
    let health = |ready: bool| {
        let mut cmd = corral(&dir);
        cmd.arg("health").env("PORT", port.to_string());
        if ready {
            cmd.arg("--ready");
        }
        cmd.output().unwrap().status.success()
    };
    assert!(
        health(false) && health(true),
        "corral health sees the gateway live and ready"
    );
    // Two streams in flight, one per key: two chunks read, the rest held back by the simulator.
    let first = stream(port, &key1, 2);
    let second = stream(port, &key2, 2);

    signal(&gateway, "TERM");
    wait_until_refused(port);
    sim.release_latch();
    finishes(first);
    finishes(second);

    let status = exit_status(&mut gateway, Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
    assert!(!health(false), "corral health fails once the gateway is gone");
    // Both keys' last use is in the database.
    let store = corral_store::Store::open(&gateway.dir.path().join("corral.db").display().to_string(), 1).unwrap();
    let ada = store.get_user_by_email("ada@example.com").unwrap().unwrap();
    let keys = store.list_api_keys(&ada.id).unwrap();
    assert_eq!(keys.len(), 2);
    for key in keys {
        assert!(key.last_used_at.is_some(), "key {} has no last use written", key.id);
    }
}

#[test]
fn during_the_delay_ready_is_503_and_a_request_queued_past_the_grace_gets_503_with_retry_after() {
    let sim = latched(1);
    // One slot (the default): a second chat waits in the queue.
    let (mut gateway, key, _) = start(
        &sim,
        &[
            ("CORRAL_SERVER__SHUTDOWN_DELAY", "3"),
            ("CORRAL_SERVER__SHUTDOWN_GRACE", "2"),
        ],
    );
    let port = gateway.port;
    let _held = stream(port, &key, 1);

    signal(&gateway, "TERM");
    // Not ready any more, though still serving.
    let mut ready = (0, String::new());
    for _ in 0..200 {
        ready = request(port, "GET", "/ready", None, "").unwrap();
        if ready.0 == 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert!(ready.1.contains("shutting down"), "{}", ready.1);
    assert_eq!(request(port, "GET", "/health", None, "").unwrap().0, 200);

    // A request that waits for the slot the held stream keeps, past the grace period.
    let mut queued = TcpStream::connect(("127.0.0.1", port)).unwrap();
    queued.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":false}"#;
    send(&mut queued, "HTTP/1.1", "POST", "/api/chat", Some(&key), body).unwrap();
    let (status, head, body) = read_answer(&mut BufReader::new(queued));
    assert_eq!(status, 503, "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    assert!(body.contains("shutting down"), "{body}");
    // The stream held past the grace period is ended by the shutdown, and the process exits 0.
    let status = exit_status(&mut gateway, Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
    sim.release_latch();
}

#[test]
fn a_second_signal_exits_at_once() {
    let sim = latched(1);
    let (mut gateway, key, _) = start(&sim, &[("CORRAL_SERVER__SHUTDOWN_GRACE", "600")]);
    let _held = stream(gateway.port, &key, 1);
    signal(&gateway, "INT");
    wait_until_refused(gateway.port);
    assert!(gateway.child.try_wait().unwrap().is_none(), "the first signal drains");
    signal(&gateway, "INT");
    let status = exit_status(&mut gateway, Duration::from_secs(10));
    assert!(!status.success(), "exit status {status:?}");
    sim.release_latch();
}
