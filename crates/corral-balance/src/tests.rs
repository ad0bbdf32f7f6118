//! Deterministic tests of every policy, tiers, weights and health, from constructed
//! snapshots: no IO and no sleeping.

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{all_busy, policy, tier, Candidate, Ewma, Failure, Health, HealthPolicy, HealthState, PickContext};

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
fn health_ejects_after_consecutive_failures_and_returns_through_one_probe() {
    let policy = HealthPolicy {
        failures_to_eject: 3,
        ejection: Duration::from_secs(5),
        max_ejection: Duration::from_secs(30),
    };
    let t0 = Instant::now();
    let mut h = Health::default();
    assert!(!h.on_failure(t0, Failure::Connect, &policy));
    h.on_success();
    assert!(!h.on_failure(t0, Failure::Status(503), &policy));
    assert!(
        !h.on_failure(t0, Failure::Status(503), &policy),
        "a success in between resets the count"
    );
    assert!(
        h.on_failure(t0, Failure::Status(503), &policy),
        "three fast 5xx answers in a row eject"
    );
    assert!(!h.is_selectable(t0 + Duration::from_secs(4)));
    assert!(!h.try_probe(t0 + Duration::from_secs(4)));
    let t1 = t0 + Duration::from_secs(5);
    assert!(h.try_probe(t1), "half-open after the ejection time");
    assert!(!h.try_probe(t1), "exactly one probe");
    assert!(!h.is_selectable(t1));
    assert!(
        h.on_failure(t1, Failure::Timeout, &policy),
        "a failed probe ejects again"
    );
    assert_eq!(
        h.state(t1 + Duration::from_secs(9)),
        HealthState::Ejected {
            until: t1 + Duration::from_secs(10)
        },
        "for twice as long"
    );
    let t2 = t1 + Duration::from_secs(10);
    assert!(h.try_probe(t2));
    h.on_success();
    assert!(h.is_selectable(t2), "a good probe brings it back");
    assert!(!h.on_failure(t2, Failure::Reset, &policy), "and the count starts over");
}

#[test]
fn ejections_are_capped() {
    let policy = HealthPolicy {
        failures_to_eject: 1,
        ejection: Duration::from_secs(10),
        max_ejection: Duration::from_secs(25),
    };
    let mut h = Health::default();
    let mut now = Instant::now();
    let mut lengths = Vec::new();
    for _ in 0..4 {
        assert!(h.on_failure(now, Failure::Connect, &policy));
        let HealthState::Ejected { until } = h.state(now) else {
            panic!("ejected")
        };
        lengths.push((until - now).as_secs());
        now = until;
        assert!(h.try_probe(now));
    }
    assert_eq!(lengths, vec![10, 20, 25, 25]);
}

#[test]
fn ewma_follows_samples_and_forgets_with_time() {
    let t0 = Instant::now();
    let mut e = Ewma::new(Duration::from_secs(10));
    assert_eq!(e.get(), None);
    e.observe(Duration::from_millis(100), t0);
    assert_eq!(e.get(), Some(Duration::from_millis(100)));
    e.observe(Duration::from_millis(300), t0 + Duration::from_secs(10));
    let v = e.get().unwrap().as_secs_f64();
    assert!((v - 0.2).abs() < 1e-9, "one half-life later, half and half: {v}");
    e.observe(Duration::from_millis(300), t0 + Duration::from_secs(10));
    assert!(
        e.get().unwrap().as_secs_f64() > v,
        "a sample at the same instant still counts"
    );
    e.observe(Duration::from_millis(1000), t0 + Duration::from_secs(1000));
    assert!(
        (e.get().unwrap().as_secs_f64() - 1.0).abs() < 1e-6,
        "old history is forgotten"
    );
}
