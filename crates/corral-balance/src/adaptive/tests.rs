//! Deterministic tests of the adaptive limit on constructed latencies: an instance that runs
//! `capacity` requests at once answers the first token in 20 ms, and one beyond its capacity
//! waits for a generation (800 ms) first, as Ollama's runner semaphore makes it wait.

use std::time::{Duration, Instant};

use super::{AdaptiveLimit, AdaptiveParams, Verdict};

const FLAT: Duration = Duration::from_millis(20);
const QUEUED: Duration = Duration::from_millis(820);

/// One round of saturated traffic: `limit` requests sent at concurrency 1..=limit, each
/// answered as an instance with `capacity` slots would. Returns the limit after the round.
fn round(l: &mut AdaptiveLimit, capacity: usize, now: Instant) -> usize {
    let n = l.limit();
    for c in 1..=n {
        let ttft = if c <= capacity { FLAT } else { QUEUED };
        l.on_sample(ttft, c, now);
    }
    l.limit()
}

/// Runs `rounds` rounds a second apart and returns the limits seen.
fn run(l: &mut AdaptiveLimit, capacity: usize, start: Instant, rounds: u64) -> Vec<usize> {
    (0..rounds)
        .map(|i| round(l, capacity, start + Duration::from_secs(i)))
        .collect()
}

#[test]
fn the_limit_grows_while_time_to_first_token_stays_flat_and_settles_on_the_capacity() {
    let t0 = Instant::now();
    for capacity in [1, 2, 4, 8] {
        let mut l = AdaptiveLimit::default();
        assert_eq!(l.limit(), 1, "starts at Ollama's default of one");
        let seen = run(&mut l, capacity, t0, 300);
        let first = seen.iter().position(|&x| x == capacity).unwrap_or(usize::MAX);
        assert!(
            first <= capacity,
            "capacity {capacity} reached after {first} rounds: {seen:?}"
        );
        let settled = &seen[capacity + 2..];
        assert!(
            settled.iter().all(|&x| x == capacity || x == capacity + 1),
            "capacity {capacity}: never below it once learned, at most one probe above: {seen:?}"
        );
        let probes = settled.iter().filter(|&&x| x > capacity).count();
        assert!(
            probes * 20 <= settled.len(),
            "capacity {capacity}: probes above it are rare ({probes} of {} rounds)",
            settled.len()
        );
    }
}

#[test]
fn a_quiet_model_does_not_creep_up() {
    let t0 = Instant::now();
    let mut l = AdaptiveLimit::default();
    // One request at a time, always flat: the limit was reached once at 1, never at 2.
    for i in 0..100 {
        l.on_sample(FLAT, 1, t0 + Duration::from_secs(i));
    }
    assert_eq!(l.limit(), 2);
}

#[test]
fn a_probe_that_holds_lifts_the_ceiling_when_the_instance_gets_more_slots() {
    let t0 = Instant::now();
    let mut l = AdaptiveLimit::default();
    let before = run(&mut l, 2, t0, 200);
    assert_eq!(*before.last().unwrap(), 2, "{before:?}");
    // The operator raised OLLAMA_NUM_PARALLEL: the next probe holds and growth resumes.
    let after = run(&mut l, 6, t0 + Duration::from_secs(200), 100);
    let reached = after.iter().position(|&x| x == 6).expect("learned the new capacity");
    assert!(reached <= 70, "after {reached} rounds: {after:?}");
}

#[test]
fn fewer_slots_at_the_instance_bring_the_limit_down_at_once() {
    let t0 = Instant::now();
    let mut l = AdaptiveLimit::default();
    run(&mut l, 8, t0, 50);
    assert!(l.limit() >= 8);
    // Memory ran short: the instance now runs two at once.
    let seen = run(&mut l, 2, t0 + Duration::from_secs(50), 3);
    assert_eq!(seen[0], 2, "one window of queued samples is enough: {seen:?}");
}

