//! Settings: JSON round trips, replacement, deletion and insert-if-absent secrets.

use corral_store::{Store, StoreError};
use serde_json::json;

use crate::support::NOW;

fn round_trip(store: &Store) {
    assert_eq!(store.get_setting("auth").unwrap(), None);
    let rev = store.revisions().unwrap().config;
    let value = json!({"jwt_expiry": "4w", "enable_api_keys": true, "nested": [1, 2.5, null, "ü"]});
    store.put_setting("auth", &value, NOW).unwrap();
    assert_eq!(store.get_setting("auth").unwrap(), Some(value));
    assert_eq!(store.revisions().unwrap().config, rev + 1);

    store.put_setting("auth", &json!(false), NOW + 1).unwrap();
    store.put_setting("ui", &json!("dark"), NOW + 1).unwrap();
    assert_eq!(store.get_setting("auth").unwrap(), Some(json!(false)));
    let all = store.list_settings().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all["ui"], json!("dark"));
    assert_eq!(store.revisions().unwrap().config, rev + 3);

    assert!(store.delete_setting("ui").unwrap());
    assert!(!store.delete_setting("ui").unwrap());
    assert_eq!(
        store.revisions().unwrap().config,
        rev + 4,
        "deleting nothing bumps nothing"
    );
    assert_eq!(store.revisions().unwrap().auth, 0, "settings are not auth");
}

fn reserved_keys_are_refused(store: &Store) {
    let err = store.put_setting("ollama.enable", &json!(true), NOW).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(store.delete_setting("ollama.enable").is_err());
    assert_eq!(store.load_ollama_config(&crate::support::sealer()).unwrap(), None);
}

fn the_first_secret_wins(store: &Store) {
    let first = store.setting_or_insert("jwt_secret", &json!("first"), NOW).unwrap();
    let second = store.setting_or_insert("jwt_secret", &json!("second"), NOW).unwrap();
    assert_eq!(first, json!("first"));
    assert_eq!(second, json!("first"));
    assert_eq!(store.revisions().unwrap().config, 1, "only the insert bumps");
}

fn concurrent_secrets_agree(store: &Store) {
    let values: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                s.spawn(move || {
                    store
                        .setting_or_insert("jwt_secret", &json!(format!("s{i}")), NOW)
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
    assert_eq!(store.get_setting("jwt_secret").unwrap().as_ref(), Some(&values[0]));
}

on_both!(
    round_trip,
    reserved_keys_are_refused,
    the_first_secret_wins,
    concurrent_secrets_agree
);
