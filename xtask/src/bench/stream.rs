//! A small, bounded streaming client: `workers` threads each run `per_worker` streamed
//! requests one after another, timing the first and the last NDJSON object of each.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What the streams measured.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Streams that ended with their final object.
    pub streams: usize,
    /// Streams that failed or ended early.
    pub errors: usize,
    /// NDJSON objects received, over all streams.
    pub chunks: u64,
    /// Time to the first object of each stream.
    pub first: Vec<Duration>,
    /// Time to the last object of each stream.
    pub last: Vec<Duration>,
    /// Wall time of the whole scenario.
    pub wall: Duration,
}

impl StreamStats {
    /// Adds another run's figures to these (wall times add up).
    pub fn absorb(&mut self, other: StreamStats) {
        self.streams += other.streams;
        self.errors += other.errors;
        self.chunks += other.chunks;
        self.first.extend(other.first);
        self.last.extend(other.last);
        self.wall += other.wall;
    }
}

/// Runs the scenario against `addr` (`host:port`).
/// `headers` are extra header lines, each ending in CRLF.
pub fn run(addr: &str, path: &str, body: &str, workers: usize, per_worker: usize, headers: &str) -> StreamStats {
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (addr, path, body, headers) = (addr.to_owned(), path.to_owned(), body.to_owned(), headers.to_owned());
            std::thread::spawn(move || {
                let mut mine = StreamStats::default();
                for _ in 0..per_worker {
                    match one(&addr, &path, &body, &headers) {
                        Some((first, last, chunks)) => {
                            mine.streams += 1;
                            mine.chunks += chunks;
                            mine.first.push(first);
                            mine.last.push(last);
                        }
                        None => mine.errors += 1,
                    }
                }
                mine
            })
        })
        .collect();
    let mut all = StreamStats::default();
    for h in handles {
        if let Ok(s) = h.join() {
            all.streams += s.streams;
            all.errors += s.errors;
            all.chunks += s.chunks;
            all.first.extend(s.first);
            all.last.extend(s.last);
        }
    }
    all.wall = start.elapsed();
    all
}

/// One streamed request: (time to first object, time to last object, objects received).
fn one(addr: &str, path: &str, body: &str, headers: &str) -> Option<(Duration, Duration, u64)> {
    let start = Instant::now();
    let mut conn = TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).ok()?;
    let (object, done) = (b"{\"model\"", b"\"done\":true");
    let mut buf = [0u8; 16 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    let (mut first, mut last, mut count, mut finished) = (None, None, 0u64, false);
    loop {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        // Search the new bytes plus a short tail of the previous read, so a marker split
        // across two reads is still found once.
        let keep = tail.len();
        tail.extend_from_slice(&buf[..n]);
        let found = occurrences(&tail, object, keep);
        if found > 0 {
            count += found;
            first.get_or_insert_with(|| start.elapsed());
            last = Some(start.elapsed());
        }
        if occurrences(&tail, done, keep) > 0 {
            finished = true;
        }
        let cut = tail.len().saturating_sub(16);
        tail.drain(..cut);
    }
    if !finished {
        return None;
    }
    Some((first?, last?, count))
}

/// Occurrences of `pat` in `hay` that end after position `from` (new bytes only).
fn occurrences(hay: &[u8], pat: &[u8], from: usize) -> u64 {
    if hay.len() < pat.len() {
        return 0;
    }
    (0..=hay.len() - pat.len())
        .filter(|&i| i + pat.len() > from && &hay[i..i + pat.len()] == pat)
        .count() as u64
}

/// The `p`-th percentile (0 to 100) of `values`.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}
