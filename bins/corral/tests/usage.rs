//! Usage across graceful restarts, on the real binary: with a flush interval longer than the
//! test, only the drain after SIGTERM writes the records; after two runs `corral usage` reports
//! exactly the tokens the simulator served, as a table, CSV or JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corral_sim::{SimConfig, SimHandle};

/// A gateway process, killed however the test ends.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn corral(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", dir)
        .env("RUST_LOG", "warn");
    cmd
}

fn run(dir: &Path, args: &[&str]) -> String {
    let out = corral(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An admin account and an API key of it.
fn key(dir: &Path) -> String {
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
    assert!(create.wait_with_output().unwrap().status.success());
    run(dir, &["key", "create", "--user", "ada@example.com"])
        .trim()
        .to_owned()
}

fn request(port: u16, path: &str, key: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        conn,
        "POST {path} HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, answer))
}

/// Serves on `dir`'s database, runs `rounds` rounds of requests, stops with SIGTERM and waits
/// for a clean exit.
fn serve_and_stop(dir: &Path, sim: &SimHandle, key: &str, rounds: usize) -> usize {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = corral(dir)
        .args(["serve", "--port", &port.to_string(), "--no-simulator"])
        .env("OLLAMA_BASE_URL", sim.url())
        .env("CORRAL_USAGE__FLUSH_INTERVAL", "3600")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut gateway = Gateway(child);
    let ready = (0..200).any(|_| {
        let up = TcpStream::connect(("127.0.0.1", port)).is_ok();
        if !up {
            std::thread::sleep(Duration::from_millis(50));
        }
        up
    });
    assert!(ready, "the gateway never listened");
    let requests = [
        (
            "/api/chat",
            r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            "/api/generate",
            r#"{"model":"llama3.2","prompt":"one two three","stream":false}"#,
        ),
        ("/api/embed", r#"{"model":"all-minilm","input":["a b","c"]}"#),
        (
            "/v1/chat/completions",
            r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":4}"#,
        ),
        (
            "/ollama/v1/chat/completions",
            r#"{"model":"llama3.2","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":5}"#,
        ),
    ];
    for _ in 0..rounds {
        for (path, body) in requests {
            let (status, answer) = request(port, path, key, body).unwrap();
            assert_eq!(status, 200, "{path}: {answer}");
        }
    }
    let term = Command::new("kill")
        .args(["-TERM", &gateway.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = gateway.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    rounds * requests.len()
}

fn totals(dir: &Path) -> (u64, u64, u64) {
    let out = run(dir, &["usage", "--format", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let t = &rows[0];
    (
        t["requests"].as_u64().unwrap(),
        t["prompt_tokens"].as_u64().unwrap(),
        t["completion_tokens"].as_u64().unwrap(),
    )
}

#[test]
fn usage_written_at_each_graceful_stop_equals_what_was_served() {
    let sim = SimHandle::spawn_thread(SimConfig::default(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = key(dir.path());
    let first = serve_and_stop(dir.path(), &sim, &key, 4) as u64;
    let served = sim.stats();
    let after_first = totals(dir.path());
    assert_eq!(after_first, (first, served.prompt_tokens, served.completion_tokens));

    let second = serve_and_stop(dir.path(), &sim, &key, 3) as u64;
    let served = sim.stats();
    let after_second = totals(dir.path());
    eprintln!(
        "after two graceful stops: {after_second:?} (requests, prompt, completion) recorded; served {} and {} tokens in {} requests",
        served.prompt_tokens,
        served.completion_tokens,
        first + second
    );
    assert_eq!(
        after_second,
        (first + second, served.prompt_tokens, served.completion_tokens)
    );

    let table = run(dir.path(), &["usage", "--group-by", "model,key"]);
    assert!(table.starts_with("model"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");
    let csv = run(
        dir.path(),
        &[
            "usage",
            "--group-by",
            "day",
            "--format",
            "csv",
            "--user",
            "ada@example.com",
        ],
    );
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let out = corral(dir.path())
        .args(["usage", "--group-by", "colour"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--group-by"));
}
