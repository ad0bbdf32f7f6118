//! `cargo xtask test`: the whole suite, as CI runs it.
//!
//! 1. every Rust test in the workspace (nextest when installed, else `cargo test`);
//! 2. the official clients (`tests/clients`) against a live gateway in front of simulators;
//! 3. the web console in Debian's headless Chromium (`tests/console`, Playwright for Python),
//!    against a gateway of its own in front of simulators;
//! 4. every benchmark scenario in its smoke mode (`bench --smoke`, `bench balance --smoke`,
//!    `bench streams --smoke`, `bench metering --smoke`, `bench limits --smoke`):
//!    a few requests each, no figure kept, so a benchmark that stops working fails here.
//! 5. a short rolling restart under load (`cargo xtask rolling --quick`): three replicas on
//!    PostgreSQL behind nginx, no failed request and no cut stream.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Runs the whole suite from the workspace `root`.
pub fn run(root: &Path) -> Result<()> {
    let mut failures = Vec::new();
    if let Err(err) = ensure_prometheus() {
        failures.push(format!("installing prometheus: {err:#}"));
    }
    if let Err(err) = rust_tests(root) {
        failures.push(format!("Rust tests: {err:#}"));
    }
    if let Err(err) = client_tests(root) {
        failures.push(format!("client suite: {err:#}"));
    }
    if let Err(err) = console_tests(root) {
        failures.push(format!("console suite: {err:#}"));
    }
    for args in [
        vec!["--smoke"],
        vec!["balance", "--smoke"],
        vec!["streams", "--smoke"],
        vec!["metering", "--smoke"],
        vec!["limits", "--smoke"],
    ] {
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        eprintln!("$ cargo xtask bench {}", args.join(" "));
        if let Err(err) = crate::bench::run(root, &args) {
            failures.push(format!("bench {}: {err:#}", args.join(" ")));
        }
    }
    if let Err(err) = crate::rolling::run(root, &["--quick".to_owned()]) {
        failures.push(format!("rolling restart: {err:#}"));
    }
    if failures.is_empty() {
        eprintln!("xtask test: everything passed");
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
    }
}

/// A real Prometheus scrapes the gateway in the integration tests
/// (`observability::a_real_prometheus_scrapes_corral_and_answers_promql`): the Debian package
/// is installed when it is missing.
fn ensure_prometheus() -> Result<()> {
    if Path::new("/usr/bin/prometheus").exists() {
        return Ok(());
    }
    eprintln!("$ apt-get install prometheus");
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "prometheus"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
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
    // An admin and an API key, made with the CLI as an operator would.
    let mut create = Command::new(bin.join("corral"))
        .args(["user", "create", "--admin", "--email", "admin@example.com"])
        .env("DATA_DIR", &data)
        .stdin(Stdio::piped())
        .spawn()
        .context("corral user create")?;
    create
        .stdin
        .take()
        .context("corral user create stdin")?
        .write_all(b"client-suite-password\n")?;
    let status = create.wait()?;
    if !status.success() {
        bail!("corral user create failed: {status}");
    }
    let key = Command::new(bin.join("corral"))
        .args(["key", "create", "--user", "admin@example.com", "--name", "client-suite"])
        .env("DATA_DIR", &data)
        .stderr(Stdio::inherit())
        .output()
        .context("corral key create")?;
    if !key.status.success() {
        bail!("corral key create failed: {}", key.status);
    }
    let key = String::from_utf8(key.stdout)?.trim().to_owned();
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
    let mut failures = Vec::new();

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
    if let Err(err) = run_cmd(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/clients/python"])
            .env("CORRAL_URL", &gateway.url)
            .env("CORRAL_API_KEY", &key)
            .env("CORRAL_SIM_URL", &sim_a.url)
            .current_dir(root),
    ) {
        failures.push(format!("python clients: {err:#}"));
    }
    if let Err(err) = js_clients(root, &gateway.url, &key) {
        failures.push(format!("javascript clients: {err:#}"));
    }
    if let Err(err) = schemathesis(root, &gateway.url, &key) {
        failures.push(format!("schemathesis: {err:#}"));
    }
    drop(gateway);
    drop(sim_a);
    let _ = std::fs::remove_dir_all(&data);
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
    }
}

