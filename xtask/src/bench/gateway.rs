//! The gateway benchmark: direct-to-simulator against through-Corral, request/response with
//! `oha` and streams with the bounded client.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::stream::{self, percentile, StreamStats};

const CHAT: &str = r#"{"model":"llama3.2","messages":[{"role":"user","content":"Why is the sky blue?"}],"stream":false,"options":{"num_predict":5}}"#;
const OPENAI: &str =
    r#"{"model":"llama3.2","messages":[{"role":"user","content":"Why is the sky blue?"}],"max_tokens":5}"#;
/// How many times the stream scenario runs, direct and gateway in turn.
const STREAM_ROUNDS: usize = 5;
const STREAM: &str = r#"{"model":"llama3.2","messages":[{"role":"user","content":"Why is the sky blue?"}],"stream":true,"options":{"num_predict":100}}"#;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One oha run's figures.
struct Load {
    p50_ms: f64,
    p99_ms: f64,
    rps: f64,
    ok: u64,
    total: u64,
}

pub fn run(root: &Path, quick: bool, smoke: bool) -> Result<()> {
    let bin = super::build_bins(root, smoke)?;
    let oha = oha(root)?;

    let mut sim = Command::new(bin.join("corral-sim"))
        .args(["--host", "127.0.0.1", "--port", "0", "--workers", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting corral-sim")?;
    let mut line = String::new();
    BufReader::new(sim.stdout.take().context("sim stdout")?).read_line(&mut line)?;
    let _sim = Proc(sim);
    let direct = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();

    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let data = root.join("target/xtask-tmp/bench-data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let key = super::provision_key(&bin, &data)?;
    let auth = format!("authorization: Bearer {key}");
    let gw = Command::new(bin.join("corral"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--no-simulator",
        ])
        .env("OLLAMA_BASE_URL", &direct)
        .env("DATA_DIR", &data)
        .env("RUST_LOG", "warn")
        .env("CORRAL_SERVER__WORKERS", "1")
        // The simulator runs 4 requests per model at once (its default `num_parallel`); the
        // gateway is told so, as an operator sets it to the instances' OLLAMA_NUM_PARALLEL.
        .env("CORRAL_BALANCE__SLOTS", "4")
        .spawn()
        .context("starting corral")?;
    let pid = gw.id();
    let _gw = Proc(gw);
    let through = format!("http://127.0.0.1:{port}");
    wait_ready(&oha, &through)?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_mib(pid);

    let (n1, n32, per_worker) = if smoke {
        (10, 64, 1)
    } else if quick {
        (500, 2_000, 10)
    } else {
        (5_000, 40_000, 100)
    };
    let mut rows = Vec::new();
    for (label, path, body) in [
        ("native `/api/chat`", "/api/chat", CHAT),
        ("OpenAI `/v1/chat/completions`", "/v1/chat/completions", OPENAI),
    ] {
        for (c, n) in [(1, n1), (32, n32)] {
            let d = oha_run(&oha, &format!("{direct}{path}"), body, c, n, None)?;
            let g = oha_run(&oha, &format!("{through}{path}"), body, c, n, Some(&auth))?;
            rows.push((label, c, d, g));
        }
    }
    let addr = |url: &str| url.trim_start_matches("http://").to_owned();
    // Direct and gateway take turns, so a drift in what else the machine does weighs on both.
    let (mut sd, mut sg) = (StreamStats::default(), StreamStats::default());
    for _ in 0..if smoke { 1 } else { STREAM_ROUNDS } {
        sd.absorb(stream::run(&addr(&direct), "/api/chat", STREAM, 8, per_worker, ""));
        sg.absorb(stream::run(
            &addr(&through),
            "/api/chat",
            STREAM,
            8,
            per_worker,
            &format!("{auth}\r\n"),
        ));
    }
    let loaded_rss = rss_mib(pid);
    if smoke {
        // Every scenario ran; each request must have succeeded. No figure is kept.
        let failed: Vec<String> = rows
            .iter()
            .filter(|(_, _, d, g)| d.ok != d.total || g.ok != g.total || g.total == 0)
            .map(|(label, c, d, g)| {
                format!(
                    "{label} c={c}: direct {}/{}, gateway {}/{} ok",
                    d.ok, d.total, g.ok, g.total
                )
            })
            .chain(
                (sd.errors + sg.errors > 0 || sg.streams == 0)
                    .then(|| format!("streams: {} direct and {} gateway failed", sd.errors, sg.errors)),
            )
            .collect();
        anyhow::ensure!(failed.is_empty(), "bench smoke: {}", failed.join("; "));
        eprintln!("bench smoke: every gateway scenario ran");
        return Ok(());
    }

    let report = report(&rows, &sd, &sg, idle_rss, loaded_rss, quick);
    std::io::Write::write_all(&mut std::io::stdout(), report.as_bytes())?;
    super::write_section(root, "gateway", &report)?;
    eprintln!("bench: wrote docs/benchmarks.md");
    Ok(())
}

fn report(
    rows: &[(&str, usize, Load, Load)],
    sd: &StreamStats,
    sg: &StreamStats,
    idle: f64,
    loaded: f64,
    quick: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Gateway overhead (`cargo xtask bench{}`)\n",
        if quick { " --quick" } else { "" }
    );
    let _ = writeln!(out, "Machine: {}.  ", super::machine());
    let _ = writeln!(
        out,
        "Run: {}. Simulator (`corral-sim`, 1 worker, 4 parallel requests per model, answering as fast as it can) and gateway (`corral`, 1 worker, `balance.slots` 4, release build) on loopback; load from `oha` on the same 2 cores, so the three compete for CPU.\n",
        chrono_free_date()
    );
    let _ = writeln!(out, "| scenario | concurrency | direct p50 | gateway p50 | added p50 | direct p99 | gateway p99 | direct req/s | gateway req/s | gateway/direct |");
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (label, c, d, g) in rows {
        let _ = writeln!(
            out,
            "| {label} | {c} | {:.3} ms | {:.3} ms | {:+.3} ms | {:.3} ms | {:.3} ms | {:.0} | {:.0} | {:.0}% |",
            d.p50_ms,
            g.p50_ms,
            g.p50_ms - d.p50_ms,
            d.p99_ms,
            g.p99_ms,
            d.rps,
            g.rps,
            100.0 * g.rps / d.rps.max(1e-9)
        );
        if d.ok != d.total || g.ok != g.total {
            let _ = writeln!(
                out,
                "| (errors: direct {}/{}, gateway {}/{}) | | | | | | | | | |",
                d.total - d.ok,
                d.total,
                g.total - g.ok,
                g.total
            );
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let sps = |s: &StreamStats| s.streams as f64 / s.wall.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "\nStreams: {} per side, in {STREAM_ROUNDS} rounds taken in turn (direct, gateway, direct, …), each a new connection; streams/s is streams over the rounds' summed wall time.",
        sd.streams + sd.errors
    );
    let _ = writeln!(out, "\n| 100-chunk stream, concurrency 8 | first chunk p50 | first chunk p99 | last chunk p50 | last chunk p99 | streams/s | chunks received | failed streams |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (label, s) in [("direct", sd), ("gateway", sg)] {
        let _ = writeln!(
            out,
            "| {label} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.1} | {} | {} |",
            ms(percentile(&s.first, 50.0)),
            ms(percentile(&s.first, 99.0)),
            ms(percentile(&s.last, 50.0)),
            ms(percentile(&s.last, 99.0)),
            sps(s),
            s.chunks,
            s.errors
        );
    }
    let _ = writeln!(
        out,
        "\nGateway memory (RSS): {idle:.1} MiB idle after start, {loaded:.1} MiB after the load.\n"
    );
    let native1 = rows.iter().find(|r| r.1 == 1);
    let native32 = rows.iter().find(|r| r.1 == 32);
    let _ = writeln!(out, "Targets (from the issue; a benchmark, not a test):\n");
    if let Some((_, _, d, g)) = native1 {
        let added = g.p50_ms - d.p50_ms;
        let _ = writeln!(
            out,
            "- added p50 at concurrency 1 ≤ 0.1 ms: {added:+.3} ms, {}",
            verdict(added <= 0.1)
        );
    }
    if let Some((_, _, d, g)) = native32 {
        let ratio = g.rps / d.rps.max(1e-9);
        let _ = writeln!(
            out,
            "- gateway req/s at concurrency 32 ≥ 60% of direct: {:.0}%, {}",
            ratio * 100.0,
            verdict(ratio >= 0.6)
        );
    }
    let sratio = sps(sg) / sps(sd).max(1e-9);
    let _ = writeln!(
        out,
        "- 100-chunk streams at concurrency 8 ≥ 90% of direct's rate, identical chunk counts: {:.0}%, {} vs {} chunks, {}",
        sratio * 100.0,
        sg.chunks,
        sd.chunks,
        verdict(sratio >= 0.9 && sg.chunks == sd.chunks)
    );
    let _ = writeln!(
        out,
        "- idle RSS ≤ 20 MB: {idle:.1} MiB, {}",
        verdict(idle <= 20.0 * 1_000_000.0 / 1_048_576.0)
    );
    out
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**not met**"
    }
}

fn chrono_free_date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `oha`, installed under `target/tools` on first use.
fn oha(root: &Path) -> Result<PathBuf> {
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

fn oha_run(oha: &Path, url: &str, body: &str, concurrency: usize, n: usize, auth: Option<&str>) -> Result<Load> {
    let mut cmd = Command::new(oha);
    if let Some(header) = auth {
        cmd.args(["-H", header]);
    }
    let out = cmd
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "-m",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            body,
        ])
        .args(["-c", &concurrency.to_string(), "-n", &n.to_string(), url])
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
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        ok,
        total,
    })
}

fn wait_ready(oha: &Path, base: &str) -> Result<()> {
    for _ in 0..100 {
        let ok = Command::new(oha)
            .args([
                "--no-tui",
                "--output-format",
                "json",
                "-n",
                "1",
                &format!("{base}/health"),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("\"200\""))
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{base} did not become ready")
}

/// The resident set size of `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
