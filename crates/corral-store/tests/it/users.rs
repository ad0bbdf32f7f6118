//! Users and passwords: creation, lookups, updates, conflicts, deletion and its cascades.

use corral_auth::{verify_password, HashedKey, Role};
use corral_store::{NewApiKey, NewModel, NewUser, Store, StoreError, UserChanges};
use serde_json::json;

use crate::support::{new_user, password_hash, user, NOW};

fn create_get_list_update_delete(store: &Store) {
    assert_eq!(store.count_users().unwrap(), 0);
    let created = store
        .create_user(
            &NewUser {
                email: "Ada@Example.COM".to_owned(),
                name: "Ada".to_owned(),
                profile_image_url: "/user.png".to_owned(),
                ..new_user("")
            },
            NOW,
        )
        .unwrap();
    assert_eq!(created.email, "ada@example.com", "emails are stored lower-cased");
    assert_eq!(created.role, Role::User);
    assert_eq!(
        (created.created_at, created.updated_at, created.last_active_at),
        (NOW, NOW, NOW)
    );
    assert_eq!(store.get_user(&created.id).unwrap(), Some(created.clone()));
    assert_eq!(
        store.get_user_by_email("ADA@example.com").unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.get_user("nobody").unwrap(), None);
    assert_eq!(store.get_user_by_email("nobody@example.com").unwrap(), None);

    let bob = user(store, "bob@example.com");
    assert_eq!(store.count_users().unwrap(), 2);
    let ids: Vec<_> = store.list_users().unwrap().into_iter().map(|u| u.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&created.id) && ids.contains(&bob.id));

    let updated = store
        .update_user(
            &created.id,
            &UserChanges {
                name: Some("Ada L.".to_owned()),
                role: Some(Role::Admin),
                ..UserChanges::default()
            },
            NOW + 5,
        )
        .unwrap();
    assert_eq!(updated.name, "Ada L.");
    assert_eq!(updated.role, Role::Admin);
    assert_eq!(updated.email, created.email, "untouched fields stay");
    assert_eq!(updated.profile_image_url, "/user.png");
    assert_eq!((updated.created_at, updated.updated_at), (NOW, NOW + 5));
    assert_eq!(store.get_user(&created.id).unwrap(), Some(updated));

    store.touch_user(&created.id, NOW + 9).unwrap();
    assert_eq!(store.get_user(&created.id).unwrap().unwrap().last_active_at, NOW + 9);

    store.delete_user(&bob.id).unwrap();
    assert_eq!(store.get_user(&bob.id).unwrap(), None);
    assert!(matches!(store.delete_user(&bob.id), Err(StoreError::NotFound)));
    assert!(matches!(
        store.update_user(&bob.id, &UserChanges::default(), NOW),
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.count_users().unwrap(), 1);
}

fn a_taken_email_is_a_conflict(store: &Store) {
    let ada = user(store, "ada@example.com");
    let rev = store.revisions().unwrap().auth;
    let err = store.create_user(&new_user("ADA@example.com"), NOW).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(err.kind(), "conflict");
    assert_eq!(store.count_users().unwrap(), 1);
    assert_eq!(store.revisions().unwrap().auth, rev, "a failed write bumps nothing");

    let bob = user(store, "bob@example.com");
    let changes = UserChanges {
        email: Some("Ada@Example.com".to_owned()),
        ..UserChanges::default()
    };
    assert!(matches!(
        store.update_user(&bob.id, &changes, NOW),
        Err(StoreError::Conflict(_))
    ));
    let changes = UserChanges {
        email: Some("Robert@Example.com".to_owned()),
        ..UserChanges::default()
    };
    assert_eq!(
        store.update_user(&bob.id, &changes, NOW).unwrap().email,
        "robert@example.com"
    );
    assert_eq!(store.get_user(&ada.id).unwrap().unwrap().email, "ada@example.com");
}

fn only_the_first_user_gets_the_first_role(store: &Store) {
    let first = NewUser {
        first_user_role: Some(Role::Admin),
        role: Role::Pending,
        ..new_user("first@example.com")
    };
    assert_eq!(store.create_user(&first, NOW).unwrap().role, Role::Admin);
    let second = NewUser {
        email: "second@example.com".to_owned(),
        ..first
    };
    assert_eq!(store.create_user(&second, NOW).unwrap().role, Role::Pending);
}

