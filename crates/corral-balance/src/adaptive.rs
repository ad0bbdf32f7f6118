//! An adaptive concurrency limit for one instance and model, learned from time to first
//! token: how many requests the gateway lets run there at once when `balance.slots` is
//! `auto`.
//!
//! In the spirit of Envoy's adaptive concurrency filter and Netflix's concurrency-limits
//! (gradient and Vegas), fitted to what an Ollama instance does past its
//! `OLLAMA_NUM_PARALLEL`: a request beyond its slots waits at the instance for a whole
//! generation to end, so its time to first token jumps far above the no-load time, while the
//! requests within the slots keep theirs. The limiter therefore classifies each sample:
//!
//! * **flat**: at most `floor × (1 + tolerance) + slack`, where `floor` is the lowest time
//!   to first token seen lately (Vegas's `rtt_noload`, Envoy's `minRTT`);
//! * **queued**: above it.
//!
//! Samples are judged per window of `limit` samples (at least one):
//!
//! * every sample flat, and the window reached the limit (some request ran with `limit`
//!   requests in flight): the limit grows by one. A window that never reached the limit
//!   says nothing about it (Netflix's "app-limited" rule), so a quiet model does not creep up;
//! * the window's median above the threshold, and the requests sent with the fewest in
//!   flight slow too: latency grew for everyone (the instance got slower), so the limit shrinks by the gradient `threshold / median`, clamped to
//!   [0.5, 1] as Envoy clamps it;
//! * otherwise some samples sent with others in flight were queued: the smallest concurrency at which one was queued is
//!   above the instance's capacity, so the limit drops to one below it and that concurrency
//!   becomes a ceiling. Growing past the ceiling again (the instance may have been given more
//!   slots) is tried only after `probe_wait` flat windows, doubled after each probe that
//!   queued again (up to `max_probe_wait`), so a settled limit costs one queued request every
//!   few hundred.
//!
//! An answer that says the instance is busy (Ollama's 503, a 429) halves the limit at once.
//! The floor is forgotten after `floor_ttl` and taken again from the next window, so a model
//! that became slower for good (a longer context, another model sharing the GPU) is not held
//! to its old speed forever. A slow sample that ran alone (concurrency 1) cannot have queued
//! behind the gateway's own requests: it is noise (a long prompt) unless most of its window
//! is slow too, and it holds the limit without lowering it.
//!
//! Samples should come from requests that ran a model already loaded: a cold load's wait is
//! not queueing. Time comes in as a parameter.
//!
//! The limit grows only once the floor comes from at least two samples, so a first sample
//! that waited for a load does not set it alone. A known limit remains: the floor is only
//! ever lowered by a faster sample (or re-measured after `floor_ttl`). If the first samples
//! of an instance and model were all slow for another reason (the model was in fact being
//! loaded there), the floor starts high and queueing up to about
//! twice that wait looks flat; under sustained saturation no request runs alone to lower it,
//! so the limit can sit above the instance's slots until the floor is re-measured. Envoy
//! avoids this by pinning the limit low while it measures its minimum; this limiter does not.

use std::time::{Duration, Instant};

/// The limiter's constants; [`AdaptiveParams::default`] is what `auto` uses.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveParams {
    /// The limit before any sample (Ollama's default `OLLAMA_NUM_PARALLEL` is 1).
    pub initial: usize,
    /// The lowest limit.
    pub min: usize,
    /// The highest limit.
    pub max: usize,
    /// How far above the floor, relatively, a sample still counts as flat.
    pub tolerance: f64,
    /// How far above the floor, absolutely, a sample still counts as flat: scheduling jitter.
    pub slack: Duration,
    /// How long the floor is trusted before it is measured again.
    pub floor_ttl: Duration,
    /// Flat windows at the limit before it may grow past a ceiling again.
    pub probe_wait: u32,
    /// The longest such wait, after probes that kept failing.
    pub max_probe_wait: u32,
}

impl Default for AdaptiveParams {
    fn default() -> Self {
        AdaptiveParams {
            initial: 1,
            min: 1,
            max: 64,
            tolerance: 1.0,
            slack: Duration::from_millis(25),
            floor_ttl: Duration::from_secs(120),
            probe_wait: 4,
            max_probe_wait: 64,
        }
    }
}

/// One sample: a request's time to first token and how many requests (itself included) the
/// gateway had in flight for the model on the instance when it was sent.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    ttft: Duration,
    concurrency: usize,
}

/// What the last window decided, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The window is not complete yet.
    Pending,
    /// Every sample was flat and the limit was reached: it grew.
    Grew,
    /// Every sample was flat, but the limit was not reached or waits before a probe.
    Held,
    /// Some samples queued at the instance: the limit fell below where they did.
    Queued,
    /// The window's median grew: the limit shrank by the gradient.
    Slower,
}

/// The adaptive limit of one instance and model.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveLimit {
    params: AdaptiveParams,
    limit: usize,
    floor: Option<(Duration, Instant)>,
    window: Vec<Sample>,
    /// Samples judged since the floor was last measured afresh.
    floor_samples: usize,
    /// The lowest concurrency seen queued since the limit last grew past it.
    ceiling: Option<usize>,
    /// Flat windows at the limit since it last changed, counted while a ceiling holds.
    flat_at_limit: u32,
    /// Flat windows to wait before probing past the ceiling.
    probe_wait: u32,
}

impl Default for AdaptiveLimit {
    fn default() -> Self {
        AdaptiveLimit::new(AdaptiveParams::default())
    }
}

