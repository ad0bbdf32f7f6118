//! Instance health: passive ejection after consecutive failures (fast 5xx answers such as
//! Ollama's 503 "server busy" included), a half-open probe before an instance returns, and
//! backoff for instances that keep failing.
//!
//! Time comes in as a parameter (`now`), so every transition is tested without sleeping.
//! The states, as Pingora's and Envoy's outlier detection have them:
//!
//! * `Healthy` takes traffic; `failures_to_eject` consecutive failures eject it.
//! * `Ejected { until }` takes none; successes of requests that were already in flight count
//!   but do not end the ejection early.
//! * When `until` has passed it is `HalfOpen`: exactly one probe request is handed out
//!   ([`Health::try_probe`]). Its success brings the instance back (after
//!   `successes_to_recover` good probes, see [`Health::on_success_at`]); its failure ejects
//!   it again for twice as long, up to `max_ejection`. A probe whose outcome never comes (the
//!   client went away) is presumed lost after as long as the last ejection lasted (at least a
//!   second), and the next one is handed out.

use std::time::{Duration, Instant};

/// The shortest time a probe may stay unanswered before it is presumed lost, so that a zero
/// ejection time does not hand out unlimited probes.
const MIN_PROBE_WAIT: Duration = Duration::from_secs(1);

/// Thresholds of the health state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// Consecutive failures that eject a healthy instance (0 counts as 1).
    pub failures_to_eject: u32,
    /// How long the first ejection lasts.
    pub ejection: Duration,
    /// The longest ejection, after doubling for every probe that failed in a row.
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

impl HealthPolicy {
    /// How long the ejection after `previous` ejections in a row lasts: the base time
    /// doubled each time, capped at `max_ejection`.
    pub fn ejection_time(&self, previous: u32) -> Duration {
        let factor = 1u32 << previous.min(16);
        self.ejection.saturating_mul(factor).min(self.max_ejection)
    }
}

/// What went wrong with a request or a probe: the classifier input of
/// [`Health::on_failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be opened.
    Connect,
    /// The connection broke before the response.
    Reset,
    /// No response in time.
    Timeout,
    /// A 5xx status, such as Ollama's 503 "server busy … maximum pending requests exceeded".
    Status(u16),
}

impl Failure {
    /// The failure an HTTP answer's status means for the instance: any 5xx (however fast it
    /// came, so a node that refuses work quickly does not draw more of it); `None` for the
    /// rest, which are the request's problem, not the instance's.
    pub fn from_status(status: u16) -> Option<Failure> {
        (500..=599).contains(&status).then_some(Failure::Status(status))
    }

    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Reset => "reset",
            Failure::Timeout => "timeout",
            Failure::Status(503) => "busy",
            Failure::Status(_) => "server_error",
        }
    }
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
    consecutive_successes: u32,
    /// Ejections in a row without a recovery: the backoff exponent.
    ejections: u32,
    /// How long the last ejection lasted: also how long a probe may stay unanswered.
    last_ejection: Duration,
    /// When the current half-open probe was handed out.
    probe_since: Option<Instant>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: HealthState::Healthy,
            consecutive_failures: 0,
            consecutive_successes: 0,
            ejections: 0,
            last_ejection: Duration::ZERO,
            probe_since: None,
        }
    }
}

impl Health {
    /// The current state at `now`: an expired ejection becomes half-open, and a probe
    /// unanswered for as long as the last ejection lasted (at least a second) is presumed lost.
    pub fn state(&mut self, now: Instant) -> HealthState {
        match self.state {
            HealthState::Ejected { until } if now >= until => {
                self.state = HealthState::HalfOpen { probing: false };
                self.consecutive_successes = 0;
                self.probe_since = None;
            }
            HealthState::HalfOpen { probing: true }
                if self
                    .probe_since
                    .is_some_and(|at| now.saturating_duration_since(at) >= self.last_ejection.max(MIN_PROBE_WAIT)) =>
            {
                self.state = HealthState::HalfOpen { probing: false };
                self.probe_since = None;
            }
            _ => {}
        }
        self.state
    }

    /// Whether ordinary traffic may go to the instance.
    pub fn is_selectable(&mut self, now: Instant) -> bool {
        matches!(self.state(now), HealthState::Healthy)
    }

    /// Whether a half-open probe is due and not yet handed out (does not take it).
    pub fn should_probe(&mut self, now: Instant) -> bool {
        matches!(self.state(now), HealthState::HalfOpen { probing: false })
    }

    /// Hands out the single half-open probe: true once per half-open period.
    pub fn try_probe(&mut self, now: Instant) -> bool {
        if !self.should_probe(now) {
            return false;
        }
        self.state = HealthState::HalfOpen { probing: true };
        self.probe_since = Some(now);
        true
    }

    /// Consecutive failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Consecutive successes since the last failure (while half-open: since it became so).
    pub fn consecutive_successes(&self) -> u32 {
        self.consecutive_successes
    }

    /// A request or probe succeeded, and one success is enough to recover: the same as
    /// [`Health::on_success_at`] with `successes_to_recover` 1, except that without `now` an
    /// ejection that has run out but was not yet looked at still counts as running.
    pub fn on_success(&mut self) {
        self.succeeded(1);
    }

    /// A request or probe succeeded at `now`. A half-open instance returns to healthy after
    /// `successes_to_recover` successes (0 counts as 1), another probe being handed out after
    /// each; an ejected one stays out until its time is up. Returns true if this success
    /// brought the instance back.
    pub fn on_success_at(&mut self, now: Instant, successes_to_recover: u32) -> bool {
        self.state(now);
        self.succeeded(successes_to_recover)
    }

    fn succeeded(&mut self, successes_to_recover: u32) -> bool {
        self.consecutive_failures = 0;
        self.consecutive_successes = self.consecutive_successes.saturating_add(1);
        match self.state {
            HealthState::Healthy | HealthState::Ejected { .. } => false,
            HealthState::HalfOpen { .. } if self.consecutive_successes < successes_to_recover.max(1) => {
                self.state = HealthState::HalfOpen { probing: false };
                self.probe_since = None;
                false
            }
            HealthState::HalfOpen { .. } => {
                self.state = HealthState::Healthy;
                self.ejections = 0;
                self.probe_since = None;
                true
            }
        }
    }

    /// A request or probe failed at `now` (see [`Failure::from_status`] for answers). A
    /// healthy instance is ejected after `failures_to_eject` in a row; a half-open one at the
    /// first, for twice as long as before. Returns true if this ejected the instance.
    pub fn on_failure(&mut self, now: Instant, _why: Failure, policy: &HealthPolicy) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.consecutive_successes = 0;
        let eject = match self.state(now) {
            HealthState::HalfOpen { .. } => true,
            HealthState::Healthy => self.consecutive_failures >= policy.failures_to_eject.max(1),
            HealthState::Ejected { .. } => false,
        };
        if eject {
            let time = policy.ejection_time(self.ejections);
            self.state = HealthState::Ejected { until: now + time };
            self.ejections = self.ejections.saturating_add(1);
            self.last_ejection = time;
            self.probe_since = None;
        }
        eject
    }
}

#[cfg(test)]
mod tests;
