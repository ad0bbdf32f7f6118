//! Model management: pull, push, create, copy, delete and blobs, changing what the
//! instance holds.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{admit, decode, error, model_field, str_field};
use crate::config::{with_tag, SimModel};
use crate::state::Sim;
use crate::text;

/// Sends progress lines (or, with `stream:false`, only the last one).
async fn progress(lines: Vec<Value>, stream: bool, pace: Duration) -> HttpResponse {
    if !stream {
        let last = lines.last().cloned().unwrap_or(Value::Null);
        if let Some(e) = last.get("error").and_then(Value::as_str) {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
        // Ollama answers a request that does not stream once the whole job is done.
        let steps = u32::try_from(lines.len().saturating_sub(1)).unwrap_or(u32::MAX);
        tokio::time::sleep(pace * steps).await;
        return HttpResponse::Ok()
            .content_type("application/json")
            .body(last.to_string());
    }
    let body = futures_util::stream::unfold((lines.into_iter(), true), move |(mut it, first)| async move {
        let next = it.next()?;
        if !first && !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        Some((
            Ok::<Bytes, actix_web::Error>(Bytes::from(format!("{next}\n"))),
            (it, false),
        ))
    });
    HttpResponse::Ok().content_type("application/x-ndjson").streaming(body)
}

fn layer_lines(verb: &str, model: &SimModel) -> Vec<Value> {
    let digest = format!("sha256:{}", model.digest);
    let short = &model.digest[..12.min(model.digest.len())];
    let total = model.size;
    let mut out = vec![json!({ "status": format!("{verb} {short}"), "digest": digest, "total": total })];
    for step in 1..=4u64 {
        out.push(json!({ "status": format!("{verb} {short}"), "digest": digest, "total": total, "completed": total * step / 4 }));
    }
    out
}

pub async fn pull(sim: web::Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let sim: Arc<Sim> = sim.into_inner();
    let map = match decode(&body) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let name = model_field(&map);
    let ticket = match admit(&sim, &req, "/api/pull", &body, Some(&name)) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    ticket.finish();
    if name.is_empty() {
        return error(StatusCode::BAD_REQUEST, "invalid model name");
    }
    let stream = map.get("stream").and_then(Value::as_bool).unwrap_or(true);
    let mut lines = vec![json!({ "status": "pulling manifest" })];
    let wanted = with_tag(&name).to_ascii_lowercase();
    let found = sim
        .config
        .registry
        .iter()
        .chain(sim.models().iter())
        .find(|m| m.name.to_ascii_lowercase() == wanted)
        .cloned();
    match found {
        Some(model) => {
            lines.extend(layer_lines("pulling", &model));
            lines.push(json!({ "status": "verifying sha256 digest" }));
            lines.push(json!({ "status": "writing manifest" }));
            lines.push(json!({ "status": "success" }));
            sim.add_model(model);
        }
        None => lines.push(json!({ "error": "pull model manifest: file does not exist" })),
    }
    progress(lines, stream, pace(&sim)).await
}

pub async fn push(sim: web::Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let sim: Arc<Sim> = sim.into_inner();
    let map = match decode(&body) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let name = model_field(&map);
    let ticket = match admit(&sim, &req, "/api/push", &body, Some(&name)) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    ticket.finish();
    if name.is_empty() {
        return error(StatusCode::BAD_REQUEST, "model is required");
    }
    let stream = map.get("stream").and_then(Value::as_bool).unwrap_or(true);
    let mut lines = vec![json!({ "status": "retrieving manifest" })];
    match sim.find(&name) {
        Some(model) => {
            lines.extend(layer_lines("pushing", &model));
            lines.push(json!({ "status": "pushing manifest" }));
            lines.push(json!({ "status": "success" }));
        }
        None => {
            lines = vec![json!({ "status": "couldn't retrieve manifest" })];
            lines.push(json!({ "error": format!("open manifest: file does not exist: {name}") }));
        }
    }
    progress(lines, stream, pace(&sim)).await
}

pub async fn create(sim: web::Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let sim: Arc<Sim> = sim.into_inner();
    let map = match decode(&body) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let name = model_field(&map);
    let ticket = match admit(&sim, &req, "/api/create", &body, Some(&name)) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    ticket.finish();
    if name.is_empty() || name.contains(' ') {
        return error(StatusCode::BAD_REQUEST, "invalid model name");
    }
    let stream = map.get("stream").and_then(Value::as_bool).unwrap_or(true);
    let from = str_field(&map, "from").filter(|f| !f.is_empty());
    let files = map.get("files").and_then(Value::as_object).filter(|f| !f.is_empty());
    let base = match (from, files) {
        (Some(f), _) => match sim.find(f) {
            Some(m) => m,
            None => return error(StatusCode::BAD_REQUEST, &format!("model '{f}' not found")),
        },
        (None, Some(_)) => SimModel::chat(&name),
        (None, None) => return error(StatusCode::BAD_REQUEST, "neither 'from' or 'files' was specified"),
    };
    let mut model = base.clone();
    model.name = with_tag(&name);
    model.digest = text::digest_of(&model.name);
    model.modified_at = text::local(chrono::Local::now());
    let lines = vec![
        json!({ "status": format!("using existing layer sha256:{}", base.digest) }),
        json!({ "status": format!("creating new layer sha256:{}", model.digest) }),
        json!({ "status": "writing manifest" }),
        json!({ "status": "success" }),
    ];
    sim.add_model(model);
    progress(lines, stream, Duration::ZERO).await
}

pub async fn copy(sim: web::Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let sim: Arc<Sim> = sim.into_inner();
    let map = match decode(&body) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let source = str_field(&map, "source").unwrap_or_default().to_owned();
    let ticket = match admit(&sim, &req, "/api/copy", &body, Some(&source)) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    ticket.finish();
    let dest = str_field(&map, "destination").unwrap_or_default();
    if source.is_empty() {
        return error(StatusCode::BAD_REQUEST, &format!("source \"{source}\" is invalid"));
    }
    if dest.is_empty() || dest.contains(' ') {
        return error(StatusCode::BAD_REQUEST, &format!("destination \"{dest}\" is invalid"));
    }
    let Some(mut model) = sim.find(&source) else {
        return error(StatusCode::NOT_FOUND, &format!("model \"{source}\" not found"));
    };
    model.name = with_tag(dest);
    sim.add_model(model);
    HttpResponse::Ok().finish()
}

pub async fn delete(sim: web::Data<Sim>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let sim: Arc<Sim> = sim.into_inner();
    let map = match decode(&body) {
        Ok(m) => m,
        Err(resp) => return resp,
    };
    let name = model_field(&map);
    let ticket = match admit(&sim, &req, "/api/delete", &body, Some(&name)) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    ticket.finish();
    if name.is_empty() {
        return error(StatusCode::BAD_REQUEST, "model is required");
    }
    if sim.remove_model(&name) {
        HttpResponse::Ok().finish()
    } else {
        error(StatusCode::NOT_FOUND, &format!("model '{name}' not found"))
    }
}

fn valid_digest(digest: &str) -> Option<String> {
    let hexpart = digest
        .strip_prefix("sha256:")
        .or_else(|| digest.strip_prefix("sha256-"))?;
    (hexpart.len() == 64 && hexpart.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| format!("sha256:{}", hexpart.to_ascii_lowercase()))
}

pub async fn blob_head(sim: web::Data<Sim>, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let sim: Arc<Sim> = sim.into_inner();
    let ticket = match admit(&sim, &req, "/api/blobs", b"", None) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    ticket.finish();
    match valid_digest(&path) {
        None => HttpResponse::BadRequest().finish(),
        Some(d) if sim.blobs.lock().contains(&d) => HttpResponse::Ok().finish(),
        Some(_) => HttpResponse::NotFound().finish(),
    }
}

/// Like Ollama, answers an upload of a blob it has at once, without reading the body, and
/// hashes a new one as it arrives.
pub async fn blob_post(
    sim: web::Data<Sim>,
    req: HttpRequest,
    path: web::Path<String>,
    mut body: web::Payload,
) -> HttpResponse {
    let sim: Arc<Sim> = sim.into_inner();
    let ticket = match admit(&sim, &req, "/api/blobs", b"", None) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    ticket.finish();
    let Some(want) = valid_digest(&path) else {
        return error(StatusCode::BAD_REQUEST, "invalid digest format");
    };
    if sim.blobs.lock().contains(&want) {
        // Go's server then closes the connection rather than read a large unread body.
        return HttpResponse::Ok().force_close().finish();
    }
    let mut hasher = Sha256::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
        match chunk {
            Ok(chunk) => hasher.update(&chunk),
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    }
    let got = format!("sha256:{}", hex::encode(hasher.finalize()));
    if got != want {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("digest mismatch, expected \"{want}\", got \"{got}\""),
        );
    }
    sim.blobs.lock().insert(want);
    HttpResponse::Created().finish()
}

/// Pause between progress lines: quick, but visible as a stream.
fn pace(sim: &Sim) -> Duration {
    if sim.config.tokens_per_sec > 0.0 {
        Duration::from_millis(20)
    } else {
        Duration::ZERO
    }
}
