//! The gateway benchmark: the simulator direct, behind nginx as a production reverse proxy, and
//! behind Corral, in one sitting; request/response with `oha`, streams with the client in
//! `bench/stream.rs`, every scenario on kept-alive connections.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::stream::{self, percentile, Framing, StreamStats};

pub(super) const CHAT: &str = r#"{"model":"llama3.2","messages":[{"role":"user","content":"Why is the sky blue?"}],"stream":false,"options":{"num_predict":5}}"#;
pub(super) const OPENAI: &str =
    r#"{"model":"llama3.2","messages":[{"role":"user","content":"Why is the sky blue?"}],"max_tokens":5}"#;
const STREAM: &str = r#"{"model":"llama3.2","messages":[{"role":"user","content":"Why is the sky blue?"}],"stream":true,"options":{"num_predict":100}}"#;
const OPENAI_STREAM: &str = r#"{"model":"llama3.2","messages":[{"role":"user","content":"Why is the sky blue?"}],"stream":true,"max_tokens":100}"#;
/// Requests the simulator runs at once per model, and the slots Corral is told it has.
pub(super) const PARALLEL: &str = "64";

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops `gw` with SIGTERM (its drain writes what it buffered) and waits up to `within` for it
/// to exit.
pub fn stop_gracefully(gw: &mut Proc, within: Duration) -> Result<()> {
    let pid = gw.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status()?;
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if gw.0.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the gateway did not stop within {within:?} of SIGTERM")
}

/// Who answers: the simulator itself or a proxy in front of it.
struct Side {
    name: &'static str,
    /// `http://host:port`.
    base: String,
    /// The header carrying the API key, for Corral.
    auth: Option<String>,
    /// Processes whose CPU time is charged to this side.
    pids: Vec<u32>,
}

/// One side's figures in one scenario, summed over rounds.
#[derive(Default)]
struct Measure {
    /// p50 and p99 of each round (oha), averaged in the report.
    p50: Vec<f64>,
    p99: Vec<f64>,
    ok: u64,
    total: u64,
    secs: f64,
    cpu_ticks: u64,
    /// The user-space part of `cpu_ticks`.
    user_ticks: u64,
    streams: Option<StreamStats>,
}

impl Measure {
    fn rate(&self) -> f64 {
        match &self.streams {
            Some(s) => s.per_sec(),
            None => self.ok as f64 / self.secs.max(1e-9),
        }
    }

    fn requests(&self) -> u64 {
        match &self.streams {
            Some(s) => s.streams as u64,
            None => self.ok,
        }
    }

    /// CPU milliseconds per request.
    fn cpu_ms(&self, tick_ms: f64) -> f64 {
        self.cpu_ticks as f64 * tick_ms / self.requests().max(1) as f64
    }

    /// Adds the CPU time between two [`cpu_split`] readings of this side's processes (a
    /// process gone in between cannot make it negative).
    fn charge(&mut self, (user0, system0): (u64, u64), (user1, system1): (u64, u64)) {
        self.cpu_ticks += (user1 + system1).saturating_sub(user0 + system0);
        self.user_ticks += user1.saturating_sub(user0);
    }

    /// User-space CPU milliseconds per request (the rest of [`Measure::cpu_ms`] is the kernel's).
    fn user_ms(&self, tick_ms: f64) -> f64 {
        self.user_ticks as f64 * tick_ms / self.requests().max(1) as f64
    }

    fn p(&self, q: f64) -> f64 {
        match &self.streams {
            Some(s) => ms(percentile(&s.last, q)),
            None => {
                let v = if q < 90.0 { &self.p50 } else { &self.p99 };
                v.iter().sum::<f64>() / v.len().max(1) as f64
            }
        }
    }
}

/// A scenario's row group: one `Measure` per side.
struct Row {
    label: String,
    concurrency: usize,
    streamed: bool,
    sides: Vec<Measure>,
}

