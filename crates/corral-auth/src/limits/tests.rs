//! Limits: validation, periods, durations and the counters, on a fixed clock.

use serde_json::json;

use super::*;

/// 2026-12-02 (a Wednesday) 10:30:15 UTC.
const NOW: i64 = 1_796_207_415_000;

fn subject(id: &str) -> Subject {
    (Scope::Key, id.to_owned())
}

fn limits(value: serde_json::Value) -> Limits {
    Limits::from_json(&value).unwrap()
}

fn field_of(value: serde_json::Value) -> String {
    Limits::from_json(&value).unwrap_err().field
}

#[test]
fn the_clock_in_these_tests_is_what_it_says() {
    let t = DateTime::<Utc>::from_timestamp_millis(NOW).unwrap();
    assert_eq!(t.to_rfc3339(), "2026-12-02T10:30:15+00:00");
    assert_eq!(t.weekday(), chrono::Weekday::Wed);
}

#[test]
fn limits_read_and_write_back_the_same() {
    let value = json!({
        "requests_per_minute": 60,
        "tokens_per_minute": 10000,
        "concurrent_requests": 2,
        "budget": {"tokens": 1_000_000, "period": "month", "reset": "rolling", "models": ["llama3.2"]},
    });
    let read = limits(value.clone());
    assert_eq!(read.to_json(), value);
    assert_eq!(Limits::from_json(&read.to_json()).unwrap(), read);
    assert!(limits(json!({})).is_empty());
    assert!(limits(json!({"requests_per_minute": null, "budget": null})).is_empty());
    // The calendar is the default reset.
    assert_eq!(
        limits(json!({"budget": {"tokens": 5, "period": "day"}}))
            .budget
            .unwrap()
            .reset,
        Reset::Calendar
    );
}

#[test]
fn bad_limits_name_their_field() {
    assert_eq!(field_of(json!({"requests_per_minute": -1})), "requests_per_minute");
    assert_eq!(field_of(json!({"tokens_per_minute": 1.5})), "tokens_per_minute");
    assert_eq!(field_of(json!({"tokens_per_minute": "many"})), "tokens_per_minute");
    assert_eq!(field_of(json!({"requests_per_minute": 1e300})), "requests_per_minute");
    assert_eq!(
        field_of(json!({"requests_per_minute": MAX_REQUESTS + 1})),
        "requests_per_minute"
    );
    assert_eq!(field_of(json!({"concurrent_requests": 0})), "concurrent_requests");
    assert_eq!(
        field_of(json!({"budget": {"tokens": 1, "period": "fortnight"}})),
        "budget.period"
    );
    assert_eq!(field_of(json!({"budget": {"tokens": 1}})), "budget.period");
    assert_eq!(field_of(json!({"budget": {"period": "day"}})), "budget.tokens");
    assert_eq!(
        field_of(json!({"budget": {"tokens": -5, "period": "day"}})),
        "budget.tokens"
    );
    assert_eq!(
        field_of(json!({"budget": {"tokens": 1, "period": "day", "reset": "sometimes"}})),
        "budget.reset"
    );
    assert_eq!(
        field_of(json!({"budget": {"tokens": 1, "period": "day", "models": [""]}})),
        "budget.models[0]"
    );
    assert_eq!(
        field_of(json!({"budget": {"tokens": 1, "period": "day", "extra": 1}})),
        "budget.extra"
    );
    assert_eq!(field_of(json!({"rpm": 5})), "rpm");
    assert_eq!(field_of(json!([1])), "body");
    let err = Limits::from_json(&json!({"budget": {"tokens": 1, "period": "fortnight"}})).unwrap_err();
    assert!(err.to_string().contains("fortnight"), "{err}");
}

