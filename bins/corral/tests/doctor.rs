//! `corral doctor` on a healthy deployment (exit 0, every check ok) and on broken ones (a dead
//! instance, a wrong key, an unreachable database, a published example secret): each problem
//! named with its fix, exit status 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use corral_sim::{SimConfig, SimHandle};

const SECRET: &str = "9f1c2d3e4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Runs `corral doctor` with only `env` and `config` (a TOML text); success and the report.
fn doctor(dir: &std::path::Path, config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let file = dir.join("corral.toml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corral"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", dir)
        .args(["doctor", "--config", file.to_str().unwrap()])
        .envs(env.iter().copied());
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn migrate(dir: &std::path::Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .env_clear()
        .env("DATA_DIR", dir)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn keyed_sim() -> SimHandle {
    SimHandle::spawn_thread(
        SimConfig {
            api_key: Some("right-key".to_owned()),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap()
}

/// Whether the report has a FAIL line mentioning `about` followed by a fix.
fn fails_with_fix(report: &str, about: &str) -> bool {
    let lines: Vec<&str> = report.lines().collect();
    lines.iter().enumerate().any(|(i, l)| {
        l.starts_with("FAIL")
            && l.contains(about)
            && lines.get(i + 1).is_some_and(|n| n.trim_start().starts_with("fix:"))
    })
}

#[test]
fn a_healthy_deployment_passes() {
    let sim = keyed_sim();
    let dir = tempfile::tempdir().unwrap();
    migrate(dir.path());
    let config = format!(
        "[ollama]\nbase_urls = [\"{}\"]\n[ollama.api_configs.\"0\"]\nkey = \"right-key\"\n",
        sim.url()
    );
    let (ok, report) = doctor(dir.path(), &config, &[("CORRAL_SECRET_KEY", SECRET)]);
    assert!(ok, "{report}");
    assert!(!report.contains("FAIL"), "{report}");
    for check in [
        "configuration",
        "database",
        "secret key",
        "instance 0",
        "open-file limit",
        "clock against instance 0",
    ] {
        assert!(
            report.lines().any(|l| l.starts_with("ok") && l.contains(check)),
            "no ok {check}: {report}"
        );
    }
}

#[test]
fn a_broken_deployment_names_each_problem_and_its_fix() {
    let sim = keyed_sim();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    migrate(dir.path());
    let config = format!(
        "[ollama]\nbase_urls = [\"{}\", \"{dead}\"]\n[ollama.api_configs.\"0\"]\nkey = \"wrong-key\"\n",
        sim.url()
    );
    let (ok, report) = doctor(dir.path(), &config, &[("CORRAL_SECRET_KEY", "t0p-s3cr3t")]);
    assert!(!ok, "{report}");
    assert!(fails_with_fix(&report, "refused the key"), "{report}");
    assert!(fails_with_fix(&report, "unreachable"), "{report}");
    assert!(fails_with_fix(&report, "published example"), "{report}");
    assert!(
        !report.contains("wrong-key") && !report.contains("t0p-s3cr3t"),
        "secrets stay out: {report}"
    );
}

#[test]
fn an_unreachable_database_or_a_missing_one_is_named_with_its_fix() {
    let sim = keyed_sim();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[ollama]\nbase_urls = [\"{}\"]\n[ollama.api_configs.\"0\"]\nkey = \"right-key\"\n",
        sim.url()
    );
    let (ok, report) = doctor(
        dir.path(),
        &config,
        &[
            ("CORRAL_SECRET_KEY", SECRET),
            ("DATABASE_URL", "postgres://corral:hunter2@127.0.0.1:1/corral"),
        ],
    );
    assert!(!ok, "{report}");
    assert!(fails_with_fix(&report, "database"), "{report}");
    assert!(!report.contains("hunter2"), "{report}");

    // SQLite that was never created: the doctor says so and creates nothing.
    let (ok, report) = doctor(dir.path(), &config, &[("CORRAL_SECRET_KEY", SECRET)]);
    assert!(!ok, "{report}");
    assert!(fails_with_fix(&report, "no SQLite database"), "{report}");
    assert!(!dir.path().join("corral.db").exists());

    // An invalid configuration is a finding too.
    let (ok, report) = doctor(dir.path(), "[server]\nport = \"eighty\"\n", &[]);
    assert!(!ok, "{report}");
    assert!(fails_with_fix(&report, "configuration"), "{report}");
}
