//! `cargo xtask bench balance`: every balancing policy against four time-scaled simulated
//! instances, with skewed model popularity, in one run; and `model_affinity` again with one
//! instance killed mid-run.
//!
//! Each instance holds the same 8 models, keeps at most 2 loaded (least recently used
//! evicted), runs 2 requests per model at once, loads a model in 1 s and generates 200
//! tokens per second: a real fleet's behaviour, ten times faster. 64 clients send 20-token
//! streamed chats whose model follows a Zipf law (s = 1.1).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::stream::percentile;

const MODELS: [&str; 8] = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];
const POLICIES: [&str; 5] = [
    "random",
    "round_robin",
    "least_outstanding",
    "latency_ewma",
    "model_affinity",
];
const CLIENTS: usize = 64;

/// A child process killed when dropped.
struct Proc(Option<Child>);

impl Proc {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one request saw.
struct Outcome {
    ttft: Option<Duration>,
    total: Duration,
    ok: bool,
}

/// The figures of one run.
struct Run {
    label: String,
    outcomes: Vec<Outcome>,
    cold_loads: u64,
    wall: Duration,
}

pub fn run(root: &Path, quick: bool) -> Result<()> {
    let status = Command::new("cargo")
        .args(["build", "--release", "-p", "corral", "-p", "corral-sim"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("release build failed");
    }
    let bin = root.join("target/release");
    let requests = if quick { 200 } else { 1200 };
    let mut runs = Vec::new();
    for policy in POLICIES {
        eprintln!("bench balance: {policy}");
        runs.push(one_run(root, &bin, policy, requests, false)?);
    }
    eprintln!("bench balance: model_affinity with an instance killed mid-run");
    runs.push(one_run(root, &bin, "model_affinity", requests, true)?);
    let report = report(&runs, requests, quick);
    std::io::stdout().write_all(report.as_bytes())?;
    super::write_section(root, "balance", &report)?;
    eprintln!("bench: wrote docs/benchmarks.md");
    Ok(())
}

fn one_run(root: &Path, bin: &Path, policy: &str, requests: usize, kill_one: bool) -> Result<Run> {
    let mut sims = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..4 {
        let mut child = Command::new(bin.join("corral-sim"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--workers",
                "1",
                "--models",
                &MODELS.join(","),
            ])
            .args([
                "--max-loaded",
                "2",
                "--num-parallel",
                "2",
                "--load-time-ms",
                "1000",
                "--tokens-per-sec",
                "200",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting corral-sim")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("sim stdout")?).read_line(&mut line)?;
        urls.push(line.trim().rsplit(' ').next().unwrap_or_default().to_owned());
        sims.push(Proc(Some(child)));
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let data = root
        .join("target/xtask-tmp")
        .join(format!("bench-balance-{policy}-{kill_one}"));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let key = super::provision_key(bin, &data)?;
    let _gw = Proc(Some(
        Command::new(bin.join("corral"))
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--no-simulator",
            ])
            .env("OLLAMA_BASE_URLS", urls.join(";"))
            .env("DATA_DIR", &data)
            .env("RUST_LOG", "error")
            .env("CORRAL_BALANCE__POLICY", policy)
            .env("CORRAL_BALANCE__SLOTS", "2")
            .env("CORRAL_BALANCE__MAX_LOADED", "2")
            .env("CORRAL_BALANCE__QUEUE_SIZE", "1000")
            .env("CORRAL_BALANCE__QUEUE_TIMEOUT", "300")
            .env("CORRAL_BALANCE__HEALTH_INTERVAL", "0.5")
            .env("CORRAL_BALANCE__FAILURES_TO_EJECT", "1")
            .spawn()
            .context("starting corral")?,
    ));
    let gateway = format!("127.0.0.1:{port}");
    wait_ready(&gateway)?;

    let next = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let start = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (next, outcomes, gateway, key) = (next.clone(), outcomes.clone(), gateway.clone(), key.clone());
            std::thread::spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F);
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let model = MODELS[zipf(&mut rng)];
                    let outcome = chat(&gateway, model, &key);
                    if let Ok(mut all) = outcomes.lock() {
                        all.push(outcome);
                    }
                }
            })
        })
        .collect();
    if kill_one {
        while next.load(Ordering::Relaxed) < requests / 2 {
            std::thread::sleep(Duration::from_millis(20));
        }
        sims[1].kill();
    }
    for w in workers {
        let _ = w.join();
    }
    let wall = start.elapsed();
    let cold_loads = urls.iter().filter_map(|u| cold_loads(u)).sum();
    let outcomes = std::mem::take(&mut *outcomes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let label = if kill_one {
        format!("{policy}, one instance killed")
    } else {
        policy.to_owned()
    };
    Ok(Run {
        label,
        outcomes,
        cold_loads,
        wall,
    })
}