fn simultaneous_first_sign_ups_make_one_admin(store: &Store) {
    let roles: Vec<Role> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                s.spawn(move || {
                    let new = NewUser {
                        first_user_role: Some(Role::Admin),
                        role: Role::Pending,
                        ..new_user(&format!("u{i}@example.com"))
                    };
                    store.create_user(&new, NOW).unwrap().role
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(roles.iter().filter(|r| **r == Role::Admin).count(), 1, "{roles:?}");
}

fn passwords_are_stored_apart(store: &Store) {
    let hash = password_hash("correct horse");
    let ada = store
        .create_user(
            &NewUser {
                password_hash: Some(hash.clone()),
                ..new_user("ada@example.com")
            },
            NOW,
        )
        .unwrap();
    let (found, stored) = store.get_user_with_password("ADA@example.com").unwrap().unwrap();
    assert_eq!(found, ada);
    assert!(verify_password("correct horse", &stored.unwrap()));
    assert_eq!(store.password_hash(&ada.id).unwrap(), Some(hash));

    let sso = user(store, "sso@example.com");
    assert_eq!(store.password_hash(&sso.id).unwrap(), None);
    assert_eq!(
        store.get_user_with_password("sso@example.com").unwrap().unwrap().1,
        None
    );
    let rev = store.revisions().unwrap().auth;
    store.set_password_hash(&sso.id, &password_hash("new"), NOW).unwrap();
    store
        .set_password_hash(&sso.id, &password_hash("newer"), NOW + 1)
        .unwrap();
    assert!(verify_password(
        "newer",
        &store.password_hash(&sso.id).unwrap().unwrap()
    ));
    assert_eq!(store.revisions().unwrap().auth, rev + 2);
    assert!(matches!(
        store.set_password_hash("nobody", &password_hash("x"), NOW),
        Err(StoreError::NotFound)
    ));
}

fn deleting_a_user_cascades(store: &Store) {
    let ada = store
        .create_user(
            &NewUser {
                password_hash: Some(password_hash("pw")),
                ..new_user("ada@example.com")
            },
            NOW,
        )
        .unwrap();
    let bob = user(store, "bob@example.com");
    let hash = HashedKey::of("sk-ada");
    for (owner, name, key) in [(&ada, "ada", &hash), (&bob, "bob", &HashedKey::of("sk-bob"))] {
        store
            .create_api_key(
                &NewApiKey {
                    user_id: owner.id.clone(),
                    name: name.to_owned(),
                    prefix: "sk-".to_owned(),
                    hash: key.clone(),
                    expires_at: None,
                },
                NOW,
            )
            .unwrap();
    }
    let group = store.create_group("team", "", NOW).unwrap();
    store.add_group_member(&group.id, &ada.id).unwrap();
    store.add_group_member(&group.id, &bob.id).unwrap();
    let model = NewModel {
        id: "ada-preset".to_owned(),
        base_model_id: Some("llama3:latest".to_owned()),
        name: "Ada's preset".to_owned(),
        user_id: Some(ada.id.clone()),
        params: json!({}),
        meta: json!({}),
        access_control: Some(json!({})),
        is_active: true,
    };
    store.create_model(&model, NOW).unwrap();

    store.delete_user(&ada.id).unwrap();
    assert_eq!(store.password_hash(&ada.id).unwrap(), None);
    assert!(store.list_api_keys(&ada.id).unwrap().is_empty());
    assert_eq!(store.find_api_key(&hash, NOW).unwrap(), None);
    assert_eq!(store.group_members(&group.id).unwrap(), vec![bob.id.clone()]);
    assert!(store.user_group_ids(&ada.id).unwrap().is_empty());
    let orphan = store.get_model("ada-preset").unwrap().unwrap();
    assert_eq!(orphan.user_id, None, "the model stays, without an owner");
    // Bob is untouched.
    assert_eq!(store.list_api_keys(&bob.id).unwrap().len(), 1);
    assert_eq!(store.active_api_keys(NOW).unwrap().len(), 1);
}

on_both!(
    create_get_list_update_delete,
    a_taken_email_is_a_conflict,
    only_the_first_user_gets_the_first_role,
    simultaneous_first_sign_ups_make_one_admin,
    passwords_are_stored_apart,
    deleting_a_user_cascades,
);
