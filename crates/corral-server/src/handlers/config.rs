//! The configuration admin API, in Open WebUI's shapes: `GET /ollama/config`,
//! `POST /ollama/config/update`, `POST /ollama/verify`.
//!
//! An update is validated whole before anything is saved, saved in one transaction, and
//! applied to this process at once (other replicas pick it up from the database).
//! Until authentication lands, these routes answer only when Corral listens on loopback.

use std::collections::BTreeMap;
use std::net::IpAddr;

use actix_web::{web, HttpResponse};
use corral_config::{ConnectionSettings, OllamaSettings};
use corral_store::StoredOllama;
use serde_json::{json, Map, Value};

use super::read_object;
use crate::auth::Admin;
use crate::error::AppError;
use crate::state::Shared;

/// Shown instead of a connection's key; sent back unchanged, it keeps the saved key.
pub const KEY_MASK: &str = "********";

/// Lets an admin through; a gateway that authenticates nobody serves admin routes only on a
/// loopback address.
pub fn admin_only(shared: &Shared, admin: &Admin) -> Result<(), AppError> {
    if admin.0.user.is_some() {
        return Ok(());
    }
    loopback_only(shared)
}

/// Refuses admin routes unless the server is bound to a loopback address.
pub fn loopback_only(shared: &Shared) -> Result<(), AppError> {
    if listens_on_loopback(&shared.settings()) {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "admin routes are served only when Corral listens on a loopback address, until authentication is configured"
                .to_owned(),
        ))
    }
}

/// Whether the gateway is configured to listen on a loopback address.
pub fn listens_on_loopback(settings: &corral_config::Settings) -> bool {
    let host = settings.server.host.trim_matches(['[', ']']);
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The configuration in Open WebUI's shape, keys masked.
fn shape(ollama: &OllamaSettings) -> Value {
    let configs: Map<String, Value> = ollama
        .api_configs
        .iter()
        .map(|(idx, conn)| {
            let mut conn = conn.clone();
            if conn.bearer().is_some() {
                conn.key = Some(KEY_MASK.to_owned());
            }
            (idx.clone(), serde_json::to_value(conn).unwrap_or(Value::Null))
        })
        .collect();
    json!({
        "ENABLE_OLLAMA_API": ollama.enable,
        "OLLAMA_BASE_URLS": ollama.base_urls,
        "OLLAMA_API_CONFIGS": configs,
    })
}

/// `GET /ollama/config`.
pub async fn get(shared: web::Data<Shared>, admin: Admin) -> Result<HttpResponse, AppError> {
    admin_only(&shared, &admin)?;
    Ok(HttpResponse::Ok().json(shape(&shared.settings().ollama)))
}

/// `POST /ollama/config/update`.
pub async fn update(shared: web::Data<Shared>, admin: Admin, payload: web::Payload) -> Result<HttpResponse, AppError> {
    admin_only(&shared, &admin)?;
    let (_, value) = read_object(payload).await?;
    let current = shared.settings().ollama.clone();
    let next = parse_update(&value, &current)?;
    let (store, sealer) = shared
        .store()
        .zip(shared.sealer().cloned())
        .ok_or_else(|| AppError::StoreUnavailable("no database is configured".to_owned()))?;
    let stored = StoredOllama {
        enable: next.enable,
        base_urls: next.base_urls.clone(),
        api_configs: next.api_configs.clone(),
        unreadable_keys: BTreeMap::new(),
    };
    let now = unix_now();
    let revision = web::block(move || store.save_ollama(&stored, &sealer, now))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))??;
    shared.apply_stored(next.clone(), revision)?;
    tracing::info!(
        revision,
        connections = next.base_urls.len(),
        "Ollama configuration saved"
    );
    Ok(HttpResponse::Ok().json(shape(&next)))
}