/// A Zipf(1.1) draw over the 8 models, from a xorshift state.
fn zipf(state: &mut u64) -> usize {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let weights: Vec<f64> = (1..=MODELS.len()).map(|k| 1.0 / (k as f64).powf(1.1)).collect();
    let total: f64 = weights.iter().sum();
    let mut x = (*state >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    MODELS.len() - 1
}

/// One streamed 20-token chat.
fn chat(gateway: &str, model: &str, key: &str) -> Outcome {
    let start = Instant::now();
    let body = format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello"}}],"stream":true,"options":{{"num_predict":20}}}}"#
    );
    let failed = |ttft| Outcome {
        ttft,
        total: start.elapsed(),
        ok: false,
    };
    let Ok(mut conn) = TcpStream::connect(gateway) else {
        return failed(None);
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(300)));
    let req = format!(
        "POST /api/chat HTTP/1.1\r\nHost: {gateway}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if conn.write_all(req.as_bytes()).is_err() {
        return failed(None);
    }
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    let mut ttft = None;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                all.extend_from_slice(&buf[..n]);
                if ttft.is_none() && all.windows(8).any(|w| w == b"{\"model\"") {
                    ttft = Some(start.elapsed());
                }
            }
            Err(_) => return failed(ttft),
        }
    }
    let text = String::from_utf8_lossy(&all);
    let ok = text.starts_with("HTTP/1.1 200") && text.contains("\"done\":true") && !text.contains("{\"error\"");
    Outcome {
        ttft,
        total: start.elapsed(),
        ok,
    }
}

fn cold_loads(url: &str) -> Option<u64> {
    let addr = url.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).ok()?;
    write!(
        conn,
        "GET /_sim/stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let body = text.split("\r\n\r\n").nth(1)?;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["cold_loads"].as_u64()
}

fn wait_ready(addr: &str) -> Result<()> {
    for _ in 0..100 {
        if let Ok(mut c) = TcpStream::connect(addr) {
            let _ = write!(c, "GET /api/tags HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut t = String::new();
            let _ = c.read_to_string(&mut t);
            if t.starts_with("HTTP/1.1 200") && t.contains("alpha") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the gateway at {addr} did not list the simulated models")
}

fn report(runs: &[Run], requests: usize, quick: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Balancing policies (`cargo xtask bench balance{}`)\n",
        if quick { " --quick" } else { "" }
    );
    let _ = writeln!(out, "Machine: {}.  ", super::machine());
    let _ = writeln!(
        out,
        "Four simulated instances (8 models each, at most 2 loaded, 2 parallel slots per model, 1 s model load, 200 tokens/s), {CLIENTS} concurrent clients, {requests} streamed 20-token chats per run, models drawn from a Zipf law (s = 1.1); gateway, simulators and clients share the 2 cores.\n"
    );
    let _ = writeln!(
        out,
        "| policy | p50 | p95 | p99 | TTFT p50 | TTFT p95 | cold loads | failed | failed before a byte | requests/s |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    for r in runs {
        let totals: Vec<Duration> = r.outcomes.iter().map(|o| o.total).collect();
        let ttfts: Vec<Duration> = r.outcomes.iter().filter_map(|o| o.ttft).collect();
        let failed = r.outcomes.iter().filter(|o| !o.ok).count();
        let before_byte = r.outcomes.iter().filter(|o| !o.ok && o.ttft.is_none()).count();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            r.label,
            ms(percentile(&totals, 50.0)),
            ms(percentile(&totals, 95.0)),
            ms(percentile(&totals, 99.0)),
            ms(percentile(&ttfts, 50.0)),
            ms(percentile(&ttfts, 95.0)),
            r.cold_loads,
            failed,
            before_byte,
            r.outcomes.len() as f64 / r.wall.as_secs_f64().max(1e-9)
        );
    }
    let find = |label: &str| runs.iter().find(|r| r.label == label);
    if let (Some(random), Some(affinity)) = (find("random"), find("model_affinity")) {
        let p95 = |r: &Run| percentile(&r.outcomes.iter().map(|o| o.total).collect::<Vec<_>>(), 95.0).as_secs_f64();
        let ratio = p95(affinity) / p95(random).max(1e-9);
        let loads = random.cold_loads as f64 / (affinity.cold_loads.max(1)) as f64;
        let _ = writeln!(out, "\nTargets (from the issue; a benchmark, not a test):\n");
        let _ = writeln!(
            out,
            "- `model_affinity` p95 at most a third of `random`'s: {:.2} of it, {}",
            ratio,
            if ratio <= 1.0 / 3.0 { "met" } else { "**not met**" }
        );
        let _ = writeln!(
            out,
            "- at least five times fewer cold loads: {} against {} ({loads:.1}×), {}",
            affinity.cold_loads,
            random.cold_loads,
            if loads >= 5.0 { "met" } else { "**not met**" }
        );
    }
    if let Some(killed) = runs.iter().find(|r| r.label.contains("killed")) {
        let before = killed.outcomes.iter().filter(|o| !o.ok && o.ttft.is_none()).count();
        let _ = writeln!(
            out,
            "- with one instance killed mid-run, no request that had not yet received a byte fails: {before} failed before a byte, {}",
            if before == 0 { "met" } else { "**not met**" }
        );
    }
    out
}
