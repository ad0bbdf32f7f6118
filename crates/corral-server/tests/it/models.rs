//! Open WebUI's model file routes: upload a GGUF file as a blob and create a model from it;
//! downloads only from the allowed hosts.

use actix_web::http::StatusCode;
use corral_config::ConnectionSettings;
use corral_sim::{SimConfig, SimHandle};
use serde_json::Value;

use crate::support::{body_of, client, settings_for, Gateway};

#[actix_web::test]
async fn an_uploaded_file_becomes_a_blob_and_a_model_on_the_chosen_instance() {
    let sim = SimHandle::start(SimConfig {
        api_key: Some("k".to_owned()),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut settings = settings_for(&[&sim.url()]);
    settings.server.data_dir = std::env::temp_dir()
        .join(format!("corral-up-{}", std::process::id()))
        .display()
        .to_string();
    settings.ollama.api_configs.insert(
        "0".to_owned(),
        ConnectionSettings {
            key: Some("k".to_owned()),
            ..ConnectionSettings::default()
        },
    );
    let gw = Gateway::start(settings).await;
    let file = b"GGUF\x03\x00 not really a model, but bytes all the same".repeat(1000);
    let boundary = "corraltestboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../tiny.gguf\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut resp = client()
        .post(gw.at("/ollama/models/upload/0"))
        .content_type(format!("multipart/form-data; boundary={boundary}"))
        .send_body(body)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers().get("content-type").unwrap(), "text/event-stream");
    let text = String::from_utf8(body_of(&mut resp).await.to_vec()).unwrap();
    let events: Vec<Value> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.trim_start_matches("data: ")).unwrap())
        .collect();
    assert_eq!(events[0]["completed"], file.len());
    let done = events.last().unwrap();
    assert_eq!(done["done"], true, "{events:?}");
    assert_eq!(done["name"], "tiny.gguf", "the path was cut to its file name");
    assert_eq!(done["model_created"], "tiny");
    let blob = done["blob"].as_str().unwrap();
    let head = client()
        .head(format!("{}/api/blobs/{blob}", sim.url()))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK, "the instance holds the blob");
    let mut resp = client()
        .get(format!("{}/api/tags", sim.url()))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    let tags: Value = resp.json().await.unwrap();
    assert!(tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "tiny:latest"));
    gw.stop().await;
}

#[actix_web::test]
async fn downloads_come_only_from_the_allowed_hosts() {
    let sim = SimHandle::start(SimConfig::default()).await.unwrap();
    let gw = Gateway::start(settings_for(&[&sim.url()])).await;
    for url in [
        "http://huggingface.co/x.gguf",
        "https://evil.example/x.gguf",
        "file:///etc/passwd",
    ] {
        let mut resp = client()
            .post(gw.at("/ollama/models/download"))
            .send_json(&serde_json::json!({ "url": url }))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{url}");
        let v: Value = serde_json::from_slice(&body_of(&mut resp).await).unwrap();
        assert_eq!(
            v["detail"],
            "Invalid file_url. Only URLs from allowed hosts are permitted."
        );
    }
    gw.stop().await;
}
