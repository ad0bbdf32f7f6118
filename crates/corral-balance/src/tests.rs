//! Deterministic tests of every policy, tiers and weights, from constructed snapshots and a
//! seeded generator: no IO and no sleeping. Health has its own in `health/tests.rs`.

use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{all_busy, named, policy, tier, BalanceError, Candidate, PickContext, PolicyKind};

fn c(idx: usize) -> Candidate {
    Candidate {
        idx,
        ..Candidate::default()
    }
}

/// Picks `n` times with a fixed seed and counts the picks per index.
fn counts(name: &str, candidates: &[Candidate], n: u64) -> Vec<u64> {
    let p = policy(name).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut out = vec![0; 8];
    for sequence in 0..n {
        let mut ctx = PickContext {
            rng: &mut rng,
            sequence,
        };
        out[p.pick(candidates, &mut ctx).unwrap()] += 1;
    }
    out
}

fn pick(name: &str, candidates: &[Candidate]) -> Option<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    policy(name).unwrap().pick(
        candidates,
        &mut PickContext {
            rng: &mut rng,
            sequence: 0,
        },
    )
}

#[test]
fn every_policy_returns_none_only_without_candidates() {
    for name in [
        "random",
        "round_robin",
        "least_outstanding",
        "latency_ewma",
        "model_affinity",
    ] {
        assert_eq!(pick(name, &[]), None, "{name}");
        assert_eq!(pick(name, &[c(3)]), Some(3), "{name}");
    }
    assert!(policy("fastest").is_err());
}

#[test]
fn random_and_round_robin_honour_weights() {
    let cands = [Candidate { weight: 3, ..c(0) }, c(1)];
    let r = counts("random", &cands, 4000);
    assert!((2800..3200).contains(&r[0]) && (800..1200).contains(&r[1]), "{r:?}");
    let rr = counts("round_robin", &cands, 400);
    assert_eq!((rr[0], rr[1]), (300, 100), "exact shares over whole cycles");
    let even = counts("round_robin", &[c(2), c(5), c(6)], 9);
    assert_eq!((even[2], even[5], even[6]), (3, 3, 3));
}

#[test]
fn least_outstanding_prefers_the_less_busy_of_two() {
    let cands = [Candidate { in_flight: 9, ..c(0) }, Candidate { in_flight: 1, ..c(1) }];
    assert_eq!(
        counts("least_outstanding", &cands, 100)[1],
        100,
        "with two candidates the idle one always wins"
    );
    let three = [
        Candidate { in_flight: 9, ..c(0) },
        Candidate { in_flight: 1, ..c(1) },
        Candidate { in_flight: 5, ..c(2) },
    ];
    let n = counts("least_outstanding", &three, 3000);
    assert_eq!(n[0], 0, "the busiest never wins a pair: {n:?}");
    assert!(n[1] > n[2], "{n:?}");
}

#[test]
fn latency_ewma_weighs_time_to_first_token_by_queue() {
    let fast_busy = Candidate {
        ttft: Some(Duration::from_millis(100)),
        in_flight: 9,
        ..c(0)
    };
    let slow_idle = Candidate {
        ttft: Some(Duration::from_millis(300)),
        in_flight: 0,
        ..c(1)
    };
    assert_eq!(
        pick("latency_ewma", &[fast_busy.clone(), slow_idle.clone()]),
        Some(1),
        "1000 ms of queue against 300 ms"
    );
    let fast_idle = Candidate {
        in_flight: 0,
        ..fast_busy
    };
    assert_eq!(pick("latency_ewma", &[fast_idle, slow_idle.clone()]), Some(0));
    assert_eq!(
        pick("latency_ewma", &[slow_idle, c(4)]),
        Some(4),
        "an instance with no history is tried"
    );
}

