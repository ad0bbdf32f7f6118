//! Model records: JSON columns, access control, activity and revisions.

use corral_store::{NewModel, Store, StoreError};
use serde_json::json;

use crate::support::{user, NOW};

fn preset(id: &str, owner: Option<&str>) -> NewModel {
    NewModel {
        id: id.to_owned(),
        base_model_id: Some("llama3:latest".to_owned()),
        name: format!("{id} preset"),
        user_id: owner.map(str::to_owned),
        params: json!({"system": "Be brief.", "temperature": 0.2}),
        meta: json!({"description": "short answers", "tags": [{"name": "fast"}]}),
        access_control: None,
        is_active: true,
    }
}

fn crud(store: &Store) {
    let ada = user(store, "ada@example.com");
    let rev = store.revisions().unwrap();
    let created = store.create_model(&preset("brief", Some(&ada.id)), NOW).unwrap();
    assert_eq!(created.params["temperature"], json!(0.2));
    assert_eq!(created.meta["tags"][0]["name"], "fast");
    assert_eq!(created.access_control, None, "public");
    assert_eq!((created.created_at, created.updated_at), (NOW, NOW));
    assert_eq!(store.get_model("brief").unwrap(), Some(created.clone()));
    assert_eq!(store.get_model("missing").unwrap(), None);
    let after = store.revisions().unwrap();
    assert_eq!(after.models, rev.models + 1);
    assert_eq!(after.auth, rev.auth, "models are their own area");

    let private = NewModel {
        access_control: Some(json!({})),
        is_active: false,
        base_model_id: None,
        ..preset("brief", Some(&ada.id))
    };
    let updated = store.update_model(&private, NOW + 3).unwrap();
    assert_eq!(updated.access_control, Some(json!({})), "{{}} is private, not public");
    assert!(!updated.is_active);
    assert_eq!(updated.base_model_id, None, "None clears the column");
    assert_eq!((updated.created_at, updated.updated_at), (NOW, NOW + 3));

    let granted = NewModel {
        access_control: Some(json!({"read": {"group_ids": ["g1"], "user_ids": []}})),
        ..preset("llama3:latest", None)
    };
    store.create_model(&granted, NOW).unwrap();
    let nulled = NewModel {
        access_control: Some(serde_json::Value::Null),
        ..preset("public", None)
    };
    assert_eq!(
        store.create_model(&nulled, NOW).unwrap().access_control,
        None,
        "JSON null is public"
    );
    let ids: Vec<_> = store.list_models().unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["brief", "llama3:latest", "public"]);
    assert_eq!(
        store.get_model("llama3:latest").unwrap().unwrap().access_control,
        granted.access_control
    );

    store.delete_model("brief").unwrap();
    assert!(matches!(store.delete_model("brief"), Err(StoreError::NotFound)));
    assert!(matches!(store.update_model(&private, NOW), Err(StoreError::NotFound)));
    assert_eq!(store.revisions().unwrap().models, rev.models + 5);
}

fn ids_are_unique_and_owners_must_exist(store: &Store) {
    store.create_model(&preset("m", None), NOW).unwrap();
    assert!(matches!(
        store.create_model(&preset("m", None), NOW),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_model(&preset("n", Some("nobody")), NOW),
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.list_models().unwrap().len(), 1);
}

on_both!(crud, ids_are_unique_and_owners_must_exist);
