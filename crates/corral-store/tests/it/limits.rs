//! Limits per key, user and group, and the counters replicas share.

use corral_auth::limits::{CounterKey, Limits, Metric, Scope};
use corral_store::{Store, StoreError};
use serde_json::json;

use crate::support::{user, NOW};

fn limits(value: serde_json::Value) -> Limits {
    Limits::from_json(&value).unwrap()
}

fn put_get_delete_and_unknown_subjects(store: &Store) {
    let ada = user(store, "ada@example.com");
    let group = store.create_group("gpu", "", NOW).unwrap();
    let rev = store.revisions().unwrap().auth;
    let spec = limits(json!({"requests_per_minute": 60, "budget": {"tokens": 1000, "period": "week"}}));
    store.put_limits(Scope::User, &ada.id, &spec, NOW).unwrap();
    store.put_limits(Scope::Group, &group.id, &spec, NOW).unwrap();
    assert!(store.revisions().unwrap().auth > rev, "a change bumps auth");
    assert_eq!(store.get_limits(Scope::User, &ada.id).unwrap().unwrap().limits, spec);
    // Replacing keeps one row.
    let tighter = limits(json!({"concurrent_requests": 1}));
    store.put_limits(Scope::User, &ada.id, &tighter, NOW + 1).unwrap();
    assert_eq!(store.list_limits().unwrap().len(), 2);
    assert_eq!(store.get_limits(Scope::User, &ada.id).unwrap().unwrap().limits, tighter);
    // Unknown subjects: nothing saved.
    for scope in Scope::ALL {
        assert!(matches!(
            store.put_limits(scope, "missing", &spec, NOW),
            Err(StoreError::NotFound)
        ));
    }
    assert_eq!(store.list_limits().unwrap().len(), 2);
    store.delete_limits(Scope::User, &ada.id).unwrap();
    assert!(matches!(
        store.delete_limits(Scope::User, &ada.id),
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get_limits(Scope::User, &ada.id).unwrap(), None);
}

fn replicas_read_each_others_counts(store: &Store) {
    let key = |metric, bucket| CounterKey {
        subject: (Scope::Key, "k".to_owned()),
        metric,
        bucket,
    };
    let horizon = (100, 10);
    let a = store
        .sync_limit_counters(
            "a",
            &[(key(Metric::Requests, 100), 3), (key(Metric::InFlight, 0), 2)],
            horizon,
            NOW - 10,
            NOW,
        )
        .unwrap();
    assert!(a.is_empty(), "nobody else counted: {a:?}");
    let b = store
        .sync_limit_counters(
            "b",
            &[(key(Metric::Requests, 100), 4), (key(Metric::Requests, 99), 9)],
            horizon,
            NOW - 10,
            NOW,
        )
        .unwrap();
    assert_eq!(b, vec![(key(Metric::Requests, 100), 3), (key(Metric::InFlight, 0), 2)]);
    // Absolute values: writing again replaces, never adds.
    store
        .sync_limit_counters("a", &[(key(Metric::Requests, 100), 5)], horizon, NOW - 10, NOW)
        .unwrap();
    let c = store.sync_limit_counters("c", &[], horizon, NOW - 10, NOW).unwrap();
    assert_eq!(c, vec![(key(Metric::Requests, 100), 9), (key(Metric::InFlight, 0), 2)]);
    // A replica that stopped writing its requests in flight stops counting.
    let later = store.sync_limit_counters("c", &[], horizon, NOW + 1, NOW + 20).unwrap();
    assert_eq!(later, vec![(key(Metric::Requests, 100), 9)]);
    assert_eq!(store.prune_limit_counters((101, 10), NOW + 1).unwrap(), 4);
}

/// Every counter of one sync is written by one statement that carries them as JSON: ids with
/// quotes, backslashes, control characters and non-ASCII text, every metric, bucket and value
/// (a count past `i64::MAX` kept at its largest) come back as written.
fn counts_of_any_subject_come_back_as_written(store: &Store) {
    let ids = [
        "plain",
        "quote \" and 'single'",
        "back\\slash",
        "tab\tline\nnul\u{1}",
        "ünïcödé 🦙",
        "",
    ];
    let mut rows = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        for (metric, bucket) in [
            (Metric::Requests, 100),
            (Metric::Tokens, 101),
            (Metric::Budget, 10),
            (Metric::InFlight, 0),
        ] {
            let subject = (Scope::ALL[n % Scope::ALL.len()], (*id).to_owned());
            rows.push((
                CounterKey {
                    subject,
                    metric,
                    bucket,
                },
                n as u64 + 1,
            ));
        }
    }
    let biggest = CounterKey {
        subject: (Scope::Group, "big".to_owned()),
        metric: Metric::Budget,
        bucket: 11,
    };
    rows.push((biggest.clone(), u64::MAX));
    rows.sort();
    store.sync_limit_counters("a", &rows, (100, 10), NOW - 10, NOW).unwrap();
    let mut expected = rows.clone();
    for (key, value) in &mut expected {
        if *key == biggest {
            *value = i64::MAX as u64;
        }
    }
    let seen = store.sync_limit_counters("b", &[], (100, 10), NOW - 10, NOW).unwrap();
    assert_eq!(seen, expected);
    // Written again with other values: replaced, one row each.
    let doubled: Vec<_> = rows.iter().map(|(k, v)| (k.clone(), v.saturating_mul(2))).collect();
    store
        .sync_limit_counters("a", &doubled, (100, 10), NOW - 10, NOW)
        .unwrap();
    let seen = store.sync_limit_counters("b", &[], (100, 10), NOW - 10, NOW).unwrap();
    let expected: Vec<_> = doubled
        .iter()
        .map(|(k, v)| (k.clone(), (*v).min(i64::MAX as u64)))
        .collect();
    assert_eq!(seen, expected);
    // A third replica: the reader gets each counter once, summed, a sum past `i64::MAX` kept at
    // its largest.
    let first = doubled[0].0.clone();
    store
        .sync_limit_counters(
            "c",
            &[(first.clone(), 5), (biggest.clone(), u64::MAX)],
            (100, 10),
            NOW - 10,
            NOW,
        )
        .unwrap();
    let seen = store.sync_limit_counters("b", &[], (100, 10), NOW - 10, NOW).unwrap();
    let expected: Vec<_> = expected
        .into_iter()
        .map(|(k, v)| match k {
            k if k == first => (k, v + 5),
            k if k == biggest => (k, i64::MAX as u64),
            k => (k, v),
        })
        .collect();
    assert_eq!(seen, expected);
}

