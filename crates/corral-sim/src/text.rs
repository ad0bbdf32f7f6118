//! Deterministic content, digests, timestamps and the small parsers Ollama applies.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

const WORDS: &[&str] = &[
    "the", "herd", "rests", "in", "a", "wide", "corral", "while", "gentle", "rain", "falls", "on", "green", "hills",
    "and", "riders", "tell", "stories", "of", "distant", "valleys", "where", "rivers", "shine", "under", "a", "pale",
    "moon", "every", "fence", "post", "holds", "memory", "light", "wind", "carries", "dust", "across", "quiet",
    "plains",
];

/// A seeded word source for one response.
pub struct Words(ChaCha8Rng);

impl Words {
    /// Words seeded from `seed`.
    pub fn new(seed: u64) -> Words {
        Words(ChaCha8Rng::seed_from_u64(seed))
    }

    /// The next token: a word with a leading space after the first.
    pub fn token(&mut self, first: bool) -> String {
        let w = WORDS[self.0.gen_range(0..WORDS.len())];
        if first {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        } else {
            format!(" {w}")
        }
    }
}

/// A stable 64-bit hash of `text` (FNV-1a), for seeds.
pub fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A stable sha256 hex digest for a model name.
pub fn digest_of(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

/// Now in UTC, RFC 3339 with trailing zeros of the fraction trimmed, as Go prints it.
pub fn now_utc() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A local time with offset, as Ollama prints `expires_at` and `modified_at`.
pub fn local(t: chrono::DateTime<chrono::Local>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, false)
}

/// An L2-normalised vector of `dim` values derived from `text`.
pub fn embedding(text: &str, dim: usize) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(hash(text));
    let raw: Vec<f64> = (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
    normalise(raw)
}

/// Scales `v` to unit length.
pub fn normalise(v: Vec<f64>) -> Vec<f64> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm == 0.0 {
        return v;
    }
    v.into_iter().map(|x| x / norm).collect()
}

/// Ollama's `keep_alive`: seconds as a number, or a Go duration string. `None` = default.
pub fn keep_alive(value: Option<&serde_json::Value>) -> Result<Option<Duration>, String> {
    let Some(v) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let forever = Duration::from_secs(292 * 365 * 24 * 3600);
    match v {
        serde_json::Value::Number(n) => {
            let secs = n.as_f64().unwrap_or(0.0);
            Ok(Some(if secs < 0.0 {
                forever
            } else {
                Duration::from_secs_f64(secs)
            }))
        }
        serde_json::Value::String(s) => parse_go_duration(s).map(|d| Some(d.unwrap_or(forever))),
        serde_json::Value::Bool(_) => Err("Unsupported type: 'bool'".to_owned()),
        _ => Err("Unsupported type".to_owned()),
    }
}

/// Parses a Go duration (`5m`, `1h30m`, `300ms`, `0`); `Ok(None)` for a negative one.
fn parse_go_duration(s: &str) -> Result<Option<Duration>, String> {
    let bad = || format!("time: invalid duration {s:?}");
    if s == "0" {
        return Ok(Some(Duration::ZERO));
    }
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0f64;
    let mut rest = rest;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            _ => return Err(format!("time: unknown unit {:?} in duration {s:?}", &rest[..unit_len])),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    if neg {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs_f64(total)))
}

/// Nanoseconds in `d`, as Ollama reports durations.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
