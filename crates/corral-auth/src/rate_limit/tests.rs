//! Tests for the sliding-window limiters.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::*;

/// A time `secs` seconds after a bucket boundary (1,700,000,040 is a multiple of 60).
fn at(secs: f64) -> DateTime<Utc> {
    let ms = 1_700_000_040_000 + (secs * 1000.0).round() as i64;
    Utc.timestamp_millis_opt(ms).unwrap()
}

fn limiter() -> RateLimiter<&'static str> {
    RateLimiter::new(RateLimitPolicy::default())
}

#[test]
fn the_sixteenth_attempt_in_the_window_is_refused() {
    let mut l = limiter();
    for i in 0..15 {
        assert_eq!(l.check_and_record("a", at(f64::from(i))), Ok(()), "attempt {i}");
    }
    // All 15 are in the current bucket, so room returns when that bucket leaves the window: 4 buckets later.
    let err = l.check_and_record("a", at(20.0)).unwrap_err();
    assert_eq!(err, RetryAfter(Duration::from_secs(220)));
    assert_eq!(err.as_secs_ceil(), 220);
    // Other keys are independent.
    assert_eq!(l.check_and_record("b", at(20.0)), Ok(()));
}

#[test]
fn window_spans_the_current_and_three_previous_buckets() {
    let mut l = limiter();
    // Five attempts in each of three consecutive buckets: 15, all allowed.
    for bucket in 0..3 {
        for i in 0..5 {
            let t = f64::from(bucket * 60 + i);
            assert_eq!(l.check_and_record("a", at(t)), Ok(()));
        }
    }
    // Fourth bucket: the 16th attempt is refused. Room for one more appears when bucket 0 leaves the window,
    // at the start of bucket 4 (t = 240), 60 s after t = 180.
    let err = l.check_and_record("a", at(180.0)).unwrap_err();
    assert_eq!(err.0, Duration::from_secs(60));
    assert_eq!(l.attempts("a", at(180.0)), 16);
    // In bucket 4, bucket 0's five attempts have expired: 11 remain, and the attempt is allowed.
    assert_eq!(l.attempts("a", at(240.0)), 11);
    assert_eq!(l.check_and_record("a", at(240.5)), Ok(()));
}

#[test]
fn refused_attempts_still_count() {
    let mut l = limiter();
    for i in 0..15 {
        l.check_and_record("a", at(f64::from(i))).unwrap();
    }
    for i in 0..10 {
        assert!(l.check_and_record("a", at(60.0 + f64::from(i))).is_err());
    }
    // Bucket 0 (15) has left the window at t = 240, but bucket 1 holds 10 refused attempts: 10 < 15, so allowed.
    assert_eq!(l.check_and_record("a", at(240.0)), Ok(()));
    assert_eq!(l.attempts("a", at(240.0)), 11);
}

#[test]
fn retry_after_is_partial_when_the_bucket_has_started() {
    let mut l = limiter();
    for _ in 0..15 {
        l.check_and_record("a", at(30.0)).unwrap();
    }
    let err = l.check_and_record("a", at(59.5)).unwrap_err();
    assert_eq!(err.0, Duration::from_millis(180_500));
    assert_eq!(err.as_secs_ceil(), 181);
    assert_eq!(RetryAfter(Duration::ZERO).as_secs_ceil(), 1);
}

#[test]
fn old_keys_are_swept_and_memory_is_bounded() {
    let mut l = RateLimiter::new(RateLimitPolicy {
        max_keys: 3,
        ..RateLimitPolicy::default()
    });
    for key in ["a", "b", "c"] {
        l.check_and_record(key, at(0.0)).unwrap();
    }
    assert_eq!(l.len(), 3);
    // A fourth key while the other three are live evicts the stalest one, not the newcomer.
    l.check_and_record("b", at(65.0)).unwrap();
    l.check_and_record("c", at(65.0)).unwrap();
    assert_eq!(l.check_and_record("d", at(70.0)), Ok(()));
    assert_eq!(l.len(), 3);
    assert_eq!(l.attempts("a", at(70.0)), 0, "the stalest key went");
    assert_eq!(l.attempts("b", at(70.0)), 2);
    // Known keys still work.
    assert_eq!(l.check_and_record("b", at(70.0)), Ok(()));
    // After the window passes, a new bucket sweeps stale keys.
    assert_eq!(l.check_and_record("e", at(400.0)), Ok(()));
    assert_eq!(l.len(), 1);
    l.prune(at(1_000.0));
    assert!(l.is_empty());
}

#[test]
fn clock_stepping_back_forgets_future_buckets() {
    let mut l = limiter();
    for _ in 0..15 {
        l.check_and_record("a", at(600.0)).unwrap();
    }
    assert_eq!(l.check_and_record("a", at(0.0)), Ok(()));
    assert_eq!(l.attempts("a", at(0.0)), 1);
}