/// How long each run lasts and how many rounds each scenario has.
struct Plan {
    run: Duration,
    rounds: usize,
}

pub fn run(root: &Path, quick: bool, smoke: bool) -> Result<()> {
    let bin = super::build_bins(root, smoke)?;
    let oha = oha(root)?;
    raise_open_files(65_536);
    let load_before = loadavg();

    let (sim, direct) = start_sim(&bin, &["--num-parallel", PARALLEL, "--max-queue", "4096"])?;
    let data = root.join("target/xtask-tmp/bench-data");
    let key = super::provision_key(&bin, &data_dir(&data)?)?;
    let (corral, through) = start_corral(&bin, &data, &direct, &[("CORRAL_SERVER__WORKERS", "1")], None)?;
    wait_ready(&oha, &format!("{through}/health"))?;
    // The same gateway with `metrics.enable` false: what counting costs.
    let (quiet, quiet_url) = start_corral(
        &bin,
        &data,
        &direct,
        &[("CORRAL_SERVER__WORKERS", "1"), ("CORRAL_METRICS__ENABLE", "false")],
        None,
    )?;
    wait_ready(&oha, &format!("{quiet_url}/health"))?;
    let nginx = Nginx::start(root, &direct)?;
    wait_ready(&oha, &format!("{}/api/version", nginx.base))?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_mib(corral.0.id());
    let nginx_idle_rss: f64 = nginx.pids().iter().map(|&p| rss_mib(p)).sum();

    let sides = [
        Side {
            name: "direct",
            base: direct.clone(),
            auth: None,
            pids: vec![sim.0.id()],
        },
        Side {
            name: "nginx",
            base: nginx.base.clone(),
            auth: None,
            pids: nginx.pids(),
        },
        Side {
            name: "Corral",
            base: through.clone(),
            auth: Some(format!("authorization: Bearer {key}")),
            pids: vec![corral.0.id()],
        },
        Side {
            name: "Corral, metrics off",
            base: quiet_url.clone(),
            auth: Some(format!("authorization: Bearer {key}")),
            pids: vec![quiet.0.id()],
        },
    ];
    let plan = if smoke {
        Plan {
            run: Duration::from_millis(300),
            rounds: 1,
        }
    } else if quick {
        Plan {
            run: Duration::from_secs(1),
            rounds: 1,
        }
    } else {
        Plan {
            run: Duration::from_secs(4),
            rounds: 2,
        }
    };
    let rt = stream::runtime()?;
    let mut rows = Vec::new();
    for (label, path, body) in [
        ("native `/api/chat`", "/api/chat", CHAT),
        ("OpenAI `/v1/chat/completions`", "/v1/chat/completions", OPENAI),
    ] {
        for c in [1, 32] {
            eprintln!("bench: {label}, c={c}");
            let mut row = Row {
                label: label.to_owned(),
                concurrency: c,
                streamed: false,
                sides: sides.iter().map(|_| Measure::default()).collect(),
            };
            for _ in 0..plan.rounds {
                for (side, m) in sides.iter().zip(&mut row.sides) {
                    let before = cpu_split(&side.pids);
                    let load = oha_run(
                        &oha,
                        &format!("{}{path}", side.base),
                        body,
                        c,
                        plan.run,
                        side.auth.as_deref(),
                    )?;
                    m.charge(before, cpu_split(&side.pids));
                    m.p50.push(load.p50_ms);
                    m.p99.push(load.p99_ms);
                    m.ok += load.ok;
                    m.total += load.total;
                    m.secs += load.secs;
                }
            }
            rows.push(row);
        }
    }
    for (label, path, body, framing, keep_alive, cs) in [
        (
            "100-chunk native `/api/chat`",
            "/api/chat",
            STREAM,
            Framing::Ndjson,
            true,
            &[1, 8, 32][..],
        ),
        (
            "100-chunk OpenAI `/v1/chat/completions`",
            "/v1/chat/completions",
            OPENAI_STREAM,
            Framing::Sse,
            true,
            &[1, 32][..],
        ),
        (
            "100-chunk native `/api/chat`, new connection per stream",
            "/api/chat",
            STREAM,
            Framing::Ndjson,
            false,
            &[8][..],
        ),
    ] {
        for &c in cs {
            eprintln!("bench: {label}, c={c}");
            let mut row = Row {
                label: label.to_owned(),
                concurrency: c,
                streamed: true,
                sides: sides.iter().map(|_| Measure::default()).collect(),
            };
            for _ in 0..plan.rounds {
                for (side, m) in sides.iter().zip(&mut row.sides) {
                    let req = stream::Request {
                        addr: side.base.trim_start_matches("http://").to_owned(),
                        path: path.to_owned(),
                        body: body.to_owned(),
                        headers: side.auth.as_ref().map(|a| format!("{a}\r\n")).unwrap_or_default(),
                        framing,
                        keep_alive,
                    };
                    let before = cpu_split(&side.pids);
                    let stats = stream::run(&rt, &req, c, plan.run, None);
                    m.charge(before, cpu_split(&side.pids));
                    m.streams.get_or_insert_with(StreamStats::default).absorb(stats);
                }
            }
            rows.push(row);
        }
    }
    if smoke {
        // Every scenario ran on every side; nothing is measured, only that all succeeded.
        drop((nginx, corral, sim));
        let mut failed = Vec::new();
        for row in &rows {
            for (side, m) in sides.iter().zip(&row.sides) {
                let ok = match &m.streams {
                    Some(st) => st.streams > 0 && st.errors == 0,
                    None => m.total > 0 && m.ok == m.total,
                };
                if !ok {
                    failed.push(format!("{} c={} through {}", row.label, row.concurrency, side.name));
                }
            }
        }
        anyhow::ensure!(failed.is_empty(), "bench smoke: {}", failed.join("; "));
        eprintln!("bench smoke: every gateway scenario ran through direct, nginx and Corral");
        return Ok(());
    }
    let loaded_rss = rss_mib(corral.0.id());
    let nginx_loaded_rss: f64 = nginx.pids().iter().map(|&p| rss_mib(p)).sum();
    let facts = Facts {
        quick,
        plan,
        load: (load_before, loadavg()),
        rss: [(idle_rss, loaded_rss), (nginx_idle_rss, nginx_loaded_rss)],
        nginx_version: nginx.version.clone(),
    };
    drop((nginx, corral, sim));
    let report = report(&rows, &sides, &facts);
    std::io::Write::write_all(&mut std::io::stdout(), report.as_bytes())?;
    super::write_section(root, "gateway", &report)?;
    eprintln!("bench: wrote docs/benchmarks.md");
    Ok(())
}