/// Debian's Chromium and its driver, installed when missing (`apt-get`; CI runs as root).
fn ensure_chromium() -> Result<()> {
    if Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists() {
        return Ok(());
    }
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The console's browser suite: a gateway with an admin made by the CLI, one simulator
/// configured and another that the suite starts, adds through the console and kills; the
/// health checks run every second so the fleet page shows the kill quickly. Screenshots go
/// to `docs/console/`. `cargo xtask test console` runs this step alone.
pub fn console_tests(root: &Path) -> Result<()> {
    ensure_chromium()?;
    run_cmd(
        Command::new("cargo")
            .args(["build", "-p", "corral", "-p", "corral-sim"])
            .current_dir(root),
    )?;
    let bin = root.join("target/debug");
    let sim = Proc::sim(&bin, &["--models", "llama3.2,all-minilm@embedding"])?;
    let data = tempdir(root)?.join("console");
    std::fs::create_dir_all(&data)?;
    let (email, password) = ("admin@example.com", "console-suite-password");
    let mut create = Command::new(bin.join("corral"))
        .args(["user", "create", "--admin", "--email", email])
        .env("DATA_DIR", &data)
        .stdin(Stdio::piped())
        .spawn()
        .context("corral user create")?;
    create
        .stdin
        .take()
        .context("corral user create stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let status = create.wait()?;
    if !status.success() {
        bail!("corral user create failed: {status}");
    }
    let port = free_port()?;
    let gateway = Proc::spawn(
        Command::new(bin.join("corral"))
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .env("OLLAMA_BASE_URLS", &sim.url)
            .env("DATA_DIR", &data)
            .env("CORRAL_BALANCE__HEALTH_INTERVAL", "1")
            .env("RUST_LOG", "warn"),
        format!("http://127.0.0.1:{port}"),
    )?;
    wait_healthy(&gateway.url, Duration::from_secs(30))?;
    let venv = root.join("target/console-venv");
    if !venv.join("bin/python").exists() {
        run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run_cmd(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "-r"])
            .arg(root.join("tests/console/requirements.txt")),
    )?;
    let result = run_cmd(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/console"])
            .env("CORRAL_URL", &gateway.url)
            .env("CORRAL_ADMIN_EMAIL", email)
            .env("CORRAL_ADMIN_PASSWORD", password)
            .env("CORRAL_SIM_BIN", bin.join("corral-sim"))
            .env("CORRAL_SHOTS", root.join("docs/console"))
            .current_dir(root),
    );
    drop(gateway);
    drop(sim);
    let _ = std::fs::remove_dir_all(&data);
    result
}

/// Schemathesis against the live gateway, from the gateway's own `/openapi.json`: a bounded
/// run (a few examples per operation) that fails on any 5xx and on any answer the document
/// does not describe (status, content type, schema). Operations that would end the suite's
/// own key or session, point the gateway at other instances, or fetch from outside are left
/// out: their own tests cover them.
fn schemathesis(root: &Path, url: &str, key: &str) -> Result<()> {
    let venv = root.join("target/schemathesis-venv");
    if !venv.join("bin/python").exists() {
        run_cmd(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run_cmd(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "-r"])
            .arg(root.join("tests/schemathesis/requirements.txt")),
    )?;
    run_cmd(
        Command::new(venv.join("bin/st"))
            .arg("--config-file")
            .arg(root.join("tests/schemathesis/schemathesis.toml"))
            .args([
                "run",
                &format!("{url}/openapi.json"),
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--exclude-path-regex",
                "(signout|api_key|/verify|/models/download|/config/update)",
                "--max-examples",
                "5",
                "--workers",
                "1",
                "--phases",
                "examples,coverage,fuzzing",
                "--seed",
                "20261204",
            ])
            .env("CORRAL_API_KEY", key)
            .env("SCHEMATHESIS_TELEMETRY", "false"),
    )
}

/// The official JavaScript `ollama` client (from npm, pinned by the lock file) against the
/// gateway, with Node's own test runner.
fn js_clients(root: &Path, url: &str, key: &str) -> Result<()> {
    let dir = root.join("tests/clients/js");
    let npm = if dir.join("package-lock.json").exists() {
        "ci"
    } else {
        "install"
    };
    run_cmd(
        Command::new("npm")
            .args([npm, "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir),
    )?;
    run_cmd(
        Command::new("node")
            .args(["--test", "--test-reporter=spec"])
            .env("CORRAL_URL", url)
            .env("CORRAL_API_KEY", key)
            .current_dir(&dir),
    )
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
    // Program and arguments only: the environment carries the suite's API key.
    let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    eprintln!("$ {} {}", cmd.get_program().to_string_lossy(), args.join(" "));
    let status = cmd
        .status()
        .with_context(|| format!("running {}", cmd.get_program().to_string_lossy()))?;
    if !status.success() {
        bail!(
            "{} {} failed: {status}",
            cmd.get_program().to_string_lossy(),
            args.join(" ")
        );
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
