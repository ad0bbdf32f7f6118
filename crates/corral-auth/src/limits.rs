//! Request limits and token budgets per API key, user and group: what an admin may set, the
//! windows and periods they count over, the in-memory counters, and the admission decision.
//!
//! Pure: time comes in as Unix milliseconds. The server keeps one [`Counters`] per replica
//! behind a lock and shares it with the other replicas through the database: each replica's
//! own counts are its `local` part (written in batches), the sum of everybody else's is its
//! `others` part (read back in the same batch).
//!
//! Windows:
//! - requests and tokens per minute count in fixed windows of one UTC minute
//!   ([`minute_bucket`]); a window is full again when the next minute starts;
//! - concurrent requests count the requests admitted and not yet finished;
//! - a token budget counts in hour buckets ([`hour_bucket`]) summed over its period: a
//!   calendar period starts at UTC midnight, on Monday or on the 1st of the month; a rolling
//!   one covers the last 24 hours, 7 days or 30 days, to the hour (the oldest, partly elapsed
//!   hour drops out whole).

use std::borrow::Borrow;
use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration as ChronoDuration, NaiveDate, Utc};
use serde_json::{json, Map, Value};

/// Milliseconds in a minute: the length of a requests or tokens window.
pub const MINUTE_MS: i64 = 60_000;
/// Milliseconds in an hour: the length of a budget bucket.
pub const HOUR_MS: i64 = 3_600_000;
/// The largest requests-per-minute or concurrency limit accepted (anything above is surely a typo).
pub const MAX_REQUESTS: u64 = 1_000_000_000;
/// The largest tokens-per-minute or budget accepted.
pub const MAX_TOKENS: u64 = 1_000_000_000_000_000;
/// The most models a budget may name.
pub const MAX_BUDGET_MODELS: usize = 1000;

/// Who a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One API key (by its id).
    Key,
    /// One user: every credential of the user.
    User,
    /// One group: its members together.
    Group,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Key, Scope::User, Scope::Group];

    /// `key`, `user` or `group`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Key => "key",
            Scope::User => "user",
            Scope::Group => "group",
        }
    }

    /// Parses `key`, `user` or `group` (also their plurals, as the paths read).
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "key" | "keys" => Some(Scope::Key),
            "user" | "users" => Some(Scope::User),
            "group" | "groups" => Some(Scope::Group),
            _ => None,
        }
    }
}

/// How long a budget lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A day.
    Day,
    /// A week.
    Week,
    /// A month (30 days when rolling).
    Month,
}

impl Period {
    /// `day`, `week` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    fn rolling_ms(self) -> i64 {
        match self {
            Period::Day => 24 * HOUR_MS,
            Period::Week => 7 * 24 * HOUR_MS,
            Period::Month => 30 * 24 * HOUR_MS,
        }
    }
}

/// Whether a budget's period follows the calendar or slides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// Full again at UTC midnight, on Monday, on the 1st.
    Calendar,
    /// Counts the last 24 hours, 7 days or 30 days.
    Rolling,
}

impl Reset {
    /// `calendar` or `rolling`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reset::Calendar => "calendar",
            Reset::Rolling => "rolling",
        }
    }
}

/// A token budget: prompt plus completion tokens over a period, optionally of some models only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Tokens allowed per period.
    pub tokens: u64,
    /// The period.
    pub period: Period,
    /// Calendar or rolling.
    pub reset: Reset,
    /// The models it counts (as asked for or as run, `:latest` implied); empty: every model.
    pub models: Vec<String>,
}

impl Budget {
    /// Whether a request for `asked` (run as `run`) counts against this budget.
    pub fn applies_to(&self, asked: &str, run: &str) -> bool {
        self.models.is_empty()
            || self.models.iter().any(|m| {
                let m = with_latest(m);
                m == with_latest(asked) || m == with_latest(run)
            })
    }

    /// When the current period began, in Unix ms (for a rolling budget, one period ago).
    pub fn start_ms(&self, now_ms: i64) -> i64 {
        match self.reset {
            Reset::Rolling => now_ms - self.period.rolling_ms(),
            Reset::Calendar => calendar_bounds(self.period, now_ms).0,
        }
    }

