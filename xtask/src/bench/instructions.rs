//! Instructions per request, counted by valgrind's callgrind: what a feature costs the gateway,
//! repeatable to a fraction of a per cent whatever else the machine is doing (throughput ratios
//! on these 2 shared cores move by ±30 % between back-to-back pairs). Callgrind counts every
//! instruction of every thread of the process (the request path, the usage writer, SQLite),
//! not time: a cache miss or a system call's kernel work costs nothing here, so this is the
//! gateway's own user-space work, beside the timed figures, not instead of them.
//!
//! Under callgrind the gateway runs about fifty times slower, while its periodic work (the
//! limit counters written every 250 ms, the usage batch every second) keeps the wall clock's
//! pace: counted over the requests of one run, it would weigh fifty times what it weighs at
//! full speed. So each figure is marginal: the same gateway runs twice for the same wall time,
//! once with `n` requests and once with `2n` (both paced evenly), and the difference of the
//! two counts over `n` is what one more request costs, whatever runs per interval.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::gateway::{self, start_corral_under, wait_ready};

/// What one measurement sends: POSTs of `body` to `path`, `concurrency` at a time, evenly
/// paced over `secs` seconds: `requests` of them in one run, twice as many in the other.
pub struct Load<'a> {
    pub path: &'a str,
    pub body: &'a str,
    pub requests: u64,
    pub secs: u64,
    pub concurrency: usize,
    /// The `authorization: Bearer …` header line.
    pub auth: &'a str,
}

/// How many requests each measurement sends, over how many seconds, how many at a time, and
/// how many times each comparison is measured: a few requests once in smoke mode (it only has
/// to work), fewer with `--quick`. Smoke runs send one at a time, so no connection idles past
/// the simulator's keep-alive between paced requests.
pub fn sizes(smoke: bool, quick: bool) -> (u64, u64, usize, usize) {
    if smoke {
        // Smoke runs use a debug build, tens of times slower again under callgrind.
        (6, 4, 1, 1)
    } else if quick {
        (400, 5, 4, 1)
    } else {
        (800, 10, 4, 3)
    }
}

/// Two sides' marginal counts, measured several times in turn (A, B, then B, A, …).
///
/// One marginal count moves by up to a few thousand instructions between runs of the same
/// gateway, as much as the features these benches weigh: the work done on a clock (the limit
/// counters' sync four times a second, the usage writer every second) runs once more or once
/// less in one of the two runs (at `n` = 800, one sync of the limit counters, about 155,000
/// instructions under callgrind, is 190 a request; 575 before its statements were kept
/// prepared). A comparison takes the median of several pairs and shows their spread.
pub struct Paired {
    /// Side A's counts, one per repeat.
    pub a: Vec<f64>,
    /// Side B's.
    pub b: Vec<f64>,
}

impl Paired {
    /// Measures `repeats` pairs with `measure(side, round)` (side 0 for A, 1 for B), in turn.
    pub fn measure(repeats: usize, mut measure: impl FnMut(usize, usize) -> Result<f64>) -> Result<Paired> {
        let mut counts = [Vec::new(), Vec::new()];
        for round in 0..repeats.max(1) {
            for side in super::in_turn(round, [0, 1]) {
                let count = measure(side, round)?;
                eprintln!("bench: marginal count, side {}: {count:.0}", ["A", "B"][side]);
                counts[side].push(count);
            }
        }
        let [a, b] = counts;
        Ok(Paired { a, b })
    }

    /// The median of side A's counts.
    pub fn a(&self) -> f64 {
        super::median(&self.a)
    }

    /// The median of side B's counts.
    pub fn b(&self) -> f64 {
        super::median(&self.b)
    }

    /// B over A, pair by pair, as percentages off 100: the median, the lowest, the highest.
    pub fn increase(&self) -> (f64, f64, f64) {
        super::paired_ratios(&self.b, &self.a)
    }
}

/// A gateway to measure: Corral from `bin` with `env`, on the database under `data`, in front
/// of `upstream`; `oha` sends the load.
pub struct Gateway<'a> {
    pub bin: &'a Path,
    pub data: &'a Path,
    pub upstream: &'a str,
    pub env: &'a [(&'a str, &'a str)],
    pub oha: &'a Path,
}

/// The instructions one more request of `load` costs `gw`: the count of a run of `2n` requests
/// less that of a run of `n` in the same wall time, over `n`.
///
/// Every run starts from the same database ([`same_start`]); in round `round` the longer run
/// goes first when `round` is odd, so that whatever else one run leaves to the next (the
/// system's caches, the simulator's state) weighs on neither side of the difference over the
/// rounds.
pub fn per_request(gw: &Gateway<'_>, load: &Load<'_>, round: usize) -> Result<f64> {
    let (once, twice) = if round % 2 == 1 {
        let twice = counted_run(gw, load, 2 * load.requests)?;
        (counted_run(gw, load, load.requests)?, twice)
    } else {
        let once = counted_run(gw, load, load.requests)?;
        (once, counted_run(gw, load, 2 * load.requests)?)
    };
    Ok((twice as f64 - once as f64) / load.requests.max(1) as f64)
}

