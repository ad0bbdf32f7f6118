//! `cargo xtask bench streams`: Corral holding many concurrent streams paced by the simulator
//! (a few tokens a second each): its RSS idle, at the peak and after, and whether every stream
//! arrived whole.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::gateway;
use super::stream::{self, percentile, Framing, Live, StreamStats};

/// Tokens a second each simulated stream produces.
const TOKENS_PER_SEC: u32 = 2;
/// Tokens each stream asks for (so a stream lasts `TOKENS / TOKENS_PER_SEC` seconds).
const TOKENS: u32 = 30;
/// The soft open-file limit Corral is started with, as a service manager commonly sets it;
/// Corral raises it to the hard limit itself.
const START_NOFILE: u64 = 1024;

/// One crowd's figures.
struct Level {
    n: usize,
    side: &'static str,
    stats: StreamStats,
    peak_open: usize,
    rss_before: f64,
    rss_peak: f64,
    rss_after: f64,
    cpu_s: f64,
}

pub fn run(root: &Path, quick: bool, smoke: bool) -> Result<()> {
    let bin = super::build_bins(root, smoke)?;
    let oha = gateway::oha(root)?;
    // The client, the simulator and Corral each hold a descriptor or more per stream.
    gateway::raise_open_files(100_000);
    let client_limit = gateway::open_file_limit().unwrap_or(0);
    let load_before = gateway::loadavg();
    // A smoke run paces its streams fast: it checks they arrive whole, not what they cost.
    let tps = if smoke { 30 } else { TOKENS_PER_SEC }.to_string();
    let (sim, direct) = gateway::start_sim(
        &bin,
        &[
            "--tokens-per-sec",
            &tps,
            "--num-parallel",
            "100000",
            "--max-queue",
            "100000",
        ],
    )?;
    let data = root.join("target/xtask-tmp/bench-streams");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let key = super::provision_key(&bin, &data)?;
    let (corral, base) = gateway::start_corral(
        &bin,
        &data,
        &direct,
        &[
            ("CORRAL_BALANCE__SLOTS", "100000"),
            ("CORRAL_BALANCE__QUEUE_SIZE", "100000"),
        ],
        Some(START_NOFILE),
    )?;
    let pid = corral.0.id();
    gateway::wait_ready(&oha, &format!("{base}/health"))?;
    let nginx = gateway::Nginx::start(root, &direct)?;
    gateway::wait_ready(&oha, &format!("{}/api/version", nginx.base))?;
    let corral_limit = max_open_files(pid);
    let rt = stream::runtime()?;
    let body = format!(
        r#"{{"model":"llama3.2","messages":[{{"role":"user","content":"Why is the sky blue?"}}],"stream":true,"options":{{"num_predict":{TOKENS}}}}}"#
    );
    let req = stream::Request {
        addr: base.trim_start_matches("http://").to_owned(),
        path: "/api/chat".to_owned(),
        body,
        headers: format!("authorization: Bearer {key}\r\n"),
        framing: Framing::Ndjson,
        keep_alive: false,
    };
    // What a whole stream is: asked of the simulator directly.
    let probe = stream::Request {
        addr: direct.trim_start_matches("http://").to_owned(),
        headers: String::new(),
        ..req.clone()
    };
    let one = stream::run(&rt, &probe, 1, Duration::from_secs(60), Some(1));
    let expected = *one
        .per_stream
        .first()
        .with_context(|| format!("a direct stream failed: {:?}", one.first_error))?;
    std::thread::sleep(Duration::from_secs(1));
    let idle = gateway::rss_mib(pid);

    // Corral holds two descriptors per stream (the client's socket, the upstream connection):
    // below 10,000 streams' worth, the most the limit allows runs too, before 10,000 shows
    // what happens past it.
    let fits = corral_limit
        .parse::<usize>()
        .map_or(usize::MAX, |l| l.saturating_sub(100) / 2 / 500 * 500);
    let sizes: Vec<usize> = if smoke {
        vec![20]
    } else if quick {
        vec![100, 500]
    } else if fits < 10_000 {
        vec![1_000, fits, 10_000]
    } else {
        vec![1_000, 10_000]
    };
    let through_nginx = stream::Request {
        addr: nginx.base.trim_start_matches("http://").to_owned(),
        headers: String::new(),
        ..req.clone()
    };
    let nginx_idle = rss(&nginx.pids());
    let mut levels = Vec::new();
    for &n in &sizes {
        // Corral, then nginx, in front of the same simulator, one after the other.
        for (side, req, pids) in [("Corral", &req, vec![pid]), ("nginx", &through_nginx, nginx.pids())] {
            eprintln!("bench: {n} concurrent streams through {side}");
            levels.push(crowd(&rt, side, req, n, &pids));
        }
    }
    let idle_rss = [idle, nginx_idle];
    drop((nginx, corral, sim));
    if smoke {
        for l in &levels {
            anyhow::ensure!(
                l.stats.errors == 0 && l.stats.streams == l.n && l.stats.per_stream.iter().all(|&c| c == expected),
                "bench smoke: {} streams through {}: {} complete, {} failed ({:?})",
                l.n,
                l.side,
                l.stats.streams,
                l.stats.errors,
                l.stats.first_error
            );
        }
        eprintln!("bench smoke: every stream arrived whole through Corral and nginx");
        return Ok(());
    }
    let report = report(
        &levels,
        expected,
        idle_rss,
        quick,
        (client_limit, corral_limit),
        (load_before, gateway::loadavg()),
    );
    std::io::Write::write_all(&mut std::io::stdout(), report.as_bytes())?;
    super::write_section(root, "streams", &report)?;
    eprintln!("bench: wrote docs/benchmarks.md");
    Ok(())
}