    /// The first hour bucket the current period counts.
    pub fn first_bucket(&self, now_ms: i64) -> i64 {
        match self.reset {
            // The hour that is only partly inside the period drops out whole.
            Reset::Rolling => hour_bucket(self.start_ms(now_ms)) + 1,
            Reset::Calendar => hour_bucket(self.start_ms(now_ms)),
        }
    }

    /// Milliseconds until the budget can grow again: the next period for a calendar budget,
    /// the next hour (when the oldest hour drops out) for a rolling one.
    pub fn reset_in_ms(&self, now_ms: i64) -> i64 {
        match self.reset {
            Reset::Rolling => HOUR_MS - now_ms.rem_euclid(HOUR_MS),
            Reset::Calendar => calendar_bounds(self.period, now_ms).1 - now_ms,
        }
    }
}

fn with_latest(model: &str) -> String {
    let name = model.rsplit('/').next().unwrap_or(model);
    if name.contains(':') {
        model.to_owned()
    } else {
        format!("{model}:latest")
    }
}

fn date_of(now_ms: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(now_ms)
        .unwrap_or_default()
        .date_naive()
}

fn midnight_ms(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_millis())
}

/// The UTC calendar period (day, week from Monday, month) holding `now_ms`: its first and
/// first-after milliseconds. Every limited request with a calendar budget asks twice, so each
/// thread keeps the last answer per period until its UTC day ends.
fn calendar_bounds(period: Period, now_ms: i64) -> (i64, i64) {
    thread_local! {
        static LAST: std::cell::Cell<[(i64, i64, i64); 3]> = const { std::cell::Cell::new([(i64::MIN, 0, 0); 3]) };
    }
    let day = now_ms.div_euclid(24 * HOUR_MS);
    let slot = period as usize;
    let last = LAST.with(std::cell::Cell::get);
    if last[slot].0 == day {
        return (last[slot].1, last[slot].2);
    }
    let bounds = (calendar_start(period, now_ms), calendar_end(period, now_ms));
    LAST.with(|cell| {
        let mut all = cell.get();
        all[slot] = (day, bounds.0, bounds.1);
        cell.set(all);
    });
    bounds
}

fn calendar_start(period: Period, now_ms: i64) -> i64 {
    let today = date_of(now_ms);
    let start = match period {
        Period::Day => today,
        Period::Week => today - ChronoDuration::days(i64::from(today.weekday().num_days_from_monday())),
        Period::Month => today.with_day(1).unwrap_or(today),
    };
    midnight_ms(start)
}