struct Facts {
    quick: bool,
    plan: Plan,
    load: (String, String),
    /// Corral's and nginx's RSS (MiB), idle and after the load.
    rss: [(f64, f64); 2],
    nginx_version: String,
}

fn report(rows: &[Row], sides: &[Side], facts: &Facts) -> String {
    let tick_ms = 1000.0 / clock_ticks() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Gateway overhead against nginx (`cargo xtask bench{}`)\n",
        if facts.quick { " --quick" } else { "" }
    );
    let _ = writeln!(out, "Machine: {}.  ", super::machine());
    let _ = writeln!(
        out,
        "Run: {}; load average (1, 5, 15 min) {} before, {} after. The simulator (`corral-sim`, 1 worker, {PARALLEL} parallel requests per model, answering as fast as it can) is asked directly, through {} (1 worker process, a production reverse proxy: upstream keepalive, HTTP/1.1 upstream, buffering off both ways, access log off) and through Corral (1 worker, `balance.slots` {PARALLEL}, log level `warn` so no access log either, release build, an API key on every request). Each scenario runs {} s per side, in {} round(s) taken in turn (direct, nginx, Corral, direct, …); rates are requests over the summed time, oha's percentiles are the mean of the rounds'. Every connection is kept alive unless the row says otherwise. Load from `oha` (whole responses) and from the streaming client in `xtask/src/bench/stream.rs` (tokio, 2 threads, times each event), on the same 2 cores as the servers.\n",
        chrono_free_date(),
        facts.load.0,
        facts.load.1,
        facts.nginx_version,
        facts.plan.run.as_secs(),
        facts.plan.rounds,
    );
    let _ = writeln!(
        out,
        "CPU per request is the user plus system time of the process(es) in front of the client during the run (`/proc/<pid>/stat`), over requests answered: for direct the simulator itself, for nginx its master and worker, for Corral its process; the clock is {:.0} ms. `user` is the part spent in the process's own code (the rest is the kernel's: system calls, loopback TCP, scheduling).\n",
        tick_ms
    );
    let _ = writeln!(
        out,
        "| requests (not streamed) | concurrency | side | p50 | p99 | requests/s | of direct | of nginx | CPU per request | of it user |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for row in rows.iter().filter(|r| !r.streamed) {
        let (d, n) = (&row.sides[0], &row.sides[1]);
        for (side, m) in sides.iter().zip(&row.sides) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.3} ms | {:.3} ms | {:.0} | {:.0}% | {:.0}% | {:.4} ms | {:.4} ms |{}",
                row.label,
                row.concurrency,
                side.name,
                m.p(50.0),
                m.p(99.0),
                m.rate(),
                100.0 * m.rate() / d.rate().max(1e-9),
                100.0 * m.rate() / n.rate().max(1e-9),
                m.cpu_ms(tick_ms),
                m.user_ms(tick_ms),
                if m.ok == m.total {
                    String::new()
                } else {
                    format!(" **{} of {} failed**", m.total - m.ok, m.total)
                }
            );
        }
    }
    let _ = writeln!(
        out,
        "\n| streams | concurrency | side | first event p50 | first event p99 | last event p50 | last event p99 | streams/s | of direct | of nginx | events per stream | failed | CPU per stream |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for row in rows.iter().filter(|r| r.streamed) {
        let (d, n) = (&row.sides[0], &row.sides[1]);
        for (side, m) in sides.iter().zip(&row.sides) {
            let Some(s) = &m.streams else { continue };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.0} | {:.0}% | {:.0}% | {} | {} | {:.4} ms |",
                row.label,
                row.concurrency,
                side.name,
                ms(percentile(&s.first, 50.0)),
                ms(percentile(&s.first, 99.0)),
                ms(percentile(&s.last, 50.0)),
                ms(percentile(&s.last, 99.0)),
                m.rate(),
                100.0 * m.rate() / d.rate().max(1e-9),
                100.0 * m.rate() / n.rate().max(1e-9),
                events_per_stream(s),
                s.errors,
                m.cpu_ms(tick_ms),
            );
            if let Some(err) = &s.first_error {
                let _ = writeln!(
                    out,
                    "| (first failure: {}) | | | | | | | | | | | | |",
                    err.replace('|', "/")
                );
            }
        }
    }
    let [(idle, loaded), (nginx_idle, nginx_loaded)] = facts.rss;
    let _ = writeln!(
        out,
        "\nMemory (RSS): Corral {idle:.1} MiB idle after start, {loaded:.1} MiB after the load; nginx (master and worker) {nginx_idle:.1} MiB and {nginx_loaded:.1} MiB.\n"
    );

    let _ = writeln!(out, "Targets (from the issue; a benchmark, not a test):\n");
    let find = |label: &str, c: usize| rows.iter().find(|r| r.label == label && r.concurrency == c);
    if let Some(r) = find("native `/api/chat`", 1) {
        let (d, n, g) = (r.sides[0].p(50.0), r.sides[1].p(50.0), r.sides[2].p(50.0));
        let _ = writeln!(
            out,
            "- added p50 at concurrency 1 (native, over direct) ≤ 0.05 ms: Corral {:+.3} ms (nginx {:+.3} ms), {}",
            g - d,
            n - d,
            verdict(g - d <= 0.05)
        );
    }
    if let Some(r) = find("native `/api/chat`", 32) {
        let ratio = r.sides[2].rate() / r.sides[1].rate().max(1e-9);
        let _ = writeln!(
            out,
            "- requests/s at concurrency 32 (native) ≥ 0.9 × nginx's: {ratio:.3} × ({:.0} against {:.0}), {}",
            r.sides[2].rate(),
            r.sides[1].rate(),
            verdict(ratio >= 0.9)
        );
        let (n, g) = (&r.sides[1], &r.sides[2]);
        let _ = writeln!(
            out,
            "  - CPU per request there: Corral {:.4} ms ({:.4} user, {:.4} kernel), nginx {:.4} ms ({:.4} user, {:.4} kernel)",
            g.cpu_ms(tick_ms),
            g.user_ms(tick_ms),
            g.cpu_ms(tick_ms) - g.user_ms(tick_ms),
            n.cpu_ms(tick_ms),
            n.user_ms(tick_ms),
            n.cpu_ms(tick_ms) - n.user_ms(tick_ms),
        );
    }
    if let Some(r) = find("100-chunk native `/api/chat`", 8) {
        let ratio = r.sides[2].rate() / r.sides[1].rate().max(1e-9);
        let p99 = r.sides[2].p(99.0);
        let same = r
            .sides
            .iter()
            .all(|m| m.streams.as_ref().is_some_and(|s| s.errors == 0));
        let _ = writeln!(
            out,
            "- kept-alive 100-chunk streams at concurrency 8 ≥ 0.95 × nginx's streams/s with p99 < 10 ms, none failed: {ratio:.3} ×, p99 {p99:.3} ms, {}",
            verdict(ratio >= 0.95 && p99 < 10.0 && same)
        );
    }
    let _ = writeln!(
        out,
        "- idle RSS ≤ 20 MB: {idle:.1} MiB, {}",
        verdict(idle <= 20.0 * 1_000_000.0 / 1_048_576.0)
    );
    let _ = writeln!(
        out,
        "\n### Metrics on and off\n\nThe same gateway with `metrics.enable` false (no counting, no `/metrics`) beside the default (counted: every request, its exchange record, its latencies and tokens). Target: within 3%.\n\n| scenario | concurrency | requests/s, metrics on | requests/s, metrics off | on / off |\n| --- | ---: | ---: | ---: | ---: |"
    );
    for row in rows {
        let (on, off) = (&row.sides[2], &row.sides[3]);
        let _ = writeln!(
            out,
            "| {}{} | {} | {:.0} | {:.0} | {:.1}% |",
            row.label,
            if row.streamed { " (streamed)" } else { "" },
            row.concurrency,
            on.rate(),
            off.rate(),
            100.0 * on.rate() / off.rate().max(1e-9)
        );
    }
    out
}

