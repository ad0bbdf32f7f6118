//! Request handlers and the helpers they share: reading and checking bodies, choosing the
//! instance, forwarding.

pub mod accounts;
pub mod balanced;
pub mod config;
pub mod fleet;
pub mod limits;
pub mod meta;
mod model_ref;
pub mod models;
pub mod native;
pub mod openai;
pub mod ready;
pub mod usage;

pub use model_ref::ModelRef;

use actix_web::web;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::error::AppError;
use crate::proxy::Target;
use crate::state::Shared;

/// How often a request for a model missing from the catalogue may trigger a refresh.
const MISS_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// The catalogue snapshot, the catalogue id and the enabled instances holding `model`,
/// refreshing the catalogue once if the model is missing. `None` when no enabled instance
/// holds it; an error when it may be on an instance that did not answer.
pub async fn holders(
    shared: &Shared,
    client: &awc::Client,
    model: &str,
) -> Result<Option<(std::sync::Arc<crate::fleet::Snapshot>, String, Vec<usize>)>, AppError> {
    let settings = shared.settings();
    if !settings.ollama.enable {
        return Err(AppError::Disabled(
            "the Ollama API is disabled (ENABLE_OLLAMA_API=false)".to_owned(),
        ));
    }
    let current = shared
        .fleet
        .snapshot()
        .filter(|s| s.generation == shared.fleet.generation());
    let snap = match current {
        Some(snap) if snap.catalogue.resolve(model).is_some() => snap,
        _ => shared.fleet.fresh(shared, client, MISS_REFRESH).await,
    };
    let Some(entry) = snap.catalogue.resolve(model) else {
        // The model may be on an instance that did not answer: say so rather than "not found".
        let silent: Vec<usize> = (0..settings.ollama.base_urls.len())
            .filter(|&i| settings.ollama.connection(i).enabled())
            .filter(|&i| snap.listings.tags.get(i).is_none_or(Option::is_none))
            .collect();
        // Unknown to every instance that answered: a 404 (a typo is not an outage), unless a
        // silent instance listed it when it last answered (then 503 with Retry-After).
        let last_on = last_seen_on(&settings, &snap, &silent, model);
        if !last_on.is_empty() {
            return Err(AppError::NoInstance {
                model: model.to_owned(),
                silent: last_on,
            });
        }
        return Ok(None);
    };
    let urls: Vec<usize> = entry
        .urls
        .iter()
        .copied()
        .filter(|&idx| idx < settings.ollama.base_urls.len() && settings.ollama.connection(idx).enabled())
        .collect();
    if urls.is_empty() {
        return Ok(None);
    }
    let id = entry.id.clone();
    Ok(Some((snap, id, urls)))
}

/// Of the `silent` instances, those whose last listing held `model`.
fn last_seen_on(
    settings: &corral_config::Settings,
    snap: &crate::fleet::Snapshot,
    silent: &[usize],
    model: &str,
) -> Vec<usize> {
    silent
        .iter()
        .copied()
        .filter(|&idx| {
            let Some(url) = settings.ollama.base_urls.get(idx) else {
                return false;
            };
            let Some(tags) = snap.last_seen.get(url.trim_end_matches('/')) else {
                return false;
            };
            // The instance's last listing alone, merged as the catalogue merges it.
            let mut only = crate::discovery::Listings {
                tags: vec![None; settings.ollama.base_urls.len()],
                ps: vec![None; settings.ollama.base_urls.len()],
            };
            only.tags[idx] = Some(tags.clone());
            crate::catalogue::merge(settings, &only).resolve(model).is_some()
        })
        .collect()
}

/// The lowest-index enabled instance holding `model`, for push, copy and delete.
pub async fn first_holder(shared: &Shared, client: &awc::Client, model: &str) -> Result<Option<Target>, AppError> {
    match holders(shared, client, model).await? {
        Some((_, _, urls)) => urls.first().map(|&idx| target(shared, idx)).transpose(),
        None => Ok(None),
    }
}

/// Replaces the model-naming fields of a JSON body (`model`, `name`, `source`,
/// `destination`) by what instance `idx` calls them: the instance's prefix, where it leads,
/// removed. The body is left byte for byte as it was when nothing changes.
pub fn strip_body_prefix(shared: &Shared, idx: usize, body: bytes::Bytes) -> Result<bytes::Bytes, AppError> {
    let settings = shared.settings();
    let conn = settings.ollama.connection(idx);
    let Some(prefix) = conn.prefix() else {
        return Ok(body);
    };
    let mut value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| AppError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    let mut changed = false;
    if let Some(obj) = value.as_object_mut() {
        for key in ["model", "name", "source", "destination"] {
            if let Some(serde_json::Value::String(s)) = obj.get_mut(key) {
                let stripped = corral_registry::strip_prefix(s, Some(prefix));
                if stripped.len() != s.len() {
                    *s = stripped.to_owned();
                    changed = true;
                }
            }
        }
    }
    if !changed {
        return Ok(body);
    }
    serde_json::to_vec(&value)
        .map(bytes::Bytes::from)
        .map_err(|e| AppError::Internal(e.to_string()))
}

/// The answer for a model no enabled instance holds: Ollama's own 404 at the root, Open
/// WebUI's 400 under `/ollama`.
pub fn unknown_model(model: &str, owui: bool) -> AppError {
    if owui {
        AppError::BadRequest(format!("Model '{}' was not found", corral_registry::with_latest(model)))
    } else {
        AppError::NotFound(format!("model '{model}' not found"))
    }
}