fn calendar_end(period: Period, now_ms: i64) -> i64 {
    let start = date_of(calendar_start(period, now_ms));
    let end = match period {
        Period::Day => start + ChronoDuration::days(1),
        Period::Week => start + ChronoDuration::days(7),
        Period::Month => {
            let (y, m) = if start.month() == 12 {
                (start.year() + 1, 1)
            } else {
                (start.year(), start.month() + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(start)
        }
    };
    midnight_ms(end)
}

/// The minute window `now_ms` falls in.
pub fn minute_bucket(now_ms: i64) -> i64 {
    now_ms.div_euclid(MINUTE_MS)
}

/// The hour bucket `now_ms` falls in.
pub fn hour_bucket(now_ms: i64) -> i64 {
    now_ms.div_euclid(HOUR_MS)
}

/// Milliseconds until the next minute window.
pub fn minute_reset_ms(now_ms: i64) -> i64 {
    MINUTE_MS - now_ms.rem_euclid(MINUTE_MS)
}

/// A duration as Go prints one, which OpenAI's `x-ratelimit-reset-*` headers use: `12ms`,
/// `1.5s`, `6m0s`, `1h2m3s`.
pub fn go_duration(ms: i64) -> String {
    GoDuration::of(ms).as_str().to_owned()
}

/// A duration's Go text, written on the stack: at most 24 bytes (`2562047788015h12m55.807s`).
/// Every limited answer in OpenAI's shape carries the minute window's, new each millisecond.
#[derive(Clone, Copy)]
pub struct GoDuration {
    buf: [u8; 32],
    len: usize,
}

impl GoDuration {
    /// `ms` (0 when negative) as Go prints it.
    pub fn of(ms: i64) -> GoDuration {
        let mut text = GoDuration { buf: [0; 32], len: 0 };
        let ms = ms.max(0);
        if ms == 0 {
            text.push(b"0s");
            return text;
        }
        if ms < 1000 {
            text.number(ms);
            text.push(b"ms");
            return text;
        }
        let (h, rest) = (ms / HOUR_MS, ms % HOUR_MS);
        let (m, rest) = (rest / MINUTE_MS, rest % MINUTE_MS);
        let (s, frac) = (rest / 1000, rest % 1000);
        if h > 0 {
            text.number(h);
            text.push(b"h");
        }
        if h > 0 || m > 0 {
            text.number(m);
            text.push(b"m");
        }
        text.number(s);
        if frac != 0 {
            // Milliseconds as a decimal fraction without trailing zeros: 500 is `.5`, 50 `.05`.
            let digits = [frac / 100, frac / 10 % 10, frac % 10];
            let shown = if digits[2] != 0 {
                3
            } else if digits[1] != 0 {
                2
            } else {
                1
            };
            // Each a digit, 0 to 9.
            let digits = digits.map(|d| b'0' + u8::try_from(d).unwrap_or(0));
            text.push(b".");
            text.push(&digits[..shown]);
        }
        text.push(b"s");
        text
    }

    /// The text, as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and letters are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or("0s")
    }

    fn number(&mut self, n: i64) {
        // Minutes and seconds (below 60) most often: their digits directly.
        match u8::try_from(n) {
            Ok(n @ 0..=9) => self.push(&[b'0' + n]),
            Ok(n @ 10..=99) => self.push(&[b'0' + n / 10, b'0' + n % 10]),
            _ => self.push(itoa::Buffer::new().format(n).as_bytes()),
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        // 24 bytes at most are written; a longer text would be cut, never overflow.
        if let Some(room) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            room.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }
}

/// What may be set on a key, a user or a group; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests admitted per minute.
    pub requests_per_minute: Option<u64>,
    /// Prompt plus completion tokens per minute.
    pub tokens_per_minute: Option<u64>,
    /// Requests running at once.
    pub concurrent_requests: Option<u64>,
    /// A token budget per period.
    pub budget: Option<Budget>,
}

/// A limit that cannot be saved: the field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LimitError {
    /// The offending field, as a dotted path (`budget.period`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> LimitError {
    LimitError {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn count(obj: &Map<String, Value>, field: &str, path: &str, max: u64) -> Result<Option<u64>, LimitError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v <= max => Ok(Some(v)),
            Some(v) => Err(bad(path, format!("{v} is more than the largest accepted, {max}"))),
            None if n.as_i64().is_some_and(|v| v < 0) || n.as_f64().is_some_and(|v| v < 0.0) => {
                Err(bad(path, format!("must not be negative, got {n}")))
            }
            None => Err(bad(path, format!("must be a whole number, got {n}"))),
        },
        Some(other) => Err(bad(path, format!("must be a whole number or null, got {other}"))),
    }
}

