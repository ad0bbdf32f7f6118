//! Ollama's OpenAI-compatible `/v1` layer, in its current (v0.32.6+) wire format, built on
//! the native handlers' behaviour.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::native::{admit, decode};
use crate::state::Sim;
use crate::text::{self, Words};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/chat/completions", web::post().to(chat))
        .route("/v1/completions", web::post().to(completions))
        .route("/v1/embeddings", web::post().to(embeddings))
        .route("/v1/models", web::get().to(models))
        .route("/v1/models/{model}", web::get().to(model));
}

fn oai_error(status: StatusCode, message: &str) -> HttpResponse {
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        404 => "not_found_error",
        _ => "api_error",
    };
    HttpResponse::build(status)
        .content_type("application/json")
        .body(format!(
            "{}\n",
            json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })
        ))
}

fn created() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn chat(sim: web::Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
    generate(sim.into_inner(), req, body, true).await
}

async fn completions(sim: web::Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
    generate(sim.into_inner(), req, body, false).await
}

async fn generate(sim: Arc<Sim>, req: HttpRequest, body: Bytes, chat: bool) -> HttpResponse {
    let route = if chat {
        "/v1/chat/completions"
    } else {
        "/v1/completions"
    };
    let map = match decode(&body) {
        Ok(m) => m,
        Err(_) => return oai_error(StatusCode::BAD_REQUEST, "invalid request body"),
    };
    let name = map.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    let ticket = match admit(&sim, &req, route, &body, Some(&name)) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    ticket.finish();
    if chat && map.get("messages").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        return oai_error(StatusCode::BAD_REQUEST, "[] is too short - 'messages'");
    }
    let Some(m) = sim.find(&name) else {
        return oai_error(StatusCode::NOT_FOUND, &format!("model '{name}' not found"));
    };
    sim.load(&m).await;
    let max = map.get("max_tokens").and_then(Value::as_u64).map(|n| n as usize);
    let chunks = max.unwrap_or(sim.config.default_chunks);
    let reason = if max.is_some() { "length" } else { "stop" };
    let stream = map.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let usage_wanted = map
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut words = Words::new(text::hash(&body.escape_ascii().to_string()));
    let tokens: Vec<String> = (0..chunks).map(|i| words.token(i == 0)).collect();
    let id = format!("{}-{}", if chat { "chatcmpl" } else { "cmpl" }, sim.next() % 999);
    let usage = json!({ "prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks });
    let t = created();
    let model = name.clone();
    if !stream {
        let text = tokens.concat();
        let choice = if chat {
            json!({ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": reason })
        } else {
            json!({ "text": text, "index": 0, "finish_reason": reason })
        };
        let object = if chat { "chat.completion" } else { "text_completion" };
        sim.served(12, chunks);
        return HttpResponse::Ok().content_type("application/json").body(
            json!({ "id": id, "object": object, "created": t, "model": model, "system_fingerprint": "fp_ollama", "choices": [choice], "usage": usage })
                .to_string(),
        );
    }
    let mut events: Vec<Value> = Vec::new();
    for (i, tok) in tokens.iter().enumerate() {
        if chat {
            let delta = if i == 0 {
                json!({ "role": "assistant", "content": tok })
            } else {
                json!({ "content": tok })
            };
            events.push(json!({ "id": id, "object": "chat.completion.chunk", "created": t, "model": model, "system_fingerprint": "fp_ollama", "choices": [{ "index": 0, "delta": delta, "finish_reason": null }] }));
        } else {
            events.push(json!({ "id": id, "object": "text_completion", "created": t, "choices": [{ "text": tok, "index": 0, "finish_reason": null }], "model": model, "system_fingerprint": "fp_ollama" }));
        }
    }
    if chat {
        events.push(json!({ "id": id, "object": "chat.completion.chunk", "created": t, "model": model, "system_fingerprint": "fp_ollama", "choices": [{ "index": 0, "delta": {}, "finish_reason": reason }] }));
        if usage_wanted {
            events.push(json!({ "id": id, "object": "chat.completion.chunk", "created": t, "model": model, "system_fingerprint": "fp_ollama", "choices": [], "usage": usage }));
        }
    } else {
        events.push(json!({ "id": id, "object": "text_completion", "created": t, "choices": [{ "text": "", "index": 0, "finish_reason": reason }], "model": model, "system_fingerprint": "fp_ollama" }));
        if usage_wanted {
            events.push(json!({ "id": id, "object": "text_completion", "created": t, "choices": [], "model": model, "system_fingerprint": "fp_ollama", "usage": usage }));
        }
    }
    let mut frames: Vec<Bytes> = events
        .into_iter()
        .map(|e| Bytes::from(format!("data: {e}\n\n")))
        .collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let delay =
        (sim.config.tokens_per_sec > 0.0).then(|| std::time::Duration::from_secs_f64(1.0 / sim.config.tokens_per_sec));
    let body = futures_util::stream::unfold((frames.into_iter(), true), move |(mut it, first)| {
        let sim = sim.clone();
        async move {
            let next = it.next()?;
            if let (Some(d), false) = (delay, first) {
                tokio::time::sleep(d).await;
            }
            if it.len() == 0 {
                // The last frame: the answer is sent whole.
                sim.served(12, chunks);
            }
            Some((Ok::<Bytes, actix_web::Error>(next), (it, false)))
        }
    });
    HttpResponse::Ok().content_type("text/event-stream").streaming(body)
}

async fn embeddings(sim: web::Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let sim = sim.into_inner();
    let Ok(map) = decode(&body) else {
        return oai_error(StatusCode::BAD_REQUEST, "invalid request body");
    };
    let name = map.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
    let ticket = match admit(&sim, &req, "/v1/embeddings", &body, Some(&name)) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    ticket.finish();
    let inputs: Vec<String> = match map.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => return oai_error(StatusCode::BAD_REQUEST, "invalid input"),
    };
    let Some(m) = sim.find(&name) else {
        return oai_error(
            StatusCode::NOT_FOUND,
            &format!("model \"{name}\" not found, try pulling it first"),
        );
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({ "object": "embedding", "embedding": text::embedding(t, m.embedding_length.max(1)), "index": i }))
        .collect();
    let n = inputs.len() * 4;
    sim.served(n, 0);
    HttpResponse::Ok().content_type("application/json").body(
        json!({ "object": "list", "data": data, "model": name, "usage": { "prompt_tokens": n, "total_tokens": n } })
            .to_string(),
    )
}

fn owned_by(name: &str) -> &str {
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() >= 2 {
        parts[parts.len() - 2]
    } else {
        "library"
    }
}

fn modified_unix(modified_at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(modified_at)
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

async fn models(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    let sim = sim.into_inner();
    if let Ok(t) = admit(&sim, &req, "/v1/models", b"", None) {
        t.finish();
    }
    let list: Vec<Value> = sim
        .models()
        .iter()
        .map(|m| json!({ "id": m.name, "object": "model", "created": modified_unix(&m.modified_at), "owned_by": owned_by(&m.name) }))
        .collect();
    let data = if list.is_empty() {
        Value::Null
    } else {
        Value::Array(list)
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json!({ "object": "list", "data": data }).to_string())
}

async fn model(sim: web::Data<Sim>, path: web::Path<String>) -> HttpResponse {
    match sim.find(&path) {
        Some(m) => HttpResponse::Ok().content_type("application/json").body(
            json!({ "id": path.as_str(), "object": "model", "created": modified_unix(&m.modified_at), "owned_by": owned_by(&m.name) }).to_string(),
        ),
        None => oai_error(StatusCode::NOT_FOUND, &format!("model '{}' not found", crate::config::with_tag(&path))),
    }
}
