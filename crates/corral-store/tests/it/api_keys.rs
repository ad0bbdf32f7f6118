//! API keys: stored by hash, found for authentication only while active, revoked, expired and touched.

use corral_auth::{generate_api_key, HashedKey};
use corral_store::{ApiKey, NewApiKey, Store, StoreError};

use crate::support::{user, NOW};

fn new_key(user_id: &str, name: &str, hash: &HashedKey, expires_at: Option<i64>) -> NewApiKey {
    NewApiKey {
        user_id: user_id.to_owned(),
        name: name.to_owned(),
        prefix: "sk-1a2b".to_owned(),
        hash: hash.clone(),
        expires_at,
    }
}

fn create_find_list_and_touch(store: &Store) {
    let ada = user(store, "ada@example.com");
    let (plain, hash, prefix) = generate_api_key();
    let rev = store.revisions().unwrap().auth;
    let key = store
        .create_api_key(
            &NewApiKey {
                prefix: prefix.clone(),
                ..new_key(&ada.id, "laptop", &hash, None)
            },
            NOW,
        )
        .unwrap();
    assert_eq!(store.revisions().unwrap().auth, rev + 1);
    assert_eq!(key.prefix, prefix);
    assert!(plain.expose().starts_with(&key.prefix));
    assert_eq!(store.get_api_key(&key.id).unwrap(), Some(key.clone()));
    assert_eq!(store.list_api_keys(&ada.id).unwrap(), vec![key.clone()]);

    let (found, owner) = store.find_api_key(&plain.hash(), NOW).unwrap().unwrap();
    assert_eq!(found, key);
    assert_eq!(owner, ada);
    assert_eq!(store.find_api_key(&HashedKey::of("sk-other"), NOW).unwrap(), None);

    let active = store.active_api_keys(NOW).unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].key, key);
    assert_eq!(active[0].hash, hash);
    assert_eq!(active[0].user, ada);

    let rev = store.revisions().unwrap().auth;
    assert_eq!(
        store
            .touch_api_keys(&[key.id.clone(), "missing".to_owned()], NOW + 7)
            .unwrap(),
        1
    );
    assert_eq!(store.touch_api_keys(&[], NOW + 8).unwrap(), 0);
    assert_eq!(store.get_api_key(&key.id).unwrap().unwrap().last_used_at, Some(NOW + 7));
    assert_eq!(store.revisions().unwrap().auth, rev, "usage stamps bump nothing");
}

fn revoked_and_expired_keys_do_not_authenticate(store: &Store) {
    let ada = user(store, "ada@example.com");
    let revoked = HashedKey::of("sk-revoked");
    let expiring = HashedKey::of("sk-expiring");
    let key = store
        .create_api_key(&new_key(&ada.id, "r", &revoked, None), NOW)
        .unwrap();
    let exp = store
        .create_api_key(&new_key(&ada.id, "e", &expiring, Some(NOW + 60)), NOW)
        .unwrap();

    assert!(store.find_api_key(&expiring, NOW + 59).unwrap().is_some());
    assert_eq!(
        store.find_api_key(&expiring, NOW + 60).unwrap(),
        None,
        "expired at expires_at"
    );
    assert!(exp.is_active(NOW + 59) && !exp.is_active(NOW + 60));

    let rev = store.revisions().unwrap().auth;
    store.revoke_api_key(&key.id, NOW + 1).unwrap();
    store.revoke_api_key(&key.id, NOW + 2).unwrap();
    assert_eq!(store.revisions().unwrap().auth, rev + 2);
    assert_eq!(store.find_api_key(&revoked, NOW + 3).unwrap(), None);
    let listed: Vec<ApiKey> = store.list_api_keys(&ada.id).unwrap();
    assert_eq!(listed.len(), 2, "the owner still sees revoked and expired keys");
    let shown = listed.iter().find(|k| k.id == key.id).unwrap();
    assert_eq!(shown.revoked_at, Some(NOW + 1), "revoking again keeps the first time");
    assert!(!shown.is_active(NOW));

    let active: Vec<_> = store
        .active_api_keys(NOW + 30)
        .unwrap()
        .into_iter()
        .map(|a| a.key.id)
        .collect();
    assert_eq!(active, vec![exp.id.clone()]);
    assert!(store.active_api_keys(NOW + 60).unwrap().is_empty());

    assert!(matches!(
        store.revoke_api_key("missing", NOW),
        Err(StoreError::NotFound)
    ));
    store.delete_api_key(&exp.id).unwrap();
    assert!(matches!(store.delete_api_key(&exp.id), Err(StoreError::NotFound)));
    assert_eq!(store.list_api_keys(&ada.id).unwrap().len(), 1);
}

fn duplicate_hashes_and_unknown_owners_are_refused(store: &Store) {
    let ada = user(store, "ada@example.com");
    let hash = HashedKey::of("sk-same");
    store
        .create_api_key(&new_key(&ada.id, "one", &hash, None), NOW)
        .unwrap();
    let err = store
        .create_api_key(&new_key(&ada.id, "two", &hash, None), NOW)
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let err = store
        .create_api_key(&new_key("nobody", "x", &HashedKey::of("sk-x"), None), NOW)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(store.list_api_keys(&ada.id).unwrap().len(), 1);
}

on_both!(
    create_find_list_and_touch,
    revoked_and_expired_keys_do_not_authenticate,
    duplicate_hashes_and_unknown_owners_are_refused,
);