fn no_unknown(obj: &Map<String, Value>, known: &[&str], prefix: &str) -> Result<(), LimitError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(bad(
            &format!("{prefix}{k}"),
            format!("unknown field; expected one of {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

impl Limits {
    /// Reads limits as an admin sends them, refusing anything doubtful with the field named:
    /// `{"requests_per_minute", "tokens_per_minute", "concurrent_requests", "budget":
    /// {"tokens", "period": "day"|"week"|"month", "reset": "calendar"|"rolling", "models": [..]}}`,
    /// each optional or `null`.
    pub fn from_json(value: &Value) -> Result<Limits, LimitError> {
        let Value::Object(obj) = value else {
            return Err(bad("body", "must be a JSON object"));
        };
        no_unknown(
            obj,
            &[
                "requests_per_minute",
                "tokens_per_minute",
                "concurrent_requests",
                "budget",
            ],
            "",
        )?;
        let budget = match obj.get("budget") {
            None | Some(Value::Null) => None,
            Some(Value::Object(b)) => Some(Budget::from_json(b)?),
            Some(other) => return Err(bad("budget", format!("must be an object or null, got {other}"))),
        };
        let limits = Limits {
            requests_per_minute: count(obj, "requests_per_minute", "requests_per_minute", MAX_REQUESTS)?,
            tokens_per_minute: count(obj, "tokens_per_minute", "tokens_per_minute", MAX_TOKENS)?,
            concurrent_requests: count(obj, "concurrent_requests", "concurrent_requests", MAX_REQUESTS)?,
            budget,
        };
        if limits.concurrent_requests == Some(0) {
            return Err(bad(
                "concurrent_requests",
                "must be at least 1 (0 would refuse everything; delete the key instead)",
            ));
        }
        Ok(limits)
    }

    /// The limits in the shape [`Limits::from_json`] reads.
    pub fn to_json(&self) -> Value {
        json!({
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "concurrent_requests": self.concurrent_requests,
            "budget": self.budget.as_ref().map(|b| json!({
                "tokens": b.tokens,
                "period": b.period.as_str(),
                "reset": b.reset.as_str(),
                "models": b.models,
            })),
        })
    }

    /// Whether nothing is limited.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

impl Budget {
    fn from_json(obj: &Map<String, Value>) -> Result<Budget, LimitError> {
        no_unknown(obj, &["tokens", "period", "reset", "models"], "budget.")?;
        let tokens =
            count(obj, "tokens", "budget.tokens", MAX_TOKENS)?.ok_or_else(|| bad("budget.tokens", "is required"))?;
        let period = match obj.get("period") {
            None | Some(Value::Null) => return Err(bad("budget.period", "is required (day, week or month)")),
            Some(Value::String(p)) => match p.as_str() {
                "day" | "daily" => Period::Day,
                "week" | "weekly" => Period::Week,
                "month" | "monthly" => Period::Month,
                _ => {
                    return Err(bad(
                        "budget.period",
                        format!("unknown period {p:?}; expected day, week or month"),
                    ))
                }
            },
            Some(other) => return Err(bad("budget.period", format!("must be a string, got {other}"))),
        };
        let reset = match obj.get("reset") {
            None | Some(Value::Null) => Reset::Calendar,
            Some(Value::String(r)) if r == "calendar" => Reset::Calendar,
            Some(Value::String(r)) if r == "rolling" => Reset::Rolling,
            Some(other) => {
                return Err(bad(
                    "budget.reset",
                    format!("unknown reset {other}; expected calendar or rolling"),
                ))
            }
        };
        let models = match obj.get("models") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                if items.len() > MAX_BUDGET_MODELS {
                    return Err(bad("budget.models", format!("at most {MAX_BUDGET_MODELS} models")));
                }
                let mut models = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item.as_str().map(str::trim) {
                        Some(m) if !m.is_empty() && m.len() <= 256 => models.push(m.to_owned()),
                        _ => return Err(bad(&format!("budget.models[{i}]"), "must be a model name")),
                    }
                }
                models
            }
            Some(other) => {
                return Err(bad(
                    "budget.models",
                    format!("must be a list of model names, got {other}"),
                ))
            }
        };
        Ok(Budget {
            tokens,
            period,
            reset,
            models,
        })
    }
}

/// What a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Requests admitted, per minute bucket.
    Requests,
    /// Tokens used, per minute bucket.
    Tokens,
    /// Requests running now (bucket 0).
    InFlight,
    /// Tokens counting against the budget, per hour bucket.
    Budget,
}

impl Metric {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Requests => "requests",
            Metric::Tokens => "tokens",
            Metric::InFlight => "in_flight",
            Metric::Budget => "budget",
        }
    }

    /// Reads a stored name.
    pub fn parse(text: &str) -> Option<Metric> {
        match text {
            "requests" => Some(Metric::Requests),
            "tokens" => Some(Metric::Tokens),
            "in_flight" => Some(Metric::InFlight),
            "budget" => Some(Metric::Budget),
            _ => None,
        }
    }
}

/// Whose counter: a scope and the id of the key, user or group.
pub type Subject = (Scope, String);

/// One counter of one subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    /// Whose.
    pub subject: Subject,
    /// What it counts.
    pub metric: Metric,
    /// Its window: the minute or hour number, 0 for requests in flight.
    pub bucket: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    local: u64,
    others: u64,
    dirty: bool,
}

impl Cell {
    fn total(self) -> u64 {
        self.local.saturating_add(self.others)
    }
}

/// One subject's counts, by metric and bucket.
type Cells = BTreeMap<(Metric, i64), Cell>;

/// What every replica counted in one cell.
fn total(cells: &Cells, metric: Metric, bucket: i64) -> u64 {
    cells.get(&(metric, bucket)).map_or(0, |c| c.total())
}

