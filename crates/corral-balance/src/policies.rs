//! The selection policies. Each chooses within the preferred tier and honours weights.

use std::cmp::Ordering;
use std::time::Duration;

use rand::Rng;

use crate::{tier, Candidate, PickContext, Policy};

/// A weighted random member of `tier`.
fn weighted_random(tier: &[&Candidate], ctx: &mut PickContext<'_>) -> Option<usize> {
    let total: u64 = tier.iter().map(|c| u64::from(c.weight())).sum();
    if total == 0 {
        return None;
    }
    let mut ticket = ctx.rng.gen_range(0..total);
    for c in tier {
        let w = u64::from(c.weight());
        if ticket < w {
            return Some(c.idx);
        }
        ticket -= w;
    }
    tier.last().map(|c| c.idx)
}

/// Uniform (weighted) random choice, as Open WebUI balances.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

impl Policy for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn pick(&self, candidates: &[Candidate], ctx: &mut PickContext<'_>) -> Option<usize> {
        weighted_random(&tier(candidates), ctx)
    }
}

/// Weighted round robin: over a cycle of the tier's total weight, each instance is chosen
/// as often as its weight.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobin;

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn pick(&self, candidates: &[Candidate], ctx: &mut PickContext<'_>) -> Option<usize> {
        let mut tier = tier(candidates);
        tier.sort_by_key(|c| c.idx);
        let total: u64 = tier.iter().map(|c| u64::from(c.weight())).sum();
        if total == 0 {
            return None;
        }
        let mut slot = ctx.sequence % total;
        for c in &tier {
            let w = u64::from(c.weight());
            if slot < w {
                return Some(c.idx);
            }
            slot -= w;
        }
        tier.last().map(|c| c.idx)
    }
}

/// Power of two choices: two weighted random candidates, the one with fewer requests in
/// flight per unit of weight wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastOutstanding;

fn load(c: &Candidate) -> f64 {
    c.in_flight as f64 / f64::from(c.weight())
}

impl Policy for LeastOutstanding {
    fn name(&self) -> &'static str {
        "least_outstanding"
    }

    fn pick(&self, candidates: &[Candidate], ctx: &mut PickContext<'_>) -> Option<usize> {
        let tier = tier(candidates);
        let first = weighted_random(&tier, ctx)?;
        let rest: Vec<&Candidate> = tier.iter().copied().filter(|c| c.idx != first).collect();
        let Some(second) = weighted_random(&rest, ctx) else {
            return Some(first);
        };
        let by_idx = |i: usize| tier.iter().find(|c| c.idx == i).map(|c| load(c)).unwrap_or(f64::MAX);
        Some(if by_idx(second) < by_idx(first) { second } else { first })
    }
}

/// Lowest expected wait: recent time to first token scaled by the queue ahead
/// (`ttft × (in flight + 1) / weight`). An instance with no history is tried first.
#[derive(Debug, Clone, Copy, Default)]
pub struct LatencyEwma;

fn expected_wait(c: &Candidate) -> f64 {
    let ttft = c.ttft.unwrap_or(Duration::ZERO).as_secs_f64();
    ttft * (c.in_flight as f64 + 1.0) / f64::from(c.weight())
}

impl Policy for LatencyEwma {
    fn name(&self) -> &'static str {
        "latency_ewma"
    }

    fn pick(&self, candidates: &[Candidate], _ctx: &mut PickContext<'_>) -> Option<usize> {
        tier(candidates)
            .into_iter()
            .min_by(|a, b| {
                expected_wait(a)
                    .partial_cmp(&expected_wait(b))
                    .unwrap_or(Ordering::Equal)
                    .then(a.idx.cmp(&b.idx))
            })
            .map(|c| c.idx)
    }
}

/// Corral's default: the model already loaded with a free slot; else an instance that can
/// load it without evicting another model; else the least loaded of the instances that
/// already hold it (waiting for a warm slot beats a cold load that evicts another model);
/// else the least loaded of the rest. Ties go to fewer requests in flight, then lower
/// recent time to first token, then the lower index.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModelAffinity;

/// 0: loaded with a free slot; 1: loadable without eviction, with a free slot; 2: loaded
/// but busy; 3: the rest (a load that evicts, or no free slot at all).
fn affinity_class(c: &Candidate) -> u8 {
    if c.loaded && c.has_free_slot() {
        0
    } else if !c.loaded && c.can_load_without_evicting() && c.has_free_slot() {
        1
    } else if c.loaded {
        2
    } else {
        3
    }
}

/// Queue length per slot for the model: how long a warm but busy instance keeps one waiting.
fn model_queue(c: &Candidate) -> f64 {
    c.in_flight_model as f64 / c.slots.max(1) as f64 / f64::from(c.weight())
}

impl Policy for ModelAffinity {
    fn name(&self) -> &'static str {
        "model_affinity"
    }

    fn pick(&self, candidates: &[Candidate], _ctx: &mut PickContext<'_>) -> Option<usize> {
        let ttft = |c: &Candidate| c.ttft.unwrap_or(Duration::ZERO);
        tier(candidates)
            .into_iter()
            .min_by(|a, b| {
                affinity_class(a)
                    .cmp(&affinity_class(b))
                    .then(model_queue(a).partial_cmp(&model_queue(b)).unwrap_or(Ordering::Equal))
                    .then(load(a).partial_cmp(&load(b)).unwrap_or(Ordering::Equal))
                    .then(ttft(a).cmp(&ttft(b)))
                    .then(a.idx.cmp(&b.idx))
            })
            .map(|c| c.idx)
    }
}