#[test]
fn model_affinity_prefers_loaded_and_free_then_loadable_then_least_loaded() {
    let loaded_free = Candidate {
        loaded: true,
        slots: 2,
        in_flight_model: 1,
        in_flight: 3,
        ..c(0)
    };
    let loadable = Candidate {
        loaded: false,
        loaded_count: 1,
        max_loaded: Some(2),
        ..c(1)
    };
    let would_evict = Candidate {
        loaded: false,
        loaded_count: 2,
        max_loaded: Some(2),
        ..c(2)
    };
    let loaded_busy = Candidate {
        loaded: true,
        slots: 1,
        in_flight_model: 1,
        in_flight: 1,
        ..c(3)
    };
    assert_eq!(
        pick(
            "model_affinity",
            &[would_evict.clone(), loadable.clone(), loaded_free.clone()]
        ),
        Some(0)
    );
    assert_eq!(
        pick(
            "model_affinity",
            &[would_evict.clone(), loadable.clone(), loaded_busy.clone()]
        ),
        Some(1)
    );
    assert_eq!(
        pick(
            "model_affinity",
            &[
                Candidate {
                    in_flight: 4,
                    ..would_evict.clone()
                },
                Candidate { in_flight: 2, ..c(5) }
            ]
        ),
        Some(5),
        "no loaded or loadable slot: the least loaded"
    );
    let a = Candidate {
        loaded: true,
        ttft: Some(Duration::from_millis(90)),
        ..c(6)
    };
    let b = Candidate {
        loaded: true,
        ttft: Some(Duration::from_millis(40)),
        ..c(7)
    };
    assert_eq!(
        pick("model_affinity", &[a.clone(), b]),
        Some(7),
        "ties go to the lower time to first token"
    );
    assert_eq!(
        pick(
            "model_affinity",
            &[
                a.clone(),
                Candidate {
                    in_flight: 1,
                    ..a.clone()
                }
            ]
        ),
        Some(6)
    );
}

#[test]
fn model_affinity_waits_for_a_warm_slot_rather_than_evicting() {
    let warm_busy = Candidate {
        loaded: true,
        slots: 2,
        in_flight_model: 2,
        in_flight: 2,
        max_loaded: Some(2),
        loaded_count: 2,
        ..c(0)
    };
    let full_idle = Candidate {
        loaded: false,
        max_loaded: Some(2),
        loaded_count: 2,
        ..c(1)
    };
    assert_eq!(
        pick("model_affinity", &[full_idle.clone(), warm_busy.clone()]),
        Some(0),
        "queue behind the warm one"
    );
    let room = Candidate {
        loaded: false,
        max_loaded: Some(2),
        loaded_count: 1,
        ..c(2)
    };
    assert_eq!(
        pick("model_affinity", &[full_idle, warm_busy.clone(), room]),
        Some(2),
        "a load that evicts nothing is fine"
    );
    let warmer = Candidate {
        in_flight_model: 3,
        slots: 4,
        ..warm_busy.clone()
    };
    assert_eq!(
        pick(
            "model_affinity",
            &[
                Candidate {
                    in_flight_model: 4,
                    ..warm_busy
                },
                Candidate {
                    idx: 5,
                    in_flight_model: 5,
                    ..warmer
                }
            ]
        ),
        Some(5),
        "the shorter queue per slot"
    );
}

#[test]
fn a_lower_tier_is_used_only_when_no_higher_tier_can_serve() {
    let primary_busy = Candidate {
        priority: 0,
        slots: 1,
        in_flight_model: 1,
        ..c(0)
    };
    let backup = Candidate { priority: 1, ..c(1) };
    let primary_free = Candidate { priority: 0, ..c(2) };
    for name in [
        "random",
        "round_robin",
        "least_outstanding",
        "latency_ewma",
        "model_affinity",
    ] {
        assert_eq!(pick(name, &[primary_free.clone(), backup.clone()]), Some(2), "{name}");
        assert_eq!(
            pick(name, &[primary_busy.clone(), backup.clone()]),
            Some(1),
            "{name}: primary full"
        );
    }
    let backup_busy = Candidate {
        in_flight_model: 1,
        ..backup
    };
    let both = [primary_busy.clone(), backup_busy.clone()];
    let tier = tier(&both);
    assert_eq!(
        tier.iter().map(|c| c.idx).collect::<Vec<_>>(),
        vec![0],
        "all full: the best tier waits"
    );
    assert!(all_busy(&[primary_busy, backup_busy]));
    assert!(!all_busy(&[]));
}