fn limits_go_with_their_key_user_or_group(store: &Store) {
    let key_of = |user_id: &str, name: &str| {
        let (_, hash, prefix) = corral_auth::generate_api_key();
        let new = corral_store::NewApiKey {
            user_id: user_id.to_owned(),
            name: name.to_owned(),
            prefix,
            hash,
            expires_at: None,
        };
        store.create_api_key(&new, NOW).unwrap().id
    };
    let ada = user(store, "ada@example.com");
    let bob = user(store, "bob@example.com");
    let (ada_key, bob_key) = (key_of(&ada.id, "laptop"), key_of(&bob.id, "ci"));
    let group = store.create_group("gpu", "", NOW).unwrap();
    let spec = limits(json!({"requests_per_minute": 60}));
    let counter = |scope, id: &str| {
        (
            CounterKey {
                subject: (scope, id.to_owned()),
                metric: Metric::Requests,
                bucket: 100,
            },
            1,
        )
    };
    let mut counts = Vec::new();
    for (scope, id) in [
        (Scope::Key, &ada_key),
        (Scope::Key, &bob_key),
        (Scope::User, &ada.id),
        (Scope::User, &bob.id),
        (Scope::Group, &group.id),
    ] {
        store.put_limits(scope, id, &spec, NOW).unwrap();
        counts.push(counter(scope, id));
    }
    store
        .sync_limit_counters("a", &counts, (100, 10), NOW - 10, NOW)
        .unwrap();
    let left = || -> Vec<(Scope, String)> {
        store
            .list_limits()
            .unwrap()
            .into_iter()
            .map(|l| (l.scope, l.subject_id))
            .collect()
    };
    let counted = || {
        store
            .sync_limit_counters("b", &[], (100, 10), NOW - 10, NOW)
            .unwrap()
            .len()
    };
    assert_eq!(counted(), 5);

    store.delete_api_key(&bob_key).unwrap();
    assert!(!left().contains(&(Scope::Key, bob_key.clone())));
    store.delete_group(&group.id).unwrap();
    assert!(!left().contains(&(Scope::Group, group.id.clone())));
    // A user takes its keys' limits along.
    store.delete_user(&ada.id).unwrap();
    assert_eq!(left(), vec![(Scope::User, bob.id.clone())]);
    assert_eq!(counted(), 1, "the deleted subjects' counters went too");
}

on_both!(
    put_get_delete_and_unknown_subjects,
    replicas_read_each_others_counts,
    counts_of_any_subject_come_back_as_written,
    limits_go_with_their_key_user_or_group
);