/// The tokens counted against `budget` in its current period.
fn budget_used(cells: &Cells, budget: &Budget, now_ms: i64) -> u64 {
    budget_since(cells, budget.first_bucket(now_ms))
}

/// The tokens counted in budget hours from `first` on.
fn budget_since(cells: &Cells, first: i64) -> u64 {
    cells
        .range((Metric::Budget, first)..=(Metric::Budget, i64::MAX))
        .map(|(_, c)| c.total())
        .fold(0u64, u64::saturating_add)
}

/// Adds `by` (or takes it away) from this replica's count in a cell, marked to be written.
fn bump(cells: &mut Cells, metric: Metric, bucket: i64, by: i64) {
    let cell = cells.entry((metric, bucket)).or_default();
    cell.local = if by >= 0 {
        cell.local.saturating_add(by.unsigned_abs())
    } else {
        cell.local.saturating_sub(by.unsigned_abs())
    };
    cell.dirty = true;
}

/// Counts `tokens` of a finished request of `model` (asked, run) in one subject's cells:
/// against its tokens per minute, and its budget if the budget counts the model.
fn charge(counted: &mut Counted, limits: &Limits, model: (&str, &str), tokens: u64, now_ms: i64) {
    let by = i64::try_from(tokens).unwrap_or(i64::MAX);
    bump(&mut counted.cells, Metric::Tokens, minute_bucket(now_ms), by);
    if limits.budget.as_ref().is_some_and(|b| b.applies_to(model.0, model.1)) {
        let hour = hour_bucket(now_ms);
        bump(&mut counted.cells, Metric::Budget, hour, by);
        if let Some((first, sum)) = counted.budget_sum.get() {
            if hour >= first {
                counted
                    .budget_sum
                    .set(Some((first, sum.saturating_add(by.unsigned_abs()))));
            }
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Requests at once.
    Concurrency,
    /// The token budget of the period is spent.
    Budget,
}

/// One limit's state for the caller: its ceiling, what is left, and when it is full again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// The ceiling.
    pub limit: u64,
    /// What is left (0 when spent or over).
    pub remaining: u64,
    /// Milliseconds until it is full again.
    pub reset_ms: i64,
}

impl Allowance {
    /// A limit of `limit` of which `used` is counted, full again in `reset_ms`.
    fn new(limit: u64, used: u64, reset_ms: i64) -> Allowance {
        Allowance {
            limit,
            remaining: limit.saturating_sub(used),
            reset_ms,
        }
    }

    fn tighter(a: Option<Allowance>, b: Allowance) -> Option<Allowance> {
        match a {
            Some(a) if (a.remaining, a.reset_ms) <= (b.remaining, b.reset_ms) => Some(a),
            _ => Some(b),
        }
    }
}

/// What the OpenAI-style headers report: the tightest requests and tokens allowances of the
/// subjects that apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Headroom {
    /// Requests per minute.
    pub requests: Option<Allowance>,
    /// Tokens per minute, or the budget when it is tighter.
    pub tokens: Option<Allowance>,
}

/// A refusal: why, whose limit, and how long until it may pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Which limit.
    pub reason: Refused,
    /// Whose limit.
    pub subject: Subject,
    /// The limit's value.
    pub limit: u64,
    /// What is used of it.
    pub used: u64,
    /// Milliseconds until the request could pass (at least 1 s for a concurrency refusal,
    /// whose end nobody knows).
    pub retry_in_ms: i64,
    /// The headers' figures, as of the refusal.
    pub headroom: Headroom,
}

/// The subjects a request counts against, with their limits (`&Limits`, `Arc<Limits>`, …).
pub type Applicable<L> = [(Subject, L)];

/// One subject's counts, by metric and bucket, with its budget's use kept between requests.
#[derive(Debug, Default)]
struct Counted {
    cells: Cells,
    /// The budget's use from an hour on, `(first hour, tokens)`, so that a request does not add
    /// up its period's hourly cells again (about 700 near the end of a monthly budget): made
    /// when a request first reads it for that hour, grown by each charge, forgotten when other
    /// replicas' counts are replaced or windows pruned. Kept beside the cells, so a request
    /// finds both with one lookup of its subject.
    budget_sum: std::cell::Cell<Option<(i64, u64)>>,
}

