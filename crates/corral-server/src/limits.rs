//! Limits per API key, user and group on the request path: admission before the queue, the
//! OpenAI-style headers, tokens charged when a request finishes, and the counters shared with
//! the other replicas through the database.
//!
//! The limits themselves live in the auth [`crate::auth::Directory`] (loaded, reloaded and
//! pushed between replicas with the keys and users). The counts live in one
//! [`corral_auth::limits::Counters`] behind a mutex held for a few map operations, never across
//! an await or a query. Every [`SYNC`] the sync task writes this replica's changed counts (its
//! own absolute figures, one row per counter) and reads back the sum of every other replica's,
//! in one transaction off the executor (the budget hours before the last two only once a
//! minute: see `WHOLE_READ_EVERY`). On SQLite (one process) that keeps the counts across
//! restarts; on PostgreSQL it also shares them between replicas.
//!
//! Over-admission between replicas: a replica admits while the counts it knows are below the
//! limit, and learns of another replica's admissions at its next sync after that replica's next
//! sync, so within one window at most `limit + (N-1) x r x 2 x SYNC` requests pass (N replicas,
//! `r` the rate each admits at), and never more than `N x limit`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use corral_auth::limits::{go_duration, Counters, Denied, GoDuration, Headroom, Limits, Refused, Scope, Subject};

use crate::auth::{scope_slot, Caller};
use crate::error::AppError;
use crate::state::Shared;

/// How often counts are written to and read back from the database.
pub const SYNC: Duration = Duration::from_millis(250);

/// A replica stops counting another's requests in flight when that one has not written for
/// this many seconds (it died).
const IN_FLIGHT_FRESH_SECS: i64 = 10;

/// The clock limits count by: the wall clock, or a fixed instant set by a test.
#[derive(Debug, Default)]
pub struct LimitClock {
    fixed_ms: AtomicI64,
}

impl LimitClock {
    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        match self.fixed_ms.load(Ordering::Acquire) {
            // The system clock read as milliseconds directly: chrono's `Utc::now` builds a
            // calendar date to be taken apart again (twice a limited request).
            0 => crate::exchange::unix_ms(std::time::SystemTime::now()),
            fixed => fixed,
        }
    }

    /// Stops the clock at `ms` (Unix milliseconds), for tests; 0 lets it run again.
    pub fn set_ms(&self, ms: i64) {
        self.fixed_ms.store(ms, Ordering::Release);
    }
}

/// Every this many syncs (once a minute), the read-back covers every budget hour still
/// counted; the others read the last two hours only. A closed hour changes only when a replica
/// writes it late (its last sync of the hour, or its counts kept through a database outage),
/// while reading every hour of a month, from every replica that ran in it, four times a second
/// would make each sync's work grow with the rows the period has gathered.
const WHOLE_READ_EVERY: u32 = 240;

/// This replica's counters and the clock they count by.
pub struct Limiter {
    counters: Mutex<Counters>,
    /// The clock windows and periods are read from.
    pub clock: LimitClock,
    replica: String,
    /// Syncs since the start or the last failed one (the first reads everything back, so
    /// hours the other replicas wrote late during an outage arrive at once).
    syncs: std::sync::atomic::AtomicU32,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            counters: Mutex::new(Counters::default()),
            clock: LimitClock::default(),
            replica: format!("{:016x}", rand::random::<u64>()),
            syncs: std::sync::atomic::AtomicU32::new(0),
        }
    }
}

/// The limited subjects among a key and a user with its groups, by the limits set per scope
/// (key, user, group) and id; `None` when none of them is limited. The directory makes these
/// once per load, so a request only clones an `Arc`.
pub(crate) fn subjects_of(
    limits: &[foldhash::HashMap<String, Arc<Limits>>; 3],
    key: Option<&str>,
    user: Option<(&str, &[String])>,
) -> Option<Limited> {
    let mut out = Vec::new();
    let mut push = |scope: Scope, id: &str| {
        if let Some(limits) = limits[scope_slot(scope)].get(id) {
            out.push(((scope, id.to_owned()), limits.clone()));
        }
    };
    if let Some(key) = key {
        push(Scope::Key, key);
    }
    if let Some((user, groups)) = user {
        push(Scope::User, user);
        for group in groups {
            push(Scope::Group, group);
        }
    }
    (!out.is_empty()).then(|| out.into())
}

/// The limited subjects of a caller, with their limits (made once per directory load).
pub type Limited = Arc<[(Subject, Arc<Limits>)]>;

