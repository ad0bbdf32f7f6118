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
