//! The store against both real backends: a fresh SQLite file and a fresh PostgreSQL database.

// Helpers fail the test on any error, which is what `unwrap` says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use corral_config::ConnectionSettings;
use corral_store::test_support::TestDb;
use corral_store::{Store, StoreError, StoredOllama};

/// Runs `check` on SQLite and, when reachable (always in CI), on PostgreSQL.
fn on_both(check: impl Fn(&Store)) {
    let lite = TestDb::sqlite();
    let store = Store::open(&lite.url, 2).unwrap();
    store.migrate().unwrap();
    check(&store);
    if let Some(pg) = TestDb::postgres() {
        let store = Store::open(&pg.url, 2).unwrap();
        store.migrate().unwrap();
        check(&store);
    }
}

fn sample() -> StoredOllama {
    let mut api_configs = BTreeMap::new();
    api_configs.insert(
        "1".to_owned(),
        ConnectionSettings {
            key: Some("k".to_owned()),
            prefix_id: Some("gpu".to_owned()),
            ..ConnectionSettings::default()
        },
    );
    StoredOllama {
        enable: true,
        base_urls: vec!["http://a:11434".to_owned(), "http://b:11434".to_owned()],
        api_configs,
    }
}

#[test]
fn migrations_apply_revert_and_reapply() {
    on_both(|store| {
        assert_eq!(store.migrate().unwrap(), 0, "already applied");
        assert!(store.revert_all().unwrap() >= 1);
        assert!(store.load_ollama().is_err(), "tables are gone after down");
        assert!(store.migrate().unwrap() >= 1);
        assert_eq!(store.load_ollama().unwrap(), None);
    });
}

#[test]
fn the_ollama_config_round_trips_and_bumps_the_revision() {
    on_both(|store| {
        assert_eq!(store.load_ollama().unwrap(), None, "nothing saved yet");
        let before = store.revision("config").unwrap();
        let rev = store.save_ollama(&sample(), 1_700_000_000).unwrap();
        assert_eq!(rev, before + 1);
        assert_eq!(store.load_ollama().unwrap(), Some(sample()));
        let mut smaller = sample();
        smaller.base_urls.truncate(1);
        smaller.api_configs.clear();
        smaller.enable = false;
        assert_eq!(store.save_ollama(&smaller, 1_700_000_001).unwrap(), before + 2);
        assert_eq!(store.load_ollama().unwrap(), Some(smaller));
    });
}

#[test]
fn a_failed_save_changes_nothing() {
    on_both(|store| {
        store.save_ollama(&sample(), 1).unwrap();
        let rev = store.revision("config").unwrap();
        // The empty URL breaks a CHECK constraint on the last insert, after the deletes.
        let mut bad = sample();
        bad.base_urls.push(String::new());
        assert!(store.save_ollama(&bad, 2).is_err());
        assert_eq!(
            store.load_ollama().unwrap(),
            Some(sample()),
            "the old configuration is intact"
        );
        assert_eq!(store.revision("config").unwrap(), rev);
    });
}

#[test]
fn an_unreachable_database_fails_fast_as_unavailable() {
    let start = std::time::Instant::now();
    let err = Store::open("postgres://nobody:secret@127.0.0.1:1/none", 1).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert!(
        !err.to_string().contains("secret"),
        "the password is never printed: {err}"
    );
}