#[test]
fn tiny_and_zero_policies_do_not_panic() {
    let mut l = RateLimiter::new(RateLimitPolicy {
        max_attempts: 0,
        bucket: Duration::ZERO,
        buckets: 0,
        max_keys: 0,
    });
    assert!(l.check_and_record("a", at(0.0)).is_err());
    let mut l = RateLimiter::new(RateLimitPolicy {
        max_attempts: 0,
        max_keys: 10,
        ..RateLimitPolicy::default()
    });
    assert_eq!(
        l.check_and_record("a", at(0.0)),
        Err(RetryAfter(Duration::from_secs(240)))
    );
    let mut l = RateLimiter::new(RateLimitPolicy {
        bucket: Duration::MAX,
        ..RateLimitPolicy::default()
    });
    assert_eq!(l.check_and_record("a", at(0.0)), Ok(()));
    let far = Utc.timestamp_millis_opt(-8_000_000_000_000_000).unwrap();
    let mut l = limiter();
    assert_eq!(l.check_and_record("a", far), Ok(()));
}

#[test]
fn signin_limiter_counts_per_account_and_address() {
    let mut l = SigninLimiter::default();
    // The account key is case-insensitive.
    for i in 0..15 {
        let email = if i % 2 == 0 {
            "Ann@Example.com"
        } else {
            "ann@example.com"
        };
        assert_eq!(l.check_and_record(email, Some("10.0.0.1"), at(f64::from(i))), Ok(()));
    }
    // The 16th from that address is refused; the owner's own address is not locked out by it.
    assert!(l
        .check_and_record("ANN@example.com", Some("10.0.0.1"), at(20.0))
        .is_err());
    assert_eq!(
        l.check_and_record("ann@example.com", Some("10.0.0.2"), at(20.0)),
        Ok(())
    );
    assert_eq!(l.accounts().attempts("ann@example.com", at(20.0)), 17);
    // Spraying many accounts from one address hits the address limit.
    let mut l = SigninLimiter::default();
    let mut refused = 0;
    for i in 0..150 {
        if l.check_and_record(&format!("user{i}@x.y"), Some("10.0.0.9"), at(1.0))
            .is_err()
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 50);
    assert_eq!(l.addresses().attempts("10.0.0.9", at(1.0)), 150);
    // Without an address only the account is limited.
    assert_eq!(l.check_and_record("new@x.y", None, at(1.0)), Ok(()));
}

#[test]
fn strangers_slow_an_account_down_but_never_lock_its_owner_out() {
    let mut l = SigninLimiter::default();
    // A botnet: 200 addresses, 14 guesses each (under the pair limit), 2,800 in all.
    let mut admitted = 0;
    for bot in 0..200 {
        for _ in 0..14 {
            if l.check_and_record("boss@corp.example", Some(&format!("198.51.{bot}.1")), at(10.0))
                .is_ok()
            {
                admitted += 1;
            }
        }
    }
    // Past the ceiling of 100, each address gets only the slowed allowance.
    assert!(
        admitted <= 100 + 200 * super::SLOWED_ATTEMPTS,
        "{admitted} guesses admitted"
    );
    // The owner, from their own address, still gets in (with a typo first).
    assert_eq!(
        l.check_and_record("boss@corp.example", Some("203.0.113.7"), at(11.0)),
        Ok(())
    );
    assert_eq!(
        l.check_and_record("boss@corp.example", Some("203.0.113.7"), at(12.0)),
        Ok(())
    );
    // A bot that keeps going stays refused.
    assert!(l
        .check_and_record("boss@corp.example", Some("198.51.0.1"), at(12.0))
        .is_err());
}

#[test]
fn signin_limiter_returns_the_longer_wait() {
    let one_bucket = RateLimitPolicy {
        max_attempts: 1,
        buckets: 1,
        ..RateLimitPolicy::default()
    };
    let mut l = SigninLimiter::new(
        one_bucket,
        RateLimitPolicy {
            max_attempts: 1,
            ..RateLimitPolicy::default()
        },
    );
    l.check_and_record("a@b.c", Some("ip"), at(0.0)).unwrap();
    let err = l.check_and_record("a@b.c", Some("ip"), at(0.0)).unwrap_err();
    assert_eq!(err.0, Duration::from_secs(240));
}

proptest! {
    #[test]
    fn never_more_than_max_allowed_in_any_window(steps in proptest::collection::vec(0u32..90_000, 1..200)) {
        let mut l = limiter();
        let mut t = 0f64;
        let mut allowed: Vec<f64> = Vec::new();
        for step in steps {
            t += f64::from(step) / 1000.0;
            if l.check_and_record("k", at(t)).is_ok() {
                allowed.push(t);
            }
            // Allowed attempts within one window (the current bucket and the three before it) never exceed 15.
            let bucket = (t / 60.0).floor();
            let in_window = allowed.iter().filter(|&&a| (a / 60.0).floor() >= bucket - 3.0).count();
            prop_assert!(in_window <= 15);
        }
    }

    #[test]
    fn retry_after_is_honest(steps in proptest::collection::vec(0u32..20_000, 16..80)) {
        let mut l = limiter();
        let mut t = 0f64;
        for step in steps {
            t += f64::from(step) / 1000.0;
            if let Err(RetryAfter(wait)) = l.check_and_record("k", at(t)) {
                prop_assert!(wait <= Duration::from_secs(240));
                // Waiting exactly as long is enough for one attempt (a clone, so the run itself is unchanged).
                let mut probe = l.clone();
                prop_assert!(probe.check_and_record("k", at(t + wait.as_secs_f64())).is_ok());
            }
        }
    }
}
