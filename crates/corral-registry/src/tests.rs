//! The merge, table by table, against the reference's documented cases (its section 10).

use serde_json::{json, Value};

use crate::{lowest_version, strip_prefix, version_key, with_latest, Catalogue, ConnectionView};

fn conn(idx: usize) -> ConnectionView {
    ConnectionView {
        idx,
        url: format!("http://i{idx}:11434"),
        enabled: true,
        ..ConnectionView::default()
    }
}

fn model(name: &str, digest: &str) -> Value {
    json!({ "name": name, "model": name, "modified_at": "2025-11-01T10:00:00Z", "size": 1, "digest": digest, "details": {} })
}

fn tags(models: &[Value]) -> Option<Value> {
    Some(json!({ "models": models }))
}

/// Three overlapping instances, one prefixed, one filtered, one tagged, one disabled, one
/// answering 401 (no models), one down.
fn fleet() -> (Vec<ConnectionView>, Vec<Option<Value>>, Vec<Option<Value>>) {
    let mut prefixed = conn(1);
    prefixed.prefix_id = Some("gpu".to_owned());
    let mut filtered = conn(2);
    filtered.model_ids = vec!["mistral:latest".to_owned()];
    filtered.tags = Some(vec![json!({"name": "cheap"})]);
    filtered.connection_type = Some("external".to_owned());
    let mut disabled = conn(3);
    disabled.enabled = false;
    let conns = vec![conn(0), prefixed, filtered, disabled, conn(4), conn(5)];
    let tags = vec![
        tags(&[model("llama3:latest", "a0"), model("mistral:latest", "m0")]),
        tags(&[model("llama3:latest", "a1")]),
        tags(&[model("mistral:latest", "m2"), model("phi3:latest", "p2")]),
        tags(&[model("secret:latest", "s3")]),
        Some(json!({ "error": "unauthorized" })),
        None,
    ];
    let ps = vec![
        Some(
            json!({ "models": [{ "name": "llama3:latest", "model": "llama3:latest", "expires_at": "2025-12-22T10:00:00.123456789-05:00" }] }),
        ),
        Some(
            json!({ "models": [{ "name": "llama3:latest", "model": "llama3:latest", "expires_at": "2025-12-22T11:00:00Z" }] }),
        ),
        None,
        None,
        None,
        None,
    ];
    (conns, tags, ps)
}

#[test]
fn merge_follows_the_reference_algorithm() {
    let (conns, tags, ps) = fleet();
    let cat = Catalogue::merge(&conns, &tags, &ps);
    let ids: Vec<&str> = cat.entries().iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["llama3:latest", "mistral:latest", "gpu.llama3:latest"],
        "first-seen order, phi3 filtered out"
    );
    // (id, urls, digest, tags, connection_type)
    type Case<'a> = (&'a str, &'a [usize], &'a str, Option<Value>, &'a str);
    let cases: &[Case<'_>] = &[
        ("llama3:latest", &[0], "a0", None, "local"),
        ("mistral:latest", &[0, 2], "m0", None, "local"),
        ("gpu.llama3:latest", &[1], "a1", None, "local"),
    ];
    for (id, urls, digest, tag, kind) in cases {
        let e = cat.resolve(id).unwrap();
        assert_eq!(e.urls, *urls, "{id}");
        assert_eq!(e.object["digest"], *digest, "{id}: the lowest index's object wins");
        assert_eq!(e.object.get("tags").cloned(), *tag, "{id}");
        assert_eq!(e.object["connection_type"], *kind, "{id}");
        assert_eq!(e.object["urls"], json!(urls));
    }
    let gpu = cat.resolve("gpu.llama3:latest").unwrap();
    assert_eq!(
        gpu.object["name"], "llama3:latest",
        "the prefix goes on `model`, not `name`"
    );
    assert_eq!(
        cat.resolve("llama3:latest").unwrap().object["expires_at"],
        json!(1_766_415_600)
    );
    assert_eq!(gpu.object["expires_at"], json!(1_766_401_200));
    assert!(
        cat.resolve("secret").is_none(),
        "a disabled instance contributes nothing"
    );
}

