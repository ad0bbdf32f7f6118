//! Hardening: what an attacker or a broken instance could do, and what the gateway answers.

use actix_web::http::StatusCode;
use corral_sim::{Faults, SimConfig, SimHandle};
use serde_json::{json, Value};

use crate::support::{body_of, client, lines, Gateway};

/// A chat asking for a tool whose one required argument is a boolean: the simulator calls it
/// with `{"done": true}`.
fn tool_chat(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Are we there yet?"}],
        "stream": true,
        "tools": [{
            "type": "function",
            "function": {
                "name": "finish",
                "description": "Say whether the work is done.",
                "parameters": {
                    "type": "object",
                    "properties": {"done": {"type": "boolean"}},
                    "required": ["done"],
                },
            },
        }],
    })
}

#[actix_web::test]
async fn a_tool_call_saying_done_then_a_dead_instance_is_not_a_clean_end() {
    // The instance dies right after the tool-call chunk, before its final object.
    let sim = SimHandle::start(SimConfig {
        faults: Faults {
            drop_after_chunks: Some(1),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let gw = Gateway::in_front_of(&sim.url()).await;
    for path in ["/api/chat", "/ollama/api/chat", "/ollama/api/chat/0"] {
        let mut resp = client()
            .post(gw.at(path))
            .send_json(&tool_chat("llama3.2"))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let all = lines(&body_of(&mut resp).await);
        assert_eq!(
            all[0]["message"]["tool_calls"][0]["function"]["arguments"],
            json!({"done": true}),
            "{path}: {all:?}"
        );
        let last = all.last().unwrap();
        assert!(
            last["error"].is_string(),
            "{path}: the truncated stream looked complete: {all:?}"
        );
        assert!(all.iter().all(|l| l["done"] != json!(true)), "{path}: {all:?}");
    }
    // Without the fault the same chat ends with its final object and no error line.
    sim.set_faults(Faults::default());
    let mut resp = client()
        .post(gw.at("/api/chat"))
        .send_json(&tool_chat("llama3.2"))
        .await
        .unwrap();
    let all = lines(&body_of(&mut resp).await);
    assert_eq!(all.last().unwrap()["done"], json!(true), "{all:?}");
    assert!(all.iter().all(|l| l.get("error").is_none()), "{all:?}");
    gw.stop().await;
}
