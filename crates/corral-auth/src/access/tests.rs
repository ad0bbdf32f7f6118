//! Tests for model access control.

use serde_json::json;

use super::*;

fn groups(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

fn ac(value: serde_json::Value) -> Option<AccessControl> {
    AccessControl::from_json(&value).unwrap()
}

#[test]
fn parsing() {
    assert_eq!(ac(json!(null)), None);
    assert_eq!(ac(json!({})), Some(AccessControl::private()));
    assert_eq!(ac(json!({"read": null, "write": null})), Some(AccessControl::private()));
    assert_eq!(ac(json!({"read": {"user_ids": null}})), Some(AccessControl::private()));
    let parsed = ac(json!({
        "read": {"group_ids": ["g1"], "user_ids": ["u1", "u2"]},
        "write": {"group_ids": [], "user_ids": ["u1"]},
        "unknown": true,
    }))
    .unwrap();
    assert_eq!(parsed.read.group_ids, ["g1"]);
    assert_eq!(parsed.read.user_ids, ["u1", "u2"]);
    assert_eq!(parsed.write.user_ids, ["u1"]);
    for bad in [
        json!("public"),
        json!([]),
        json!(1),
        json!({"read": "everyone"}),
        json!({"read": {"user_ids": "u1"}}),
        json!({"read": {"user_ids": [1]}}),
    ] {
        let err = AccessControl::from_json(&bad).unwrap_err();
        assert_eq!(err.kind(), "invalid_access_control", "{bad}");
    }
}

#[test]
fn serialises_back_to_the_stored_shape() {
    let value = json!({"read": {"group_ids": ["g"], "user_ids": []}, "write": {"group_ids": [], "user_ids": ["u"]}});
    let parsed = ac(value.clone()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), value);
}

#[test]
fn has_access_strict_semantics() {
    let shared = ac(json!({"read": {"group_ids": ["g1"], "user_ids": ["u2"]}, "write": {"user_ids": ["u3"]}})).unwrap();
    let cases = [
        ("u1", vec![], None, Permission::Read, true),
        ("u1", vec![], None, Permission::Write, false),
        ("u1", vec![], Some(&shared), Permission::Read, false),
        ("u1", groups(&["g1"]), Some(&shared), Permission::Read, true),
        ("u1", groups(&["g2", "g1"]), Some(&shared), Permission::Read, true),
        ("u1", groups(&["g2"]), Some(&shared), Permission::Read, false),
        ("u2", vec![], Some(&shared), Permission::Read, true),
        ("u2", vec![], Some(&shared), Permission::Write, false),
        ("u3", vec![], Some(&shared), Permission::Write, true),
        ("u3", vec![], Some(&shared), Permission::Read, false),
        (
            "u1",
            groups(&["g1"]),
            Some(&AccessControl::private()),
            Permission::Read,
            false,
        ),
    ];
    for (user, user_groups, ac, perm, want) in cases {
        assert_eq!(
            has_access(user, &user_groups, ac, perm),
            want,
            "{user} {user_groups:?} {ac:?} {perm:?}"
        );
    }
}

/// User id, role, groups, model record, bypass, expected.
type ReadCase<'a> = (&'a str, Role, &'a [String], Option<ModelRecord<'a>>, bool, bool);

#[test]
fn can_read_matrix() {
    let private = AccessControl::private();
    let shared = ac(json!({"read": {"group_ids": ["team"], "user_ids": ["friend"]}})).unwrap();
    let public = ModelRecord {
        owner_id: "owner",
        access_control: None,
    };
    let private = ModelRecord {
        owner_id: "owner",
        access_control: Some(&private),
    };
    let shared = ModelRecord {
        owner_id: "owner",
        access_control: Some(&shared),
    };
    let team = groups(&["team"]);
    let none: Vec<String> = vec![];
    let cases: Vec<ReadCase<'_>> = vec![
        // Admins always.
        ("x", Role::Admin, &none, None, false, true),
        ("x", Role::Admin, &none, Some(private), false, true),
        // Pending never, even with bypass or as the owner.
        ("owner", Role::Pending, &none, Some(public), true, false),
        ("owner", Role::Pending, &none, None, true, false),
        // Users: no record means hidden, unless bypassed.
        ("x", Role::User, &none, None, false, false),
        ("x", Role::User, &none, None, true, true),
        ("x", Role::User, &none, Some(public), false, true),
        ("x", Role::User, &none, Some(private), false, false),
        ("x", Role::User, &none, Some(private), true, true),
        ("owner", Role::User, &none, Some(private), false, true),
        ("friend", Role::User, &none, Some(shared), false, true),
        ("x", Role::User, &team, Some(shared), false, true),
        ("x", Role::User, &none, Some(shared), false, false),
    ];
    for (user, role, user_groups, model, bypass, want) in cases {
        assert_eq!(
            can_read(user, role, user_groups, model, bypass),
            want,
            "{user} {role} {user_groups:?} {model:?} bypass={bypass}"
        );
    }
}

#[test]
fn can_write_matrix() {
    let editors = ac(json!({"write": {"group_ids": ["editors"]}})).unwrap();
    let public = ModelRecord {
        owner_id: "owner",
        access_control: None,
    };
    let edited = ModelRecord {
        owner_id: "owner",
        access_control: Some(&editors),
    };
    assert!(can_write("x", Role::Admin, &[], None));
    assert!(!can_write("x", Role::User, &[], None));
    assert!(can_write("owner", Role::User, &[], Some(public)));
    assert!(!can_write("x", Role::User, &[], Some(public)));
    assert!(can_write("x", Role::User, &groups(&["editors"]), Some(edited)));
    assert!(!can_write("x", Role::User, &[], Some(edited)));
    assert!(!can_write("owner", Role::Pending, &[], Some(public)));
}
