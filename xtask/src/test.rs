//! `cargo xtask test`: the whole suite, as CI runs it.
//!
//! 1. every Rust test in the workspace (nextest when installed, else `cargo test`);
//! 2. the official clients (`tests/clients`) against a live gateway in front of simulators.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Runs the whole suite from the workspace `root`.
pub fn run(root: &Path) -> Result<()> {
    let mut failures = Vec::new();
    if let Err(err) = rust_tests(root) {
        failures.push(format!("Rust tests: {err:#}"));
    }
    if let Err(err) = client_tests(root) {
        failures.push(format!("client suite: {err:#}"));
    }
    if failures.is_empty() {
        eprintln!("xtask test: everything passed");
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
    }
}

fn rust_tests(root: &Path) -> Result<()> {
    let nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut cmd = Command::new("cargo");
    if nextest {
        cmd.args(["nextest", "run", "--workspace", "--all-features", "--no-fail-fast"]);
    } else {
        cmd.args(["test", "--workspace", "--all-features", "--no-fail-fast"]);
    }
    run_cmd(cmd.current_dir(root))
}

/// Starts simulators and a gateway, then runs the client suites against them.
fn client_tests(root: &Path) -> Result<()> {
    run_cmd(
        Command::new("cargo")
            .args(["build", "-p", "corral", "-p", "corral-sim"])
            .current_dir(root),
    )?;
    let bin = root.join("target/debug");
    let sim_a = Proc::sim(&bin, &["--models", "llama3.2,all-minilm@embedding,qwen3@thinking"])?;
    let data = tempdir(root)?;
    let port = free_port()?;
    let gateway = Proc::spawn(
        Command::new(bin.join("corral"))
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .env("OLLAMA_BASE_URLS", &sim_a.url)
            .env("DATA_DIR", &data)
            .env("RUST_LOG", "warn"),
        format!("http://127.0.0.1:{port}"),
    )?;
    wait_healthy(&gateway.url, Duration::from_secs(30))?;

    let venv = root.join("target/clients-venv");
    if !venv.join("bin/python").exists() {
        run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let reqs = root.join("tests/clients/python/requirements.txt");
    run_cmd(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "-r"])
            .arg(&reqs),
    )?;
    run_cmd(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/clients/python"])
            .env("CORRAL_URL", &gateway.url)
            .env("CORRAL_SIM_URL", &sim_a.url)
            .current_dir(root),
    )?;
    drop(gateway);
    drop(sim_a);
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

/// A child process that is killed when dropped.
struct Proc {
    child: Child,
    url: String,
}

impl Proc {
    fn spawn(cmd: &mut Command, url: String) -> Result<Proc> {
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        Ok(Proc { child, url })
    }

    /// Starts `corral-sim` on a free port and reads the URL it prints.
    fn sim(bin: &Path, args: &[&str]) -> Result<Proc> {
        let mut child = Command::new(bin.join("corral-sim"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting corral-sim")?;
        let stdout = child.stdout.take().context("corral-sim stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://"))
            .with_context(|| format!("corral-sim printed {line:?}"))?
            .to_owned();
        Ok(Proc { child, url })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tempdir(root: &Path) -> Result<PathBuf> {
    let dir = root
        .join("target/xtask-tmp")
        .join(format!("data-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Polls `GET /health` until it answers 200.
fn wait_healthy(url: &str, limit: Duration) -> Result<()> {
    let addr = url.trim_start_matches("http://").to_owned();
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(mut stream) = TcpStream::connect(&addr) {
            let _ = write!(
                stream,
                "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            );
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{url} did not become healthy within {limit:?}")
}
