//! Many instances, one catalogue: the merge, routing by model, prefixes and keys, disabled
//! and unresponsive instances, per-index routes and fleet-wide operations.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use corral_config::ConnectionSettings;
use corral_sim::{SimConfig, SimHandle, SimModel};
use serde_json::{json, Value};

use crate::support::{body_of, chat_body, client, lines, settings_for, Gateway};

/// Five connections:
/// 0 plain (llama3.2, mistral, all-minilm; `model_ids` keeps two, tagged),
/// 1 prefixed `gpu` and keyed (llama3.2, qwen3),
/// 2 disabled (llama3.2, secret),
/// 3 accepts connections and never answers,
/// 4 plain, overlapping 0 (llama3.2, phi3),
/// 5 dead (nothing listens).
struct Fleet {
    sims: Vec<SimHandle>,
    _silent: TcpListener,
    gw: Gateway,
}

async fn sim_with(models: &[SimModel], version: &str, key: Option<&str>) -> SimHandle {
    SimHandle::start(SimConfig {
        models: models.to_vec(),
        version: version.to_owned(),
        api_key: key.map(str::to_owned),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

async fn fleet() -> Fleet {
    let a = sim_with(
        &[
            SimModel::chat("llama3.2"),
            SimModel::chat("mistral"),
            SimModel::embedding("all-minilm"),
        ],
        "0.33.0",
        None,
    )
    .await;
    let b = sim_with(
        &[SimModel::chat("llama3.2"), SimModel::thinking("qwen3")],
        "0.12.10",
        Some("key-b"),
    )
    .await;
    let c = sim_with(&[SimModel::chat("llama3.2"), SimModel::chat("secret")], "0.1.0", None).await;
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let e = sim_with(&[SimModel::chat("llama3.2"), SimModel::chat("phi3")], "0.9.0", None).await;
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let dead = crate::support::dead_url();
    let mut settings = settings_for(&[&a.url(), &b.url(), &c.url(), &silent_url, &e.url(), &dead]);
    settings.upstream.discovery_timeout = 0.5;
    settings.upstream.first_byte_timeout = 2.0;
    settings.ollama.models_cache_ttl = 0;
    // The reference's uniform random choice, so both holders of a model get traffic.
    settings.balance.policy = "random".to_owned();
    let configs = &mut settings.ollama.api_configs;
    configs.insert(
        "0".to_owned(),
        ConnectionSettings {
            model_ids: Some(vec!["llama3.2:latest".to_owned(), "mistral:latest".to_owned()]),
            tags: Some(vec![json!({"name": "home"})]),
            ..ConnectionSettings::default()
        },
    );
    configs.insert(
        "1".to_owned(),
        ConnectionSettings {
            prefix_id: Some("gpu".to_owned()),
            key: Some("key-b".to_owned()),
            connection_type: Some("external".to_owned()),
            ..ConnectionSettings::default()
        },
    );
    configs.insert(
        "2".to_owned(),
        ConnectionSettings {
            enable: Some(false),
            ..ConnectionSettings::default()
        },
    );
    let gw = Gateway::start(settings).await;
    Fleet {
        sims: vec![a, b, c, e],
        _silent: silent,
        gw,
    }
}

async fn get_json(url: &str) -> (StatusCode, Value) {
    let mut resp = client().get(url).send().await.unwrap();
    let status = resp.status();
    (status, serde_json::from_slice(&body_of(&mut resp).await).unwrap())
}

fn count(sim: &SimHandle, route: &str) -> u64 {
    sim.stats().requests.get(route).copied().unwrap_or(0)
}

#[actix_web::test]
async fn the_merged_listing_follows_the_reference_and_skips_unresponsive_instances() {
    let f = fleet().await;
    let start = Instant::now();
    let (status, tags) = get_json(&f.gw.at("/ollama/api/tags")).await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "the silent instance did not stall the listing"
    );
    assert_eq!(status, StatusCode::OK);
    let models = tags["models"].as_array().unwrap();
    let summary: Vec<(String, Value, Value, Value)> = models
        .iter()
        .map(|m| {
            (
                m["model"].as_str().unwrap().to_owned(),
                m["urls"].clone(),
                m["connection_type"].clone(),
                m["tags"].clone(),
            )
        })
        .collect();
    let home = json!([{"name": "home"}]);
    assert_eq!(
        summary,
        vec![
            (
                "llama3.2:latest".to_owned(),
                json!([0, 4]),
                json!("local"),
                home.clone()
            ),
            ("mistral:latest".to_owned(), json!([0]), json!("local"), home),
            (
                "gpu.llama3.2:latest".to_owned(),
                json!([1]),
                json!("external"),
                Value::Null
            ),
            (
                "gpu.qwen3:latest".to_owned(),
                json!([1]),
                json!("external"),
                Value::Null
            ),
            ("phi3:latest".to_owned(), json!([4]), json!("local"), Value::Null),
        ]
    );
    let gpu = &models[2];
    assert_eq!(gpu["name"], "llama3.2:latest", "the prefix goes on `model` only");
    // The root listing, for plain Ollama clients, is the same catalogue.
    let (_, root) = get_json(&f.gw.at("/api/tags")).await;
    assert_eq!(root["models"].as_array().unwrap().len(), 5);
    assert_eq!(
        f.sims[2].stats().requests,
        Default::default(),
        "the disabled instance is never contacted"
    );
    f.gw.stop().await;
}

#[actix_web::test]
async fn chats_land_on_holders_with_prefixes_stripped_and_keys_sent_only_to_their_instance() {
    let f = fleet().await;
    let c = client();
    for _ in 0..20 {
        let resp = c
            .post(f.gw.at("/api/chat"))
            .send_json(&chat_body("llama3.2", 2, false))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let (a, e) = (count(&f.sims[0], "/api/chat"), count(&f.sims[3], "/api/chat"));
    assert_eq!(a + e, 20, "every chat went to a holder");
    assert!(a > 0 && e > 0, "both holders served: {a} and {e}");
    assert_eq!(
        count(&f.sims[1], "/api/chat"),
        0,
        "the prefixed instance's llama3.2 is another model"
    );

    let resp = c
        .post(f.gw.at("/ollama/api/chat"))
        .send_json(&chat_body("gpu.llama3.2", 2, false))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the keyed instance accepted the gateway's key"
    );
    let last = f.sims[1].last_request_to("/api/chat").unwrap();
    assert_eq!(
        last.json.unwrap()["model"],
        "llama3.2",
        "the leading prefix was stripped"
    );
    let auth = |sim: &SimHandle| {
        let last = sim.stats().last_request.unwrap();
        last.headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(auth(&f.sims[1]).as_deref(), Some("Bearer key-b"));
    assert_eq!(auth(&f.sims[0]), None, "the key reaches only its own instance");
    assert_eq!(auth(&f.sims[3]), None);

    let resp = c
        .post(f.gw.at("/api/chat"))
        .send_json(&chat_body("secret", 2, false))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "held only by a disabled instance, while one never listed it is silent"
    );
    assert_eq!(
        f.sims[2].stats().requests,
        Default::default(),
        "the disabled instance is never contacted"
    );
    f.gw.stop().await;
}

#[actix_web::test]
async fn unknown_models_and_indices_get_clear_4xx_answers() {
    let a = sim_with(&[SimModel::chat("llama3.2")], "0.33.0", None).await;
    let gw = Gateway::start(settings_for(&[&a.url()])).await;
    let c = client();
    let mut resp = c
        .post(gw.at("/api/chat"))
        .send_json(&chat_body("nope", 2, false))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "Ollama's status at the root");
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert_eq!(v["error"], "model 'nope' not found");
    let mut resp = c
        .post(gw.at("/ollama/api/chat"))
        .send_json(&chat_body("nope", 2, false))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "Open WebUI's status under /ollama"
    );
    let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
    assert_eq!(v["detail"], "Model 'nope:latest' was not found");
    for (path, status) in [
        ("/ollama/api/tags/1", StatusCode::NOT_FOUND),
        ("/ollama/api/tags/x", StatusCode::BAD_REQUEST),
        ("/ollama/api/version/-2", StatusCode::NOT_FOUND),
    ] {
        let (got, body) = get_json(&gw.at(path)).await;
        assert_eq!(got, status, "{path}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let (status, tags) = get_json(&gw.at("/ollama/api/tags/0")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        tags["models"][0].get("urls").is_none(),
        "a pinned listing is the instance's own"
    );
    gw.stop().await;
}

#[actix_web::test]
async fn version_is_the_lowest_and_ps_is_merged() {
    let f = fleet().await;
    let (status, v) = get_json(&f.gw.at("/ollama/api/version")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["version"], "0.9.0");
    let (_, v) = get_json(&f.gw.at("/ollama/api/version/1")).await;
    assert_eq!(v["version"], "0.12.10", "a pinned version is that instance's");
    let resp = client()
        .post(f.gw.at("/ollama/api/chat"))
        .send_json(&chat_body("gpu.qwen3", 2, false))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, ps) = get_json(&f.gw.at("/api/ps")).await;
    let loaded: Vec<&str> = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(loaded, vec!["gpu.qwen3:latest"]);
    f.gw.stop().await;
}

