//! Sign-in rate limiting: a bucketed sliding window, per (account, client address), per address, and a
//! per-account ceiling that slows guessing down without locking the owner out.
//!
//! The reference allows at most 15 sign-in attempts per lower-cased email across the current and the three
//! previous 60-second buckets; the 16th gets 429 [`RATE_LIMIT_EXCEEDED`](crate::messages::RATE_LIMIT_EXCEEDED).
//! Keyed on the email alone, that lets anyone lock anyone out: 15 wrong passwords from anywhere, renewed
//! forever. Following OWASP's authentication guidance (lockout is a denial of service; throttle per source,
//! slow per account), Corral counts the 15 per (account, address); an account whose attempts from all
//! addresses pass a ceiling is *slowed*: each address then gets only a few attempts per window on it, so a
//! botnet's guesses drop to a trickle while the owner, from their own address, still gets in.
//! Every attempt counts, successful, failed or refused, so a client that keeps hammering stays blocked.
//! A full table evicts its stalest keys rather than refusing newcomers.
//! These are plain structs: the server wraps them in a mutex.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use chrono::{DateTime, Utc};

#[cfg(test)]
mod tests;

/// How many attempts a window allows and how the window is cut into buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// Attempts allowed in the window; one more is refused.
    pub max_attempts: u32,
    /// The width of one bucket (at least 1 ms is used).
    pub bucket: Duration,
    /// Buckets in the window, counting the current one (at least 1 is used).
    pub buckets: u32,
    /// The most keys remembered; when full, the keys used longest ago are forgotten to make room.
    pub max_keys: usize,
}

impl Default for RateLimitPolicy {
    /// The reference's per-account sign-in limit: 15 attempts across four 60-second buckets, and at most 100,000
    /// keys (a few megabytes).
    fn default() -> Self {
        RateLimitPolicy {
            max_attempts: 15,
            bucket: Duration::from_secs(60),
            buckets: 4,
            max_keys: 100_000,
        }
    }
}

impl RateLimitPolicy {
    /// Corral's default per-address sign-in limit: 100 attempts across four 60-second buckets, generous enough
    /// for many users behind one NAT while still stopping password spraying from one address.
    pub fn per_address() -> Self {
        RateLimitPolicy {
            max_attempts: 100,
            ..RateLimitPolicy::default()
        }
    }

    fn bucket_ms(&self) -> i64 {
        i64::try_from(self.bucket.as_millis()).unwrap_or(i64::MAX).max(1)
    }

    fn window_buckets(&self) -> i64 {
        i64::from(self.buckets.max(1))
    }
}

