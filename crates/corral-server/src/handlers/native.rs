//! Ollama's native API (`/api/*`), at the root and under `/ollama` with `/{url_idx}` variants.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::{
    check_json, default_target, first_holder, read_body, strip_body_prefix, target, unknown_model, upstream_path,
    url_idx,
};
use crate::error::AppError;
use crate::proxy::{self, Body, Outgoing};
use crate::state::Shared;

/// What a route does beyond forwarding its body to the same path upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quirk {
    /// Forward as it is.
    None,
    /// Open WebUI's `/ollama/api/pull`: `insecure` forced true, `model` filled from `name`.
    OwuiPull,
    /// Open WebUI's `/ollama/api/copy` and `/ollama/api/delete`: success answers `true`.
    OwuiTrue,
}

/// How a route picks its instance when no `/{url_idx}` pins it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// The first enabled instance (pull, create: Open WebUI's index 0).
    Default,
    /// An instance holding the body's model, by the balancing policy.
    ByModel,
    /// The lowest-index instance holding the body's model (push, copy, delete).
    FirstHolder,
}

/// One native route.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The method upstream.
    pub method: &'static str,
    /// The path upstream.
    pub path: &'static str,
    /// Whether the request carries a JSON body.
    pub json_body: bool,
    /// Extra behaviour.
    pub quirk: Quirk,
    /// How the instance is chosen.
    pub routing: Routing,
    /// Served under `/ollama` (Open WebUI's error texts).
    pub owui: bool,
}

impl Spec {
    /// A JSON-bodied POST forwarded to the same path.
    pub const fn post(path: &'static str) -> Spec {
        Spec {
            method: "POST",
            path,
            json_body: true,
            quirk: Quirk::None,
            routing: Routing::ByModel,
            owui: false,
        }
    }

    /// A body-less GET (or HEAD, as the client asked) forwarded to the same path.
    pub const fn get(path: &'static str) -> Spec {
        Spec {
            method: "GET",
            path,
            json_body: false,
            quirk: Quirk::None,
            routing: Routing::Default,
            owui: false,
        }
    }

    /// Whether the route changes the models an instance holds.
    pub fn changes_models(&self) -> bool {
        matches!(
            self.path,
            "/api/pull" | "/api/push" | "/api/create" | "/api/copy" | "/api/delete"
        )
    }

    /// The same route with a quirk.
    pub const fn with(self, quirk: Quirk) -> Spec {
        Spec { quirk, ..self }
    }

    /// The same route with another way of choosing the instance.
    pub const fn routed(self, routing: Routing) -> Spec {
        Spec { routing, ..self }
    }

    /// The same route as served under `/ollama`.
    pub const fn owui(self, owui: bool) -> Spec {
        Spec { owui, ..self }
    }

    /// The same route with another upstream method.
    pub const fn method(self, method: &'static str) -> Spec {
        Spec { method, ..self }
    }
}

/// Forwards a native request to the chosen instance and relays the answer.
pub async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    spec: Spec,
) -> Result<HttpResponse, AppError> {
    let settings = shared.settings();
    let pinned = url_idx(&req, settings.ollama.base_urls.len())?;
    // HEAD stays HEAD; everything else uses the route's upstream method.
    let method = if req.method() == Method::HEAD {
        Method::HEAD
    } else {
        Method::from_bytes(spec.method.as_bytes()).map_err(|e| AppError::Internal(e.to_string()))?
    };
    let (target, body) = if spec.json_body {
        let bytes = read_body(payload).await?;
        let fields = check_json(&bytes)?;
        let bytes = match spec.quirk {
            Quirk::OwuiPull => owui_pull_body(&bytes)?,
            _ => bytes,
        };
        let model = fields.source.as_deref().filter(|s| !s.is_empty()).or(fields.get());
        let target = match (pinned, spec.routing, model) {
            (Some(idx), _, _) => target(&shared, idx)?,
            (None, Routing::Default, _) => default_target(&shared)?,
            (None, _, None) => return Err(AppError::BadRequest("model is required".to_owned())),
            (None, Routing::ByModel, Some(model)) => {
                return super::balanced::forward(&req, &shared, &client, spec, &method, model, &fields, bytes).await;
            }
            (None, Routing::FirstHolder, Some(model)) => match first_holder(&shared, &client, model).await? {
                Some(target) => target,
                None => return Err(unknown_model(model, spec.owui)),
            },
        };
        let bytes = strip_body_prefix(&shared, target.idx, bytes)?;
        (target, Body::Bytes(bytes))
    } else {
        let target = match pinned {
            Some(idx) => target(&shared, idx)?,
            None => default_target(&shared)?,
        };
        (target, Body::Empty)
    };
    let out = Outgoing {
        method: method.clone(),
        path_and_query: upstream_path(&req, spec.path),
        client_headers: req.headers(),
        extra_headers: Vec::new(),
        body,
    };
    let resp = proxy::send(&client, &settings.upstream, &target, out).await?;
    // Pull, push, create, copy and delete change what instances hold: the catalogue is
    // marked stale once the operation has ended, so the next lookup sees the change.
    let on_end: Option<Box<dyn FnOnce()>> = if spec.changes_models() {
        shared.fleet.invalidate();
        let shared = shared.clone();
        Some(Box::new(move || shared.fleet.invalidate()))
    } else {
        None
    };
    if spec.quirk == Quirk::OwuiTrue && resp.status().is_success() {
        return Ok(HttpResponse::Ok().json(true));
    }
    Ok(proxy::relay_with(resp, &settings.upstream, &target, &method, on_end))
}

/// `HEAD`/`POST /api/blobs/{digest}`: the body (a model file of many GB) is streamed through.
pub async fn blob(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
) -> Result<HttpResponse, AppError> {
    let digest = req.match_info().get("digest").unwrap_or_default().to_owned();
    let settings = shared.settings();
    let target = match url_idx(&req, settings.ollama.base_urls.len())? {
        Some(idx) => target(&shared, idx)?,
        None => default_target(&shared)?,
    };
    let body = if req.method() == Method::POST {
        Body::Stream(payload)
    } else {
        Body::Empty
    };
    let out = Outgoing {
        method: req.method().clone(),
        path_and_query: upstream_path(&req, &format!("/api/blobs/{digest}")),
        client_headers: req.headers(),
        extra_headers: Vec::new(),
        body,
    };
    let resp = proxy::send(&client, &settings.upstream, &target, out).await?;
    Ok(proxy::relay(resp, &settings.upstream, &target, req.method()))
}

/// Open WebUI forces `insecure: true` on admin pulls and fills `model` from `name`.
fn owui_pull_body(bytes: &[u8]) -> Result<bytes::Bytes, AppError> {
    let mut value: Value = serde_json::from_slice(bytes).map_err(|e| AppError::BadRequest(e.to_string()))?;
    if let Some(obj) = value.as_object_mut() {
        let model = obj
            .get("model")
            .filter(|m| !m.is_null())
            .or_else(|| obj.get("name"))
            .cloned()
            .unwrap_or(Value::Null);
        obj.insert("model".to_owned(), model);
        obj.insert("insecure".to_owned(), Value::Bool(true));
    }
    serde_json::to_vec(&value)
        .map(bytes::Bytes::from)
        .map_err(|e| AppError::Internal(e.to_string()))
}
