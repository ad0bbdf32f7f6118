//! Instance selection policies.
#![doc = include_str!("../README.md")]

use rand::{Rng, RngCore};

/// What a policy knows about one instance that holds the requested model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Candidate {
    /// The instance's index (`url_idx`).
    pub idx: usize,
    /// Requests in flight on the instance.
    pub in_flight: usize,
}

/// Chooses one instance among candidates.
pub trait Policy: Send + Sync {
    /// The policy's configuration name.
    fn name(&self) -> &'static str;

    /// The index (`Candidate::idx`) of the chosen instance; `None` only when `candidates` is
    /// empty.
    fn pick(&self, candidates: &[Candidate], rng: &mut dyn RngCore) -> Option<usize>;
}

/// Uniform random choice, as Open WebUI balances.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

impl Policy for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn pick(&self, candidates: &[Candidate], rng: &mut dyn RngCore) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[rng.gen_range(0..candidates.len())].idx)
    }
}

/// Why a policy name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown balancing policy {0:?}; known: random")]
pub struct UnknownPolicy(pub String);

impl UnknownPolicy {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        "unknown_policy"
    }
}

/// The policy called `name`.
pub fn policy(name: &str) -> Result<Box<dyn Policy>, UnknownPolicy> {
    match name {
        "random" => Ok(Box::new(Random)),
        other => Err(UnknownPolicy(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn cands(idxs: &[usize]) -> Vec<Candidate> {
        idxs.iter().map(|&idx| Candidate { idx, in_flight: 0 }).collect()
    }

    #[test]
    fn random_picks_only_candidates_and_spreads_evenly() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let candidates = cands(&[0, 2, 5]);
        let mut counts = [0usize; 6];
        for _ in 0..3000 {
            counts[Random.pick(&candidates, &mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[1] + counts[3] + counts[4], 0);
        for idx in [0, 2, 5] {
            assert!((900..1100).contains(&counts[idx]), "{counts:?}");
        }
    }

    #[test]
    fn no_candidates_no_pick() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(Random.pick(&[], &mut rng), None);
        assert_eq!(Random.pick(&cands(&[4]), &mut rng), Some(4));
    }

    #[test]
    fn policies_by_name() {
        assert_eq!(policy("random").unwrap().name(), "random");
        assert_eq!(policy("magic").err(), Some(UnknownPolicy("magic".to_owned())));
    }
}
