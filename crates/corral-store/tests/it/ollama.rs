//! The Ollama configuration: one atomic write of the enable switch and every connection.

use std::collections::BTreeMap;

use corral_config::ConnectionSettings;
use corral_store::{Store, StoredOllama};

use crate::support::{sealer, NOW};

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
        unreadable_keys: BTreeMap::new(),
    }
}

fn round_trip_and_revision(store: &Store) {
    assert_eq!(store.load_ollama_config(&sealer()).unwrap(), None, "nothing saved yet");
    let before = store.revision("config").unwrap();
    let s = sample();
    let rev = store
        .save_ollama_config(s.enable, &s.base_urls, &s.api_configs, &sealer(), NOW)
        .unwrap();
    assert_eq!(rev, before + 1);
    assert_eq!(store.revisions().unwrap().config, rev);
    assert_eq!(store.load_ollama_config(&sealer()).unwrap(), Some(sample()));

    let mut smaller = sample();
    smaller.base_urls.truncate(1);
    smaller.enable = false;
    // The entry for the removed connection and a legacy URL-keyed entry are pruned.
    smaller
        .api_configs
        .insert("http://a:11434".to_owned(), ConnectionSettings::default());
    assert_eq!(store.save_ollama(&smaller, &sealer(), NOW + 1).unwrap(), before + 2);
    let loaded = store.load_ollama(&sealer()).unwrap().unwrap();
    assert!(!loaded.enable);
    assert_eq!(loaded.base_urls, ["http://a:11434"]);
    assert!(loaded.api_configs.is_empty(), "{:?}", loaded.api_configs);

    store
        .save_ollama_config(true, &[], &BTreeMap::new(), &sealer(), NOW + 2)
        .unwrap();
    let empty = store.load_ollama_config(&sealer()).unwrap().unwrap();
    assert!(empty.enable && empty.base_urls.is_empty());
}

fn a_failed_save_changes_nothing(store: &Store) {
    store.save_ollama(&sample(), &sealer(), NOW).unwrap();
    let rev = store.revision("config").unwrap();
    // The empty URL breaks a CHECK constraint on the last insert, after the enable switch was written and
    // the old connections deleted: the whole transaction must roll back.
    let mut bad = sample();
    bad.enable = false;
    bad.base_urls.push(String::new());
    assert!(store.save_ollama(&bad, &sealer(), NOW + 1).is_err());
    assert_eq!(
        store.load_ollama_config(&sealer()).unwrap(),
        Some(sample()),
        "the old configuration is intact"
    );
    assert_eq!(store.revision("config").unwrap(), rev, "no revision for a failed save");
}

fn saves_and_loads_never_see_half_a_save(store: &Store) {
    let one = sample();
    let mut other = sample();
    other.enable = false;
    other.base_urls = vec!["http://c:11434".to_owned()];
    other.api_configs.clear();
    store.save_ollama(&one, &sealer(), NOW).unwrap();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..20 {
                let cfg = if i % 2 == 0 { &other } else { &one };
                store.save_ollama(cfg, &sealer(), NOW + i).unwrap();
            }
        });
        for _ in 0..40 {
            let seen = store.load_ollama_config(&sealer()).unwrap().unwrap();
            assert!(seen == one || seen == other, "a half-saved configuration: {seen:?}");
        }
        writer.join().unwrap();
    });
}

fn concurrent_saves_all_succeed(store: &Store) {
    let configs: Vec<StoredOllama> = (0..4)
        .map(|i| StoredOllama {
            enable: i % 2 == 0,
            base_urls: (0..=i).map(|j| format!("http://h{i}-{j}:11434")).collect(),
            api_configs: BTreeMap::new(),
            unreadable_keys: BTreeMap::new(),
        })
        .collect();
    std::thread::scope(|s| {
        for cfg in &configs {
            s.spawn(move || {
                for n in 0..5 {
                    store.save_ollama(cfg, &sealer(), NOW + n).unwrap();
                }
            });
        }
    });
    let last = store.load_ollama_config(&sealer()).unwrap().unwrap();
    assert!(configs.contains(&last), "{last:?}");
    assert_eq!(store.revisions().unwrap().config, 20);
}

/// A connection with a key, at a URL of its own.
fn keyed(key: &str) -> StoredOllama {
    let mut api_configs = BTreeMap::new();
    api_configs.insert(
        "0".to_owned(),
        ConnectionSettings {
            key: Some(key.to_owned()),
            prefix_id: Some("gpu".to_owned()),
            ..ConnectionSettings::default()
        },
    );
    StoredOllama {
        enable: true,
        base_urls: vec!["http://gpu-1:11434".to_owned(), "http://gpu-2:11434".to_owned()],
        api_configs,
        unreadable_keys: BTreeMap::new(),
    }
}

