//! `cargo xtask bench limits`: what limits cost per request. One Corral in front of the
//! simulator, two API keys of one admin: one without limits, one with every kind (requests
//! and tokens per minute, concurrency, a monthly token budget), all far above what the run
//! reaches, so every request is checked, counted and charged and none is refused. The two
//! keys take turns, round after round, on the same gateway.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use super::gateway::{
    chrono_free_date, clock_ticks, cpu_ticks, data_dir, loadavg, oha, oha_run, start_corral, start_sim, wait_ready,
    CHAT, OPENAI, PARALLEL,
};

#[derive(Default)]
struct Side {
    ok: u64,
    total: u64,
    secs: f64,
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// The gateway's CPU clock ticks over this side's runs.
    cpu_ticks: u64,
    /// Requests per second of each round.
    rates: Vec<f64>,
}

impl Side {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }
}

/// A second key of the bench admin; its id (from `corral key create`'s message) and the key.
fn second_key(bin: &Path, data: &Path) -> Result<(String, String)> {
    let out = Command::new(bin.join("corral"))
        .args(["key", "create", "--user", "bench@example.com", "--name", "limited"])
        .env("DATA_DIR", data)
        .stderr(Stdio::piped())
        .output()?;
    anyhow::ensure!(out.status.success(), "corral key create failed");
    let said = String::from_utf8(out.stderr)?;
    let id = said
        .split_whitespace()
        .skip_while(|w| *w != "key")
        .nth(1)
        .context("corral key create named no key id")?
        .to_owned();
    Ok((id, String::from_utf8(out.stdout)?.trim().to_owned()))
}