#[actix_web::test]
async fn delete_on_one_instance_and_pull_to_the_whole_fleet() {
    let f = fleet().await;
    let c = client();
    let mut resp = c
        .delete(f.gw.at("/ollama/api/delete/4"))
        .send_json(&json!({"model": "phi3"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body_of(&mut resp).await, "true");
    assert!(f.sims[3].stats().requests.contains_key("/api/delete"));
    assert!(
        !f.sims[0].stats().requests.contains_key("/api/delete"),
        "only the named instance"
    );
    let (_, tags) = get_json(&f.gw.at("/ollama/api/tags")).await;
    assert!(!tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["model"] == "phi3:latest"));

    let mut resp = c
        .post(f.gw.at("/ollama/api/pull/all"))
        .send_json(&json!({"model": "phi3"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers().get("content-type").unwrap(), "application/x-ndjson");
    let all = lines(&body_of(&mut resp).await);
    let mut named: Vec<u64> = all.iter().filter_map(|l| l["url_idx"].as_u64()).collect();
    named.dedup();
    named.sort_unstable();
    named.dedup();
    assert_eq!(
        named,
        vec![0, 1, 3, 4, 5],
        "every enabled instance reported (the silent one with an error)"
    );
    assert_eq!(
        all.last().unwrap()["error"],
        "pull failed on instance(s) [3, 5]",
        "{all:?}"
    );
    for idx in [0u64, 1, 4] {
        assert!(
            all.iter().any(|l| l["url_idx"] == idx && l["status"] == "success"),
            "instance {idx} succeeded"
        );
    }
    assert!(all.iter().any(|l| l["url_idx"] == 3 && l["error"].is_string()));
    let (_, tags) = get_json(&f.gw.at("/ollama/api/tags")).await;
    let phi: Vec<(&str, &Value)> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == "phi3:latest")
        .map(|m| (m["model"].as_str().unwrap(), &m["urls"]))
        .collect();
    // Instance 0's `model_ids` keeps phi3 out of its share of the catalogue.
    assert_eq!(
        phi,
        vec![("gpu.phi3:latest", &json!([1])), ("phi3:latest", &json!([4]))]
    );
    f.gw.stop().await;
}
