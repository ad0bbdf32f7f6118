//! Ollama's native API: listing, model management, embeddings and the request plumbing
//! every handler shares. Generation lives in `native/generate.rs`.

mod generate;
mod manage;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::config::SimModel;
use crate::state::{Sim, Ticket};
use crate::text;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(root))
            .route(web::head().to(root)),
    )
    .service(
        web::resource("/api/version")
            .route(web::get().to(version))
            .route(web::head().to(version)),
    )
    .service(
        web::resource("/api/tags")
            .route(web::get().to(tags))
            .route(web::head().to(tags)),
    )
    .route("/api/ps", web::get().to(ps))
    .route("/api/show", web::post().to(show))
    .route("/api/chat", web::post().to(generate::chat))
    .route("/api/generate", web::post().to(generate::generate))
    .route("/api/embed", web::post().to(embed))
    .route("/api/embeddings", web::post().to(embeddings))
    .route("/api/pull", web::post().to(manage::pull))
    .route("/api/push", web::post().to(manage::push))
    .route("/api/create", web::post().to(manage::create))
    .route("/api/copy", web::post().to(manage::copy))
    .route("/api/delete", web::delete().to(manage::delete))
    .service(
        web::resource("/api/blobs/{digest}")
            .route(web::head().to(manage::blob_head))
            .route(web::post().to(manage::blob_post)),
    );
}

/// gin's answer for an unknown path.
pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain")
        .body("404 page not found")
}

async fn root() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("Ollama is running")
}

/// `{"error": message}` with `status`, as Ollama's handlers answer.
pub fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json; charset=utf-8")
        .body(json!({ "error": message }).to_string())
}

/// A compact JSON answer.
pub fn ok_json(value: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json; charset=utf-8")
        .body(value.to_string())
}

/// Decodes a JSON request body as Go's `ShouldBindJSON` would.
pub fn decode(body: &[u8]) -> Result<Map<String, Value>, HttpResponse> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(error(StatusCode::BAD_REQUEST, "missing request body"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => {
            let kind = match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "bool",
                _ => "null",
            };
            Err(error(
                StatusCode::BAD_REQUEST,
                &format!("json: cannot unmarshal {kind} into Go value of type api.Request"),
            ))
        }
        Err(e) if e.is_eof() => Err(error(StatusCode::BAD_REQUEST, "unexpected EOF")),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, &format!("invalid character: {e}"))),
    }
}

/// A string field, treating `null` and absence alike.
pub fn str_field<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

/// `model`, else `name` (the deprecated alias).
pub fn model_field(body: &Map<String, Value>) -> String {
    str_field(body, "model")
        .filter(|m| !m.is_empty())
        .or_else(|| str_field(body, "name"))
        .unwrap_or_default()
        .to_owned()
}

/// Checks the bearer key, counts the request, and applies an injected error.
/// `Err` carries the answer to send instead of serving the request.
pub fn admit(
    sim: &Arc<Sim>,
    req: &HttpRequest,
    route: &str,
    body: &[u8],
    model: Option<&str>,
) -> Result<Ticket, HttpResponse> {
    let ticket = sim.begin(req, route, body, model);
    if let Some(key) = &sim.config.api_key {
        let sent = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if sent != format!("Bearer {key}") {
            ticket.finish();
            return Err(error(StatusCode::UNAUTHORIZED, "unauthorized"));
        }
    }
    let faults = sim.faults();
    let on_route = faults.error_route.as_deref().is_none_or(|r| r == route);
    if on_route && faults.error_rate > 0.0 && rand::thread_rng().gen_bool(faults.error_rate.min(1.0)) {
        sim.count_injected();
        ticket.finish();
        let status = StatusCode::from_u16(faults.error_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = if faults.error_message.is_empty() {
            "injected fault"
        } else {
            &faults.error_message
        };
        return Err(error(status, message));
    }
    Ok(ticket)
}

async fn version(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    let sim = sim.into_inner();
    match admit(&sim, &req, "/api/version", b"", None) {
        Ok(t) => {
            t.finish();
            ok_json(&json!({ "version": sim.config.version }))
        }
        Err(resp) => resp,
    }
}

/// The `details` object of a model.
pub fn details(m: &SimModel) -> Value {
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": m.family,
        "families": [m.family],
        "parameter_size": m.parameter_size,
        "quantization_level": m.quantization_level,
    })
}

async fn tags(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    let sim = sim.into_inner();
    let ticket = match admit(&sim, &req, "/api/tags", b"", None) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let mut models = sim.models();
    models.sort_by(|a, b| b.modified_at.cmp(&a.modified_at));
    let list: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({
                "name": m.name, "model": m.name, "modified_at": m.modified_at, "size": m.size,
                "digest": m.digest, "details": details(m), "capabilities": m.capabilities,
            })
        })
        .collect();
    ticket.finish();
    ok_json(&json!({ "models": list }))
}