pub fn run(root: &Path, quick: bool, smoke: bool) -> Result<()> {
    let bin = super::build_bins(root, smoke)?;
    let oha = oha(root)?;
    let (sim, direct) = start_sim(&bin, &["--num-parallel", PARALLEL, "--max-queue", "4096"])?;
    let data = data_dir(&root.join("target/xtask-tmp/bench-limits"))?;
    let free = super::provision_key(&bin, &data)?;
    let (limited_id, limited) = second_key(&bin, &data)?;
    let set = Command::new(bin.join("corral"))
        .args(["limits", "set", "key", &limited_id])
        .args([
            "--rpm",
            "1000000000",
            "--tpm",
            "1000000000000000",
            "--concurrent",
            "1000000",
        ])
        .args(["--budget", "1000000000000000", "--period", "month"])
        .env("DATA_DIR", &data)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(set.success(), "corral limits set failed");
    let load_before = loadavg();
    let (corral, through) = start_corral(&bin, &data, &direct, &[("CORRAL_SERVER__WORKERS", "1")], None)?;
    wait_ready(&oha, &format!("{through}/health"))?;
    std::thread::sleep(Duration::from_millis(500));

    let (run, rounds) = if smoke {
        (Duration::from_millis(300), 1)
    } else if quick {
        (Duration::from_secs(1), 1)
    } else {
        // Many short turns rather than a few long ones: this machine's speed drifts by several
        // per cent within seconds, and turns taken in A-B-B-A order cancel a drift the two
        // keys would otherwise see differently.
        (Duration::from_millis(1500), 10)
    };
    let keys = [("no limits", &free), ("every kind of limit", &limited)];
    let mut rows = Vec::new();
    for (label, path, body) in [
        ("native `/api/chat`", "/api/chat", CHAT),
        ("OpenAI `/v1/chat/completions`", "/v1/chat/completions", OPENAI),
    ] {
        for c in [1, 32] {
            eprintln!("bench limits: {label}, c={c}");
            let mut sides = [Side::default(), Side::default()];
            for round in 0..rounds {
                for ((_, key), side) in super::in_turn(round, keys.iter().zip(&mut sides)) {
                    let auth = format!("authorization: Bearer {key}");
                    let cpu_before = cpu_ticks(&[corral.0.id()]);
                    let load = oha_run(&oha, &format!("{through}{path}"), body, c, run, Some(&auth))?;
                    side.cpu_ticks += cpu_ticks(&[corral.0.id()]).saturating_sub(cpu_before);
                    side.ok += load.ok;
                    side.total += load.total;
                    side.secs += load.secs;
                    side.rates.push(load.ok as f64 / load.secs.max(1e-9));
                    side.p50.push(load.p50_ms);
                    side.p99.push(load.p99_ms);
                }
            }
            rows.push((label, c, sides));
        }
    }
    drop(corral);
    // Instructions per request (`bench/instructions.rs`): the gateway under callgrind, once
    // per key and scenario.
    let (n, secs, concurrency, repeats) = super::instructions::sizes(smoke, quick);
    let mut counted = Vec::new();
    for (label, path, body) in [
        ("native `/api/chat`", "/api/chat", CHAT),
        ("OpenAI `/v1/chat/completions`", "/v1/chat/completions", OPENAI),
    ] {
        eprintln!("bench limits: instructions per request under callgrind, {label}");
        let pair = super::instructions::Paired::measure(repeats, |side, round| {
            let auth = format!("authorization: Bearer {}", keys[side].1);
            let load = super::instructions::Load {
                path,
                body,
                requests: n,
                secs,
                concurrency,
                auth: &auth,
            };
            let gw = super::instructions::Gateway {
                bin: &bin,
                data: &data,
                upstream: &direct,
                env: &[("CORRAL_SERVER__WORKERS", "1")],
                oha: &oha,
            };
            super::instructions::per_request(&gw, &load, round)
        })?;
        counted.push((label, pair));
    }
    drop(sim);
    let failed: Vec<String> = rows
        .iter()
        .flat_map(|(label, c, sides)| {
            keys.iter()
                .zip(sides)
                .filter(|(_, s)| s.total == 0 || s.ok != s.total)
                .map(move |((k, _), s)| format!("{label} c={c} with {k}: {} of {} ok", s.ok, s.total))
        })
        .collect();
    anyhow::ensure!(failed.is_empty(), "bench limits: {}", failed.join("; "));
    if smoke {
        eprintln!("bench limits smoke: both keys ran every scenario, nothing refused, instructions counted");
        return Ok(());
    }
    let tick_ms = 1000.0 / clock_ticks() as f64;
    let mut out = String::from("## What limits cost (`cargo xtask bench limits`)\n\n");
    writeln!(out, "Machine: {}.  ", super::machine())?;
    writeln!(
        out,
        "Run: {}; load average {} before, {} after; {} round(s) of {} s per key per row, the two keys taking turns (A-B, B-A, …) on one Corral (1 worker, release build, SQLite) in front of the simulator. \
         The limited key has requests and tokens per minute, concurrency and a monthly budget, all far above what the run reaches: every request is checked before the queue, counted, and its tokens charged when it ends; the counts are written to the database every 250 ms. \
         \"req/s vs no limits\" compares the summed rates; \"per pair\" is the median of the rounds' own ratios (each pair ran back to back) with the lowest and highest, which shows how far this machine's noise reaches. \
         CPU per request is the gateway process's user plus system time over requests answered (clock {tick_ms:.0} ms).\n",
        chrono_free_date(),
        load_before,
        loadavg(),
        rounds,
        run.as_secs_f64()
    )?;
    writeln!(
        out,
        "| Scenario | c | Key | req/s | p50 ms | p99 ms | req/s vs no limits | per pair: median (lowest … highest) | CPU per request | CPU vs no limits |"
    )?;
    writeln!(
        out,
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    let mut worst: f64 = 0.0;
    for (label, c, sides) in &rows {
        let base = sides[0].rate();
        let cpu = |s: &Side| s.cpu_ticks as f64 * tick_ms / s.ok.max(1) as f64;
        let base_cpu = cpu(&sides[0]);
        for ((k, _), s) in keys.iter().zip(sides) {
            let (median, low, high) = super::paired_ratios(&s.rates, &sides[0].rates);
            worst = worst.min(median);
            writeln!(
                out,
                "| {label} | {c} | {k} | {:.0} | {:.2} | {:.2} | {:+.1}% | {median:+.1}% ({low:+.1} … {high:+.1}) | {:.4} ms | {:+.1}% |",
                s.rate(),
                Side::mean(&s.p50),
                Side::mean(&s.p99),
                (s.rate() / base - 1.0) * 100.0,
                cpu(s),
                (cpu(s) / base_cpu.max(1e-12) - 1.0) * 100.0
            )?;
        }
    }
    writeln!(
        out,
        "\nInstructions per request, counted by valgrind's callgrind (every thread, the counters' writes to the database included): the marginal cost of one more request, from two runs of the same gateway and key for the same wall time, one with {n} requests and one with {} (each from the same copy of the database; the shorter run first in the first round, the longer first in the next, and so on), 4 at a time, evenly paced, after a warm-up, to the end of the graceful stop; the counters' write every 250 ms, whatever the rate, then weighs on no request, as at full speed it weighs next to nothing. It weighs no cache miss and no kernel work. A marginal count moves by up to a few thousand instructions between runs (work done on a clock, such as the counters' sync, runs once more or once less in one of the two), so each key is counted {repeats} time(s), the keys in turn; the counts are the medians, \"per pair\" the median of each pair's own increase with the lowest and highest.\n",
        2 * n
    )?;
    writeln!(
        out,
        "| Scenario | no limits | every kind of limit | limits / none | per pair: median (lowest … highest) |\n| --- | ---: | ---: | ---: | ---: |"
    )?;
    let mut worst_ir = f64::MIN;
    for (label, pair) in &counted {
        let (median, low, high) = pair.increase();
        worst_ir = worst_ir.max(median);
        writeln!(
            out,
            "| {label} | {:.0} | {:.0} | {:.1}% | {median:+.1}% ({low:+.1} … {high:+.1}) |",
            pair.a(),
            pair.b(),
            100.0 * pair.b() / pair.a().max(1.0)
        )?;
    }
    writeln!(
        out,
        "\nTarget: limits within 5 % of the run without them. Requests per second: the largest median loss per pair above is {:.1}%, {}. Instructions per request: the largest median increase per pair is {worst_ir:.1}%, {}.",
        -worst,
        super::gateway::verdict(worst >= -5.0),
        super::gateway::verdict(worst_ir <= 5.0)
    )?;
    std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())?;
    super::write_section(root, "limits", &out)?;
    eprintln!("bench limits: wrote docs/benchmarks.md");
    Ok(())
}
