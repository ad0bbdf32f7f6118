//! `cargo xtask fuzz [--seconds N | --smoke] [TARGET…]`: runs the cargo-fuzz targets under `fuzz/`,
//! one at a time, each for a bounded time, and prints what each run did.
//!
//! cargo-fuzz is installed from crates.io when missing. It needs nightly-only compiler flags, so the
//! targets are built with the stable toolchain and `RUSTC_BOOTSTRAP=1`, and without a sanitizer: every
//! Corral crate forbids `unsafe`, so AddressSanitizer would only slow the search. A long run grows the
//! corpus under `fuzz/corpus/<target>/` (only the committed `seed-*` files are tracked); `--smoke` keeps
//! its finds in a temporary directory. A crash leaves its input under `fuzz/artifacts/<target>/`: turn it
//! into a unit test in the crate, fix it, and add the input as a seed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Every target, in the order they run.
const TARGETS: [&str; 5] = ["sse_stream", "model_ref", "credentials", "config", "stream_end"];

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;

/// Seconds per target for `--smoke`: enough to run the seeds and some mutations.
const SMOKE_SECONDS: u64 = 5;

/// What one target's run reported.
#[derive(Debug, Default)]
struct Outcome {
    target: String,
    runs: String,
    coverage: String,
    crashed: bool,
}

/// Parses the arguments and runs the chosen targets.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut seconds = DEFAULT_SECONDS;
    let mut smoke = false;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let n = args.next().context("--seconds needs a number")?;
                seconds = n
                    .parse()
                    .with_context(|| format!("--seconds: {n:?} is not a whole number of seconds"))?;
            }
            "--smoke" => smoke = true,
            name if TARGETS.contains(&name) => targets.push(name.to_owned()),
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask fuzz [--seconds N | --smoke] [{}]",
                TARGETS.join("|")
            ),
        }
    }
    if smoke {
        seconds = SMOKE_SECONDS;
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    let dir = root.join("fuzz");
    ensure_cargo_fuzz()?;
    build(&dir)?;
    let mut outcomes = Vec::new();
    for target in &targets {
        outcomes.push(run_target(&dir, target, seconds, smoke)?);
    }
    eprintln!("\nxtask fuzz: {seconds} s per target");
    for o in &outcomes {
        eprintln!(
            "  {:<12} {:>12} runs  {}  {}",
            o.target,
            o.runs,
            o.coverage,
            if o.crashed { "CRASHED" } else { "no crash" }
        );
    }
    let crashed: Vec<_> = outcomes
        .iter()
        .filter(|o| o.crashed)
        .map(|o| o.target.as_str())
        .collect();
    if !crashed.is_empty() {
        bail!(
            "crashes in {}: inputs are under fuzz/artifacts/<target>/",
            crashed.join(", ")
        );
    }
    Ok(())
}

/// A `cargo` command that builds with the stable toolchain as if it were nightly.
fn cargo(dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir).env("RUSTC_BOOTSTRAP", "1");
    cmd
}

/// Installs cargo-fuzz from crates.io unless `cargo fuzz` already works.
fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    eprintln!("$ cargo install cargo-fuzz --locked");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed: {status}");
    }
    Ok(())
}

/// Builds every target once, so the timed runs measure fuzzing, not compiling.
fn build(dir: &Path) -> Result<()> {
    eprintln!("$ RUSTC_BOOTSTRAP=1 cargo fuzz build --sanitizer none");
    let status = cargo(dir)
        .args(["fuzz", "build", "--sanitizer", "none"])
        .status()
        .context("running cargo fuzz build")?;
    if !status.success() {
        bail!("cargo fuzz build failed: {status}");
    }
    Ok(())
}

/// Runs one target for `seconds`, streaming libFuzzer's progress, and reads its final figures.
fn run_target(dir: &Path, target: &str, seconds: u64, smoke: bool) -> Result<Outcome> {
    let seeds = dir.join("corpus").join(target);
    let mut cmd = cargo(dir);
    cmd.args(["fuzz", "run", "--sanitizer", "none", target]);
    let scratch;
    if smoke {
        // New finds go to the first directory: a scratch one, so a smoke run leaves no files behind.
        scratch = std::env::temp_dir().join(format!("corral-fuzz-{target}-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)?;
        cmd.arg(&scratch).arg(&seeds);
    } else {
        std::fs::create_dir_all(&seeds)?;
        scratch = std::path::PathBuf::new();
    }
    cmd.args([
        "--",
        &format!("-max_total_time={seconds}"),
        "-timeout=10",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ]);
    eprintln!("\n$ RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none {target} -- -max_total_time={seconds}");
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    let mut outcome = Outcome {
        target: target.to_owned(),
        ..Outcome::default()
    };
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            read_progress(&line, &mut outcome);
            // New-coverage lines come thousands a minute; the rest (pulses, stats, crashes) is shown.
            if !(line.contains(" NEW ") || line.contains(" REDUCE ")) {
                eprintln!("{line}");
            }
        }
    }
    let status = child.wait()?;
    outcome.crashed |= !status.success();
    if smoke {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(outcome)
}

/// Keeps the figures of libFuzzer's progress and final lines.
fn read_progress(line: &str, outcome: &mut Outcome) {
    if let Some(cov) = line.find("cov: ") {
        // `#123 pulse  cov: 2495 ft: 6208 corp: 1610/224Kb …`: keep runs so far, coverage, features
        // and corpus (a run that crashes prints no `Done` line).
        let figures: Vec<&str> = line[cov..].split_whitespace().take(6).collect();
        outcome.coverage = figures.join(" ");
        if let Some(runs) = line.strip_prefix('#').and_then(|l| l.split_whitespace().next()) {
            outcome.runs = runs.to_owned();
        }
    }
    if let Some(rest) = line.strip_prefix("Done ") {
        outcome.runs = rest.split_whitespace().next().unwrap_or_default().to_owned();
    }
    if line.contains("panicked at") || line.contains("SUMMARY: libFuzzer") {
        outcome.crashed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_figures_are_read() {
        let mut o = Outcome::default();
        read_progress(
            "#820294\tDONE   cov: 2495 ft: 6208 corp: 1610/224Kb lim: 745 exec/s: 39061 rss: 31Mb",
            &mut o,
        );
        read_progress("Done 820294 runs in 21 second(s)", &mut o);
        assert_eq!(o.runs, "820294");
        assert_eq!(o.coverage, "cov: 2495 ft: 6208 corp: 1610/224Kb");
        assert!(!o.crashed);
        read_progress("thread '<unnamed>' panicked at fuzz_targets/x.rs:1:1:", &mut o);
        assert!(o.crashed);
        let mut crashed = Outcome::default();
        read_progress(
            "#2250543\tREDUCE cov: 1533 ft: 6720 corp: 2552/486Kb lim: 4096",
            &mut crashed,
        );
        assert_eq!(crashed.runs, "2250543");
    }
}