impl Counted {
    /// [`budget_used`] of these cells, from the kept sum when it starts at the same hour.
    fn budget_sum(&self, budget: &Budget, now_ms: i64) -> u64 {
        let first = budget.first_bucket(now_ms);
        match self.budget_sum.get() {
            Some((from, sum)) if from == first => sum,
            _ => {
                let sum = budget_since(&self.cells, first);
                self.budget_sum.set(Some((first, sum)));
                sum
            }
        }
    }
}

/// What a request's subjects allow, gathered one subject at a time: the headroom, and the
/// first refusal of each kind as (reason, index of the subject, limit, used, retry in ms).
struct Assessment {
    now_ms: i64,
    minute: i64,
    reset: i64,
    head: Headroom,
    budget_refusal: Option<(Refused, usize, u64, u64, i64)>,
    other_refusal: Option<(Refused, usize, u64, u64, i64)>,
}

impl Assessment {
    fn new(now_ms: i64) -> Assessment {
        Assessment {
            now_ms,
            minute: minute_bucket(now_ms),
            reset: minute_reset_ms(now_ms),
            head: Headroom::default(),
            budget_refusal: None,
            other_refusal: None,
        }
    }

    /// Adds subject `i`'s `limits` over its counts to the assessment of a request of `model`.
    fn subject(&mut self, i: usize, counted: &Counted, limits: &Limits, model: (&str, &str)) {
        let (minute, reset) = (self.minute, self.reset);
        let cells = &counted.cells;
        let head = &mut self.head;
        if let Some(rpm) = limits.requests_per_minute {
            let used = total(cells, Metric::Requests, minute);
            if used >= rpm && self.other_refusal.is_none() {
                self.other_refusal = Some((Refused::Requests, i, rpm, used, reset));
            }
            head.requests = Allowance::tighter(head.requests, Allowance::new(rpm, used, reset));
        }
        if let Some(tpm) = limits.tokens_per_minute {
            let used = total(cells, Metric::Tokens, minute);
            if used >= tpm && self.other_refusal.is_none() {
                self.other_refusal = Some((Refused::Tokens, i, tpm, used, reset));
            }
            head.tokens = Allowance::tighter(head.tokens, Allowance::new(tpm, used, reset));
        }
        if let Some(budget) = limits.budget.as_ref().filter(|b| b.applies_to(model.0, model.1)) {
            let used = counted.budget_sum(budget, self.now_ms);
            let reset_in = budget.reset_in_ms(self.now_ms);
            if used >= budget.tokens && self.budget_refusal.is_none() {
                self.budget_refusal = Some((Refused::Budget, i, budget.tokens, used, reset_in));
            }
            head.tokens = Allowance::tighter(head.tokens, Allowance::new(budget.tokens, used, reset_in));
        }
        if let Some(max) = limits.concurrent_requests {
            if self.other_refusal.is_none() {
                let used = total(cells, Metric::InFlight, 0);
                if used >= max {
                    self.other_refusal = Some((Refused::Concurrency, i, max, used, 1000));
                }
            }
        }
    }

    /// The headroom, or the refusal: a budget first, since waiting a minute does not help it;
    /// then the first subject's requests, tokens or concurrency found spent.
    fn verdict<L>(self, applicable: &Applicable<L>) -> Result<Headroom, Box<Denied>> {
        match self.budget_refusal.or(self.other_refusal) {
            None => Ok(self.head),
            Some((reason, i, limit, used, retry_in_ms)) => Err(Box::new(Denied {
                reason,
                subject: applicable[i].0.clone(),
                limit,
                used,
                retry_in_ms,
                headroom: self.head,
            })),
        }
    }
}

/// One replica's counters of every limited subject.
#[derive(Debug, Default)]
pub struct Counters {
    /// Hashed with `foldhash`: looked up several times per request; ids from the database.
    /// `hashbrown`'s map, whose raw entry finds a subject counted before with one lookup (the
    /// standard map takes two, or a copy of the id, for "find, or insert a copy").
    subjects: hashbrown::HashMap<Subject, Counted, foldhash::fast::RandomState>,
}

impl Counters {
    fn cell(&self, subject: &Subject, metric: Metric, bucket: i64) -> u64 {
        self.subjects
            .get(subject)
            .map_or(0, |counted| total(&counted.cells, metric, bucket))
    }

