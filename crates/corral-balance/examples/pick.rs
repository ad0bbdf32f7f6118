//! Using the balancer alone: describe the instances that hold a model, pick one with a
//! policy, and follow one instance's health through failures.
//!
//! Run with `cargo run -p corral-balance --example pick`.

#![allow(clippy::print_stdout)] // An example shows its results.

use std::time::{Duration, Instant};

use corral_balance::{Candidate, Failure, Health, HealthPolicy, PickContext, PolicyKind};

fn main() {
    // Three instances hold the model: 0 has it loaded but is busy, 1 has it loaded and a
    // free slot, 2 would have to load it.
    let candidates = [
        Candidate {
            idx: 0,
            slots: 1,
            in_flight_model: 1,
            in_flight: 1,
            loaded: true,
            loaded_count: 1,
            ..Candidate::default()
        },
        Candidate {
            idx: 1,
            slots: 2,
            in_flight_model: 1,
            in_flight: 1,
            loaded: true,
            loaded_count: 1,
            ..Candidate::default()
        },
        Candidate {
            idx: 2,
            slots: 1,
            ..Candidate::default()
        },
    ];
    let mut rng = rand::thread_rng();
    for (sequence, kind) in [
        PolicyKind::ModelAffinity,
        PolicyKind::LeastOutstanding,
        PolicyKind::RoundRobin,
    ]
    .into_iter()
    .enumerate()
    {
        let mut ctx = PickContext {
            rng: &mut rng,
            sequence: sequence as u64,
        };
        let chosen = kind.pick(&candidates, &mut ctx);
        println!("{:<18} picks instance {chosen:?}", kind.as_str());
    }

    // Health: three failures in a row eject an instance; after the ejection time one probe
    // decides whether it comes back.
    let policy = HealthPolicy {
        failures_to_eject: 3,
        ejection: Duration::from_secs(5),
        max_ejection: Duration::from_secs(120),
    };
    let mut health = Health::default();
    let start = Instant::now();
    for _ in 0..3 {
        health.on_failure(start, Failure::Connect, &policy);
    }
    println!("after 3 failures: {:?}", health.state(start));
    let later = start + Duration::from_secs(6);
    println!("6 s later, a probe may go: {}", health.try_probe(later));
    health.on_success();
    println!("the probe succeeded: {:?}", health.state(later));
}
