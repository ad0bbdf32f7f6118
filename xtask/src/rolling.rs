//! `cargo xtask rolling [--quick]`: a rolling restart under load. Three `corral` replicas share
//! one PostgreSQL database behind nginx, with two simulators upstream; a bounded client load of
//! streamed and non-streamed chats runs through nginx while each replica in turn is sent
//! SIGTERM, drains, exits and is started again. Every request must succeed and every stream
//! must end with its final object; the figures go to `docs/benchmarks.md` (not with
//! `--quick`, which `cargo xtask test` runs on debug binaries).
//!
//! nginx (the Debian package) is installed with apt-get when missing and running as root.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// Replicas behind nginx.
const REPLICAS: usize = 3;
/// How long nginx sets a replica aside after a failed connection (`fail_timeout`).
const FAIL_TIMEOUT: Duration = Duration::from_secs(2);

/// The PostgreSQL server the replicas share (`TEST_DATABASE_URL` overrides it).
const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432";

const STREAM: &str = r#"{"model":"llama3.2","messages":[{"role":"user","content":"Why is the sky blue?"}],"options":{"num_predict":25}}"#;
const CHAT: &str =
    r#"{"model":"llama3.2","messages":[{"role":"user","content":"Hi"}],"stream":false,"options":{"num_predict":5}}"#;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx's master process, stopped with SIGTERM (which stops its workers too) when dropped.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    streams: AtomicU64,
    chats: AtomicU64,
    failed: AtomicU64,
    cut: AtomicU64,
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let profile = if quick { "debug" } else { "release" };
    let mut build = Command::new("cargo");
    build.args(["build", "-p", "corral", "-p", "corral-sim"]);
    if !quick {
        build.arg("--release");
    }
    run_cmd(build.current_dir(root))?;
    let bin = root.join("target").join(profile);
    let nginx = nginx()?;
    let work = root
        .join("target/xtask-tmp")
        .join(format!("rolling-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let db = Database::create()?;
    let sims = [sim(&bin)?, sim(&bin)?];
    let upstreams = format!("{};{}", sims[0].1, sims[1].1);
    let key = provision(&bin, &db.url)?;
    let ports: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect::<Result<_>>()?;
    let replica = |port: u16| -> Result<Proc> {
        let child = Command::new(bin.join("corral"))
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--no-simulator",
            ])
            .env("DATABASE_URL", &db.url)
            .env("OLLAMA_BASE_URLS", &upstreams)
            .env("DATA_DIR", &work)
            .env("RUST_LOG", "warn")
            .env("CORRAL_SERVER__WORKERS", "1")
            .env("CORRAL_BALANCE__SLOTS", "4")
            .env("CORRAL_SERVER__SHUTDOWN_GRACE", "30")
            .stdout(Stdio::null())
            .spawn()
            .context("starting corral")?;
        Ok(Proc(child))
    };
    let mut replicas: Vec<Proc> = ports.iter().map(|p| replica(*p)).collect::<Result<_>>()?;
    for port in &ports {
        wait_ready(*port, Duration::from_secs(60))?;
    }
    let front = free_port()?;
    let _nginx = start_nginx(&nginx, &work, front, &ports)?;
    wait_answer(front, Duration::from_secs(10))?;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers = if quick { 4 } else { 8 };
    let load: Vec<_> = (0..workers)
        .map(|w| {
            let (tally, stop, key) = (tally.clone(), stop.clone(), key.clone());
            std::thread::spawn(move || client(front, &key, w % 2 == 0, &tally, &stop))
        })
        .collect();
    // Between two restarts, at least nginx's `fail_timeout`: nginx sets a restarted replica
    // aside for that long after the connection its restart refused, and taking the next one
    // down sooner leaves the load on one replica, which a single error then sets aside too
    // (every request a 502 "no live upstreams" until the timeout ends). docs/deploy.md says so.
    let pace = Duration::from_secs(if quick { 1 } else { 4 }).max(FAIL_TIMEOUT + Duration::from_millis(500));
    let started = Instant::now();
    std::thread::sleep(pace);
    let mut drains = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let pid = replicas[i].0.id();
        let t = Instant::now();
        run_quiet(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
        let status = replicas[i].0.wait()?;
        let drained = t.elapsed();
        drains.push(drained);
        ensure!(status.success(), "replica {i} exited with {status} after SIGTERM");
        replicas[i] = replica(*port)?;
        wait_ready(*port, Duration::from_secs(60))?;
        eprintln!(
            "replica {i}: drained and exited 0 in {:.2} s after SIGTERM; ready again {:.2} s later",
            drained.as_secs_f64(),
            (t.elapsed() - drained).as_secs_f64()
        );
        std::thread::sleep(pace);
    }
    stop.store(true, Ordering::Release);
    for worker in load {
        let _ = worker.join();
    }
    let wall = started.elapsed();
    let log = std::fs::read_to_string(work.join("error.log")).unwrap_or_default();
    // Errors only: each is followed by a warning that nginx set the replica aside.
    let upstream: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[error]") && l.contains("upstream"))
        .collect();
    // A refused connection never reached a replica. Any other error (a connection accepted in
    // the instant a listener closed, then closed unanswered) came after nginx had sent the
    // request, which only `non_idempotent` lets nginx retry.
    let refused = upstream.iter().filter(|l| l.contains("Connection refused")).count();
    for line in upstream.iter().filter(|l| !l.contains("Connection refused")) {
        eprintln!(
            "nginx: {}",
            line.split_once("[error]").map_or(*line, |(_, rest)| rest).trim()
        );
    }
    let after_sending = upstream.len() - refused;
    let (streams, chats) = (
        tally.streams.load(Ordering::Acquire),
        tally.chats.load(Ordering::Acquire),
    );
    let (failed, cut) = (tally.failed.load(Ordering::Acquire), tally.cut.load(Ordering::Acquire));
    let longest = drains.iter().max().copied().unwrap_or_default();
    let summary = format!(
        "{} requests in {:.1} s ({streams} streamed chats, {chats} non-streamed) while {REPLICAS} replicas were \
         restarted one after another: {failed} failed, {cut} streams cut; each replica drained and exited 0 within \
         {:.2} s of its SIGTERM; nginx retried {refused} refused connection(s) and {after_sending} connection(s) \
         closed unanswered on another replica",
        streams + chats + failed,
        wall.as_secs_f64(),
        longest.as_secs_f64(),
    );
    eprintln!("rolling restart: {summary}");
    drop(replicas);
    let _ = std::fs::remove_dir_all(&work);
    ensure!(streams + chats > 0, "the load made no request");
    if failed > 0 || cut > 0 {
        bail!("requests failed or streams were cut during the rolling restart");
    }
    if !quick {
        let body = format!(
            "## Rolling restart under load\n\n`cargo xtask rolling` on {machine}: three release `corral` replicas on one PostgreSQL \
             database behind nginx (`proxy_buffering off`, `proxy_next_upstream error timeout non_idempotent`), two \
             `corral-sim` instances upstream (50 tokens a second, 4 requests at once each), {workers} clients alternating streamed chats \
             (25 tokens) and non-streamed ones.\n\n{summary}.\n",
            machine = crate::bench::machine(),
        );
        crate::bench::write_section(root, "rolling", &body)?;
        eprintln!("written to docs/benchmarks.md");
    }
    Ok(())
}

