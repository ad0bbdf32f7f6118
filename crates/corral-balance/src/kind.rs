//! Policies by name, as the configuration selects them globally and per model.

use std::fmt;
use std::str::FromStr;

use crate::{Candidate, LatencyEwma, LeastOutstanding, ModelAffinity, PickContext, Policy, Random, RoundRobin};

/// The errors of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    /// A policy name that is not one of [`PolicyKind::ALL`].
    #[error(
        "unknown balancing policy {0:?}; known: random, round_robin, least_outstanding, latency_ewma, model_affinity"
    )]
    UnknownPolicy(String),
}

impl BalanceError {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BalanceError::UnknownPolicy(_) => "unknown_policy",
        }
    }
}

/// A balancing policy, by its configuration name; [`PolicyKind::ModelAffinity`] by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PolicyKind {
    /// `random`: weighted random, Open WebUI's choice.
    Random,
    /// `round_robin`: weighted round robin.
    RoundRobin,
    /// `least_outstanding`: power of two choices on requests in flight.
    LeastOutstanding,
    /// `latency_ewma`: lowest expected wait from recent time to first token.
    LatencyEwma,
    /// `model_affinity`: warm and free first, then loadable without eviction, then least loaded.
    #[default]
    ModelAffinity,
}

impl PolicyKind {
    /// Every policy, in the order the documentation lists them.
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::Random,
        PolicyKind::RoundRobin,
        PolicyKind::LeastOutstanding,
        PolicyKind::LatencyEwma,
        PolicyKind::ModelAffinity,
    ];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        self.policy().name()
    }

    /// The policy itself (policies hold no state, so this allocates nothing).
    pub fn policy(self) -> &'static dyn Policy {
        match self {
            PolicyKind::Random => &Random,
            PolicyKind::RoundRobin => &RoundRobin,
            PolicyKind::LeastOutstanding => &LeastOutstanding,
            PolicyKind::LatencyEwma => &LatencyEwma,
            PolicyKind::ModelAffinity => &ModelAffinity,
        }
    }

    /// Picks with this policy: see [`Policy::pick`].
    pub fn pick(self, candidates: &[Candidate], ctx: &mut PickContext<'_>) -> Option<usize> {
        self.policy().pick(candidates, ctx)
    }
}

impl FromStr for PolicyKind {
    type Err = BalanceError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| BalanceError::UnknownPolicy(name.to_owned()))
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy called `name`, without allocating.
pub fn named(name: &str) -> Result<&'static dyn Policy, BalanceError> {
    name.parse().map(PolicyKind::policy)
}

/// The policy called `name`, boxed.
pub fn policy(name: &str) -> Result<Box<dyn Policy>, BalanceError> {
    Ok(match name.parse()? {
        PolicyKind::Random => Box::new(Random),
        PolicyKind::RoundRobin => Box::new(RoundRobin),
        PolicyKind::LeastOutstanding => Box::new(LeastOutstanding),
        PolicyKind::LatencyEwma => Box::new(LatencyEwma),
        PolicyKind::ModelAffinity => Box::new(ModelAffinity),
    })
}
