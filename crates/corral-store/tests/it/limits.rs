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

on_both!(put_get_delete_and_unknown_subjects, replicas_read_each_others_counts);