async fn ps(sim: web::Data<Sim>, req: HttpRequest) -> HttpResponse {
    let sim = sim.into_inner();
    let ticket = match admit(&sim, &req, "/api/ps", b"", None) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let list: Vec<Value> = sim
        .loaded_with_expiry()
        .iter()
        .map(|(m, expires)| {
            json!({
                "name": m.name, "model": m.name, "size": m.size, "digest": m.digest, "details": details(m),
                "expires_at": text::local(*expires), "size_vram": m.size, "context_length": 4096,
            })
        })
        .collect();
    ticket.finish();
    ok_json(&json!({ "models": list }))
}

async fn show(sim: web::Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let sim = sim.into_inner();
    let map = match decode(&body) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let name = model_field(&map);
    let ticket = match admit(&sim, &req, "/api/show", &body, Some(&name)) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    ticket.finish();
    if name.is_empty() {
        return error(StatusCode::BAD_REQUEST, "model is required");
    }
    let Some(m) = sim.find(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("model '{}' not found", crate::config::with_tag(&name)),
        );
    };
    ok_json(&json!({
        "license": "Simulated license",
        "modelfile": format!("# Modelfile generated by \"ollama show\"\nFROM {}\n", m.name),
        "parameters": "stop                           \"<|eot_id|>\"",
        "template": "{{ .Prompt }}",
        "details": details(&m),
        "model_info": {
            "general.architecture": m.family,
            "general.parameter_count": 3_212_749_888u64,
            format!("{}.context_length", m.family): m.context_length,
            format!("{}.embedding_length", m.family): m.embedding_length,
        },
        "capabilities": m.capabilities,
        "modified_at": m.modified_at,
    }))
}

async fn embed(sim: web::Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let sim = sim.into_inner();
    let map = match decode(&body) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let name = model_field(&map);
    let ticket = match admit(&sim, &req, "/api/embed", &body, Some(&name)) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    if name.is_empty() {
        ticket.finish();
        return error(StatusCode::NOT_FOUND, "model '' not found");
    }
    let Some(m) = sim.find(&name) else {
        ticket.finish();
        return error(
            StatusCode::NOT_FOUND,
            &format!("model \"{name}\" not found, try pulling it first"),
        );
    };
    let inputs: Vec<String> = match map.get("input") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if s.is_empty() => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(s) => out.push(s.to_owned()),
                    None => {
                        ticket.finish();
                        return error(StatusCode::BAD_REQUEST, "invalid input type");
                    }
                }
            }
            out
        }
        Some(_) => {
            ticket.finish();
            return error(StatusCode::BAD_REQUEST, "invalid input type");
        }
    };
    let started = std::time::Instant::now();
    let load = sim.load(&m).await;
    if inputs.is_empty() {
        ticket.finish();
        return ok_json(&json!({ "model": name, "embeddings": [] }));
    }
    let dims = map.get("dimensions").and_then(Value::as_u64).map(|d| d as usize);
    let vectors: Vec<Vec<f64>> = inputs
        .iter()
        .map(|t| {
            let v = text::embedding(t, m.embedding_length.max(1));
            match dims {
                Some(d) if d > 0 && d < v.len() => text::normalise(v[..d].to_vec()),
                _ => v,
            }
        })
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count().max(1)).sum();
    sim.served(tokens, 0);
    ticket.finish();
    ok_json(&json!({
        "model": name,
        "embeddings": vectors,
        "total_duration": text::nanos(started.elapsed()),
        "load_duration": text::nanos(load),
        "prompt_eval_count": tokens,
    }))
}

async fn embeddings(sim: web::Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let sim = sim.into_inner();
    let map = match decode(&body) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let name = model_field(&map);
    let ticket = match admit(&sim, &req, "/api/embeddings", &body, Some(&name)) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    ticket.finish();
    if name.is_empty() {
        return error(StatusCode::BAD_REQUEST, "model is required");
    }
    let Some(m) = sim.find(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("model \"{name}\" not found, try pulling it first"),
        );
    };
    sim.load(&m).await;
    let prompt = str_field(&map, "prompt").unwrap_or_default();
    if prompt.is_empty() {
        return ok_json(&json!({ "embedding": [] }));
    }
    // The legacy endpoint returns raw, unnormalised values.
    let v: Vec<f64> = text::embedding(prompt, m.embedding_length.max(1))
        .iter()
        .map(|x| x * 3.7)
        .collect();
    ok_json(&json!({ "embedding": v }))
}