/// The largest JSON request body the gateway reads (images travel inside chat bodies).
pub const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Reads the whole request body, refusing more than [`BODY_LIMIT`] bytes.
pub async fn read_body(payload: web::Payload) -> Result<Bytes, AppError> {
    read_body_up_to(payload, BODY_LIMIT).await
}

/// The answer for a request body that could not be read: a JSON 408 when the client was too
/// slow, else a 400.
pub fn body_error(err: actix_web::error::PayloadError) -> AppError {
    if crate::guard::is_timeout(&err) {
        AppError::RequestTimeout(err.to_string())
    } else {
        AppError::BadRequest(format!("could not read the request body: {err}"))
    }
}

/// Reads the whole request body, refusing more than `limit` bytes with a JSON 413.
pub async fn read_body_up_to(mut payload: web::Payload, limit: usize) -> Result<Bytes, AppError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(body_error)?;
        if buf.len() + chunk.len() > limit {
            return Err(AppError::PayloadTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

impl ModelRef {
    /// Whether the request unloads the model (`keep_alive` of 0).
    pub fn unloads(&self) -> bool {
        match &self.keep_alive {
            Some(serde_json::Value::Number(n)) => n.as_f64() == Some(0.0),
            Some(serde_json::Value::String(s)) => matches!(s.as_str(), "0" | "0s" | "0m" | "0h"),
            _ => false,
        }
    }

    /// Whether the request only unloads the model: `keep_alive` of 0 and nothing to run, which
    /// Ollama answers at once without loading anything.
    pub fn only_unloads(&self) -> bool {
        self.unloads() && !self.input
    }

    /// `model`, else `name`, if non-empty.
    pub fn get(&self) -> Option<&str> {
        self.model
            .as_deref()
            .filter(|m| !m.is_empty())
            .or(self.name.as_deref().filter(|n| !n.is_empty()))
    }
}

/// Checks that `body` is a JSON object and returns its model fields.
///
/// An empty body gets Ollama's own `missing request body`; anything that is not a JSON
/// object gets a 400 that says why.
pub fn check_json(body: &[u8]) -> Result<ModelRef, AppError> {
    let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(AppError::BadRequest("missing request body".to_owned()));
    };
    if *first != b'{' {
        return Err(AppError::BadRequest("request body must be a JSON object".to_owned()));
    }
    // One pass: serde checks the whole document while keeping only the routing fields.
    serde_json::from_slice(body).map_err(|e| AppError::BadRequest(format!("invalid request body: {e}")))
}

/// Reads a JSON object body whole, for routes off the hot path that need every field:
/// the routing fields and the parsed object.
pub async fn read_object(payload: web::Payload) -> Result<(ModelRef, serde_json::Value), AppError> {
    let bytes = read_body(payload).await?;
    let fields = check_json(&bytes)?;
    let value =
        serde_json::from_slice(&bytes).map_err(|e| AppError::BadRequest(format!("invalid request body: {e}")))?;
    Ok((fields, value))
}

impl ModelRef {
    /// The model, or a 400 saying `missing`.
    pub fn required(&self, missing: &str) -> Result<String, AppError> {
        self.get()
            .map(str::to_owned)
            .ok_or_else(|| AppError::BadRequest(missing.to_owned()))
    }
}

/// The `{url_idx}` path segment, if the route has one, resolved against the connections.
///
/// Negative values count from the end, as Open WebUI's Python indexing does.
pub fn url_idx(req: &actix_web::HttpRequest, connections: usize) -> Result<Option<usize>, AppError> {
    let Some(raw) = req.match_info().get("url_idx") else {
        return Ok(None);
    };
    let n: i64 = raw
        .parse()
        .map_err(|_| AppError::BadRequest(format!("url_idx must be an integer, got {raw:?}")))?;
    let len = i64::try_from(connections).unwrap_or(i64::MAX);
    let idx = if n < 0 { len + n } else { n };
    if idx < 0 || idx >= len {
        return Err(AppError::NotFound(format!(
            "no Ollama connection at index {n}: there are {connections}"
        )));
    }
    Ok(usize::try_from(idx).ok())
}

/// The instance at `idx`, with its key.
pub fn target(shared: &Shared, idx: usize) -> Result<Target, AppError> {
    let settings = shared.settings();
    let url = settings
        .ollama
        .base_urls
        .get(idx)
        .ok_or_else(|| AppError::NotFound(format!("no Ollama connection at index {idx}")))?;
    let conn = settings.ollama.connection(idx);
    Ok(Target {
        idx,
        base_url: url.trim_end_matches('/').to_owned(),
        key: conn.bearer().map(str::to_owned),
    })
}

/// The first enabled instance: where requests go when nothing else decides.
pub fn default_target(shared: &Shared) -> Result<Target, AppError> {
    let settings = shared.settings();
    if !settings.ollama.enable {
        return Err(AppError::Disabled(
            "the Ollama API is disabled (ENABLE_OLLAMA_API=false)".to_owned(),
        ));
    }
    let idx = (0..settings.ollama.base_urls.len())
        .find(|i| settings.ollama.connection(*i).enabled())
        .ok_or_else(|| AppError::Disabled("no Ollama connection is configured and enabled".to_owned()))?;
    target(shared, idx)
}

/// The path upstream. The client's query string stays at the gateway, as the reference builds
/// `{base}{path}`: Ollama reads none, and a credential put there would reach its logs.
pub fn upstream_path(_req: &actix_web::HttpRequest, path: &str) -> String {
    path.to_owned()
}