/// A request let in under its limits: counted in flight until it finishes (its exchange
/// record charges its tokens and releases it) or is dropped.
pub struct Permit {
    shared: Arc<Shared>,
    subjects: Limited,
    /// Charged and released already.
    finished: bool,
}

impl Permit {
    /// The request ended having used `tokens` of `model` (asked, run): charged to its subjects
    /// and released, under one lock.
    pub(crate) fn finish(mut self, model: (&str, &str), tokens: u64) {
        let limiter = &self.shared.limiter;
        let now = limiter.clock.now_ms();
        if let Ok(mut counters) = limiter.counters.lock() {
            counters.finish(&self.subjects, model, tokens, now);
        }
        self.finished = true;
    }
}

/// What admission gives a request its limits let in.
#[derive(Default)]
pub struct Admitted {
    /// The figures of the `x-ratelimit-*` headers for its answer (none when the answer is
    /// not in OpenAI's shape, or no limit applies).
    pub headroom: Option<Headroom>,
    /// Its permit when its exchange record does not hold it (nothing records the request):
    /// to hold until the answer ends.
    pub permit: Option<Permit>,
}

/// Whether an admitted request's answer carries the `x-ratelimit-*` headers.
///
/// OpenAI's API sends them with every answer and its clients read them, so every answer in
/// OpenAI's shape carries them (the converted routes, `/ollama/v1/*`). Ollama's API has none
/// and no Ollama client reads them: native answers carry them only with a refusal, and
/// the allowance left is in `GET /api/v1/limits/me`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// Send them with the answer (an OpenAI-shaped route).
    Always,
    /// Only with a refusal (a native route).
    OnRefusal,
}

impl Announce {
    /// For a request to upstream `path` (`/api/chat`, `/v1/chat/completions`, …), converted
    /// from OpenAI's shape by the gateway or not.
    pub fn for_route(path: &str, converted: bool) -> Announce {
        if converted || path.starts_with("/v1/") {
            Announce::Always
        } else {
            Announce::OnRefusal
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Ok(mut counters) = self.shared.limiter.counters.lock() {
            counters.release(self.subjects.iter().map(|(subject, _)| subject));
        }
    }
}

impl Limiter {
    /// Admits a request of `caller` for model `asked` (run as `run`), or refuses it with a 429.
    /// The request's `exchange` record holds its permit, to charge its tokens and release it
    /// when the request ends.
    pub fn admit(
        &self,
        shared: &Arc<Shared>,
        caller: &Caller,
        (asked, run): (&str, &str),
        announce: Announce,
        exchange: &mut crate::exchange::Exchange,
    ) -> Result<Admitted, AppError> {
        let Some(subjects) = caller.limited.as_ref() else {
            return Ok(Admitted::default());
        };
        let now = self.clock.now_ms();
        let result = match self.counters.lock() {
            Ok(mut counters) => counters.admit(subjects, (asked, run), now),
            Err(_) => return Err(AppError::Internal("the limit counters are poisoned".to_owned())),
        };
        match result {
            Ok(headroom) => Ok(Admitted {
                headroom: (announce == Announce::Always).then_some(headroom),
                permit: exchange.hold(Permit {
                    shared: shared.clone(),
                    subjects: subjects.clone(),
                    finished: false,
                }),
            }),
            Err(denied) => {
                shared.metrics.rate_limited(match denied.reason {
                    Refused::Requests => "requests",
                    Refused::Tokens => "tokens",
                    Refused::Concurrency => "concurrency",
                    Refused::Budget => "budget",
                });
                Err(AppError::LimitReached(Box::new(Refusal::new(&denied, asked))))
            }
        }
    }

    /// What is left of each limit of `caller` for `model` (or any model), for `GET /api/v1/limits/me`.
    pub fn remaining(&self, caller: &Caller, model: Option<&str>) -> serde_json::Value {
        let subjects = caller.limited.as_deref().unwrap_or_default();
        let now = self.clock.now_ms();
        let model = model.unwrap_or("");
        let Ok(counters) = self.counters.lock() else {
            return serde_json::Value::Null;
        };
        let limits: Vec<serde_json::Value> = subjects
            .iter()
            .map(|(subject, limits)| {
                let one = [(subject.clone(), limits.as_ref())];
                let head = counters.headroom(&one, (model, model), now);
                let budget = limits.budget.as_ref().map(|b| {
                    let used = counters.budget_used(subject, b, now);
                    serde_json::json!({
                        "tokens": b.tokens,
                        "used": used,
                        "remaining": b.tokens.saturating_sub(used),
                        "resets_in_ms": b.reset_in_ms(now),
                        "models": b.models,
                    })
                });
                serde_json::json!({
                    "scope": subject.0.as_str(),
                    "id": subject.1,
                    "limits": limits.to_json(),
                    "requests": head.requests.map(allowance_json),
                    "tokens": limits.tokens_per_minute.and(head.tokens).map(allowance_json),
                    "concurrent_requests": limits.concurrent_requests.map(|max| serde_json::json!({
                        "limit": max,
                        "in_flight": counters.in_flight(subject),
                    })),
                    "budget": budget,
                })
            })
            .collect();
        serde_json::json!({ "limits": limits })
    }