impl AdaptiveLimit {
    /// A limiter at `params.initial`.
    pub fn new(params: AdaptiveParams) -> AdaptiveLimit {
        let min = params.min.max(1);
        let limit = params.initial.clamp(min, params.max.max(min));
        AdaptiveLimit {
            probe_wait: params.probe_wait.max(1),
            params,
            limit,
            floor: None,
            window: Vec::new(),
            floor_samples: 0,
            ceiling: None,
            flat_at_limit: 0,
        }
    }

    /// Requests that may run at once now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The lowest recent time to first token, if any sample came.
    pub fn floor(&self) -> Option<Duration> {
        self.floor.map(|(f, _)| f)
    }

    /// Records a request that got its first token after `ttft`, sent when `concurrency`
    /// requests (itself included) were in flight there; returns what the window decided.
    pub fn on_sample(&mut self, ttft: Duration, concurrency: usize, now: Instant) -> Verdict {
        self.window.push(Sample {
            ttft,
            concurrency: concurrency.max(1),
        });
        if self.window.len() < self.limit.max(1) {
            return Verdict::Pending;
        }
        let window = std::mem::take(&mut self.window);
        self.judge(&window, now)
    }

    /// The instance answered that it is busy (503, 429): the limit halves at once and the
    /// concurrency it was sent at becomes a ceiling.
    pub fn on_busy(&mut self, concurrency: usize) {
        let before = self.limit;
        self.set(before / 2);
        let ceiling = concurrency.clamp(1, before.max(1));
        self.ceiling = Some(self.ceiling.map_or(ceiling, |c| c.min(ceiling)).max(self.limit + 1));
        self.failed_probe();
        self.window.clear();
    }

    fn judge(&mut self, window: &[Sample], now: Instant) -> Verdict {
        let lowest = window.iter().map(|s| s.ttft).min().unwrap_or_default();
        let floor = match self.floor {
            Some((f, at)) if now.saturating_duration_since(at) < self.params.floor_ttl => {
                if lowest < f {
                    self.floor = Some((lowest, now));
                    lowest
                } else {
                    f
                }
            }
            // No floor yet, or an old one: measure it again.
            _ => {
                self.floor = Some((lowest, now));
                self.floor_samples = 0;
                lowest
            }
        };
        self.floor_samples += window.len();
        let threshold = floor.as_secs_f64() * (1.0 + self.params.tolerance.max(0.0)) + self.params.slack.as_secs_f64();
        let mut ttfts: Vec<f64> = window.iter().map(|s| s.ttft.as_secs_f64()).collect();
        ttfts.sort_by(f64::total_cmp);
        // The lower median: in a window of two, one queued sample is not "everyone".
        let median = ttfts[(ttfts.len() - 1) / 2];
        let slow = |s: &&Sample| s.ttft.as_secs_f64() > threshold;
        let least = window.iter().map(|s| s.concurrency).min().unwrap_or(1);
        let reached = window.iter().map(|s| s.concurrency).max().unwrap_or(0) >= self.limit;
        // Slow even with the fewest requests in flight, and in most of the window: the
        // instance itself got slower, and it is not the gateway's excess queueing there.
        if median > threshold && window.iter().filter(|s| s.concurrency == least).any(|s| slow(&s)) {
            let gradient = (threshold / median).clamp(0.5, 1.0);
            let next = (self.limit as f64 * gradient).floor() as usize;
            self.set(next.min(self.limit.saturating_sub(1)));
            self.flat_at_limit = 0;
            return Verdict::Slower;
        }
        // A request that ran alone cannot have queued behind the gateway's own: a slow one is
        // noise (a long prompt), which holds the limit but does not lower it.
        let queued_at = window
            .iter()
            .filter(slow)
            .map(|s| s.concurrency)
            .filter(|c| *c >= 2)
            .min();
        let noise = window.iter().any(|s| slow(&s));
        if let Some(at) = queued_at {
            // A probe: the limit had grown to (or past) where requests queued before.
            let probing = self.ceiling.is_some_and(|c| self.limit >= c);
            if self.ceiling.is_none_or(|c| at <= c) {
                self.ceiling = Some(at.max(self.params.min.max(1) + 1));
            }
            self.flat_at_limit = 0;
            if at <= self.limit {
                self.set(at.saturating_sub(1));
            }
            if probing {
                self.failed_probe();
            }
            return Verdict::Queued;
        }
        // A floor taken from one sample may be a load's wait: growth waits for a second.
        if noise || !reached || self.limit >= self.params.max || self.floor_samples < 2 {
            return Verdict::Held;
        }
        match self.ceiling {
            Some(c) if self.limit >= c => {
                // A probe at the ceiling held: the instance has more room than it had.
                self.ceiling = None;
                self.probe_wait = self.params.probe_wait.max(1);
            }
            Some(c) if self.limit + 1 >= c => {
                self.flat_at_limit += 1;
                if self.flat_at_limit < self.probe_wait {
                    return Verdict::Held;
                }
            }
            _ => {}
        }
        self.flat_at_limit = 0;
        self.set(self.limit + 1);
        Verdict::Grew
    }

    fn failed_probe(&mut self) {
        self.flat_at_limit = 0;
        self.probe_wait = self
            .probe_wait
            .saturating_mul(2)
            .clamp(self.params.probe_wait.max(1), self.params.max_probe_wait.max(1));
    }

    fn set(&mut self, limit: usize) {
        let min = self.params.min.max(1);
        self.limit = limit.clamp(min, self.params.max.max(min));
    }
}

#[cfg(test)]
mod tests;
