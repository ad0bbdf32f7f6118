//! Groups and memberships.

use corral_store::{Store, StoreError};

use crate::support::{user, NOW};

fn crud_and_members(store: &Store) {
    let ada = user(store, "ada@example.com");
    let bob = user(store, "bob@example.com");
    let rev = store.revisions().unwrap().auth;
    let gpu = store.create_group("gpu", "may use the big models", NOW).unwrap();
    let ops = store.create_group("ops", "", NOW).unwrap();
    assert_eq!(store.get_group(&gpu.id).unwrap(), Some(gpu.clone()));
    assert_eq!(store.get_group_by_name("ops").unwrap(), Some(ops.clone()));
    assert_eq!(store.get_group("missing").unwrap(), None);
    assert_eq!(store.list_groups().unwrap(), [gpu.clone(), ops.clone()]);

    assert!(store.add_group_member(&gpu.id, &ada.id).unwrap());
    assert!(
        !store.add_group_member(&gpu.id, &ada.id).unwrap(),
        "adding twice is harmless"
    );
    assert!(store.add_group_member(&gpu.id, &bob.id).unwrap());
    assert!(store.add_group_member(&ops.id, &ada.id).unwrap());
    let mut both = vec![ada.id.clone(), bob.id.clone()];
    both.sort();
    assert_eq!(store.group_members(&gpu.id).unwrap(), both);
    let mut adas = vec![gpu.id.clone(), ops.id.clone()];
    adas.sort();
    assert_eq!(store.user_group_ids(&ada.id).unwrap(), adas);
    assert_eq!(store.group_memberships().unwrap().len(), 3);

    assert!(store.remove_group_member(&gpu.id, &bob.id).unwrap());
    assert!(!store.remove_group_member(&gpu.id, &bob.id).unwrap());
    assert_eq!(store.group_members(&gpu.id).unwrap(), vec![ada.id.clone()]);

    let renamed = store.update_group(&ops.id, "operators", "on call", NOW + 1).unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.description.as_str()),
        ("operators", "on call")
    );
    assert_eq!((renamed.created_at, renamed.updated_at), (NOW, NOW + 1));

    store.delete_group(&gpu.id).unwrap();
    assert_eq!(
        store.user_group_ids(&ada.id).unwrap(),
        vec![ops.id.clone()],
        "memberships go with the group"
    );
    assert!(matches!(store.delete_group(&gpu.id), Err(StoreError::NotFound)));
    assert!(matches!(
        store.update_group(&gpu.id, "x", "", NOW),
        Err(StoreError::NotFound)
    ));
    assert!(store.revisions().unwrap().auth >= rev + 9, "every change bumps auth");
}

fn names_are_unique_and_members_must_exist(store: &Store) {
    let ada = user(store, "ada@example.com");
    let gpu = store.create_group("gpu", "", NOW).unwrap();
    assert!(matches!(
        store.create_group("gpu", "again", NOW),
        Err(StoreError::Conflict(_))
    ));
    let ops = store.create_group("ops", "", NOW).unwrap();
    assert!(matches!(
        store.update_group(&ops.id, "gpu", "", NOW),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.add_group_member(&gpu.id, "nobody"),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.add_group_member("nothing", &ada.id),
        Err(StoreError::NotFound)
    ));
}

fn user_groups_are_replaced_at_once(store: &Store) {
    let ada = user(store, "ada@example.com");
    let a = store.create_group("a", "", NOW).unwrap();
    let b = store.create_group("b", "", NOW).unwrap();
    let c = store.create_group("c", "", NOW).unwrap();
    store.add_group_member(&a.id, &ada.id).unwrap();
    store
        .set_user_groups(&ada.id, &[c.id.clone(), b.id.clone(), b.id.clone()])
        .unwrap();
    let mut want = vec![b.id.clone(), c.id.clone()];
    want.sort();
    assert_eq!(store.user_group_ids(&ada.id).unwrap(), want);
    // An unknown group fails the whole replacement.
    let err = store
        .set_user_groups(&ada.id, &[a.id.clone(), "missing".to_owned()])
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    assert_eq!(store.user_group_ids(&ada.id).unwrap(), want);
    store.set_user_groups(&ada.id, &[]).unwrap();
    assert!(store.user_group_ids(&ada.id).unwrap().is_empty());
}

fn concurrent_replacements_all_succeed(store: &Store) {
    let ada = user(store, "ada@example.com");
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| store.create_group(n, "", NOW).unwrap().id)
        .collect();
    std::thread::scope(|s| {
        for i in 0..4 {
            let (ada, ids) = (&ada, &ids);
            s.spawn(move || {
                for n in 0..5 {
                    let pick = &ids[(i + n) % 3..];
                    store.set_user_groups(&ada.id, pick).unwrap();
                }
            });
        }
    });
    assert!(!store.user_group_ids(&ada.id).unwrap().is_empty());
}

on_both!(
    crud_and_members,
    names_are_unique_and_members_must_exist,
    user_groups_are_replaced_at_once,
    concurrent_replacements_all_succeed,
);