/// The events per complete stream: one number when every stream had the same.
fn events_per_stream(s: &StreamStats) -> String {
    let (min, max) = (s.per_stream.iter().min(), s.per_stream.iter().max());
    match (min, max) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a} to {b}"),
        _ => "none".to_owned(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**not met**"
    }
}

pub fn chrono_free_date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The 1, 5 and 15-minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// Empties and creates `dir`.
pub(super) fn data_dir(dir: &Path) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    Ok(dir.to_owned())
}

/// Starts the simulator with `args` on a free port; returns it and its base URL.
pub fn start_sim(bin: &Path, args: &[&str]) -> Result<(Proc, String)> {
    let mut sim = Command::new(bin.join("corral-sim"))
        .args(["--host", "127.0.0.1", "--port", "0", "--workers", "1"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting corral-sim")?;
    let mut line = String::new();
    BufReader::new(sim.stdout.take().context("sim stdout")?).read_line(&mut line)?;
    let url = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
    Ok((Proc(sim), url))
}

/// Starts Corral in front of `upstream` with the database under `data` and `env`; with
/// `nofile`, under that soft open-file limit (as a service manager would start it). Returns it
/// and its base URL.
pub fn start_corral(
    bin: &Path,
    data: &Path,
    upstream: &str,
    env: &[(&str, &str)],
    nofile: Option<u64>,
) -> Result<(Proc, String)> {
    let prefix: Vec<String> = match nofile {
        Some(soft) => {
            let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .maximum
                .map_or_else(|| "unlimited".to_owned(), |h| h.to_string());
            vec!["prlimit".to_owned(), format!("--nofile={soft}:{hard}"), "--".to_owned()]
        }
        None => Vec::new(),
    };
    start_corral_under(bin, data, upstream, env, &prefix)
}

/// [`start_corral`] with the command run under `prefix` (a tool and its arguments, such as
/// valgrind), which must exec Corral in its own process.
pub fn start_corral_under(
    bin: &Path,
    data: &Path,
    upstream: &str,
    env: &[(&str, &str)],
    prefix: &[String],
) -> Result<(Proc, String)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let corral = bin.join("corral");
    let mut cmd = match prefix.split_first() {
        Some((tool, args)) => {
            let mut c = Command::new(tool);
            c.args(args).arg(&corral);
            c
        }
        None => Command::new(&corral),
    };
    cmd.args([
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--no-simulator",
    ])
    .env("OLLAMA_BASE_URL", upstream)
    .env("DATA_DIR", data)
    .env("RUST_LOG", "warn")
    // The simulator runs PARALLEL requests per model at once; the gateway is told so, as an
    // operator sets it to the instances' OLLAMA_NUM_PARALLEL.
    .env("CORRAL_BALANCE__SLOTS", PARALLEL);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let gw = cmd.spawn().context("starting corral")?;
    Ok((Proc(gw), format!("http://127.0.0.1:{port}")))
}

/// nginx as a reverse proxy in front of one upstream, with its own configuration, logs and
/// pid file in a temporary directory.
pub struct Nginx {
    proc: Proc,
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// `nginx/1.22.1`.
    pub version: String,
}

impl Nginx {
    pub fn start(root: &Path, upstream: &str) -> Result<Nginx> {
        let nginx = ensure_nginx()?;
        let version = Command::new(&nginx)
            .arg("-v")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).trim().replace("nginx version: ", ""))
            .unwrap_or_else(|_| "nginx".to_owned());
        let dir = data_dir(&root.join("target/xtask-tmp/nginx"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let up = upstream.trim_start_matches("http://");
        let d = dir.display();
        let conf = format!(
            r#"# Generated by `cargo xtask bench`: nginx as a production reverse proxy.
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 16384;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream ollama {{
        server {up};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://ollama;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"#
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = Command::new(&nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        Ok(Nginx {
            proc: Proc(child),
            base: format!("http://127.0.0.1:{port}"),
            version,
        })
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.proc.0.id();
        let mut pids = vec![master];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| stat_fields(&s).get(1).and_then(|f| f.parse::<u32>().ok()));
                if ppid == Some(master) {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM (fast shutdown) reaches the master, which stops its workers; the `Proc`
        // then reaps it.
        let _ = Command::new("kill").arg(self.proc.0.id().to_string()).status();
        let _ = self.proc.0.wait();
    }
}

/// nginx's path, installing the Debian package when it is missing.
fn ensure_nginx() -> Result<PathBuf> {
    ensure_debian("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"])
}

/// The first of `paths` that exists, installing Debian's `package` when none does.
pub(super) fn ensure_debian(package: &str, paths: &[&str]) -> Result<PathBuf> {
    let found = || paths.iter().map(PathBuf::from).find(|p| p.exists());
    if let Some(p) = found() {
        return Ok(p);
    }
    eprintln!("bench: installing {package} (Debian package)");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        run_cmd(Command::new("apt-get").arg("update"))?;
        if !install() {
            bail!("could not install {package} with apt-get (is this Debian, run as root?)");
        }
    }
    found().with_context(|| format!("{package} installed but not found at {}", paths.join(" or ")))
}

/// Raises this process's open-file limit (soft and, as root, hard) to at least `want`, so the
/// load client and the servers it starts may hold many connections; children inherit it.
pub fn raise_open_files(want: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let hard = now.maximum.map_or(want, |h| h.max(want));
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    );
    if raised.is_err() {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: now.maximum,
                maximum: now.maximum,
            },
        );
    }
}

