//! The `corral` binary's configuration commands, run as a user would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn corral(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn config_check_accepts_a_valid_configuration_and_names_the_bad_key() {
    let (ok, err) = corral(
        &["config", "check"],
        &[("OLLAMA_BASE_URLS", "http://a:11434;http://b:11434")],
    );
    assert!(ok, "{err}");
    let (ok, err) = corral(&["config", "check"], &[("PORT", "eighty")]);
    assert!(!ok);
    assert!(err.contains("PORT"), "{err}");
    let (ok, err) = corral(&["config", "check"], &[("CORRAL_SERVER__PROT", "1")]);
    assert!(!ok);
    assert!(err.contains("CORRAL_SERVER__PROT"), "{err}");
}

#[test]
fn migrate_creates_the_default_sqlite_database_and_an_unreachable_one_fails_fast() {
    let dir = std::env::temp_dir().join(format!("corral-cli-{}", std::process::id()));
    let data = dir.to_str().unwrap();
    let (ok, err) = corral(&["migrate"], &[("DATA_DIR", data)]);
    assert!(ok, "{err}");
    assert!(dir.join("corral.db").exists());
    let (ok, _) = corral(&["migrate"], &[("DATA_DIR", data)]);
    assert!(ok, "migrating twice is fine");
    let _ = std::fs::remove_dir_all(&dir);

    let start = std::time::Instant::now();
    let (ok, err) = corral(
        &["migrate"],
        &[("DATABASE_URL", "postgres://corral:hunter2@127.0.0.1:1/corral")],
    );
    assert!(!ok);
    assert!(start.elapsed() < std::time::Duration::from_secs(15));
    assert!(err.contains("127.0.0.1:1"), "the message names the database: {err}");
    assert!(!err.contains("hunter2"), "the password is never printed: {err}");
}

/// `GET path` on 127.0.0.1:`port`, the answer's body, if any.
fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
}

/// Kills the gateway however the test ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback address nothing listens on (the port was free a moment ago).
fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn the_simulator_stands_in_until_a_local_ollama_answers() {
    // The late local Ollama plays on a free port, named to the demo mode in place of the default
    // 127.0.0.1:11434, where a real Ollama may already run.
    let ollama = free_addr();
    let port = free_addr().port();
    let dir = std::env::temp_dir().join(format!("corral-cli-sim-{}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    let local_ollama = format!("http://{ollama}");
    cmd.args(["serve", "--port", &port.to_string(), "--demo-ollama-url", &local_ollama])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _gateway = Running(cmd.spawn().unwrap());
    let wait_for = |want: &str| {
        let mut last = None;
        for _ in 0..100 {
            last = get(port, "/api/version");
            if last.as_deref().is_some_and(|b| b.contains(want)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("/api/version never said {want}; last: {last:?}");
    };
    wait_for("corral-simulator");
    let _late = corral_sim::SimHandle::spawn_thread(
        corral_sim::SimConfig {
            version: "0.12.0-late".to_owned(),
            ..corral_sim::SimConfig::default()
        },
        ollama,
    )
    .unwrap();
    wait_for("0.12.0-late");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `corral user create` with `password` on standard input.
fn user_create(data: &str, email: &str, password: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["user", "create", "--admin", "--email", email])
        .env_clear()
        .env("DATA_DIR", data)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn user_create_checks_the_account_as_sign_up_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (ok, err) = user_create(data, "not-an-email", "correct horse");
    assert!(!ok);
    assert!(err.contains("Invalid email format"), "{err}");
    let (ok, err) = user_create(data, "Ada@Example.com", "correct horse");
    assert!(ok, "{err}");
    assert!(err.contains("ada@example.com"), "the email is normalised: {err}");
    let (ok, err) = user_create(data, "ada@example.com", "correct horse");
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
}

/// `corral` with `DATA_DIR=data`: success, standard output, standard error.
fn corral_in(data: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .env_clear()
        .env("DATA_DIR", data)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn limits_are_set_shown_listed_and_removed_and_bad_ones_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    assert!(user_create(data, "ada@example.com", "correct horse").0);
    let set = [
        "limits",
        "set",
        "user",
        "ada@example.com",
        "--rpm",
        "60",
        "--budget",
        "1000",
    ];
    let (ok, out, err) = corral_in(
        data,
        &[&set[..], &["--period", "week", "--rolling", "--model", "llama3.2"]].concat(),
    );
    assert!(ok, "{err}");
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["requests_per_minute"], 60);
    assert_eq!(value["budget"]["reset"], "rolling");
    let (ok, out, _) = corral_in(data, &["limits", "show", "user", "ada@example.com"]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), value);
    let (_, out, _) = corral_in(data, &["limits", "list"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("user\t"), "{out}");

    let (ok, _, err) = corral_in(data, &[&set[..], &["--period", "fortnight"]].concat());
    assert!(!ok);
    assert!(err.contains("budget.period"), "{err}");
    let (ok, _, err) = corral_in(data, &["limits", "set", "user", "ada@example.com", "--concurrent", "0"]);
    assert!(!ok);
    assert!(err.contains("concurrent_requests"), "{err}");
    let (ok, _, err) = corral_in(data, &["limits", "set", "key", "no-such-key", "--rpm", "5"]);
    assert!(!ok);
    assert!(err.contains("no key"), "{err}");
    let (ok, _, err) = corral_in(data, &["limits", "set", "team", "x", "--rpm", "5"]);
    assert!(!ok);
    assert!(err.contains("scope"), "{err}");

    let (ok, _, err) = corral_in(data, &["limits", "remove", "user", "ada@example.com"]);
    assert!(ok, "{err}");
    let (_, out, _) = corral_in(data, &["limits", "list"]);
    assert!(out.is_empty(), "{out}");
}
