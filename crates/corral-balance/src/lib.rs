//! Instance selection policies and instance health.
#![doc = include_str!("../README.md")]

mod health;
mod policies;

use std::time::Duration;

use rand::RngCore;

pub use health::{Ewma, Failure, Health, HealthPolicy, HealthState};
pub use policies::{LatencyEwma, LeastOutstanding, ModelAffinity, Random, RoundRobin};

/// What a policy knows about one instance that holds the requested model.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The instance's index (`url_idx`).
    pub idx: usize,
    /// Relative share of traffic; 0 is treated as 1.
    pub weight: u32,
    /// Tier: lower numbers are preferred; a higher number is used only when no lower tier
    /// can serve.
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
    /// Recent time to first token.
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
    /// Whether a request for the model would start at once (a slot is free).
    pub fn has_free_slot(&self) -> bool {
        self.in_flight_model < self.slots.max(1)
    }

    /// Whether the model could be loaded without evicting another.
    pub fn can_load_without_evicting(&self) -> bool {
        self.max_loaded.is_none_or(|max| self.loaded_count < max)
    }

    fn weight(&self) -> u32 {
        self.weight.max(1)
    }
}

/// Every candidate is at its slot limit: a request would wait.
pub fn all_busy(candidates: &[Candidate]) -> bool {
    !candidates.is_empty() && candidates.iter().all(|c| !c.has_free_slot())
}

/// The candidates of the preferred tier: the lowest priority number among those with a free
/// slot; when none has one, the lowest priority number overall.
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

/// Why a policy name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown balancing policy {0:?}; known: random, round_robin, least_outstanding, latency_ewma, model_affinity")]
pub struct UnknownPolicy(pub String);

impl UnknownPolicy {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        "unknown_policy"
    }
}

/// The policy called `name`, without allocating (policies hold no state).
pub fn named(name: &str) -> Result<&'static dyn Policy, UnknownPolicy> {
    match name {
        "random" => Ok(&Random),
        "round_robin" => Ok(&RoundRobin),
        "least_outstanding" => Ok(&LeastOutstanding),
        "latency_ewma" => Ok(&LatencyEwma),
        "model_affinity" => Ok(&ModelAffinity),
        other => Err(UnknownPolicy(other.to_owned())),
    }
}

/// The policy called `name`.
pub fn policy(name: &str) -> Result<Box<dyn Policy>, UnknownPolicy> {
    match name {
        "random" => Ok(Box::new(Random)),
        "round_robin" => Ok(Box::new(RoundRobin)),
        "least_outstanding" => Ok(Box::new(LeastOutstanding)),
        "latency_ewma" => Ok(Box::new(LatencyEwma)),
        "model_affinity" => Ok(Box::new(ModelAffinity)),
        other => Err(UnknownPolicy(other.to_owned())),
    }
}

#[cfg(test)]
mod tests;