/// One client: streamed chats (or non-streamed ones) through nginx, one after another, until
/// `stop`.
fn client(port: u16, key: &str, streamed: bool, tally: &Tally, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let body = if streamed { STREAM } else { CHAT };
        match post(port, key, body) {
            Some((200, answer)) => {
                let objects: Vec<&str> = answer.lines().filter(|l| l.starts_with('{')).collect();
                let clean = objects.last().is_some_and(|l| l.contains("\"done\":true"))
                    && !objects.iter().any(|l| l.contains("\"error\""));
                match (streamed, clean) {
                    (true, true) => tally.streams.fetch_add(1, Ordering::AcqRel),
                    (false, true) => tally.chats.fetch_add(1, Ordering::AcqRel),
                    (true, false) => {
                        eprintln!("cut stream: {answer}");
                        tally.cut.fetch_add(1, Ordering::AcqRel)
                    }
                    (false, false) => {
                        eprintln!("broken answer: {answer}");
                        tally.failed.fetch_add(1, Ordering::AcqRel)
                    }
                };
            }
            other => {
                eprintln!("failed request: {other:?}");
                tally.failed.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

/// `POST /api/chat` over HTTP/1.0 (the answer ends with the connection): the status and body.
fn post(port: u16, key: &str, body: &str) -> Option<(u16, String)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    write!(
        conn,
        "POST /api/chat HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    let status = answer.get(9..12)?.parse().ok()?;
    Some((status, answer.split_once("\r\n\r\n")?.1.to_owned()))
}

/// A throwaway database on the PostgreSQL server, dropped afterwards.
struct Database {
    url: String,
    server: String,
    name: String,
}

impl Database {
    fn create() -> Result<Database> {
        let server = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .map(|u| u.rsplit_once('/').map_or(u.clone(), |(s, _)| s.to_owned()))
            .unwrap_or_else(|| POSTGRES.to_owned());
        let name = format!("corral_rolling_{}", std::process::id());
        psql(&server, &format!("CREATE DATABASE {name}"))
            .context("PostgreSQL is needed for the rolling restart (set TEST_DATABASE_URL)")?;
        Ok(Database {
            url: format!("{server}/{name}"),
            server,
            name,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(
            &self.server,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(server: &str, sql: &str) -> Result<()> {
    run_quiet(Command::new("psql").args([&format!("{server}/postgres"), "-v", "ON_ERROR_STOP=1", "-qc", sql]))
}

/// nginx's path, installing the Debian package when it is missing and we are root.
fn nginx() -> Result<PathBuf> {
    let find = || {
        ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    };
    if let Some(path) = find() {
        return Ok(path);
    }
    if !is_root() {
        bail!("nginx is not installed: run `apt-get install nginx` (as root)");
    }
    eprintln!("nginx is missing; installing the Debian package");
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "nginx"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    find().context("nginx is still missing after apt-get install")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Starts nginx in the foreground with a configuration of its own under `dir`.
fn start_nginx(nginx: &Path, dir: &Path, port: u16, replicas: &[u16]) -> Result<Nginx> {
    let servers: String = replicas
        .iter()
        .map(|p| {
            format!(
                "        server 127.0.0.1:{p} max_fails=1 fail_timeout={}s;\n",
                FAIL_TIMEOUT.as_secs()
            )
        })
        .collect();
    let d = dir.display();
    let user = if is_root() { "user root root;\n" } else { "" };
    let conf = format!(
        "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\ndaemon off;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n    access_log off;\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    \
         fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n\
         {nginx_site}\n}}\n",
        nginx_site = site(port, &servers),
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    run_quiet(Command::new(nginx).arg("-t").arg("-c").arg(&path).arg("-p").arg(dir))?;
    let child = Command::new(nginx)
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx")?;
    Ok(Nginx(child))
}

/// The `upstream` and `server` blocks, as docs/deploy.md recommends them.
fn site(port: u16, servers: &str) -> String {
    format!(
        "    upstream corral {{\n{servers}    }}\n    server {{\n        listen 127.0.0.1:{port};\n        \
         client_max_body_size 0;\n        location / {{\n            proxy_pass http://corral;\n            \
         proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            \
         proxy_set_header Host $host;\n            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n            \
         proxy_buffering off;\n            proxy_request_buffering off;\n            proxy_read_timeout 600s;\n            \
         proxy_send_timeout 600s;\n            proxy_next_upstream error timeout non_idempotent;\n            \
         proxy_next_upstream_tries 3;\n        }}\n    }}"
    )
}

/// Starts `corral-sim` on a free port: the process and its URL.
fn sim(bin: &Path) -> Result<(Proc, String)> {
    use std::io::BufRead;
    let mut child = Command::new(bin.join("corral-sim"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--tokens-per-sec",
            "50",
            "--num-parallel",
            "4",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting corral-sim")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("corral-sim stdout")?).read_line(&mut line)?;
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .with_context(|| format!("corral-sim printed {line:?}"))?
        .to_owned();
    Ok((Proc(child), url))
}

/// An admin and an API key in the shared database, made with the CLI.
fn provision(bin: &Path, db: &str) -> Result<String> {
    let mut create = Command::new(bin.join("corral"))
        .args(["user", "create", "--admin", "--email", "rolling@example.com"])
        .env("DATABASE_URL", db)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    create.stdin.take().context("stdin")?.write_all(b"rolling-password\n")?;
    let created = create.wait_with_output()?;
    ensure!(
        created.status.success(),
        "corral user create failed: {}",
        String::from_utf8_lossy(&created.stderr).trim()
    );
    // What the CLI says on failure is kept for the error (the key itself goes to stdout only).
    let mut last = String::new();
    for _ in 0..3 {
        let out = Command::new(bin.join("corral"))
            .args(["key", "create", "--user", "rolling@example.com", "--name", "rolling"])
            .env("DATABASE_URL", db)
            .output()?;
        if out.status.success() {
            return Ok(String::from_utf8(out.stdout)?.trim().to_owned());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        std::thread::sleep(Duration::from_secs(1));
    }
    anyhow::bail!("corral key create failed three times: {last}")
}

/// Polls `GET /ready` on a replica until it answers 200.
fn wait_ready(port: u16, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if get(port, "/ready").is_some_and(|s| s == 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("127.0.0.1:{port} did not become ready within {limit:?}")
}

/// Polls nginx until it answers.
fn wait_answer(port: u16, limit: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if get(port, "/health").is_some_and(|s| s == 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nginx on 127.0.0.1:{port} did not answer within {limit:?}")
}

fn get(port: u16, path: &str) -> Option<u16> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).ok()?;
    answer.get(9..12)?.parse().ok()
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{:?} failed: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}
