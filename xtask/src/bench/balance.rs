//! `cargo xtask bench balance`: every balancing policy against four time-scaled simulated
//! instances, with skewed model popularity, in one run; `model_affinity` again with one
//! instance killed mid-run; and `balance.slots = "auto"` against the right fixed value for
//! instances running 1 and 4 requests per model at once.
//!
//! Each instance holds the same 8 models, keeps at most 2 loaded (least recently used
//! evicted), runs 2 requests per model at once (1 or 4 in the slots table), loads a model in
//! 1 s and generates 200 tokens per second: a real fleet's behaviour, ten times faster. 64
//! clients send 20-token streamed chats whose model follows a Zipf law (s = 1.1).
//!
//! `--smoke` runs every scenario with a few requests on faster instances and checks that
//! they succeed, writing nothing.

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
    setup: Setup,
    outcomes: Vec<Outcome>,
    cold_loads: u64,
    wall: Duration,
    /// The slots the gateway learned per instance and model, when `auto`.
    learned: Vec<u64>,
}

/// What one run sets up.
#[derive(Clone)]
struct Setup {
    policy: &'static str,
    /// Requests each simulated instance runs at once per model.
    parallel: usize,
    /// `balance.slots`: a number or `auto`.
    slots: String,
    kill_one: bool,
}

impl Setup {
    fn label(&self) -> String {
        if self.kill_one {
            format!("{}, one instance killed", self.policy)
        } else {
            self.policy.to_owned()
        }
    }
}

/// How fast the simulated instances are, and how much load they get.
struct Load {
    requests: usize,
    clients: usize,
    load_ms: u64,
    tokens_per_sec: u64,
}

pub fn run(root: &Path, quick: bool, smoke: bool) -> Result<()> {
    let bin = super::build_bins(root, smoke)?;
    let load = if smoke {
        Load {
            requests: 24,
            clients: 8,
            load_ms: 20,
            tokens_per_sec: 2000,
        }
    } else {
        Load {
            requests: if quick { 200 } else { 1200 },
            clients: CLIENTS,
            load_ms: 1000,
            tokens_per_sec: 200,
        }
    };
    // One admin and key, made once with the CLI; each run starts from a copy of its database.
    let template = root.join("target/xtask-tmp/bench-balance-template");
    let _ = std::fs::remove_dir_all(&template);
    std::fs::create_dir_all(&template)?;
    let key = super::provision_key(&bin, &template)?;
    let fixed = |policy, parallel: usize, kill_one| Setup {
        policy,
        parallel,
        slots: parallel.to_string(),
        kill_one,
    };
    let auto = |policy, parallel| Setup {
        policy,
        parallel,
        slots: "auto".to_owned(),
        kill_one: false,
    };
    let mut setups: Vec<(&str, Setup)> = POLICIES.iter().map(|p| ("policies", fixed(*p, 2, false))).collect();
    setups.push(("policies", fixed("model_affinity", 2, true)));
    for parallel in [1, 4] {
        setups.push(("slots", fixed("model_affinity", parallel, false)));
        setups.push(("slots", auto("model_affinity", parallel)));
        setups.push(("slots", auto("random", parallel)));
        setups.push(("slots", fixed("random", parallel, false)));
    }
    let (mut policies, mut slots) = (Vec::new(), Vec::new());
    for (table, setup) in setups {
        eprintln!(
            "bench balance: {} ({} parallel, slots {})",
            setup.label(),
            setup.parallel,
            setup.slots
        );
        let run = one_run(root, &bin, &template, &key, setup, &load)?;
        if table == "policies" {
            policies.push(run);
        } else {
            slots.push(run);
        }
    }
    if smoke {
        return check_smoke(policies.iter().chain(&slots));
    }
    let mut report = report(&policies, load.requests, quick);
    report.push_str(&slots_report(&slots, load.requests));
    std::io::stdout().write_all(report.as_bytes())?;
    super::write_section(root, "balance", &report)?;
    eprintln!("bench: wrote docs/benchmarks.md");
    Ok(())
}