#[test]
fn calendar_periods_start_at_midnight_monday_and_the_first() {
    let day = Budget {
        tokens: 1,
        period: Period::Day,
        reset: Reset::Calendar,
        models: vec![],
    };
    let date = |ms| DateTime::<Utc>::from_timestamp_millis(ms).unwrap().to_rfc3339();
    assert_eq!(date(day.start_ms(NOW)), "2026-12-02T00:00:00+00:00");
    assert_eq!(date(NOW + day.reset_in_ms(NOW)), "2026-12-03T00:00:00+00:00");
    let week = Budget {
        period: Period::Week,
        ..day.clone()
    };
    assert_eq!(date(week.start_ms(NOW)), "2026-11-30T00:00:00+00:00");
    assert_eq!(date(NOW + week.reset_in_ms(NOW)), "2026-12-07T00:00:00+00:00");
    let month = Budget {
        period: Period::Month,
        ..day.clone()
    };
    assert_eq!(date(month.start_ms(NOW)), "2026-12-01T00:00:00+00:00");
    // December rolls over into the next year.
    assert_eq!(date(NOW + month.reset_in_ms(NOW)), "2027-01-01T00:00:00+00:00");
    assert_eq!(month.first_bucket(NOW), hour_bucket(month.start_ms(NOW)));
    // A rolling day counts the 23 whole hours before this one and this one.
    let rolling = Budget {
        reset: Reset::Rolling,
        ..day
    };
    assert_eq!(rolling.first_bucket(NOW), hour_bucket(NOW) - 23);
    assert_eq!(rolling.reset_in_ms(NOW), 29 * MINUTE_MS + 45_000);
}

#[test]
fn durations_read_as_go_prints_them() {
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(12), "12ms");
    assert_eq!(go_duration(1000), "1s");
    assert_eq!(go_duration(1500), "1.5s");
    assert_eq!(go_duration(6 * MINUTE_MS), "6m0s");
    assert_eq!(go_duration(7 * MINUTE_MS + 12_000), "7m12s");
    assert_eq!(go_duration(HOUR_MS + 61_250), "1h1m1.25s");
    assert_eq!(go_duration(1050), "1.05s");
    assert_eq!(go_duration(2001), "2.001s");
    assert_eq!(go_duration(HOUR_MS), "1h0m0s");
    assert_eq!(go_duration(-5), "0s");
    assert_eq!(go_duration(59_999), "59.999s");
    assert_eq!(go_duration(60_010), "1m0.01s");
    assert_eq!(go_duration(999), "999ms");
    assert_eq!(go_duration(i64::MAX), "2562047788015h12m55.807s");
}

