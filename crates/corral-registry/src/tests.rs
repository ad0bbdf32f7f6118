//! The merge, table by table, against the reference's documented cases (its section 10
//! checklist), plus Corral's fixes: leading-only prefix stripping, one `:latest` rule for
//! every lookup, and no input that panics.

use serde_json::{json, Value};

use crate::merge::unix_seconds;
use crate::{lowest_version, strip_prefix, version_key, with_latest, Catalogue, ConnectionView, RegistryError};

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

fn listing(models: &[Value]) -> Option<Value> {
    Some(json!({ "models": models }))
}

fn loaded(name: &str, expires_at: &str) -> Value {
    json!({ "name": name, "model": name, "size": 1, "digest": "x", "expires_at": expires_at })
}

/// The checklist's fleet: overlapping model sets with different digests; a prefix on one,
/// `model_ids` and `tags` on another; one disabled, one answering 401 JSON, one down.
fn fleet() -> (Vec<ConnectionView>, Vec<Option<Value>>, Vec<Option<Value>>) {
    let mut prefixed = conn(1);
    prefixed.prefix_id = Some("gpu".to_owned());
    let mut filtered = conn(2);
    filtered.model_ids = vec!["mistral:latest".to_owned(), "phi3:latest".to_owned()];
    filtered.tags = Some(vec![json!({"name": "cheap"})]);
    filtered.connection_type = Some("external".to_owned());
    let mut disabled = conn(3);
    disabled.enabled = false;
    let conns = vec![conn(0), prefixed, filtered, disabled, conn(4), conn(5)];
    let tags = vec![
        listing(&[model("llama3:latest", "a0"), model("mistral:latest", "m0")]),
        listing(&[model("llama3:latest", "a1")]),
        listing(&[
            model("mistral:latest", "m2"),
            model("phi3:latest", "p2"),
            model("qwen2:latest", "q2"),
        ]),
        listing(&[model("secret:latest", "s3")]),
        Some(json!({ "error": "unauthorized" })),
        None,
    ];
    let ps = vec![
        listing(&[
            loaded("llama3:latest", "2025-12-22T10:00:00.123456789-05:00"),
            loaded("mistral:latest", "2025-12-22T12:00:00.5-05:00"),
        ]),
        listing(&[loaded("llama3:latest", "2025-12-22T11:00:00Z")]),
        listing(&[loaded("mistral:latest", "2025-12-22T09:30:00+02:00")]),
        listing(&[loaded("secret:latest", "2025-12-22T11:00:00Z")]),
        Some(json!({ "error": "unauthorized" })),
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
        ["llama3:latest", "mistral:latest", "gpu.llama3:latest", "phi3:latest"],
        "first-seen order by index; qwen2 filtered by model_ids; nothing from 3, 4 or 5"
    );
    // (id, name, urls, digest, tags, connection_type, expires_at)
    type Case<'a> = (&'a str, &'a str, &'a [usize], &'a str, Value, &'a str, Value);
    let cases: &[Case<'_>] = &[
        (
            "llama3:latest",
            "llama3:latest",
            &[0],
            "a0",
            Value::Null,
            "local",
            json!(1_766_415_600),
        ),
        (
            "mistral:latest",
            "mistral:latest",
            &[0, 2],
            "m0",
            Value::Null,
            "local",
            json!(1_766_422_800),
        ),
        (
            "gpu.llama3:latest",
            "llama3:latest",
            &[1],
            "a1",
            Value::Null,
            "local",
            json!(1_766_401_200),
        ),
        (
            "phi3:latest",
            "phi3:latest",
            &[2],
            "p2",
            json!([{"name": "cheap"}]),
            "external",
            Value::Null,
        ),
    ];
    for (id, name, urls, digest, tag, kind, expires) in cases {
        let e = cat.resolve(id).unwrap();
        let field = |k: &str| e.object.get(k).cloned().unwrap_or(Value::Null);
        assert_eq!(e.urls, *urls, "{id}");
        assert_eq!(field("urls"), json!(urls), "{id}");
        assert_eq!(field("model"), json!(id), "{id}: the prefix goes on `model`");
        assert_eq!(field("name"), json!(name), "{id}: `name` stays unprefixed");
        assert_eq!(field("digest"), json!(digest), "{id}: the lowest index's object wins");
        assert_eq!(field("tags"), *tag, "{id}");
        assert_eq!(field("connection_type"), json!(kind), "{id}");
        assert_eq!(field("expires_at"), *expires, "{id}: first instance with it loaded");
    }
    let keys: Vec<&str> = cat.entries()[0].object.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "name",
            "model",
            "modified_at",
            "size",
            "digest",
            "details",
            "connection_type",
            "expires_at",
            "urls"
        ],
        "upstream fields keep their order; Corral's follow"
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
    assert_eq!(
        mistral.object["expires_at"],
        json!(1_766_388_600),
        "instance 0 is disabled, so its /api/ps no longer counts"
    );
}