/// A refused attempt: how long until an attempt would be allowed again (for the `Retry-After` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds, rounded up, and at least 1: the value for a `Retry-After` header.
    pub fn as_secs_ceil(&self) -> u64 {
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// Counts per bucket for one key, oldest first.
type Buckets = VecDeque<(i64, u32)>;

/// A sliding-window limiter keyed by `K` (an email, a client address, ...).
///
/// Memory is bounded: each key keeps at most `buckets` counters, stale keys are swept at most once per bucket
/// period, and at most `max_keys` keys are kept.
#[derive(Debug, Clone)]
pub struct RateLimiter<K> {
    policy: RateLimitPolicy,
    entries: HashMap<K, Buckets>,
    last_sweep: Option<i64>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// An empty limiter.
    pub fn new(policy: RateLimitPolicy) -> Self {
        RateLimiter {
            policy,
            entries: HashMap::new(),
            last_sweep: None,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &RateLimitPolicy {
        &self.policy
    }

    /// Records an attempt by `key` at `now`, and refuses it if the window now holds more than `max_attempts`.
    pub fn check_and_record(&mut self, key: K, now: DateTime<Utc>) -> Result<(), RetryAfter> {
        let now_ms = now.timestamp_millis();
        let bucket_ms = self.policy.bucket_ms();
        let current = now_ms.div_euclid(bucket_ms);
        if self.last_sweep != Some(current) {
            self.sweep(current);
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.policy.max_keys {
            self.sweep(current);
            if self.entries.len() >= self.policy.max_keys {
                if self.policy.max_keys == 0 {
                    let next = current.saturating_add(1).saturating_mul(bucket_ms);
                    return Err(retry_in(next, now_ms));
                }
                self.evict_stalest();
            }
        }
        let window = self.policy.window_buckets();
        let buckets = self.entries.entry(key).or_default();
        prune(buckets, current, window);
        match buckets.back_mut() {
            Some((index, count)) if *index == current => *count = count.saturating_add(1),
            _ => buckets.push_back((current, 1)),
        }
        let total: u64 = buckets.iter().map(|(_, c)| u64::from(*c)).sum();
        if total <= u64::from(self.policy.max_attempts) {
            return Ok(());
        }
        // The first future bucket boundary at which the buckets still in the window leave room for one attempt.
        let allowed = u64::from(self.policy.max_attempts);
        let boundary = (1..=window)
            .map(|k| current.saturating_add(k))
            .find(|&start| {
                let oldest = start - (window - 1);
                let kept: u64 = buckets
                    .iter()
                    .filter(|(i, _)| *i >= oldest)
                    .map(|(_, c)| u64::from(*c))
                    .sum();
                kept < allowed
            })
            .unwrap_or(current.saturating_add(window));
        Err(retry_in(boundary.saturating_mul(bucket_ms), now_ms))
    }

    /// Attempts by `key` in the window at `now`, without recording one.
    pub fn attempts<Q>(&self, key: &Q, now: DateTime<Utc>) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let current = now.timestamp_millis().div_euclid(self.policy.bucket_ms());
        let oldest = current - (self.policy.window_buckets() - 1);
        self.entries.get(key).map_or(0, |b| {
            b.iter()
                .filter(|(i, _)| (oldest..=current).contains(i))
                .fold(0u32, |sum, (_, c)| sum.saturating_add(*c))
        })
    }

    /// The number of keys remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops every bucket outside the window at `now`, and keys left with none.
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.sweep(now.timestamp_millis().div_euclid(self.policy.bucket_ms()));
    }

    /// Forgets the keys whose last attempt is oldest: a sixteenth of the table at once, so a flood of new
    /// keys costs one pass over the table per many of them.
    fn evict_stalest(&mut self) {
        let mut last: Vec<i64> = self
            .entries
            .values()
            .map(|b| b.back().map_or(i64::MIN, |(i, _)| *i))
            .collect();
        let n = (last.len() / 16).max(1);
        let (_, cutoff, _) = last.select_nth_unstable(n - 1);
        let cutoff = *cutoff;
        let mut removed = 0;
        self.entries.retain(|_, b| {
            let stale = removed < n && b.back().map_or(i64::MIN, |(i, _)| *i) <= cutoff;
            removed += usize::from(stale);
            !stale
        });
    }

    fn sweep(&mut self, current: i64) {
        let window = self.policy.window_buckets();
        self.entries.retain(|_, buckets| {
            prune(buckets, current, window);
            !buckets.is_empty()
        });
        self.last_sweep = Some(current);
    }
}

/// Keeps only buckets in `[current - window + 1, current]`; buckets from the future (the clock stepped back) go too.
fn prune(buckets: &mut Buckets, current: i64, window: i64) {
    let oldest = current - (window - 1);
    buckets.retain(|(i, _)| (oldest..=current).contains(i));
}

fn retry_in(at_ms: i64, now_ms: i64) -> RetryAfter {
    let ms = u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0);
    RetryAfter(Duration::from_millis(ms))
}

/// How many attempts each address gets on an account that is over its ceiling (see [`SigninLimiter`]).
pub const SLOWED_ATTEMPTS: u32 = 3;

/// The sign-in limiter: one window per (lower-cased email, client address), one per client address, and one
/// per account whose ceiling slows rather than locks.
///
/// An attempt is refused when its (account, address) pair is past the pair limit (the reference's 15), when its
/// address is past the address limit (password spraying), or when the account is past its ceiling and this
/// pair has already had [`SLOWED_ATTEMPTS`] in the window. The owner's own address is never locked out by
/// others' attempts: at worst it is slowed to a few attempts per window.
#[derive(Debug, Clone)]
pub struct SigninLimiter {
    pairs: RateLimiter<(String, String)>,
    addresses: RateLimiter<String>,
    accounts: RateLimiter<String>,
}

impl Default for SigninLimiter {
    /// The reference's limit per (account, address), [`RateLimitPolicy::per_address`], and
    /// [`RateLimitPolicy::account_ceiling`].
    fn default() -> Self {
        SigninLimiter::new(RateLimitPolicy::default(), RateLimitPolicy::per_address())
    }
}

impl RateLimitPolicy {
    /// Corral's default per-account ceiling: past 100 attempts across four 60-second buckets from all addresses,
    /// the account is slowed (each address gets [`SLOWED_ATTEMPTS`] per window on it).
    pub fn account_ceiling() -> Self {
        RateLimitPolicy {
            max_attempts: 100,
            ..RateLimitPolicy::default()
        }
    }
}

impl SigninLimiter {
    /// A limiter with the given per-(account, address) and per-address policies and the default ceiling.
    pub fn new(pair: RateLimitPolicy, address: RateLimitPolicy) -> Self {
        SigninLimiter::with_ceiling(pair, address, RateLimitPolicy::account_ceiling())
    }

    /// A limiter with every policy given.
    pub fn with_ceiling(pair: RateLimitPolicy, address: RateLimitPolicy, ceiling: RateLimitPolicy) -> Self {
        SigninLimiter {
            pairs: RateLimiter::new(pair),
            addresses: RateLimiter::new(address),
            accounts: RateLimiter::new(ceiling),
        }
    }

    /// Records a sign-in attempt for `email` (lower-cased here) from `address`, and refuses it if a window is
    /// over its limit; the longest wait is returned. The attempt is recorded in every window either way.
    pub fn check_and_record(
        &mut self,
        email: &str,
        address: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), RetryAfter> {
        let email = email.to_lowercase();
        let addr = address.unwrap_or_default().to_owned();
        let over_ceiling = self.accounts.check_and_record(email.clone(), now).is_err();
        let pair_key = (email, addr.clone());
        let by_pair = self.pairs.check_and_record(pair_key.clone(), now);
        let by_address = match address {
            Some(_) => self.addresses.check_and_record(addr, now),
            None => Ok(()),
        };
        let mut refused = [by_pair.err(), by_address.err()].into_iter().flatten().max();
        if over_ceiling && refused.is_none() {
            let pair = self.pairs.policy;
            if self.pairs.attempts(&pair_key, now) > SLOWED_ATTEMPTS {
                // Slowed: the pair's window has to drain to below the slowed allowance.
                refused = Some(RetryAfter(
                    pair.bucket
                        .saturating_mul(pair.buckets.max(1))
                        .min(Duration::from_secs(3600)),
                ));
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// The per-account ceiling's limiter, for inspection.
    pub fn accounts(&self) -> &RateLimiter<String> {
        &self.accounts
    }

    /// The per-(account, address) limiter, for inspection.
    pub fn pairs(&self) -> &RateLimiter<(String, String)> {
        &self.pairs
    }

    /// The per-address limiter, for inspection.
    pub fn addresses(&self) -> &RateLimiter<String> {
        &self.addresses
    }
}