    /// The counts of `subject`, made empty the first time it is counted (its id copied then
    /// only): one lookup for every count a request changes.
    fn counted_mut(&mut self, subject: &Subject) -> &mut Counted {
        match self.subjects.raw_entry_mut().from_key(subject) {
            hashbrown::hash_map::RawEntryMut::Occupied(found) => found.into_mut(),
            hashbrown::hash_map::RawEntryMut::Vacant(new) => new.insert(subject.clone(), Counted::default()).1,
        }
    }

    fn bump(&mut self, subject: &Subject, metric: Metric, bucket: i64, by: i64) {
        bump(&mut self.counted_mut(subject).cells, metric, bucket, by);
    }

    /// The tokens counted against `budget` in its current period.
    pub fn budget_used(&self, subject: &Subject, budget: &Budget, now_ms: i64) -> u64 {
        self.subjects
            .get(subject)
            .map_or(0, |counted| budget_used(&counted.cells, budget, now_ms))
    }

    /// Requests in flight for `subject`, on every replica.
    pub fn in_flight(&self, subject: &Subject) -> u64 {
        self.cell(subject, Metric::InFlight, 0)
    }

    /// What is left of each limit of `applicable` at `now_ms`, for a request of `model`
    /// (asked, run): the tightest over the subjects.
    pub fn headroom<L: Borrow<Limits>>(
        &self,
        applicable: &Applicable<L>,
        model: (&str, &str),
        now_ms: i64,
    ) -> Headroom {
        match self.evaluate(applicable, model, now_ms) {
            Ok(head) => head,
            Err(denied) => denied.headroom,
        }
    }

    /// The first limit of `applicable` a request of `model` would break at `now_ms`, if any.
    ///
    /// A request passes a limit while what was counted is below it: requests count one each
    /// at admission, tokens only when a request finishes, so a request admitted with tokens
    /// left may end over the limit, and the next one waits for the window (or period) to turn.
    pub fn check<L: Borrow<Limits>>(
        &self,
        applicable: &Applicable<L>,
        model: (&str, &str),
        now_ms: i64,
    ) -> Option<Denied> {
        self.evaluate(applicable, model, now_ms).err().map(|d| *d)
    }

    /// [`Counters::check`] and [`Counters::headroom`] in one pass over the counters.
    fn evaluate<L: Borrow<Limits>>(
        &self,
        applicable: &Applicable<L>,
        model: (&str, &str),
        now_ms: i64,
    ) -> Result<Headroom, Box<Denied>> {
        let mut assessment = Assessment::new(now_ms);
        let empty = Counted::default();
        for (i, (subject, limits)) in applicable.iter().enumerate() {
            let counted = self.subjects.get(subject).unwrap_or(&empty);
            assessment.subject(i, counted, limits.borrow(), model);
        }
        assessment.verdict(applicable)
    }

    /// Checks a request and, if it passes, counts it: one request this minute and one in
    /// flight for every subject in `applicable`. Release it with [`Counters::release`].
    /// Returns the headroom left after it.
    pub fn admit<L: Borrow<Limits>>(
        &mut self,
        applicable: &Applicable<L>,
        model: (&str, &str),
        now_ms: i64,
    ) -> Result<Headroom, Box<Denied>> {
        let minute = minute_bucket(now_ms);
        let mut head = if let [(subject, limits)] = applicable {
            // One limited subject (a key, or a user, limited alone): checked and counted
            // with one lookup.
            let counted = self.counted_mut(subject);
            let mut assessment = Assessment::new(now_ms);
            assessment.subject(0, counted, limits.borrow(), model);
            let head = assessment.verdict(applicable)?;
            bump(&mut counted.cells, Metric::Requests, minute, 1);
            bump(&mut counted.cells, Metric::InFlight, 0, 1);
            head
        } else {
            let head = self.evaluate(applicable, model, now_ms)?;
            for (subject, _) in applicable {
                let cells = &mut self.counted_mut(subject).cells;
                bump(cells, Metric::Requests, minute, 1);
                bump(cells, Metric::InFlight, 0, 1);
            }
            head
        };
        // Each subject counted one more request: the tightest allowance has one less left.
        if let Some(a) = head.requests.as_mut() {
            a.remaining = a.remaining.saturating_sub(1);
        }
        Ok(head)
    }