#[test]
fn ps_merge_prefixes_and_collects_urls() {
    let (conns, tags, ps) = fleet();
    let cat = Catalogue::merge(&conns, &tags, &ps);
    let ps = cat.ps_json();
    let got: Vec<(&str, &str, Value)> = ps
        .iter()
        .map(|m| {
            (
                m["model"].as_str().unwrap(),
                m["name"].as_str().unwrap(),
                m["urls"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("llama3:latest", "llama3:latest", json!([0])),
            ("mistral:latest", "mistral:latest", json!([0, 2])),
            ("gpu.llama3:latest", "llama3:latest", json!([1])),
        ]
    );
    assert_eq!(
        ps[1]["expires_at"], "2025-12-22T12:00:00.5-05:00",
        "first occurrence wins"
    );
    assert!(ps
        .iter()
        .all(|m| m.get("tags").is_none() && m.get("connection_type").is_none()));
    assert_eq!(cat.loaded_on(1), vec!["gpu.llama3:latest"]);
    assert_eq!(cat.loaded_on(2), vec!["mistral:latest"]);
    assert!(cat.loaded_on(3).is_empty(), "disabled");
}

#[test]
fn nothing_reachable_gives_an_empty_catalogue() {
    let conns = vec![conn(0), conn(1)];
    for cat in [
        Catalogue::merge(&conns, &[None, None], &[None, None]),
        Catalogue::merge(&conns, &[], &[]),
        Catalogue::merge(&[], &[listing(&[model("a:latest", "a")])], &[]),
    ] {
        assert!(cat.entries().is_empty());
        assert!(cat.models_json().is_empty());
        assert!(cat.ps_json().is_empty());
        assert!(cat.openai_models(0).is_empty());
        assert_eq!(cat.holders("a"), &[] as &[usize]);
    }
}

#[test]
fn odd_bodies_contribute_nothing_and_never_panic() {
    let bodies = [
        json!([]),
        json!("models"),
        json!({ "models": "llama3" }),
        json!({ "models": [1, null, [], { "name": "no-model-key" }, { "model": 5 }] }),
        json!({ "models": [] }),
    ];
    for body in bodies {
        let cat = Catalogue::merge(&[conn(0)], &[Some(body.clone())], &[Some(body.clone())]);
        assert!(cat.entries().is_empty(), "{body}");
        assert!(cat.ps_json().is_empty(), "{body}");
    }
    let body = listing(&[
        model("llama3:latest", "a"),
        model("llama3:latest", "b"),
        json!({ "model": "bare" }),
    ]);
    let cat = Catalogue::merge(
        &[conn(0)],
        &[body],
        &[Some(json!({ "models": [{ "model": "bare", "expires_at": "soon" }] }))],
    );
    assert_eq!(cat.holders("llama3"), &[0], "a model listed twice by one instance");
    assert_eq!(cat.resolve("llama3").unwrap().object["digest"], "a");
    let bare = cat.resolve("bare").unwrap();
    assert_eq!(bare.id, "bare", "an untagged listing is kept as listed");
    assert!(
        bare.object.get("expires_at").is_none(),
        "an unparsable expiry is skipped"
    );
}

#[test]
fn the_merge_order_is_the_index_order() {
    let (conns, tags, ps) = fleet();
    let reversed: Vec<ConnectionView> = conns.iter().rev().cloned().collect();
    assert_eq!(
        Catalogue::merge(&reversed, &tags, &ps),
        Catalogue::merge(&conns, &tags, &ps)
    );
}

#[test]
fn lookups_imply_latest_on_both_sides_and_fold_case() {
    let (conns, mut tags, ps) = fleet();
    tags[5] = tags_with_untagged();
    let cat = Catalogue::merge(&conns, &tags, &ps);
    for (asked, found) in [
        ("llama3:latest", Some("llama3:latest")),
        ("llama3", Some("llama3:latest")),
        ("LLAMA3", Some("llama3:latest")),
        ("gpu.llama3", Some("gpu.llama3:latest")),
        ("gpu.llama3:latest", Some("gpu.llama3:latest")),
        ("GPU.Llama3", Some("gpu.llama3:latest")),
        ("untagged", Some("untagged")),
        ("untagged:latest", Some("untagged")),
        ("llama3:8b", None),
        ("gpu.", None),
        ("gpu", None),
        (".llama3", None),
        ("", None),
        (":", None),
        ("/", None),
        ("secret", None),
        ("qwen2", None),
    ] {
        assert_eq!(cat.resolve(asked).map(|e| e.id.as_str()), found, "{asked:?}");
        assert_eq!(cat.holders(asked).is_empty(), found.is_none(), "{asked:?}");
    }
    assert_eq!(cat.holders("mistral"), &[0, 2]);
    let err = cat.require("llama3:8b").unwrap_err();
    assert_eq!(err.to_string(), "Model 'llama3:8b' was not found");
    assert_eq!(err.kind(), "model_not_found");
    assert_eq!(
        cat.require("nope"),
        Err(RegistryError::ModelNotFound {
            model: "nope:latest".to_owned()
        })
    );
    assert_eq!(cat.require("gpu.llama3").unwrap().urls, vec![1]);
}

fn tags_with_untagged() -> Option<Value> {
    listing(&[json!({ "name": "untagged", "model": "untagged" })])
}

#[test]
fn prefixes_are_stripped_once_and_only_where_they_lead() {
    let cases = [
        ("gpu.llama3:latest", Some("gpu"), "llama3:latest"),
        ("gpu.gpu.llama3:latest", Some("gpu"), "gpu.llama3:latest"),
        ("gpu.llama3:gpu.q4", Some("gpu"), "llama3:gpu.q4"),
        ("my-gpu.llama3:latest", Some("gpu"), "my-gpu.llama3:latest"),
        ("llama3:gpu.q4", Some("gpu"), "llama3:gpu.q4"),
        ("gpullama3", Some("gpu"), "gpullama3"),
        ("gpu.", Some("gpu"), ""),
        ("gpu", Some("gpu"), "gpu"),
        ("llama3", None, "llama3"),
        ("llama3", Some(""), "llama3"),
        ("", Some("gpu"), ""),
    ];
    for (model, prefix, want) in cases {
        assert_eq!(strip_prefix(model, prefix), want, "{model} {prefix:?}");
    }
    let (conns, tags, ps) = fleet();
    let cat = Catalogue::merge(&conns, &tags, &ps);
    for (idx, id, want) in [
        (1, "gpu.llama3:latest", "llama3:latest"),
        (1, "gpu.gpu.llama3:latest", "gpu.llama3:latest"),
        (0, "gpu.llama3:latest", "gpu.llama3:latest"),
        (2, "mistral:latest", "mistral:latest"),
        (99, "gpu.llama3:latest", "gpu.llama3:latest"),
    ] {
        assert_eq!(cat.upstream_name(idx, id), want, "{idx} {id}");
    }
    let mut both = conns.clone();
    both[2].prefix_id = Some("gpu".to_owned());
    let cat2 = Catalogue::merge(&both, &tags, &ps);
    assert_eq!(
        cat2.targets("gpu.mistral"),
        [(2, "mistral:latest")],
        "the prefixed id of a connection's model"
    );
    assert_eq!(cat.targets("mistral"), [(0, "mistral:latest"), (2, "mistral:latest")]);
    assert_eq!(cat.targets("gpu.llama3"), [(1, "llama3:latest")]);
    assert!(cat.targets("nope").is_empty());
    let mut gpu = conn(1);
    gpu.prefix_id = Some("gpu".to_owned());
    let same = Catalogue::merge(
        &[conn(0), gpu],
        &[
            listing(&[model("gpu.llama3:latest", "literal")]),
            listing(&[model("llama3:latest", "prefixed")]),
        ],
        &[],
    );
    assert_eq!(
        same.targets("gpu.llama3"),
        [(0, "gpu.llama3:latest"), (1, "llama3:latest")],
        "one id from a literal name and a prefixed one: each instance gets its own name"
    );
    for (name, want) in [
        ("llama3", "llama3:latest"),
        ("llama3:8b", "llama3:8b"),
        ("user/model", "user/model:latest"),
        ("hf.co/bartowski/m:Q4_K_M", "hf.co/bartowski/m:Q4_K_M"),
        ("registry.local:5000/team/m", "registry.local:5000/team/m:latest"),
        ("gpu.llama3", "gpu.llama3:latest"),
    ] {
        assert_eq!(with_latest(name), want, "{name}");
    }
}

#[test]
fn a_filtered_view_is_a_new_catalogue() {
    let (conns, tags, ps) = fleet();
    let cat = Catalogue::merge(&conns, &tags, &ps);
    let before = cat.clone();
    let view = cat.filter(|e| !e.id.starts_with("llama3"));
    assert_eq!(cat, before, "the shared catalogue is untouched");
    let ids: Vec<&str> = view.entries().iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["mistral:latest", "gpu.llama3:latest", "phi3:latest"]);
    assert!(view.resolve("llama3").is_none());
    assert_eq!(view.resolve("GPU.LLAMA3").map(|e| e.urls.clone()), Some(vec![1]));
    assert_eq!(view.upstream_name(1, "gpu.llama3:latest"), "llama3:latest");
    assert_eq!(view.ps_json().len(), 2, "hidden models are not shown as loaded");
    assert_eq!(cat.filtered(|e| e.id == "phi3:latest").len(), 1);
}

#[test]
fn v1_models_maps_the_merged_list() {
    let (conns, tags, ps) = fleet();
    let cat = Catalogue::merge(&conns, &tags, &ps);
    assert_eq!(
        cat.openai_models(1_700_000_000)[2],
        json!({ "id": "gpu.llama3:latest", "object": "model", "created": 1_700_000_000, "owned_by": "openai" })
    );
    assert_eq!(cat.openai_models(0).len(), 4);
}

#[test]
fn expiry_times_parse_with_nanoseconds_and_offsets() {
    for (at, want) in [
        ("2025-12-22T10:00:00.123456789-05:00", Some(1_766_415_600)),
        ("2025-12-22T11:00:00Z", Some(1_766_401_200)),
        ("2025-12-22T09:30:00+02:00", Some(1_766_388_600)),
        ("2025-12-22T12:00:00.5-05:00", Some(1_766_422_800)),
        ("1969-12-31T23:59:59.5Z", Some(0)),
        ("0001-01-01T00:00:00Z", Some(-62_135_596_800)),
        ("2025-12-22", None),
        ("soon", None),
        ("", None),
    ] {
        assert_eq!(unix_seconds(at), want, "{at}");
    }
}

#[test]
fn the_lowest_version_wins_and_odd_versions_do_not_crash() {
    let v = |pairs: &[(usize, &str)]| {
        let owned: Vec<(usize, String)> = pairs.iter().map(|(i, s)| (*i, (*s).to_owned())).collect();
        lowest_version(&owned).map(|(i, _)| i)
    };
    // (instances and their versions, the chosen instance, why)
    type Case<'a> = (&'a [(usize, &'a str)], Option<usize>, &'a str);
    let cases: &[Case<'_>] = &[
        (
            &[(0, "0.12.10"), (1, "0.9.0"), (2, "v0.33.0")],
            Some(1),
            "numeric, not textual, order",
        ),
        (
            &[(0, "0.6.0-rc1"), (1, "0.6.0")],
            Some(0),
            "the suffix is cut; ties go to the lowest index",
        ),
        (
            &[(3, "0.6.0"), (1, "0.6.0")],
            Some(1),
            "ties go to the lowest index, not the first listed",
        ),
        (&[(0, "0.6"), (1, "0.6.0")], Some(0), "a shorter tuple is lower"),
        (
            &[(0, "banana"), (1, "0.1.0")],
            Some(1),
            "an incomparable version ranks last",
        ),
        (&[(0, ""), (1, "v"), (2, "0.0.0")], Some(2), "so does an empty one"),
        (
            &[(0, "banana"), (1, "cherry")],
            Some(0),
            "only incomparable ones: the lowest index",
        ),
        (&[(0, "0.3rc1.0"), (1, "0.3.0")], Some(0), "leading digits count"),
        (
            &[(0, "99999999999999999999999.0"), (1, "1.0")],
            Some(1),
            "overflow is high, not 0",
        ),
        (&[], None, "none reachable"),
    ];
    for (pairs, want, why) in cases {
        assert_eq!(v(pairs), *want, "{why}: {pairs:?}");
    }
    for (version, key) in [
        ("v1.2.3-beta", Some(vec![1, 2, 3])),
        ("V1.2", Some(vec![1, 2])),
        (" 0.0.0 ", Some(vec![0, 0, 0])),
        ("1.x.3", Some(vec![1, 0, 3])),
        ("0.5.4-12-gabcdef", Some(vec![0, 5, 4])),
        ("banana", None),
        ("-1", None),
        ("", None),
    ] {
        assert_eq!(version_key(version), key, "{version:?}");
    }
    assert_eq!(
        lowest_version(&[(0, "v0.9.0-rc2".to_owned())]),
        Some((0, "v0.9.0-rc2".to_owned())),
        "the original string is reported"
    );
}