#[test]
fn policies_are_chosen_by_name() {
    let names: Vec<String> = PolicyKind::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(
        names,
        [
            "random",
            "round_robin",
            "least_outstanding",
            "latency_ewma",
            "model_affinity"
        ]
    );
    for kind in PolicyKind::ALL {
        assert_eq!(kind.as_str().parse::<PolicyKind>(), Ok(kind));
        assert_eq!(named(kind.as_str()).unwrap().name(), kind.as_str());
        assert_eq!(policy(kind.as_str()).unwrap().name(), kind.as_str());
    }
    assert_eq!(PolicyKind::default(), PolicyKind::ModelAffinity);
    for bad in ["", "Random", "least-outstanding", " random", "fastest"] {
        let err = bad.parse::<PolicyKind>().unwrap_err();
        assert_eq!(err, BalanceError::UnknownPolicy(bad.to_owned()));
        assert_eq!(err.kind(), "unknown_policy");
        assert!(named(bad).is_err());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut ctx = PickContext {
        rng: &mut rng,
        sequence: 0,
    };
    let cands = [c(1), Candidate { loaded: true, ..c(2) }];
    assert_eq!(PolicyKind::ModelAffinity.pick(&cands, &mut ctx), Some(2));
}

#[test]
fn tiers_are_defined_by_free_slots() {
    let busy = |idx, priority| Candidate {
        priority,
        in_flight_model: 1,
        ..c(idx)
    };
    let free = |idx, priority| Candidate { priority, ..c(idx) };
    let ids = |cands: &[Candidate]| tier(cands).iter().map(|c| c.idx).collect::<Vec<_>>();
    // (candidates, the tier, why)
    let cases: Vec<(Vec<Candidate>, Vec<usize>, &str)> = vec![
        (vec![], vec![], "nothing eligible"),
        (vec![free(0, 0), free(1, 1)], vec![0], "the higher tier serves"),
        (
            vec![busy(0, 0), free(1, 0), free(2, 1)],
            vec![0, 1],
            "one free member keeps the tier, busy members included",
        ),
        (
            vec![busy(0, 0), busy(1, 0), free(2, 1), free(3, 2)],
            vec![2],
            "a full tier spills to the next, not further",
        ),
        (
            vec![busy(0, 0), busy(1, 1), free(2, 2)],
            vec![2],
            "down as far as needed",
        ),
        (vec![free(2, 1), busy(0, 0)], vec![2], "given order does not matter"),
        (
            vec![busy(0, 1), busy(1, 0), busy(2, 0)],
            vec![1, 2],
            "all full: wait for the best tier",
        ),
        (
            vec![free(0, 7), free(1, 3)],
            vec![1],
            "only the order of numbers counts",
        ),
        (
            vec![Candidate { slots: 2, ..busy(0, 0) }, free(1, 1)],
            vec![0],
            "a second slot is still free",
        ),
    ];
    for (cands, want, why) in cases {
        assert_eq!(ids(&cands), want, "{why}");
        if !cands.is_empty() {
            for kind in PolicyKind::ALL {
                let got = pick(kind.as_str(), &cands).unwrap();
                assert!(want.contains(&got), "{kind}: {why}: picked {got}");
            }
        }
    }
}

#[test]
fn weights_shape_least_outstanding_and_zero_counts_as_one() {
    let cands = [
        Candidate {
            weight: 4,
            in_flight: 4,
            ..c(0)
        },
        Candidate { in_flight: 2, ..c(1) },
    ];
    assert_eq!(
        counts("least_outstanding", &cands, 50)[0],
        50,
        "4 in flight on weight 4 is less load than 2 on weight 1"
    );
    let zero = [Candidate { weight: 0, ..c(0) }, c(1)];
    let r = counts("random", &zero, 2000);
    assert!((900..1100).contains(&r[0]), "{r:?}");
    assert_eq!(counts("round_robin", &zero, 10)[..2], [5, 5]);
    let spread = [
        Candidate { weight: 1, ..c(0) },
        Candidate { weight: 2, ..c(1) },
        Candidate { weight: 5, ..c(2) },
    ];
    let r = counts("random", &spread, 8000);
    for (got, want) in r.iter().zip([1000u64, 2000, 5000]) {
        assert!(got.abs_diff(want) < 250, "{r:?}");
    }
    assert_eq!(counts("round_robin", &spread, 800)[..3], [100, 200, 500]);
}

#[test]
fn deterministic_with_a_fixed_seed() {
    let cands = [c(0), c(1), c(2), c(3)];
    for name in ["random", "least_outstanding"] {
        assert_eq!(counts(name, &cands, 100), counts(name, &cands, 100), "{name}");
    }
}