#[test]
fn latency_growing_for_every_request_shrinks_the_limit_by_the_gradient() {
    let t0 = Instant::now();
    let mut l = AdaptiveLimit::default();
    run(&mut l, 8, t0, 50);
    let before = l.limit();
    // Everything got three times slower (another model shares the GPU).
    let now = t0 + Duration::from_secs(60);
    let mut verdict = Verdict::Pending;
    for c in 1..=before {
        verdict = l.on_sample(Duration::from_millis(120), c, now);
    }
    assert_eq!(verdict, Verdict::Slower);
    assert_eq!(l.limit(), before / 2, "the gradient is clamped at one half");
}

#[test]
fn a_slower_instance_is_re_measured_and_grows_again() {
    let t0 = Instant::now();
    let mut l = AdaptiveLimit::default();
    run(&mut l, 4, t0, 30);
    // From now on the first token takes 400 ms with no queueing at all (a longer context).
    let slow = |c: usize| {
        if c <= 4 {
            Duration::from_millis(400)
        } else {
            Duration::from_millis(1600)
        }
    };
    let mut limits = Vec::new();
    for i in 0..200u64 {
        let now = t0 + Duration::from_secs(30 + i);
        for c in 1..=l.limit() {
            l.on_sample(slow(c), c, now);
        }
        limits.push(l.limit());
    }
    assert_eq!(limits[0], 2, "at first it looks like queueing: {limits:?}");
    assert_eq!(
        *limits.last().unwrap(),
        4,
        "once the floor is measured again: {limits:?}"
    );
    assert_eq!(l.floor(), Some(Duration::from_millis(400)));
}

#[test]
fn a_busy_answer_halves_the_limit_and_it_does_not_jump_back() {
    let t0 = Instant::now();
    let mut l = AdaptiveLimit::default();
    run(&mut l, 8, t0, 50);
    assert_eq!(l.limit(), 8);
    l.on_busy(8);
    assert_eq!(l.limit(), 4);
    // Flat windows at 4 grow it to 7, then wait before probing 8 again.
    let seen = run(&mut l, 8, t0 + Duration::from_secs(60), 8);
    assert_eq!(&seen[..4], &[5, 6, 7, 7], "{seen:?}");
    l.on_busy(1);
    l.on_busy(1);
    l.on_busy(1);
    assert_eq!(l.limit(), 1, "never below the minimum");
}

#[test]
fn limits_stay_within_their_bounds_and_odd_params_are_tamed() {
    let t0 = Instant::now();
    let mut l = AdaptiveLimit::new(AdaptiveParams {
        initial: 0,
        min: 0,
        max: 3,
        probe_wait: 0,
        ..AdaptiveParams::default()
    });
    assert_eq!(l.limit(), 1);
    run(&mut l, 100, t0, 20);
    assert_eq!(l.limit(), 3, "capped at max");
    // Samples claiming concurrency 0 count as 1; a zero latency is a sample like any other.
    assert_eq!(l.on_sample(Duration::ZERO, 0, t0), Verdict::Pending);
}

#[test]
fn a_first_sample_that_waited_for_a_load_does_not_set_the_floor() {
    let t0 = Instant::now();
    let mut l = AdaptiveLimit::default();
    // The model was being loaded: the first token took a second.
    assert_eq!(l.on_sample(Duration::from_secs(1), 1, t0), Verdict::Held);
    assert_eq!(l.limit(), 1, "one sample is not a floor to grow on");
    assert_eq!(l.on_sample(FLAT, 1, t0), Verdict::Grew);
    assert_eq!(l.floor(), Some(FLAT));
    // With the real floor, a request queued behind another at a 1-slot instance shows.
    l.on_sample(FLAT, 1, t0);
    assert_eq!(l.on_sample(QUEUED, 2, t0), Verdict::Queued);
    assert_eq!(l.limit(), 1);
}
