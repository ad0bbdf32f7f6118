//! Health transitions with constructed times: eject after N failures, nothing selected
//! while ejected, one half-open probe, recovery, re-ejection with backoff.

use std::time::{Duration, Instant};

use crate::{Failure, Health, HealthPolicy, HealthState};

fn policy() -> HealthPolicy {
    HealthPolicy {
        failures_to_eject: 3,
        ejection: Duration::from_secs(5),
        max_ejection: Duration::from_secs(30),
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A health ejected once at `t0` (three failures), with the time it returns.
fn ejected(t0: Instant) -> (Health, Instant) {
    let mut h = Health::default();
    for _ in 0..3 {
        h.on_failure(t0, Failure::Status(503), &policy());
    }
    (h, t0 + secs(5))
}

#[test]
fn health_ejects_after_consecutive_failures_and_returns_through_one_probe() {
    let policy = policy();
    let t0 = Instant::now();
    let mut h = Health::default();
    assert!(h.is_selectable(t0));
    assert!(!h.on_failure(t0, Failure::Connect, &policy));
    h.on_success();
    assert_eq!((h.consecutive_failures(), h.consecutive_successes()), (0, 1));
    assert!(!h.on_failure(t0, Failure::Status(503), &policy));
    assert!(
        !h.on_failure(t0, Failure::Status(503), &policy),
        "a success in between resets the count"
    );
    assert!(h.is_selectable(t0), "two failures are not enough");
    assert!(
        h.on_failure(t0, Failure::Status(503), &policy),
        "three fast 5xx answers in a row eject"
    );
    assert_eq!(h.consecutive_failures(), 3);
    for t in [t0, t0 + secs(4)] {
        assert!(!h.is_selectable(t), "no selection while ejected");
        assert!(!h.should_probe(t));
        assert!(!h.try_probe(t));
    }
    assert!(
        !h.on_failure(t0 + secs(1), Failure::Reset, &policy),
        "failures while ejected do not extend it"
    );
    let t1 = t0 + secs(5);
    assert!(h.should_probe(t1), "half-open after the ejection time");
    assert!(h.should_probe(t1), "looking does not take the probe");
    assert!(h.try_probe(t1));
    assert!(!h.try_probe(t1), "exactly one probe");
    assert!(!h.should_probe(t1));
    assert!(!h.is_selectable(t1), "half-open takes no ordinary traffic");
    assert!(
        h.on_failure(t1, Failure::Timeout, &policy),
        "a failed probe ejects again"
    );
    assert_eq!(
        h.state(t1 + secs(9)),
        HealthState::Ejected { until: t1 + secs(10) },
        "for twice as long"
    );
    let t2 = t1 + secs(10);
    assert!(h.try_probe(t2));
    assert!(h.on_success_at(t2, 1), "a good probe brings it back");
    assert!(h.is_selectable(t2));
    assert!(!h.on_failure(t2, Failure::Reset, &policy), "and the count starts over");
    assert!(!h.on_failure(t2, Failure::Reset, &policy));
    assert!(h.on_failure(t2, Failure::Reset, &policy));
    assert_eq!(
        h.state(t2),
        HealthState::Ejected { until: t2 + secs(5) },
        "after a recovery the backoff starts over too"
    );
}

#[test]
fn ejections_back_off_up_to_the_cap() {
    let policy = HealthPolicy {
        failures_to_eject: 1,
        ejection: secs(10),
        max_ejection: secs(25),
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
    let times: Vec<u64> = [0, 1, 2, 3, 40]
        .iter()
        .map(|&n| policy.ejection_time(n).as_secs())
        .collect();
    assert_eq!(times, vec![10, 20, 25, 25, 25], "no overflow for long streaks");
    assert_eq!(HealthPolicy::default().failures_to_eject, 3);
}

#[test]
fn a_success_does_not_cut_an_ejection_short() {
    let t0 = Instant::now();
    let (mut h, back) = ejected(t0);
    h.on_success();
    assert!(
        !h.on_success_at(t0 + secs(1), 1),
        "a request that was already in flight answered"
    );
    assert!(!h.is_selectable(t0 + secs(2)), "still ejected");
    assert_eq!(h.consecutive_failures(), 0, "but the streak of failures is over");
    assert!(
        h.on_success_at(back, 1),
        "after the ejection time a success counts as the probe's"
    );
    assert!(h.is_selectable(back));
}

#[test]
fn recovery_can_require_several_good_probes() {
    let t0 = Instant::now();
    let (mut h, back) = ejected(t0);
    assert!(h.try_probe(back));
    assert!(!h.on_success_at(back, 2), "one of two");
    assert_eq!(h.state(back), HealthState::HalfOpen { probing: false });
    assert!(h.try_probe(back), "the next probe is handed out");
    assert!(!h.try_probe(back));
    assert!(h.on_success_at(back + secs(1), 2));
    assert!(h.is_selectable(back + secs(1)));

    let (mut h, back) = ejected(t0);
    assert!(h.try_probe(back));
    assert!(!h.on_success_at(back, 3));
    assert!(h.try_probe(back));
    assert!(
        h.on_failure(back, Failure::Status(500), &policy()),
        "a failure in between"
    );
    let again = back + secs(10);
    assert!(h.try_probe(again));
    assert!(!h.on_success_at(again, 3), "the count of good probes started over");
    assert_eq!(h.consecutive_successes(), 1);
}

#[test]
fn a_lost_probe_is_handed_out_again() {
    let t0 = Instant::now();
    let (mut h, back) = ejected(t0);
    assert!(h.try_probe(back));
    assert!(!h.try_probe(back + secs(4)), "still waiting for the probe's outcome");
    assert!(
        h.try_probe(back + secs(5)),
        "unanswered for as long as the ejection lasted: presumed lost"
    );
    assert!(!h.try_probe(back + secs(6)));
    let zero = HealthPolicy {
        ejection: Duration::ZERO,
        ..policy()
    };
    let mut h = Health::default();
    for _ in 0..3 {
        h.on_failure(t0, Failure::Connect, &zero);
    }
    assert!(h.try_probe(t0), "a zero ejection is half-open at once");
    assert!(
        !h.try_probe(t0 + Duration::from_millis(999)),
        "but a probe is given at least a second"
    );
    assert!(h.try_probe(t0 + secs(1)));
}

#[test]
fn failures_are_classified_from_answers() {
    for (status, want) in [
        (200, None),
        (404, None),
        (429, None),
        (499, None),
        (500, Some(Failure::Status(500))),
        (503, Some(Failure::Status(503))),
        (599, Some(Failure::Status(599))),
        (600, None),
    ] {
        assert_eq!(Failure::from_status(status), want, "{status}");
    }
    let kinds: Vec<&str> = [
        Failure::Connect,
        Failure::Reset,
        Failure::Timeout,
        Failure::Status(503),
        Failure::Status(500),
    ]
    .iter()
    .map(Failure::kind)
    .collect();
    assert_eq!(kinds, ["connect", "reset", "timeout", "busy", "server_error"]);
}