fn keys_are_sealed_at_rest(store: &Store) {
    let saved = keyed("sk-upstream-secret-1");
    store.save_ollama(&saved, &sealer(), NOW).unwrap();
    let rows = store.raw_connection_rows();
    assert_eq!(rows.len(), 2);
    for (_, _, config) in &rows {
        assert!(
            !config.contains("sk-upstream-secret-1"),
            "the key is in clear at rest: {config}"
        );
    }
    assert!(rows[0].2.contains(corral_store::SEALED_PREFIX), "{}", rows[0].2);
    assert!(
        rows[0].2.contains("\"prefix_id\":\"gpu\""),
        "other settings stay readable: {}",
        rows[0].2
    );
    assert_eq!(store.load_ollama(&sealer()).unwrap(), Some(saved));
    assert_eq!(
        store.seal_clear_connection_keys(&sealer()).unwrap(),
        0,
        "nothing left in clear"
    );
}

fn a_key_sealed_under_another_secret_is_reported_not_fatal(store: &Store) {
    store.save_ollama(&keyed("sk-old"), &sealer(), NOW).unwrap();
    let other = corral_store::Sealer::from_secret(b"a new secret key");
    let loaded = store.load_ollama(&other).unwrap().unwrap();
    assert_eq!(loaded.base_urls.len(), 2, "the rest of the configuration loads");
    assert_eq!(
        loaded.api_configs["0"].key, None,
        "the key that does not open is left out"
    );
    assert_eq!(loaded.api_configs["0"].prefix_id.as_deref(), Some("gpu"));
    assert_eq!(
        loaded.unreadable_keys.into_iter().collect::<Vec<_>>(),
        [(0, corral_store::OpenError::WrongKey)]
    );
    // Sealing never touches what it cannot open, so restoring the old secret gets the key back.
    assert_eq!(store.seal_clear_connection_keys(&other).unwrap(), 0);
    assert_eq!(store.load_ollama(&sealer()).unwrap(), Some(keyed("sk-old")));
}

fn a_key_moved_to_another_url_does_not_open(store: &Store) {
    store.save_ollama(&keyed("sk-moved"), &sealer(), NOW).unwrap();
    // Someone with write access to the database points connection 0 at another server, keeping its
    // sealed key: the key is bound to the URL it was saved for, so it is not sent there.
    let rows = store.raw_connection_rows();
    let moved: Vec<(&str, serde_json::Value)> = vec![
        ("http://attacker:11434", serde_json::from_str(&rows[0].2).unwrap()),
        ("http://gpu-2:11434", serde_json::from_str(&rows[1].2).unwrap()),
    ];
    store.put_raw_connection_rows(true, &moved);
    let loaded = store.load_ollama(&sealer()).unwrap().unwrap();
    assert_eq!(loaded.api_configs["0"].key, None);
    assert!(loaded.unreadable_keys.contains_key(&0));
}

fn clear_keys_from_before_sealing_are_sealed_at_start_up(store: &Store) {
    // Rows as the release before sealing wrote them.
    store.put_raw_connection_rows(
        true,
        &[
            (
                "http://gpu-1:11434",
                serde_json::json!({"key": "sk-upstream-secret-1", "prefix_id": "gpu"}),
            ),
            ("http://gpu-2:11434", serde_json::json!({})),
        ],
    );
    let revision = store.revision("config").unwrap();
    assert_eq!(
        store.load_ollama(&sealer()).unwrap(),
        Some(keyed("sk-upstream-secret-1")),
        "a clear key still reads before it is sealed"
    );
    assert_eq!(store.seal_clear_connection_keys(&sealer()).unwrap(), 1);
    assert_eq!(store.seal_clear_connection_keys(&sealer()).unwrap(), 0, "idempotent");
    assert_eq!(
        store.revision("config").unwrap(),
        revision,
        "the configuration did not change"
    );
    for (_, _, config) in store.raw_connection_rows() {
        assert!(!config.contains("sk-upstream-secret-1"), "{config}");
    }
    assert_eq!(
        store.load_ollama(&sealer()).unwrap(),
        Some(keyed("sk-upstream-secret-1"))
    );
}

on_both!(
    keys_are_sealed_at_rest,
    a_key_sealed_under_another_secret_is_reported_not_fatal,
    a_key_moved_to_another_url_does_not_open,
    clear_keys_from_before_sealing_are_sealed_at_start_up,
    round_trip_and_revision,
    a_failed_save_changes_nothing,
    saves_and_loads_never_see_half_a_save,
    concurrent_saves_all_succeed,
);
