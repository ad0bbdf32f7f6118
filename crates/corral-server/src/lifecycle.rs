//! The gateway's life: serving, draining after SIGTERM or SIGINT, and the grace period's end;
//! and what readiness needs to know that requests do not (when the database last answered).
//!
//! Every worker reads the phase through a `watch` channel, so a request can wait for the grace
//! period's end without polling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Where the gateway is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Accepting and serving.
    Serving,
    /// A stop signal came: new connections are refused, requests in flight finish.
    Draining,
    /// The grace period is over: requests still queued give up with a 503.
    GraceOver,
}

/// The phase and the database's last sign of life.
pub struct Lifecycle {
    phase: watch::Sender<Phase>,
    born: Instant,
    /// Milliseconds after `born` the database last answered, plus one (0: never).
    db_answered: AtomicU64,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            phase: watch::Sender::new(Phase::Serving),
            born: Instant::now(),
            db_answered: AtomicU64::new(0),
        }
    }
}

impl Lifecycle {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Whether a stop signal came.
    pub fn draining(&self) -> bool {
        self.phase() >= Phase::Draining
    }

    /// Moves to `phase`; the phase never goes back.
    pub fn advance(&self, phase: Phase) {
        self.phase.send_if_modified(|p| {
            let later = phase > *p;
            if later {
                *p = phase;
            }
            later
        });
    }

    /// Resolves once the grace period is over (at once if it is).
    pub async fn grace_over(&self) {
        let mut rx = self.phase.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail while borrowed.
        let _ = rx.wait_for(|p| *p >= Phase::GraceOver).await;
    }

    /// Records that the database answered now.
    pub fn database_answered(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.db_answered.store(ms.saturating_add(1), Ordering::Release);
    }

    /// How long ago the database last answered; `None` if it never did.
    pub fn database_silent_for(&self) -> Option<Duration> {
        match self.db_answered.load(Ordering::Acquire) {
            0 => None,
            ms => Some(self.born.elapsed().saturating_sub(Duration::from_millis(ms - 1))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Lifecycle, Phase};

    #[actix_rt::test]
    async fn the_phase_only_moves_forward_and_the_grace_end_is_awaited() {
        let life = std::sync::Arc::new(Lifecycle::default());
        assert!(!life.draining());
        let waiter = {
            let life = life.clone();
            actix_rt::spawn(async move { life.grace_over().await })
        };
        life.advance(Phase::Draining);
        assert!(life.draining());
        life.advance(Phase::GraceOver);
        life.advance(Phase::Draining);
        assert_eq!(life.phase(), Phase::GraceOver);
        waiter.await.unwrap();
        assert!(life.database_silent_for().is_none());
        life.database_answered();
        assert!(life.database_silent_for().is_some());
    }
}