/// Go's own rule, written plainly: hours and minutes only when there are any, seconds with
/// their fraction's significant digits, under a second in milliseconds.
fn go_duration_plainly(ms: i64) -> String {
    let ms = ms.max(0);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s, frac) = (ms / HOUR_MS, ms % HOUR_MS / MINUTE_MS, ms % MINUTE_MS / 1000, ms % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&s.to_string());
    if frac > 0 {
        out.push_str(format!(".{frac:03}").trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[test]
fn every_duration_reads_as_go_prints_it() {
    let some = (0..200_000)
        .chain((0..40).map(|i| HOUR_MS * i + 59 * MINUTE_MS + 59_999))
        .chain([i64::MAX, i64::MAX - 999, 99 * HOUR_MS, 100 * HOUR_MS + 1]);
    for ms in some {
        assert_eq!(go_duration(ms), go_duration_plainly(ms), "{ms} ms");
    }
}

#[test]
fn requests_per_minute_refuse_the_one_over_and_pass_again_next_minute() {
    let mut counters = Counters::default();
    let l = limits(json!({"requests_per_minute": 3}));
    let applicable = [(subject("k"), &l)];
    for i in 0..3 {
        let head = counters.admit(&applicable, ("m", "m:latest"), NOW).unwrap();
        assert_eq!(head.requests.unwrap().remaining, 2 - i);
        counters.release(&[subject("k")]);
    }
    let denied = counters.admit(&applicable, ("m", "m:latest"), NOW).unwrap_err();
    assert_eq!(denied.reason, Refused::Requests);
    assert_eq!((denied.limit, denied.used), (3, 3));
    assert_eq!(denied.retry_in_ms, 45_000);
    assert_eq!(
        denied.headroom.requests,
        Some(Allowance {
            limit: 3,
            remaining: 0,
            reset_ms: 45_000
        })
    );
    // The next minute is a new window.
    let next = NOW + denied.retry_in_ms;
    assert!(counters.admit(&applicable, ("m", "m:latest"), next).is_ok());
}

#[test]
fn tokens_are_charged_when_a_request_ends_and_refuse_once_spent() {
    let mut counters = Counters::default();
    let l = limits(json!({"tokens_per_minute": 100}));
    let applicable = [(subject("k"), &l)];
    counters.admit(&applicable, ("m", "m"), NOW).unwrap();
    // A request admitted with tokens left may end over the limit.
    counters.charge(&applicable, ("m", "m"), 150, NOW);
    counters.release(&[subject("k")]);
    let denied = counters.check(&applicable, ("m", "m"), NOW).unwrap();
    assert_eq!(denied.reason, Refused::Tokens);
    assert_eq!(denied.headroom.tokens.unwrap().remaining, 0);
    assert!(counters.check(&applicable, ("m", "m"), NOW + MINUTE_MS).is_none());
}

/// Finishing a request counts what a charge and a release count, for every subject and
/// every kind of count, a budget's kept sum included.
#[test]
fn finishing_is_a_charge_and_a_release() {
    let key = limits(json!({"tokens_per_minute": 1000, "concurrent_requests": 5,
        "budget": {"tokens": 10_000, "period": "month"}}));
    let group = limits(json!({"budget": {"tokens": 10_000, "period": "day", "models": ["other"]}}));
    let applicable = [(subject("k"), &key), ((Scope::Group, "g".to_owned()), &group)];
    let (mut apart, mut together) = (Counters::default(), Counters::default());
    for counters in [&mut apart, &mut together] {
        for _ in 0..3 {
            counters.admit(&applicable, ("m", "m"), NOW).unwrap();
        }
    }
    for (tokens, at) in [(120, NOW), (0, NOW + 1), (7, NOW + HOUR_MS)] {
        apart.charge(&applicable, ("m", "m"), tokens, at);
        apart.release(applicable.iter().map(|(s, _)| s));
        together.finish(&applicable, ("m", "m"), tokens, at);
        let at = at + 1;
        assert_eq!(
            apart.headroom(&applicable, ("m", "m"), at),
            together.headroom(&applicable, ("m", "m"), at)
        );
        for (subject, _) in &applicable {
            assert_eq!(apart.in_flight(subject), together.in_flight(subject));
        }
        assert_eq!(apart.pending(), together.pending());
    }
    assert_eq!(together.in_flight(&subject("k")), 0);
    assert_eq!(
        together.budget_used(&subject("k"), key.budget.as_ref().unwrap(), NOW + HOUR_MS),
        127
    );
}

#[test]
fn concurrency_counts_requests_until_they_are_released() {
    let mut counters = Counters::default();
    let l = limits(json!({"concurrent_requests": 2}));
    let applicable = [(subject("k"), &l)];
    counters.admit(&applicable, ("m", "m"), NOW).unwrap();
    counters.admit(&applicable, ("m", "m"), NOW).unwrap();
    let denied = counters.admit(&applicable, ("m", "m"), NOW).unwrap_err();
    assert_eq!(denied.reason, Refused::Concurrency);
    assert_eq!(denied.retry_in_ms, 1000);
    counters.release(&[subject("k")]);
    assert!(counters.admit(&applicable, ("m", "m"), NOW).is_ok());
}

#[test]
fn a_budget_counts_its_models_only_and_resets_with_its_period() {
    let mut counters = Counters::default();
    let l = limits(json!({"budget": {"tokens": 1000, "period": "day", "models": ["llama3.2"]}}));
    let applicable = [(subject("k"), &l)];
    counters.charge(&applicable, ("llama3.2:latest", "llama3.2:latest"), 600, NOW);
    counters.charge(&applicable, ("other", "other:latest"), 5000, NOW);
    assert!(counters
        .check(&applicable, ("llama3.2", "llama3.2:latest"), NOW)
        .is_none());
    counters.charge(&applicable, ("llama3.2", "llama3.2:latest"), 400, NOW + HOUR_MS);
    let denied = counters
        .check(&applicable, ("llama3.2", "llama3.2:latest"), NOW + HOUR_MS)
        .unwrap();
    assert_eq!(denied.reason, Refused::Budget);
    assert_eq!(denied.used, 1000);
    // Another model is not held back by it.
    assert!(counters
        .check(&applicable, ("other", "other:latest"), NOW + HOUR_MS)
        .is_none());
    // Tomorrow is a new day.
    let tomorrow = NOW + 14 * HOUR_MS;
    assert!(counters
        .check(&applicable, ("llama3.2", "llama3.2:latest"), tomorrow)
        .is_none());
}

#[test]
fn a_rolling_budget_lets_the_oldest_hour_go() {
    let mut counters = Counters::default();
    let l = limits(json!({"budget": {"tokens": 100, "period": "day", "reset": "rolling"}}));
    let applicable = [(subject("k"), &l)];
    counters.charge(&applicable, ("m", "m"), 100, NOW);
    assert!(counters.check(&applicable, ("m", "m"), NOW + 23 * HOUR_MS).is_some());
    assert!(counters.check(&applicable, ("m", "m"), NOW + 24 * HOUR_MS).is_none());
}

#[test]
fn every_subject_counts_and_the_tightest_is_reported() {
    let mut counters = Counters::default();
    let key = limits(json!({"requests_per_minute": 10}));
    let group = limits(json!({"requests_per_minute": 2}));
    let applicable = [(subject("k"), &key), ((Scope::Group, "g".to_owned()), &group)];
    let head = counters.admit(&applicable, ("m", "m"), NOW).unwrap();
    assert_eq!(head.requests.unwrap().limit, 2);
    counters.admit(&applicable, ("m", "m"), NOW).unwrap();
    let denied = counters.admit(&applicable, ("m", "m"), NOW).unwrap_err();
    assert_eq!(denied.subject, (Scope::Group, "g".to_owned()));
    // A refused request counted nothing.
    assert_eq!(counters.cell(&subject("k"), Metric::Requests, minute_bucket(NOW)), 2);
}

#[test]
fn other_replicas_counts_add_to_the_local_ones() {
    let mut a = Counters::default();
    let mut b = Counters::default();
    let l = limits(json!({"requests_per_minute": 4}));
    let applicable = [(subject("k"), &l)];
    a.admit(&applicable, ("m", "m"), NOW).unwrap();
    a.admit(&applicable, ("m", "m"), NOW).unwrap();
    b.admit(&applicable, ("m", "m"), NOW).unwrap();
    // A sync: each writes its own rows and reads the other's back.
    let rows_a = a.pending();
    let rows_b = b.pending();
    assert!(
        a.pending().iter().all(|(k, _)| k.metric == Metric::InFlight),
        "written rows are clean"
    );
    a.set_others(rows_b.iter().cloned(), i64::MIN);
    b.set_others(rows_a.iter().cloned(), i64::MIN);
    a.admit(&applicable, ("m", "m"), NOW).unwrap();
    assert_eq!(
        a.admit(&applicable, ("m", "m"), NOW).unwrap_err().reason,
        Refused::Requests
    );
    assert_eq!(b.check(&applicable, ("m", "m"), NOW), None);
    // Rows that could not be written are written next time.
    let rows = a.pending();
    a.unwritten(&rows);
    assert_eq!(a.pending(), rows);
}

/// A read back of the last budget hours only replaces those: the closed hours keep what the
/// last whole read said, until the next whole read replaces them too.
#[test]
fn a_read_back_of_the_last_hours_keeps_the_older_ones() {
    let l = limits(json!({"budget": {"tokens": 1000, "period": "month"}}));
    let budget = l.budget.clone().unwrap();
    let applicable = [(subject("k"), &l)];
    let hour = hour_bucket(NOW);
    let row = |metric, bucket, value| {
        (
            CounterKey {
                subject: subject("k"),
                metric,
                bucket,
            },
            value,
        )
    };
    let mut counters = Counters::default();
    counters.charge(&applicable, ("m", "m"), 5, NOW);
    let minute = minute_bucket(NOW);
    counters.set_others(
        [
            row(Metric::Budget, hour - 5, 100),
            row(Metric::Budget, hour, 10),
            row(Metric::Requests, minute, 3),
        ],
        i64::MIN,
    );
    assert_eq!(counters.budget_used(&subject("k"), &budget, NOW), 115);
    // The last two hours read again: the current one grew, the requests window has none now.
    counters.set_others([row(Metric::Budget, hour, 20)], hour - 1);
    assert_eq!(counters.budget_used(&subject("k"), &budget, NOW), 125);
    assert_eq!(
        counters
            .headroom(&applicable, ("m", "m"), NOW)
            .tokens
            .unwrap()
            .remaining,
        875
    );
    assert_eq!(counters.cell(&subject("k"), Metric::Requests, minute), 0);
    // A whole read that names no old hour: it has nothing from the others any more.
    counters.set_others([row(Metric::Budget, hour, 20)], i64::MIN);
    assert_eq!(counters.budget_used(&subject("k"), &budget, NOW), 25);
}

#[test]
fn pruning_keeps_what_limits_still_read() {
    let mut counters = Counters::default();
    let l = limits(json!({"requests_per_minute": 4, "budget": {"tokens": 10, "period": "month"}}));
    let applicable = [(subject("k"), &l)];
    counters.admit(&applicable, ("m", "m"), NOW).unwrap();
    counters.charge(&applicable, ("m", "m"), 7, NOW);
    counters.release(&[subject("k")]);
    let _ = counters.pending();
    counters.prune(NOW + 3 * MINUTE_MS);
    let cells = &counters.subjects[&subject("k")].cells;
    assert_eq!(cells.keys().map(|(m, _)| *m).collect::<Vec<_>>(), vec![Metric::Budget]);
    counters.prune(NOW + 40 * 24 * HOUR_MS);
    assert!(counters.subjects.is_empty());
}

/// A budget's use is kept between requests rather than summed over its hours each time: it
/// must stay what summing them says through charges, hours and periods turning, other
/// replicas' counts replaced, and old windows pruned.
#[test]
fn a_budget_kept_between_requests_is_its_hours_summed() {
    let key = subject("k");
    for reset in ["rolling", "calendar"] {
        let l = limits(json!({"budget": {"tokens": 1_000_000_000u64, "period": "week", "reset": reset}}));
        let budget = l.budget.clone().unwrap();
        let applicable = [(key.clone(), l)];
        let mut counters = Counters::default();
        let mut now = NOW - 20 * 24 * HOUR_MS;
        for step in 0..3000u64 {
            counters.charge(&applicable, ("m", "m"), 7 + step % 5, now);
            if step % 97 == 0 {
                let bucket = hour_bucket(now) - (step % 7) as i64;
                counters.set_others(
                    [(
                        CounterKey {
                            subject: key.clone(),
                            metric: Metric::Budget,
                            bucket,
                        },
                        step % 13,
                    )],
                    if step % 2 == 0 { i64::MIN } else { hour_bucket(now) - 1 },
                );
            }
            if step % 301 == 0 {
                counters.prune(now);
            }
            let kept = counters.headroom(&applicable, ("m", "m"), now).tokens.unwrap();
            let summed = counters.budget_used(&key, &budget, now);
            assert_eq!(kept.limit - kept.remaining, summed, "{reset} budget, step {step}");
            now += 17 * 60 * 1000;
        }
    }
}