    /// A request admitted for `subjects` has finished.
    pub fn release<'a>(&mut self, subjects: impl IntoIterator<Item = &'a Subject>) {
        for subject in subjects {
            self.bump(subject, Metric::InFlight, 0, -1);
        }
    }

    /// Counts `tokens` a finished request of `model` (asked, run) used, against the tokens per
    /// minute of every subject and the budgets it counts against.
    pub fn charge<L: Borrow<Limits>>(
        &mut self,
        applicable: &Applicable<L>,
        model: (&str, &str),
        tokens: u64,
        now_ms: i64,
    ) {
        if tokens == 0 {
            return;
        }
        for (subject, limits) in applicable {
            charge(self.counted_mut(subject), limits.borrow(), model, tokens, now_ms);
        }
    }

    /// A request admitted for `applicable` has finished, having used `tokens` of `model`
    /// (asked, run): [`Counters::charge`] and [`Counters::release`] in one pass, one lookup
    /// of each subject.
    pub fn finish<L: Borrow<Limits>>(
        &mut self,
        applicable: &Applicable<L>,
        model: (&str, &str),
        tokens: u64,
        now_ms: i64,
    ) {
        for (subject, limits) in applicable {
            let counted = self.counted_mut(subject);
            if tokens > 0 {
                charge(counted, limits.borrow(), model, tokens, now_ms);
            }
            bump(&mut counted.cells, Metric::InFlight, 0, -1);
        }
    }

    /// This replica's counts changed since the last call (and every request in flight, so
    /// that its row stays fresh), to write; marks them written.
    pub fn pending(&mut self) -> Vec<(CounterKey, u64)> {
        let mut out = Vec::new();
        for (subject, counted) in &mut self.subjects {
            for (&(metric, bucket), cell) in counted.cells.iter_mut() {
                if cell.dirty || (metric == Metric::InFlight && cell.local > 0) {
                    cell.dirty = false;
                    out.push((
                        CounterKey {
                            subject: subject.clone(),
                            metric,
                            bucket,
                        },
                        cell.local,
                    ));
                }
            }
        }
        out.sort();
        out
    }

    /// Puts back counts [`Counters::pending`] took that could not be written.
    pub fn unwritten(&mut self, rows: &[(CounterKey, u64)]) {
        for (key, _) in rows {
            if let Some(cell) = self
                .subjects
                .get_mut(&key.subject)
                .and_then(|counted| counted.cells.get_mut(&(key.metric, key.bucket)))
            {
                cell.dirty = true;
            }
        }
    }

    /// Replaces what the other replicas counted with `totals` (the sum of their rows per
    /// counter) in every counter that was read back: the minute windows, the requests in
    /// flight, and the budget hours from `budget_from` on (`i64::MIN`: all of them). A counter
    /// read back and not named has nothing from them; an older budget hour keeps what the last
    /// read that covered it said (a closed hour changes only by a late write).
    pub fn set_others(&mut self, totals: impl IntoIterator<Item = (CounterKey, u64)>, budget_from: i64) {
        for counted in self.subjects.values_mut() {
            counted.budget_sum.set(None);
            for (&(metric, bucket), cell) in counted.cells.iter_mut() {
                if metric != Metric::Budget || bucket >= budget_from {
                    cell.others = 0;
                }
            }
        }
        for (key, total) in totals {
            let counted = self.subjects.entry(key.subject).or_default();
            counted.cells.entry((key.metric, key.bucket)).or_default().others = total;
        }
    }

    /// Forgets windows that no limit reads any more: minutes before the last, budget hours
    /// older than 32 days, and subjects left with nothing.
    pub fn prune(&mut self, now_ms: i64) {
        let minute = minute_bucket(now_ms);
        let hour = hour_bucket(now_ms);
        self.subjects.retain(|_, counted| {
            counted.budget_sum.set(None);
            let cells = &mut counted.cells;
            cells.retain(|&(metric, bucket), cell| match metric {
                Metric::Requests | Metric::Tokens => bucket >= minute - 1,
                Metric::Budget => bucket >= hour - 32 * 24,
                Metric::InFlight => cell.total() > 0 || cell.dirty,
            });
            !cells.is_empty()
        });
    }

    /// The oldest minute and hour buckets still read, for the database's query.
    pub fn horizon(now_ms: i64) -> (i64, i64) {
        (minute_bucket(now_ms) - 1, hour_bucket(now_ms) - 32 * 24)
    }
}

#[cfg(test)]
mod tests;