#[test]
fn tags_and_connection_type_come_from_the_first_holder_only() {
    let (mut conns, mut tags, ps) = fleet();
    conns[0].enabled = false;
    tags[0] = None;
    let cat = Catalogue::merge(&conns, &tags, &ps);
    let mistral = cat.resolve("mistral").unwrap();
    assert_eq!(mistral.urls, vec![2]);
    assert_eq!(mistral.object["tags"], json!([{"name": "cheap"}]));
    assert_eq!(mistral.object["connection_type"], "external");
}

#[test]
fn ps_merge_prefixes_and_collects_urls() {
    let (conns, tags, ps) = fleet();
    let cat = Catalogue::merge(&conns, &tags, &ps);
    let ps = cat.ps_json();
    assert_eq!(ps.len(), 2);
    assert_eq!(ps[0]["model"], "llama3:latest");
    assert_eq!(ps[1]["model"], "gpu.llama3:latest");
    assert_eq!(ps[1]["name"], "llama3:latest");
    assert_eq!(cat.loaded_on(1), vec!["gpu.llama3:latest"]);
}

#[test]
fn nothing_reachable_gives_an_empty_catalogue() {
    let conns = vec![conn(0), conn(1)];
    let cat = Catalogue::merge(&conns, &[None, None], &[None, None]);
    assert!(cat.entries().is_empty());
    assert!(cat.models_json().is_empty());
    let cat = Catalogue::merge(&conns, &[], &[]);
    assert!(cat.entries().is_empty(), "missing slots are not a panic");
}

#[test]
fn lookups_imply_latest_and_fold_case() {
    let (conns, tags, ps) = fleet();
    let cat = Catalogue::merge(&conns, &tags, &ps);
    for (asked, found) in [
        ("llama3", Some("llama3:latest")),
        ("LLAMA3", Some("llama3:latest")),
        ("gpu.llama3", Some("gpu.llama3:latest")),
        ("llama3:8b", None),
        ("", None),
        ("gpu.", None),
    ] {
        assert_eq!(cat.resolve(asked).map(|e| e.id.as_str()), found, "{asked:?}");
    }
}

#[test]
fn prefixes_are_stripped_only_where_they_lead() {
    let cases = [
        ("gpu.llama3:latest", Some("gpu"), "llama3:latest"),
        ("gpu.gpu.llama3:latest", Some("gpu"), "gpu.llama3:latest"),
        ("my-gpu.llama3:latest", Some("gpu"), "my-gpu.llama3:latest"),
        ("llama3:gpu.q4", Some("gpu"), "llama3:gpu.q4"),
        ("gpullama3", Some("gpu"), "gpullama3"),
        ("llama3", None, "llama3"),
        ("llama3", Some(""), "llama3"),
    ];
    for (model, prefix, want) in cases {
        assert_eq!(strip_prefix(model, prefix), want, "{model} {prefix:?}");
    }
    let (conns, tags, ps) = fleet();
    let cat = Catalogue::merge(&conns, &tags, &ps);
    assert_eq!(cat.upstream_name(1, "gpu.llama3:latest"), "llama3:latest");
    assert_eq!(cat.upstream_name(0, "gpu.llama3:latest"), "gpu.llama3:latest");
    assert_eq!(with_latest("hf.co/bartowski/m:Q4_K_M"), "hf.co/bartowski/m:Q4_K_M");
    assert_eq!(with_latest("user/model"), "user/model:latest");
}

#[test]
fn the_lowest_version_wins_and_odd_versions_do_not_crash() {
    let v =
        |pairs: &[(usize, &str)]| lowest_version(&pairs.iter().map(|(i, s)| (*i, (*s).to_owned())).collect::<Vec<_>>());
    assert_eq!(
        v(&[(0, "0.12.10"), (1, "0.9.0"), (2, "v0.33.0")]),
        Some((1, "0.9.0".to_owned()))
    );
    assert_eq!(
        v(&[(0, "0.6.0-rc1"), (1, "0.6.0")]),
        Some((0, "0.6.0-rc1".to_owned())),
        "ties go to the lowest index"
    );
    assert_eq!(v(&[(0, "banana"), (1, "0.1.0")]), Some((0, "banana".to_owned())));
    assert_eq!(v(&[]), None);
    assert_eq!(version_key("v1.2.3-beta"), vec![1, 2, 3]);
    assert_eq!(version_key("0.0.0"), vec![0, 0, 0]);
}
