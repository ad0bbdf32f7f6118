//! `cargo xtask bench`: the gateway against the simulator, direct and through Corral, in one
//! run, written to `docs/benchmarks.md`.
//!
//! Request/response load comes from `oha` (installed under `target/tools` on first use).
//! No existing tool reports time to first chunk of an NDJSON stream, so the streaming
//! scenario uses the small bounded client in `bench/stream.rs`.

mod balance;
mod gateway;
mod instructions;
mod limits;
mod metering;
mod stream;
mod streams;

use std::path::Path;

use anyhow::Result;

/// Runs the benchmark named by `args`: `[balance|streams|metering|limits] [--quick] [--smoke]`.
///
/// `--smoke` runs every scenario with a few requests each on debug builds, checks that each
/// request succeeded, and writes no figure: `cargo xtask test` runs it so that a benchmark
/// that stops working fails CI.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let smoke = args.iter().any(|a| a == "--smoke");
    if let Some(unknown) = args
        .iter()
        .find(|a| !["balance", "streams", "metering", "limits", "--quick", "--smoke"].contains(&a.as_str()))
    {
        anyhow::bail!(
            "unknown bench argument {unknown:?}; expected [balance|streams|metering|limits] [--quick] [--smoke]"
        );
    }
    if args.iter().any(|a| a == "balance") {
        balance::run(root, quick, smoke)
    } else if args.iter().any(|a| a == "limits") {
        limits::run(root, quick, smoke)
    } else if args.iter().any(|a| a == "streams") {
        streams::run(root, quick, smoke)
    } else if args.iter().any(|a| a == "metering") {
        metering::run(root, quick, smoke)
    } else {
        gateway::run(root, quick, smoke)
    }
}

/// Builds `corral` and `corral-sim` and returns the directory holding them: a release build
/// for figures, the debug build (which the test suite has already made) for a smoke run.
pub fn build_bins(root: &Path, smoke: bool) -> Result<std::path::PathBuf> {
    let mut cmd = std::process::Command::new("cargo");
    cmd.args(["build", "-p", "corral", "-p", "corral-sim"]);
    if !smoke {
        cmd.arg("--release");
    }
    let status = cmd.current_dir(root).status()?;
    anyhow::ensure!(status.success(), "building corral and corral-sim failed");
    Ok(root.join(if smoke { "target/debug" } else { "target/release" }))
}

/// Replaces the text between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` in
/// `docs/benchmarks.md`, adding the section if missing.
pub fn write_section(root: &Path, name: &str, body: &str) -> Result<()> {
    let path = root.join("docs/benchmarks.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let start = format!("<!-- bench:{name}:start -->");
    let end = format!("<!-- bench:{name}:end -->");
    let section = format!("{start}\n{body}\n{end}");
    let next = match (text.find(&start), text.find(&end)) {
        (Some(a), Some(b)) if a < b => format!("{}{}{}", &text[..a], section, &text[b + end.len()..]),
        _ => format!("{}\n{}\n", text.trim_end(), section),
    };
    std::fs::write(&path, next)?;
    Ok(())
}

/// A one-line description of this machine.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("PRETTY_NAME="))
                .map(|l| l[12..].trim_matches('"').to_owned())
        })
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB, {os}, {rustc}")
}

/// Creates an admin and an API key in the database under `data` with the `corral` CLI, as an
/// operator would, and returns the key.
pub fn provision_key(bin: &std::path::Path, data: &std::path::Path) -> Result<String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut create = Command::new(bin.join("corral"))
        .args(["user", "create", "--admin", "--email", "bench@example.com"])
        .env("DATA_DIR", data)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = create.stdin.take() {
        stdin.write_all(b"bench-password\n")?;
    }
    anyhow::ensure!(create.wait()?.success(), "corral user create failed");
    let out = Command::new(bin.join("corral"))
        .args(["key", "create", "--user", "bench@example.com", "--name", "bench"])
        .env("DATA_DIR", data)
        .stderr(Stdio::null())
        .output()?;
    anyhow::ensure!(out.status.success(), "corral key create failed");
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// The two sides of a comparison in the order they run in round `round`: A-B, then B-A, so a
/// drift of the machine's speed over a pair of rounds weighs on both alike.
pub fn in_turn<T>(round: usize, sides: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut turns: Vec<T> = sides.into_iter().collect();
    if round % 2 == 1 {
        turns.reverse();
    }
    turns
}

/// The ratio of each round's two rates (`side` over `base`, round by round), as percentages
/// off 100: the median, the lowest and the highest. Each pair ran back to back, so a drift of
/// the machine's speed between rounds cancels out of it.
pub fn paired_ratios(side: &[f64], base: &[f64]) -> (f64, f64, f64) {
    let mut ratios: Vec<f64> = side
        .iter()
        .zip(base)
        .map(|(s, b)| (s / b.max(1e-9) - 1.0) * 100.0)
        .collect();
    ratios.sort_by(f64::total_cmp);
    match (ratios.first(), ratios.last()) {
        (Some(&low), Some(&high)) => (median(&ratios), low, high),
        _ => (0.0, 0.0, 0.0),
    }
}

/// The median of `values` (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