    /// Writes this replica's changed counts and reads the others' back. Blocking.
    pub fn sync(&self, store: &corral_store::Store) -> Result<(), corral_store::StoreError> {
        let now = self.clock.now_ms();
        let rows = match self.counters.lock() {
            Ok(mut counters) => {
                counters.prune(now);
                counters.pending()
            }
            Err(_) => return Ok(()),
        };
        let secs = now.div_euclid(1000);
        let (minute, oldest_hour) = Counters::horizon(now);
        let whole = self
            .syncs
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(WHOLE_READ_EVERY);
        let budget_from = if whole {
            oldest_hour
        } else {
            corral_auth::limits::hour_bucket(now) - 1
        };
        let horizon = (minute, budget_from);
        match store.sync_limit_counters(&self.replica, &rows, horizon, secs - IN_FLIGHT_FRESH_SECS, secs) {
            Ok(others) => {
                if let Ok(mut counters) = self.counters.lock() {
                    // A whole read covers every hour `prune` left.
                    counters.set_others(others, budget_from);
                }
                Ok(())
            }
            Err(err) => {
                if let Ok(mut counters) = self.counters.lock() {
                    counters.unwritten(&rows);
                }
                self.syncs.store(0, Ordering::Relaxed);
                Err(err)
            }
        }
    }
}

fn allowance_json(a: corral_auth::limits::Allowance) -> serde_json::Value {
    serde_json::json!({"limit": a.limit, "remaining": a.remaining, "resets_in_ms": a.reset_ms})
}

/// OpenAI's `x-ratelimit-*` header names: limit, remaining and reset, of requests then tokens
/// (made once, at compile time).
static NAMES: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];

/// The reset shown for `ms`: a reset past a minute is a budget's period ending in hours or
/// days, shown to the second, rounded up (a client that waits that long finds it full again);
/// the minute window's to the millisecond.
fn shown_reset_ms(ms: i64) -> i64 {
    if ms > 60_000 {
        ms.saturating_add(999) / 1000 * 1000
    } else {
        ms.max(0)
    }
}

/// What every one of OpenAI's limit headers' names starts with.
pub const HEADER_PREFIX: &str = "x-ratelimit-";

/// The start of each `x-ratelimit-*` header's line, in [`NAMES`]' order.
const LINE_STARTS: [[&[u8]; 3]; 2] = [
    [
        b"x-ratelimit-limit-requests: ",
        b"x-ratelimit-remaining-requests: ",
        b"x-ratelimit-reset-requests: ",
    ],
    [
        b"x-ratelimit-limit-tokens: ",
        b"x-ratelimit-remaining-tokens: ",
        b"x-ratelimit-reset-tokens: ",
    ],
];

/// The longest of the six lines: the longest start, a Go duration of at most 24 bytes (a
/// count is at most 20), CRLF.
const LINE_MAX: usize = 32 + 24 + 2;

/// Passes each of OpenAI's `x-ratelimit-*` values for `headroom` to `put`, with where its
/// name is in [`NAMES`]: texts made on the stack (digits, letters and a dot).
fn each_value(headroom: &Headroom, mut put: impl FnMut((usize, usize), &[u8])) {
    for (i, allowance) in [headroom.requests, headroom.tokens].into_iter().enumerate() {
        let Some(a) = allowance else { continue };
        put((i, 0), itoa::Buffer::new().format(a.limit).as_bytes());
        put((i, 1), itoa::Buffer::new().format(a.remaining).as_bytes());
        put((i, 2), GoDuration::of(shown_reset_ms(a.reset_ms)).as_bytes());
    }
}

/// OpenAI's `x-ratelimit-*` headers for `headroom`, as encoded header lines (`name: value`
/// and CRLF each) for the answer's head to carry as they are; `None` when it has none. Every
/// limited OpenAI-shaped answer carries them: written on the stack and copied into one
/// allocation, they cost neither a header map's six insertions (a hash of each name, a
/// validated value each) nor its clearing, and are encoded with one copy.
pub fn encoded_headers(headroom: &Headroom) -> Option<bytes::Bytes> {
    let mut buf = [0u8; 6 * LINE_MAX];
    let mut len = 0;
    each_value(headroom, |(i, j), value| {
        for part in [LINE_STARTS[i][j], value, b"\r\n"] {
            let end = len + part.len();
            if let Some(room) = buf.get_mut(len..end) {
                room.copy_from_slice(part);
                len = end;
            }
        }
    });
    (len > 0).then(|| bytes::Bytes::copy_from_slice(&buf[..len]))
}