/// The open-file limit of this process (soft).
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// `oha`, installed under `target/tools` on first use.
pub fn oha(root: &Path) -> Result<PathBuf> {
    let path = root.join("target/tools/bin/oha");
    if !path.exists() {
        eprintln!("bench: installing oha into target/tools (a few minutes, once)");
        run_cmd(
            Command::new("cargo")
                .args(["install", "oha", "--locked", "--root"])
                .arg(root.join("target/tools")),
        )?;
    }
    Ok(path)
}

/// One oha run's figures.
pub(super) struct Load {
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) secs: f64,
    pub(super) ok: u64,
    pub(super) total: u64,
}

pub(super) fn oha_run(
    oha: &Path,
    url: &str,
    body: &str,
    concurrency: usize,
    run: Duration,
    auth: Option<&str>,
) -> Result<Load> {
    let mut cmd = Command::new(oha);
    if let Some(header) = auth {
        cmd.args(["-H", header]);
    }
    let out = cmd
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "--wait-ongoing-requests-after-deadline",
            "-m",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            body,
        ])
        .args([
            "-c",
            &concurrency.to_string(),
            "-z",
            &format!("{}ms", run.as_millis()),
            url,
        ])
        .output()
        .context("running oha")?;
    if !out.status.success() {
        bail!("oha failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("parsing oha's JSON")?;
    let secs = |p: &str| v["latencyPercentiles"][p].as_f64().unwrap_or(f64::NAN) * 1000.0;
    let codes = v["statusCodeDistribution"].as_object();
    let ok = codes.and_then(|c| c.get("200")).and_then(Value::as_u64).unwrap_or(0);
    let total = codes.map_or(0, |c| c.values().filter_map(Value::as_u64).sum::<u64>())
        + v["errorDistribution"]
            .as_object()
            .map_or(0, |e| e.values().filter_map(Value::as_u64).sum::<u64>());
    Ok(Load {
        p50_ms: secs("p50"),
        p99_ms: secs("p99"),
        secs: v["summary"]["total"].as_f64().unwrap_or(0.0),
        ok,
        total,
    })
}

/// Waits until `url` answers 200.
pub fn wait_ready(oha: &Path, url: &str) -> Result<()> {
    for _ in 0..100 {
        let ok = Command::new(oha)
            .args(["--no-tui", "--output-format", "json", "-n", "1", url])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("\"200\""))
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{url} did not answer 200")
}

/// The resident set size of `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The fields of a `/proc/<pid>/stat` line after the command name: state, ppid, …
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map_or_else(Vec::new, |(_, rest)| rest.split_whitespace().collect())
}

/// User plus system CPU time of `pids`, in clock ticks.
pub fn cpu_ticks(pids: &[u32]) -> u64 {
    let (user, system) = cpu_split(pids);
    user + system
}

/// User and system CPU time of `pids`, in clock ticks.
pub fn cpu_split(pids: &[u32]) -> (u64, u64) {
    pids.iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let f = stat_fields(&stat);
            // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
            Some((f.get(11)?.parse::<u64>().ok()?, f.get(12)?.parse::<u64>().ok()?))
        })
        .fold((0, 0), |(u, s), (du, ds)| (u + du, s + ds))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
