//! Instance health: passive ejection after consecutive failures, a half-open probe before
//! an instance returns, backoff for instances that keep failing; and a time-decayed average.
//!
//! Time comes in as a parameter (`now`), so every transition is tested without sleeping.

use std::time::{Duration, Instant};

/// Thresholds of the health state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// Consecutive failures that eject a healthy instance.
    pub failures_to_eject: u32,
    /// How long the first ejection lasts.
    pub ejection: Duration,
    /// The longest ejection, after doubling for repeated failures.
    pub max_ejection: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            failures_to_eject: 3,
            ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(120),
        }
    }
}

/// What went wrong with a request or a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be opened.
    Connect,
    /// The connection broke before the response.
    Reset,
    /// No response in time.
    Timeout,
    /// A 5xx status, such as Ollama's 503 "server busy".
    Status(u16),
}

/// Where an instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Taking traffic.
    Healthy,
    /// Taking no traffic until the time given.
    Ejected {
        /// When a probe may be tried.
        until: Instant,
    },
    /// One probe request is allowed; its outcome decides.
    HalfOpen {
        /// Whether the probe has been handed out.
        probing: bool,
    },
}

/// The health of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    state: HealthState,
    consecutive_failures: u32,
    ejections: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: HealthState::Healthy,
            consecutive_failures: 0,
            ejections: 0,
        }
    }
}

impl Health {
    /// The current state, with an expired ejection turned into a half-open one.
    pub fn state(&mut self, now: Instant) -> HealthState {
        if let HealthState::Ejected { until } = self.state {
            if now >= until {
                self.state = HealthState::HalfOpen { probing: false };
            }
        }
        self.state
    }

    /// Whether ordinary traffic may go to the instance.
    pub fn is_selectable(&mut self, now: Instant) -> bool {
        matches!(self.state(now), HealthState::Healthy)
    }

    /// Hands out the single half-open probe: true once per half-open period.
    pub fn try_probe(&mut self, now: Instant) -> bool {
        match self.state(now) {
            HealthState::HalfOpen { probing: false } => {
                self.state = HealthState::HalfOpen { probing: true };
                true
            }
            _ => false,
        }
    }

    /// A request or probe succeeded.
    pub fn on_success(&mut self) {
        self.consecutive_failures = 0;
        if !matches!(self.state, HealthState::Healthy) {
            self.state = HealthState::Healthy;
            self.ejections = 0;
        }
    }

    /// A request or probe failed. Returns true if this ejected the instance.
    pub fn on_failure(&mut self, now: Instant, _why: Failure, policy: &HealthPolicy) -> bool {
        self.consecutive_failures += 1;
        let eject = match self.state(now) {
            HealthState::HalfOpen { .. } => true,
            HealthState::Healthy => self.consecutive_failures >= policy.failures_to_eject.max(1),
            HealthState::Ejected { .. } => false,
        };
        if eject {
            let factor = 1u32 << self.ejections.min(16);
            let time = policy.ejection.saturating_mul(factor).min(policy.max_ejection);
            self.state = HealthState::Ejected { until: now + time };
            self.ejections += 1;
        }
        eject
    }
}

/// An exponentially weighted moving average whose memory decays with time: a sample counts
/// for about `half_life` before it weighs half as much.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    value: Option<f64>,
    at: Option<Instant>,
    half_life: Duration,
}

impl Ewma {
    /// An empty average with this half-life.
    pub fn new(half_life: Duration) -> Ewma {
        Ewma {
            value: None,
            at: None,
            half_life,
        }
    }

    /// Adds a sample taken at `now`.
    pub fn observe(&mut self, sample: Duration, now: Instant) {
        let x = sample.as_secs_f64();
        self.value = Some(match (self.value, self.at) {
            (Some(v), Some(at)) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                // Every sample counts for at least a tenth, even one taken at the same instant.
                let keep = 0.5f64.powf(dt / self.half_life.as_secs_f64().max(1e-9)).min(0.9);
                v * keep + x * (1.0 - keep)
            }
            _ => x,
        });
        self.at = Some(now);
    }

    /// The current average, if any sample was taken.
    pub fn get(&self) -> Option<Duration> {
        self.value.map(Duration::from_secs_f64)
    }
}
