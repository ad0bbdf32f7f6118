//! Revoked tokens: shared sign-out, listing what is still live, and purging what expired.

use corral_store::{RevokedToken, Store};

use crate::support::NOW;

fn revoke_list_and_purge(store: &Store) {
    assert!(!store.is_token_revoked("a").unwrap());
    let rev = store.revisions().unwrap().auth;
    store.revoke_token("a", NOW + 10).unwrap();
    store.revoke_token("a", NOW + 10).unwrap();
    store.revoke_token("b", NOW + 100).unwrap();
    store.revoke_token("forever", i64::MAX).unwrap();
    assert_eq!(store.revisions().unwrap().auth, rev + 4);
    assert!(store.is_token_revoked("a").unwrap());

    let live = |now| -> Vec<String> { store.revoked_tokens(now).unwrap().into_iter().map(|t| t.jti).collect() };
    assert_eq!(live(NOW), ["a", "b", "forever"]);
    assert_eq!(live(NOW + 10), ["b", "forever"]);

    let rev = store.revisions().unwrap().auth;
    assert_eq!(store.purge_revoked_tokens(NOW + 50).unwrap(), 1);
    assert_eq!(store.purge_revoked_tokens(NOW + 50).unwrap(), 0);
    assert_eq!(store.revisions().unwrap().auth, rev, "purging bumps nothing");
    assert!(!store.is_token_revoked("a").unwrap());
    assert_eq!(
        store.revoked_tokens(NOW).unwrap(),
        [
            RevokedToken {
                jti: "b".to_owned(),
                expires_at: NOW + 100
            },
            RevokedToken {
                jti: "forever".to_owned(),
                expires_at: i64::MAX
            },
        ]
    );
}

on_both!(revoke_list_and_purge);