/// Starts the gateway under callgrind, warms it up, zeroes the counts, sends `n` requests of
/// `load` over `load.secs`, waits out the rest of that time, stops the gateway with SIGTERM
/// (its drain writes what it buffered, which is counted too) and returns the instructions it
/// executed since the zeroing. A request that did not get a 200 fails the measurement.
fn counted_run(gw: &Gateway<'_>, load: &Load<'_>, n: u64) -> Result<u64> {
    let Gateway {
        bin,
        data,
        upstream,
        env,
        oha,
    } = *gw;
    same_start(data)?;
    let valgrind = ensure_valgrind()?;
    let control = valgrind.with_file_name("callgrind_control");
    let out_dir = data.join("callgrind");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir)?;
    let prefix = [
        valgrind.to_string_lossy().into_owned(),
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}/callgrind.%p", out_dir.display()),
    ];
    // No active health checks: a check that times out while callgrind slows the gateway
    // would take the simulator out of rotation and fail requests (both sides alike).
    let mut env = env.to_vec();
    env.push(("CORRAL_BALANCE__HEALTH_INTERVAL", "0"));
    let (mut proc, base) = start_corral_under(bin, data, upstream, &env, &prefix)?;
    // Under valgrind the gateway starts about fifty times slower.
    let mut ready = false;
    for _ in 0..20 {
        if wait_ready(oha, &format!("{base}/health")).is_ok() {
            ready = true;
            break;
        }
    }
    anyhow::ensure!(ready, "the gateway under callgrind did not become ready");
    let url = format!("{base}{}", load.path);
    let warm = oha_count(oha, &url, load, load.requests.min(200), None)?;
    anyhow::ensure!(
        warm.0 == warm.1,
        "warm-up: {} of {} requests answered 200",
        warm.0,
        warm.1
    );
    // Past the warm-up's usage batch (written every second) before counting starts.
    std::thread::sleep(Duration::from_millis(2500));
    let pid = proc.0.id().to_string();
    let zeroed = Command::new(&control).args(["-z", &pid]).output()?;
    anyhow::ensure!(
        zeroed.status.success(),
        "callgrind_control -z failed: {}",
        String::from_utf8_lossy(&zeroed.stderr)
    );
    let started = std::time::Instant::now();
    let window = Duration::from_secs(load.secs);
    let qps = (n as f64 / load.secs.max(1) as f64).max(1.0);
    let (ok, sent) = oha_count(oha, &url, load, n, Some(qps))?;
    anyhow::ensure!(ok == sent, "{} of {} requests answered 200", ok, sent);
    let took = started.elapsed();
    anyhow::ensure!(
        took < window + window / 4,
        "{n} requests took {took:?} under callgrind, past the {window:?} both runs must share: fewer requests or a longer time"
    );
    std::thread::sleep(window.saturating_sub(took));
    gateway::stop_gracefully(&mut proc, Duration::from_secs(60))?;
    let file = out_dir.join(format!("callgrind.{pid}"));
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    total_instructions(&text).with_context(|| format!("no totals in {}", file.display()))
}

/// Makes every counted run start from the same database: the first copies the files under
/// `data` aside (into `data/start`), each later one puts that copy back. Otherwise each run
/// would find the work of the run before it in the database (its usage records; its limit
/// counters, as another replica's, read back at every sync of the same minute and hour), and
/// the second run of a pair would do more work per interval than the first.
fn same_start(data: &Path) -> Result<()> {
    let kept = data.join("start");
    let files = |dir: &Path| -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                out.push(entry.path());
            }
        }
        Ok(out)
    };
    if !kept.is_dir() {
        std::fs::create_dir_all(&kept)?;
        for file in files(data)? {
            std::fs::copy(&file, kept.join(file.file_name().context("a file name")?))?;
        }
        return Ok(());
    }
    for file in files(data)? {
        std::fs::remove_file(&file)?;
    }
    for file in files(&kept)? {
        std::fs::copy(&file, data.join(file.file_name().context("a file name")?))?;
    }
    Ok(())
}

/// The `totals:` (or `summary:`) line of a callgrind output file: instructions executed.
fn total_instructions(text: &str) -> Option<u64> {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Sends `n` requests of `load` with oha, at most `qps` a second when given; returns
/// (answered 200, sent).
fn oha_count(oha: &Path, url: &str, load: &Load<'_>, n: u64, qps: Option<f64>) -> Result<(u64, u64)> {
    let mut cmd = Command::new(oha);
    cmd.args(["--no-tui", "--output-format", "json", "-m", "POST"])
        .args(["-H", load.auth, "-H", "content-type: application/json", "-d", load.body])
        .args(["-n", &n.to_string(), "-c", &load.concurrency.to_string()]);
    if let Some(qps) = qps {
        cmd.args(["-q", &format!("{qps:.3}")]);
    }
    let out = cmd.arg(url).output().context("running oha")?;
    if !out.status.success() {
        bail!("oha failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("parsing oha's JSON")?;
    let codes = v["statusCodeDistribution"].as_object();
    let ok = codes.and_then(|c| c.get("200")).and_then(Value::as_u64).unwrap_or(0);
    let errors = v["errorDistribution"]
        .as_object()
        .map_or(0, |e| e.values().filter_map(Value::as_u64).sum::<u64>());
    let sent = codes.map_or(0, |c| c.values().filter_map(Value::as_u64).sum::<u64>()) + errors;
    if ok != sent {
        eprintln!(
            "bench: oha's statuses {} and errors {}",
            v["statusCodeDistribution"], v["errorDistribution"]
        );
    }
    Ok((ok, sent))
}

/// valgrind's path, installing the Debian package when it is missing.
fn ensure_valgrind() -> Result<PathBuf> {
    gateway::ensure_debian("valgrind", &["/usr/bin/valgrind"])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_totals_line_is_read() {
        let text = "events: Ir\nfn=main\n1 5\nsummary: 1234\ntotals: 402025357\n";
        assert_eq!(super::total_instructions(text), Some(402_025_357));
        assert_eq!(super::total_instructions("events: Ir\n"), None);
    }
}