/// A smoke run keeps no figure; it fails when a scenario stopped working.
fn check_smoke<'a>(runs: impl Iterator<Item = &'a Run>) -> Result<()> {
    let mut problems = Vec::new();
    for r in runs {
        let failed = r.outcomes.iter().filter(|o| !o.ok).count();
        let before_byte = r.outcomes.iter().filter(|o| !o.ok && o.ttft.is_none()).count();
        // Killing an instance may cut streams that had begun; none may fail before a byte.
        let bad = if r.setup.kill_one { before_byte } else { failed };
        if bad > 0 || r.outcomes.is_empty() {
            problems.push(format!(
                "{} (slots {}): {bad} of {} failed",
                r.setup.label(),
                r.setup.slots,
                r.outcomes.len()
            ));
        }
    }
    if problems.is_empty() {
        eprintln!("bench smoke: every balance scenario ran");
        Ok(())
    } else {
        bail!("bench balance smoke: {}", problems.join("; "))
    }
}

fn one_run(root: &Path, bin: &Path, template: &Path, key: &str, setup: Setup, load: &Load) -> Result<Run> {
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
            .args(["--max-loaded", "2", "--num-parallel", &setup.parallel.to_string()])
            .args(["--load-time-ms", &load.load_ms.to_string()])
            .args(["--tokens-per-sec", &load.tokens_per_sec.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting corral-sim")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("sim stdout")?).read_line(&mut line)?;
        urls.push(line.trim().rsplit(' ').next().unwrap_or_default().to_owned());
        sims.push(Proc(Some(child)));
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let data = root.join("target/xtask-tmp").join(format!(
        "bench-balance-{}-{}-{}-{}",
        setup.policy, setup.parallel, setup.slots, setup.kill_one
    ));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    for entry in std::fs::read_dir(template)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), data.join(entry.file_name()))?;
        }
    }
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
            .env("CORRAL_BALANCE__POLICY", setup.policy)
            .env("CORRAL_BALANCE__SLOTS", &setup.slots)
            .env("CORRAL_BALANCE__MAX_LOADED", "2")
            .env("CORRAL_BALANCE__QUEUE_SIZE", "1000")
            .env("CORRAL_BALANCE__QUEUE_TIMEOUT", "300")
            .env("CORRAL_BALANCE__HEALTH_INTERVAL", "0.5")
            .env("CORRAL_BALANCE__FAILURES_TO_EJECT", "1")
            .spawn()
            .context("starting corral")?,
    ));
    let gateway = format!("127.0.0.1:{port}");
    wait_ready(&gateway, key)?;

    let requests = load.requests;
    let next = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let start = Instant::now();
    let workers: Vec<_> = (0..load.clients)
        .map(|w| {
            let (next, outcomes, gateway, key) = (next.clone(), outcomes.clone(), gateway.clone(), key.to_owned());
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
    if setup.kill_one {
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
    let learned = learned_slots(&gateway, key);
    let outcomes = std::mem::take(&mut *outcomes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok(Run {
        setup,
        outcomes,
        cold_loads,
        wall,
        learned,
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

/// An authenticated GET; the whole answer, head and body.
fn get(addr: &str, path: &str, key: &str) -> Option<String> {
    let mut c = TcpStream::connect(addr).ok()?;
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut t = String::new();
    c.read_to_string(&mut t).ok()?;
    Some(t)
}

/// The slots the gateway learned, per instance and model (`/ollama/status`).
fn learned_slots(addr: &str, key: &str) -> Vec<u64> {
    let Some(text) = get(addr, "/ollama/status", key) else {
        return Vec::new();
    };
    let Some(v) = text
        .split("\r\n\r\n")
        .nth(1)
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
    else {
        return Vec::new();
    };
    v["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["learned_slots"].as_object())
        .flat_map(|m| m.values().filter_map(serde_json::Value::as_u64))
        .collect()
}

/// Waits until the gateway lists the simulated models to the bench's key.
fn wait_ready(addr: &str, key: &str) -> Result<()> {
    let mut last = String::new();
    for _ in 0..100 {
        if let Some(t) = get(addr, "/api/tags", key) {
            if t.starts_with("HTTP/1.1 200") && t.contains("alpha") {
                return Ok(());
            }
            last = t.lines().next().unwrap_or_default().to_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the gateway at {addr} did not list the simulated models (last answer: {last:?})")
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
            r.setup.label(),
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
    let find = |label: &str| runs.iter().find(|r| r.setup.label() == label);
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
    if let Some(killed) = runs.iter().find(|r| r.setup.kill_one) {
        let before = killed.outcomes.iter().filter(|o| !o.ok && o.ttft.is_none()).count();
        let _ = writeln!(
            out,
            "- with one instance killed mid-run, no request that had not yet received a byte fails: {before} failed before a byte, {}",
            if before == 0 { "met" } else { "**not met**" }
        );
    }
    out
}

/// The `auto` slots table: for instances running 1 and 4 requests per model at once,
/// `model_affinity` told the right number against `auto`, and `random` with each.
fn slots_report(runs: &[Run], requests: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Slots learned (`balance.slots = \"auto\"`) against the right fixed value\n"
    );
    let _ = writeln!(
        out,
        "The same fleet and load, with instances that run 1 or 4 requests per model at once (`--num-parallel`), {requests} requests per run. `auto` starts every instance and model at 1 and learns from time to first token; the fixed rows are told the instances' real number.\n"
    );
    let _ = writeln!(
        out,
        "| instance slots | policy | `balance.slots` | p50 | p95 | TTFT p95 | cold loads | failed | requests/s | learned slots (instance × model) |"
    );
    let _ = writeln!(
        out,
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    let p95 = |r: &Run| percentile(&r.outcomes.iter().map(|o| o.total).collect::<Vec<_>>(), 95.0).as_secs_f64();
    let rps = |r: &Run| r.outcomes.len() as f64 / r.wall.as_secs_f64().max(1e-9);
    for r in runs {
        let totals: Vec<Duration> = r.outcomes.iter().map(|o| o.total).collect();
        let ttfts: Vec<Duration> = r.outcomes.iter().filter_map(|o| o.ttft).collect();
        let failed = r.outcomes.iter().filter(|o| !o.ok).count();
        let learned = if r.setup.slots == "auto" {
            let mut counts = std::collections::BTreeMap::new();
            for n in &r.learned {
                *counts.entry(*n).or_insert(0usize) += 1;
            }
            counts
                .iter()
                .map(|(n, k)| format!("{n}: {k}×"))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            "(fixed)".to_owned()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            r.setup.parallel,
            r.setup.policy,
            r.setup.slots,
            ms(percentile(&totals, 50.0)),
            ms(percentile(&totals, 95.0)),
            ms(percentile(&ttfts, 95.0)),
            r.cold_loads,
            failed,
            rps(r),
            learned
        );
    }
    let _ = writeln!(out, "\nTargets (from the issue; a benchmark, not a test):\n");
    let find = |parallel: usize, policy: &str, slots: &str| {
        runs.iter()
            .find(|r| r.setup.parallel == parallel && r.setup.policy == policy && r.setup.slots == slots)
    };
    for parallel in [1, 4] {
        let fixed = find(parallel, "model_affinity", &parallel.to_string());
        let auto = find(parallel, "model_affinity", "auto");
        if let (Some(fixed), Some(auto)) = (fixed, auto) {
            let throughput = rps(auto) / rps(fixed).max(1e-9);
            let latency = p95(auto) / p95(fixed).max(1e-9);
            let _ = writeln!(
                out,
                "- {parallel} slot(s) per instance, `auto` within 10% of `{parallel}`: throughput {:.0}% of it, p95 {:.0}% of it, {}",
                throughput * 100.0,
                latency * 100.0,
                if throughput >= 0.9 && latency <= 1.1 { "met" } else { "**not met**" }
            );
        }
        if let (Some(random), Some(fixed)) = (find(parallel, "random", &parallel.to_string()), fixed) {
            let ratio = p95(fixed) / p95(random).max(1e-9);
            let _ = writeln!(
                out,
                "- {parallel} slot(s), both told `{parallel}` (for comparison): `model_affinity` p95 {ratio:.2} of `random`'s, cold loads {} against {}",
                fixed.cold_loads, random.cold_loads
            );
        }
        if let (Some(random), Some(auto)) = (find(parallel, "random", "auto"), auto) {
            let ratio = p95(auto) / p95(random).max(1e-9);
            let loads = random.cold_loads as f64 / auto.cold_loads.max(1) as f64;
            let _ = writeln!(
                out,
                "- {parallel} slot(s), both `auto`: `model_affinity` p95 at most a third of `random`'s: {ratio:.2} of it, {}; at least five times fewer cold loads: {} against {} ({loads:.1}×), {}",
                if ratio <= 1.0 / 3.0 { "met" } else { "**not met**" },
                auto.cold_loads,
                random.cold_loads,
                if loads >= 5.0 { "met" } else { "**not met**" }
            );
        }
    }
    out
}