/// OpenAI's `x-ratelimit-*` headers for `headroom`, as a list (for a refusal).
pub fn headers(headroom: &Headroom) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(6);
    each_value(headroom, |(i, j), value| {
        // Digits, letters and a dot: always a valid value.
        if let Ok(value) = HeaderValue::from_bytes(value) {
            out.push((NAMES[i][j].clone(), value));
        }
    });
    out
}

/// A request refused by a limit, ready to answer in either API's shape.
#[derive(Debug)]
pub struct Refusal {
    /// Which limit.
    pub reason: Refused,
    /// What to tell the caller.
    pub message: String,
    /// Seconds until it may pass (at least 1).
    pub retry_after: u64,
    /// `x-ratelimit-*`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Refusal {
    fn new(denied: &Denied, model: &str) -> Refusal {
        let whose = format!("{} {}", denied.subject.0.as_str(), denied.subject.1);
        let wait = go_duration(denied.retry_in_ms);
        let message = match denied.reason {
            Refused::Requests => format!(
                "Rate limit reached for {model} on requests per min (RPM) of {whose}: Limit {}, Used {}, Requested 1. Please try again in {wait}.",
                denied.limit, denied.used
            ),
            Refused::Tokens => format!(
                "Rate limit reached for {model} on tokens per min (TPM) of {whose}: Limit {}, Used {}. Please try again in {wait}.",
                denied.limit, denied.used
            ),
            Refused::Concurrency => format!(
                "Rate limit reached for {model} on concurrent requests of {whose}: Limit {}, Running {}. Please try again when one ends.",
                denied.limit, denied.used
            ),
            Refused::Budget => format!(
                "You exceeded your current quota: the token budget of {whose} is spent (Limit {}, Used {}); it resets in {wait}.",
                denied.limit, denied.used
            ),
        };
        let secs = u64::try_from(denied.retry_in_ms.max(1)).unwrap_or(1).div_ceil(1000);
        Refusal {
            reason: denied.reason,
            message,
            retry_after: secs.max(1),
            headers: headers(&denied.headroom),
        }
    }

    /// OpenAI's `type` and `code`.
    pub fn openai_kind(&self) -> (&'static str, &'static str) {
        match self.reason {
            Refused::Requests | Refused::Concurrency => ("requests", "rate_limit_exceeded"),
            Refused::Tokens => ("tokens", "rate_limit_exceeded"),
            Refused::Budget => ("insufficient_quota", "insufficient_quota"),
        }
    }
}

/// Starts the counter sync on the current actix system, if there is a store.
pub fn spawn(shared: Arc<Shared>) {
    let Some(store) = shared.store() else { return };
    // Every model-running request is recorded: its record charges its tokens.
    shared.exchanges.record_for_limits();
    actix_rt::spawn(async move {
        let mut failing = false;
        loop {
            tokio::time::sleep(SYNC).await;
            let (shared2, store2) = (shared.clone(), store.clone());
            let result = actix_rt::task::spawn_blocking(move || shared2.limiter.sync(&store2)).await;
            match result {
                Ok(Ok(())) if failing => {
                    failing = false;
                    tracing::info!("limit counters are shared again");
                }
                Ok(Err(err)) if !failing => {
                    failing = true;
                    tracing::warn!(error = %err, "cannot share the limit counters; counting locally until the database answers");
                }
                _ => {}
            }
            // Occasionally, forget rows nobody reads.
            if rand::random::<u16>().is_multiple_of(240) {
                let now = shared.limiter.clock.now_ms();
                let store = store.clone();
                let _ = actix_rt::task::spawn_blocking(move || {
                    store.prune_limit_counters(Counters::horizon(now), now / 1000 - 3600)
                })
                .await;
            }
        }
    });
}

/// The caller behind a request, if it was identified.
pub fn caller_of(req: &actix_web::HttpRequest) -> Option<Caller> {
    crate::auth::require(req, crate::auth::Level::Any).ok().flatten()
}

#[cfg(test)]
mod tests {
    use corral_auth::limits::{Allowance, Headroom};

    use super::{encoded_headers, headers, LINE_MAX, LINE_STARTS, NAMES};

