//! Instance selection policies, instance health, adaptive concurrency limits and the order
//! of the admission queue.
#![doc = include_str!("../README.md")]

mod adaptive;
mod ewma;
mod health;
mod kind;
mod policies;
mod queue;

use std::time::Duration;

use rand::RngCore;

pub use adaptive::{AdaptiveLimit, AdaptiveParams, Verdict};
pub use ewma::Ewma;
pub use health::{Failure, Health, HealthPolicy, HealthState};
pub use kind::{named, policy, BalanceError, PolicyKind};
pub use policies::{LatencyEwma, LeastOutstanding, ModelAffinity, Random, RoundRobin};
pub use queue::WaitQueue;

/// What a policy knows about one instance that holds the requested model.
///
/// Candidates are the eligible instances only: the caller leaves out disabled ones and those
/// [`Health::is_selectable`] refuses (and may offer a half-open one alone, for its probe).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The instance's index (`url_idx`).
    pub idx: usize,
    /// Relative share of traffic within its tier; 0 is treated as 1.
    pub weight: u32,
    /// Tier: a lower number is a higher tier, preferred; see [`tier`] for when a lower tier
    /// (a higher number) is used.
    pub priority: u32,
    /// Requests in flight on the instance, all models.
    pub in_flight: usize,
    /// Requests in flight on the instance for the requested model.
    pub in_flight_model: usize,
    /// Requests the instance runs at once for one model (Ollama's `OLLAMA_NUM_PARALLEL`).
    pub slots: usize,
    /// Whether the requested model is loaded there.
    pub loaded: bool,
    /// How many models are loaded there.
    pub loaded_count: usize,
    /// How many models it keeps loaded at once, if known.
    pub max_loaded: Option<usize>,
    /// Recent time to first token (an [`Ewma`]); `None` when there is no history yet.
    pub ttft: Option<Duration>,
}

impl Default for Candidate {
    fn default() -> Self {
        Candidate {
            idx: 0,
            weight: 1,
            priority: 0,
            in_flight: 0,
            in_flight_model: 0,
            slots: 1,
            loaded: false,
            loaded_count: 0,
            max_loaded: None,
            ttft: None,
        }
    }
}

impl Candidate {
    /// Whether a request for the model would start at once: fewer requests for it in flight
    /// than slots (`slots` 0 counts as 1).
    pub fn has_free_slot(&self) -> bool {
        self.in_flight_model < self.slots.max(1)
    }

    /// Whether the model could be loaded there without evicting another: the number of
    /// loaded models is below `max_loaded`, or that limit is unknown.
    pub fn can_load_without_evicting(&self) -> bool {
        self.max_loaded.is_none_or(|max| self.loaded_count < max)
    }

    fn weight(&self) -> u32 {
        self.weight.max(1)
    }
}

/// Whether every candidate is at its slot limit for the model, so a request would wait (the
/// admission queue's test); false when there are no candidates.
pub fn all_busy(candidates: &[Candidate]) -> bool {
    !candidates.is_empty() && candidates.iter().all(|c| !c.has_free_slot())
}

/// The candidates of the preferred tier, which every policy chooses within.
///
/// The tier is the lowest `priority` number held by a candidate with a free slot, so a
/// lower tier is used only when every candidate of each higher tier is ineligible (absent
/// from `candidates`) or at its slot limit. When every candidate is at its limit, it is the
/// lowest number present: the request waits for the best tier rather than spilling over.
/// All candidates with that number are returned, busy ones included, in their given order.
pub fn tier(candidates: &[Candidate]) -> Vec<&Candidate> {
    let free = candidates
        .iter()
        .filter(|c| c.has_free_slot())
        .map(|c| c.priority)
        .min();
    let Some(best) = free.or_else(|| candidates.iter().map(|c| c.priority).min()) else {
        return Vec::new();
    };
    candidates.iter().filter(|c| c.priority == best).collect()
}

/// Randomness and memory a pick may use.
pub struct PickContext<'a> {
    /// The source of randomness (seeded in tests).
    pub rng: &'a mut dyn RngCore,
    /// A counter the caller increments per pick, for round robin.
    pub sequence: u64,
}

/// Chooses one instance among candidates.
pub trait Policy: Send + Sync {
    /// The policy's configuration name.
    fn name(&self) -> &'static str;

    /// The index (`Candidate::idx`) of the chosen instance; `None` only when `candidates` is
    /// empty. Policies choose within [`tier`].
    fn pick(&self, candidates: &[Candidate], ctx: &mut PickContext<'_>) -> Option<usize>;
}

#[cfg(test)]
mod tests;
