//! The Ollama configuration: one atomic write of the enable switch and every connection.

use std::collections::BTreeMap;

use corral_config::ConnectionSettings;
use corral_store::{Store, StoredOllama};

use crate::support::NOW;

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

fn round_trip_and_revision(store: &Store) {
    assert_eq!(store.load_ollama_config().unwrap(), None, "nothing saved yet");
    let before = store.revision("config").unwrap();
    let s = sample();
    let rev = store
        .save_ollama_config(s.enable, &s.base_urls, &s.api_configs, NOW)
        .unwrap();
    assert_eq!(rev, before + 1);
    assert_eq!(store.revisions().unwrap().config, rev);
    assert_eq!(store.load_ollama_config().unwrap(), Some(sample()));

    let mut smaller = sample();
    smaller.base_urls.truncate(1);
    smaller.enable = false;
    // The entry for the removed connection and a legacy URL-keyed entry are pruned.
    smaller
        .api_configs
        .insert("http://a:11434".to_owned(), ConnectionSettings::default());
    assert_eq!(store.save_ollama(&smaller, NOW + 1).unwrap(), before + 2);
    let loaded = store.load_ollama().unwrap().unwrap();
    assert!(!loaded.enable);
    assert_eq!(loaded.base_urls, ["http://a:11434"]);
    assert!(loaded.api_configs.is_empty(), "{:?}", loaded.api_configs);

    store.save_ollama_config(true, &[], &BTreeMap::new(), NOW + 2).unwrap();
    let empty = store.load_ollama_config().unwrap().unwrap();
    assert!(empty.enable && empty.base_urls.is_empty());
}

fn a_failed_save_changes_nothing(store: &Store) {
    store.save_ollama(&sample(), NOW).unwrap();
    let rev = store.revision("config").unwrap();
    // The empty URL breaks a CHECK constraint on the last insert, after the enable switch was written and
    // the old connections deleted: the whole transaction must roll back.
    let mut bad = sample();
    bad.enable = false;
    bad.base_urls.push(String::new());
    assert!(store.save_ollama(&bad, NOW + 1).is_err());
    assert_eq!(
        store.load_ollama_config().unwrap(),
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
    store.save_ollama(&one, NOW).unwrap();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..20 {
                let cfg = if i % 2 == 0 { &other } else { &one };
                store.save_ollama(cfg, NOW + i).unwrap();
            }
        });
        for _ in 0..40 {
            let seen = store.load_ollama_config().unwrap().unwrap();
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
        })
        .collect();
    std::thread::scope(|s| {
        for cfg in &configs {
            s.spawn(move || {
                for n in 0..5 {
                    store.save_ollama(cfg, NOW + n).unwrap();
                }
            });
        }
    });
    let last = store.load_ollama_config().unwrap().unwrap();
    assert!(configs.contains(&last), "{last:?}");
    assert_eq!(store.revisions().unwrap().config, 20);
}

on_both!(
    round_trip_and_revision,
    a_failed_save_changes_nothing,
    saves_and_loads_never_see_half_a_save,
    concurrent_saves_all_succeed,
);