    fn allowance(limit: u64, remaining: u64, reset_ms: i64) -> Option<Allowance> {
        Some(Allowance {
            limit,
            remaining,
            reset_ms,
        })
    }

    /// The headers for `headroom`, as a refusal lists them, after checking that the lines an
    /// answer's head carries say the same.
    fn written(headroom: &Headroom) -> Vec<(String, String)> {
        let listed: Vec<(String, String)> = headers(headroom)
            .into_iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap().to_owned()))
            .collect();
        let lines = encoded_headers(headroom).map(|b| String::from_utf8(b.to_vec()).unwrap());
        assert_eq!(lines.is_none(), listed.is_empty());
        let lines = lines.unwrap_or_default();
        assert!(lines.is_empty() || lines.ends_with("\r\n"), "{lines:?}");
        let encoded: Vec<(String, String)> = lines
            .split_terminator("\r\n")
            .map(|line| {
                let (name, value) = line.split_once(": ").unwrap();
                (name.to_owned(), value.to_owned())
            })
            .collect();
        assert_eq!(encoded, listed, "the lines say what the list says");
        listed
    }

    #[test]
    fn each_line_starts_with_its_header_s_name() {
        for (starts, names) in LINE_STARTS.iter().zip(&NAMES) {
            for (start, name) in starts.iter().zip(names) {
                assert_eq!(*start, format!("{}: ", name.as_str()).as_bytes());
                assert!(start.len() + 24 + 2 <= LINE_MAX);
            }
        }
        let none = Headroom::default();
        assert_eq!(written(&none), Vec::new());
    }

    /// Each answer's values are its own, though they share one allocation: a limit set anew,
    /// another subject's, requests' and tokens' swapped, a reset a millisecond later, the
    /// longest texts.
    #[test]
    fn every_answer_carries_its_own_figures() {
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
        };
        let both = Headroom {
            requests: allowance(60, 59, 12_345),
            tokens: allowance(u64::MAX, 0, 6 * 60_000),
        };
        let expected = pairs(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "12.345s"),
            ("x-ratelimit-limit-tokens", "18446744073709551615"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        assert_eq!(written(&both), expected);
        // The same limits again (reused), then others, then the first again.
        assert_eq!(written(&both), expected);
        let other = Headroom {
            requests: allowance(61, 61, 0),
            tokens: None,
        };
        assert_eq!(
            written(&other),
            pairs(&[
                ("x-ratelimit-limit-requests", "61"),
                ("x-ratelimit-remaining-requests", "61"),
                ("x-ratelimit-reset-requests", "0s"),
            ])
        );
        let swapped = Headroom {
            requests: None,
            tokens: allowance(60, 1, 999),
        };
        assert_eq!(
            written(&swapped),
            pairs(&[
                ("x-ratelimit-limit-tokens", "60"),
                ("x-ratelimit-remaining-tokens", "1"),
                ("x-ratelimit-reset-tokens", "999ms"),
            ])
        );
        assert_eq!(written(&both), expected);
        // The minute's reset to the millisecond, a budget's to the second, rounded up.
        let later = Headroom {
            requests: allowance(60, 58, 12_344),
            tokens: allowance(u64::MAX, 0, 3 * 3_600_000 + 1),
        };
        assert_eq!(
            written(&later),
            pairs(&[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "58"),
                ("x-ratelimit-reset-requests", "12.344s"),
                ("x-ratelimit-limit-tokens", "18446744073709551615"),
                ("x-ratelimit-remaining-tokens", "0"),
                ("x-ratelimit-reset-tokens", "3h0m1s"),
            ])
        );
        let budget = |reset_ms| Headroom {
            requests: None,
            tokens: allowance(1000, 10, reset_ms),
        };
        for (ms, shown) in [
            (60_001, "1m1s"),
            (61_000, "1m1s"),
            (60_000, "1m0s"),
            (59_999, "59.999s"),
        ] {
            assert_eq!(written(&budget(ms))[2].1, shown, "{ms} ms");
        }
        let longest = Headroom {
            requests: allowance(u64::MAX, u64::MAX, i64::MAX),
            tokens: allowance(u64::MAX, u64::MAX, i64::MAX),
        };
        let texts: Vec<String> = written(&longest).into_iter().map(|(_, v)| v).collect();
        // The longest reset, rounded to the second (down, where rounding up would overflow).
        let (max, reset) = ("18446744073709551615", "2562047788015h12m55s");
        assert_eq!(texts, [max, max, reset, max, max, reset]);
        assert!(written(&Headroom::default()).is_empty());
    }
}