/// Validates an update whole against the current configuration; nothing is changed here.
pub fn parse_update(value: &Value, current: &OllamaSettings) -> Result<OllamaSettings, AppError> {
    let bad = |key: &str, problem: String| AppError::BadRequest(format!("{key}: {problem}"));
    let obj = value
        .as_object()
        .ok_or_else(|| AppError::BadRequest("request body must be a JSON object".to_owned()))?;
    let enable = match obj.get("ENABLE_OLLAMA_API") {
        // Omitted or null keeps the current switch (Open WebUI would switch Ollama off).
        None | Some(Value::Null) => current.enable,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(bad("ENABLE_OLLAMA_API", format!("{other} is not true or false"))),
    };
    let urls = obj
        .get("OLLAMA_BASE_URLS")
        .ok_or_else(|| bad("OLLAMA_BASE_URLS", "is required".to_owned()))?
        .as_array()
        .ok_or_else(|| bad("OLLAMA_BASE_URLS", "must be a list of URLs".to_owned()))?;
    let mut base_urls = Vec::with_capacity(urls.len());
    for (i, url) in urls.iter().enumerate() {
        let url = url
            .as_str()
            .ok_or_else(|| bad(&format!("OLLAMA_BASE_URLS[{i}]"), format!("{url} is not a string")))?;
        base_urls.push(url.trim().trim_end_matches('/').to_owned());
    }
    let configs = match obj.get("OLLAMA_API_CONFIGS") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => return Err(bad("OLLAMA_API_CONFIGS", format!("{other} is not an object"))),
    };
    let mut api_configs: BTreeMap<String, ConnectionSettings> = BTreeMap::new();
    for (key, raw) in &configs {
        let field = format!("OLLAMA_API_CONFIGS.{key}");
        let idx = match key.parse::<usize>() {
            Ok(i) if i < base_urls.len() => i,
            Ok(i) => {
                return Err(bad(
                    &field,
                    format!("names connection {i}, but there are {} URLs", base_urls.len()),
                ))
            }
            // The legacy form keys settings by URL: attach them to that URL's connection.
            Err(_) => {
                let wanted = key.trim_end_matches('/');
                base_urls
                    .iter()
                    .position(|u| u == wanted)
                    .ok_or_else(|| bad(&field, "is neither an index nor one of OLLAMA_BASE_URLS".to_owned()))?
            }
        };
        let mut conn: ConnectionSettings =
            serde_json::from_value(raw.clone()).map_err(|e| bad(&field, e.to_string()))?;
        if conn.key.as_deref() == Some(KEY_MASK) {
            // The masked key came back unchanged: keep the saved key of the same URL. A key is
            // never carried over to another URL, where it would go to a different server.
            conn.key = Some(saved_key(current, &base_urls[idx]).ok_or_else(|| {
                bad(
                    &format!("{field}.key"),
                    "is the masked key, but no saved connection has this URL; send the key itself".to_owned(),
                )
            })?);
        }
        api_configs.insert(idx.to_string(), conn);
    }
    let next = OllamaSettings {
        enable,
        base_urls,
        api_configs,
        models_cache_ttl: current.models_cache_ttl,
    };
    next.validate()
        .map_err(|e| AppError::BadRequest(owui_names(&e.to_string())))?;
    Ok(next)
}

/// The saved key of the connection at `url`, if one has a key.
fn saved_key(current: &OllamaSettings, url: &str) -> Option<String> {
    let url = url.trim_end_matches('/');
    current
        .base_urls
        .iter()
        .position(|u| u.trim_end_matches('/') == url)
        .and_then(|old| current.connection(old).key.clone())
}

/// Names the settings keys as the admin API calls them.
fn owui_names(message: &str) -> String {
    message
        .replace("ollama.base_urls", "OLLAMA_BASE_URLS")
        .replace("ollama.api_configs", "OLLAMA_API_CONFIGS")
}

/// `POST /ollama/verify`: asks `url` for its version, with `key` if given.
pub async fn verify(
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    admin: Admin,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    admin_only(&shared, &admin)?;
    let (_, value) = read_object(payload).await?;
    let url = value
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| AppError::BadRequest("url: is required".to_owned()))?
        .trim_end_matches('/')
        .to_owned();
    let probe = OllamaSettings {
        base_urls: vec![url.clone()],
        api_configs: BTreeMap::new(),
        ..shared.settings().ollama.clone()
    };
    probe.validate().map_err(|e| {
        AppError::BadRequest(format!(
            "url: {}",
            e.to_string().trim_start_matches("ollama.base_urls[0]: ")
        ))
    })?;
    let timeout =
        crate::proxy::secs(shared.settings().upstream.discovery_timeout).unwrap_or(std::time::Duration::from_secs(3));
    let mut req = client.get(format!("{url}/api/version")).timeout(timeout);
    let key = match value.get("key").and_then(Value::as_str).filter(|k| !k.is_empty()) {
        // The admin page shows saved keys masked; checking a saved connection sends its key.
        Some(KEY_MASK) => Some(saved_key(&shared.settings().ollama, &url).ok_or_else(|| {
            AppError::BadRequest(
                "key: is the masked key, but no saved connection has this URL; send the key itself".to_owned(),
            )
        })?),
        other => other.map(str::to_owned),
    };
    if let Some(key) = key {
        req = req.insert_header(("Authorization", format!("Bearer {key}")));
    }
    let unreachable = |reason: String| AppError::UpstreamUnreachable {
        idx: 0,
        url: url.clone(),
        reason,
    };
    let mut resp = req.send().await.map_err(|e| unreachable(e.to_string()))?;
    let status = resp.status();
    let bytes = crate::proxy::read_all(&mut resp, 1024 * 1024)
        .await
        .map_err(unreachable)?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        return Err(unreachable(format!("answered {status}: {text}")));
    }
    let version: Value =
        serde_json::from_slice(&bytes).map_err(|e| unreachable(format!("sent a body that is not JSON: {e}")))?;
    Ok(HttpResponse::Ok().json(version))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