/// Runs `n` streams at once through `req`, sampling the RSS of `pids` as they run.
fn crowd(rt: &tokio::runtime::Runtime, side: &'static str, req: &stream::Request, n: usize, pids: &[u32]) -> Level {
    let live = Arc::new(Live::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, pids) = (stop.clone(), pids.to_vec());
        std::thread::spawn(move || {
            let mut peak = 0.0f64;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss(&pids));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        })
    };
    let rss_before = rss(pids);
    let cpu = gateway::cpu_ticks(pids);
    let stats = rt.block_on(stream::crowd(req, n, 500, live.clone()));
    let cpu_s = (gateway::cpu_ticks(pids) - cpu) as f64 / gateway::clock_ticks() as f64;
    stop.store(true, Ordering::Relaxed);
    let rss_peak = sampler.join().unwrap_or(f64::NAN);
    std::thread::sleep(Duration::from_secs(2));
    Level {
        n,
        side,
        peak_open: live.peak.load(Ordering::Relaxed),
        stats,
        rss_before,
        rss_peak,
        rss_after: rss(pids),
        cpu_s,
    }
}

/// The summed RSS of `pids`, in MiB.
fn rss(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| gateway::rss_mib(p)).sum()
}

/// The soft "Max open files" of `pid`, as the kernel reports it.
fn max_open_files(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn report(
    levels: &[Level],
    expected: u64,
    [idle, nginx_idle]: [f64; 2],
    quick: bool,
    limits: (u64, String),
    load: (String, String),
) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Many streams (`cargo xtask bench streams{}`)\n",
        if quick { " --quick" } else { "" }
    );
    let _ = writeln!(out, "Machine: {}.  ", super::machine());
    let _ = writeln!(
        out,
        "Run: {}; load average {} before, {} after. One simulator (1 worker, {TOKENS_PER_SEC} tokens a second per stream, no limit on parallel requests) behind Corral (release build, default workers, `balance.slots` 100000, log level `warn`), then behind nginx (the configuration of the section above: 1 worker process, 16,384 worker connections), each crowd through Corral first and then through nginx. Each stream is a native `/api/chat` of {TOKENS} tokens ({expected} NDJSON objects, about {} s) with an API key, on its own connection, from the tokio client in `xtask/src/bench/stream.rs` (at most 500 streams waiting for their response head at once). Corral was started with a soft open-file limit of {START_NOFILE} (hard {}, as the client's) and ran with {} after raising it itself.\n",
        gateway::chrono_free_date(),
        load.0,
        load.1,
        TOKENS / TOKENS_PER_SEC,
        limits.0,
        limits.1,
    );
    let _ = writeln!(
        out,
        "| concurrent streams | side | held at once (peak) | complete, right object count | failed | wrong count | first object p50 | first object p99 | last object p99 | RSS before | RSS at peak | RSS after | CPU | wall time |"
    );
    let _ = writeln!(
        out,
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for l in levels {
        let s = &l.stats;
        let right = s.per_stream.iter().filter(|&&c| c == expected).count();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.1} ms | {:.1} ms | {:.2} s | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} s | {:.1} s |",
            l.n,
            l.side,
            l.peak_open,
            right,
            s.errors,
            s.streams - right,
            ms(percentile(&s.first, 50.0)),
            ms(percentile(&s.first, 99.0)),
            percentile(&s.last, 99.0).as_secs_f64(),
            l.rss_before,
            l.rss_peak,
            l.rss_after,
            l.cpu_s,
            s.wall.as_secs_f64(),
        );
        if let Some(err) = &s.first_error {
            let _ = writeln!(
                out,
                "| (first failure: {}) | | | | | | | | | | | | | |",
                err.replace('|', "/")
            );
        }
    }
    let _ = writeln!(
        out,
        "\nRSS idle after start: Corral {idle:.1} MiB, nginx (master and worker) {nginx_idle:.1} MiB. CPU is the process's (for nginx, master and worker) user and system time over the crowd.\n"
    );
    let _ = writeln!(out, "Targets (from the issue; a benchmark, not a test):\n");
    let mb = |m: f64| m * 1_048_576.0 / 1_000_000.0;
    let _ = writeln!(
        out,
        "- RSS at most 20 MB idle: {:.1} MB, {}",
        mb(idle),
        gateway::verdict(mb(idle) <= 20.0)
    );
    for l in levels.iter().filter(|l| l.side == "Corral") {
        let right = l.stats.per_stream.iter().filter(|&&c| c == expected).count();
        let whole = right == l.n && l.stats.errors == 0;
        if l.n == 1_000 {
            let nginx = levels
                .iter()
                .find(|n| n.side == "nginx" && n.n == l.n)
                .map_or(f64::NAN, |n| mb(n.rss_peak));
            let _ = writeln!(
                out,
                "- RSS at most 100 MB holding 1,000 streams: {:.1} MB at the peak (nginx {nginx:.1} MB), {}",
                mb(l.rss_peak),
                gateway::verdict(mb(l.rss_peak) <= 100.0 && l.peak_open == l.n)
            );
        }
        let _ = writeln!(
            out,
            "- {} streams held at once, every one complete with {expected} objects: {} held at the peak, {right} complete, {} failed, {}",
            l.n,
            l.peak_open,
            l.stats.errors,
            gateway::verdict(whole && l.peak_open == l.n)
        );
    }
    out
}
