//! Ollama's native API (`/api/*`), at the root and under `/ollama` with `/{url_idx}` variants.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::{
    check_json, default_target, first_holder, read_body, strip_body_prefix, target, unknown_model, upstream_path,
    url_idx,
};
use crate::auth::{self, Level};
use crate::error::AppError;
use crate::exchange::{Exchange, Route};
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
    /// Who may call it.
    pub level: Level,
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
            level: Level::Verified,
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
            level: Level::Verified,
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

    /// The same route for admins only.
    pub const fn admin(self) -> Spec {
        Spec {
            level: Level::Admin,
            ..self
        }
    }

    /// The same route with another upstream method.
    pub const fn method(self, method: &'static str) -> Spec {
        Spec { method, ..self }
    }
}

/// What a route applies of a model record (params, system prompt) to the body it forwards,
/// as the reference does: `/api/chat` natively, the instance's own `/v1` chat with params and
/// system prompt, its `/v1` completions with params only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    NativeChat,
    OpenAiChat,
    OpenAiCompletion,
    Nothing,
}

impl Applied {
    fn on(path: &str) -> Applied {
        match path {
            "/api/chat" => Applied::NativeChat,
            "/v1/chat/completions" => Applied::OpenAiChat,
            "/v1/completions" => Applied::OpenAiCompletion,
            _ => Applied::Nothing,
        }
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
    let caller = auth::require(&req, spec.level)?;
    let settings = shared.settings();
    let pinned = url_idx(&req, settings.ollama.base_urls.len())?;
    // HEAD stays HEAD; everything else uses the route's upstream method.
    let method = if req.method() == Method::HEAD {
        Method::HEAD
    } else {
        Method::from_bytes(spec.method.as_bytes()).map_err(|e| AppError::Internal(e.to_string()))?
    };
    let mut exchange = Exchange::unwatched();
    // The caller's limits on a model run on an instance the client chose, as on a routed one.
    let mut limited = crate::limits::Admitted::default();
    let mut granted: Option<String> = None;
    let (target, body, extra_headers, patient) = if spec.json_body {
        let bytes = read_body(payload).await?;
        let fields = check_json(&bytes)?;
        let bytes = match spec.quirk {
            Quirk::OwuiPull => owui_pull_body(&bytes)?,
            _ => bytes,
        };
        // A copy is routed by the model it copies; every other route by the model it runs, as
        // Ollama reads it (`source` means nothing to them, so it must not steer the check).
        let model = if spec.path == "/api/copy" {
            fields.source.as_deref().filter(|s| !s.is_empty()).or(fields.get())
        } else {
            fields.get()
        };
        // Model-bearing routes users may call check the model, and apply its record.
        let mut extra_headers = Vec::new();
        let mut bytes = bytes;
        // A preset is routed, and sent upstream, as its base model.
        let mut base = None;
        if spec.level != Level::Admin {
            if let (Some(caller), Some(model)) = (&caller, model) {
                let grant = caller.model_for(&shared, &client, model).await?;
                let kind = Applied::on(spec.path);
                let applies = kind != Applied::Nothing
                    && grant
                        .rule
                        .as_ref()
                        .is_some_and(|r| r.system.is_some() || !r.params.is_null());
                let forwards = settings.auth.forward_user_info_headers;
                // As the reference does, `metadata` is read here and not sent on.
                let pops = kind != Applied::Nothing && fields.metadata.is_some();
                if applies || forwards || pops || grant.base.is_some() {
                    let mut value: Value =
                        serde_json::from_slice(&bytes).map_err(|e| AppError::BadRequest(e.to_string()))?;
                    // The chat id travels with `/api/chat` and the `/v1` chat and completions.
                    extra_headers = caller.forwarded_headers(&settings, (kind != Applied::Nothing).then_some(&value));
                    if applies {
                        match kind {
                            Applied::NativeChat => caller.apply_native_chat(&grant, &mut value),
                            Applied::OpenAiChat => caller.apply_openai(&grant, &mut value),
                            Applied::OpenAiCompletion => caller.apply_openai_params(&grant, &mut value),
                            Applied::Nothing => {}
                        }
                    }
                    let popped = pops && value.as_object_mut().is_some_and(|o| o.remove("metadata").is_some());
                    if grant.rename(&mut value) | applies | popped {
                        bytes = serde_json::to_vec(&value)
                            .map(bytes::Bytes::from)
                            .map_err(|e| AppError::Internal(e.to_string()))?;
                    }
                }
                granted = Some(grant.id.clone());
                base = grant.base;
            }
        } else if let Some(caller) = &caller {
            extra_headers = caller.forwarded_headers(&settings, None);
        }
        // A streamed `/ollama/v1` answer carries its token counts only when asked: the gateway
        // asks on the client's behalf when metering, and takes the extra event out again.
        if shared.exchanges.watched()
            && matches!(spec.path, "/v1/chat/completions" | "/v1/completions")
            && fields.stream == Some(true)
        {
            if let Some(asked) = corral_convert::usage_event::ask_for_usage(&bytes) {
                bytes = bytes::Bytes::from(asked);
                actix_web::HttpMessage::extensions_mut(&req).insert(crate::usage::StripUsageEvent);
            }
        }
        let model = base.as_deref().or(model);
        let target = match (pinned, spec.routing, model) {
            (Some(idx), _, _) => target(&shared, idx)?,
            (None, Routing::Default, _) => default_target(&shared)?,
            (None, _, None) => return Err(AppError::BadRequest("model is required".to_owned())),
            (None, Routing::ByModel, Some(model)) => {
                return super::balanced::forward(
                    &req,
                    &shared,
                    &client,
                    spec,
                    &method,
                    model,
                    &fields,
                    bytes,
                    extra_headers,
                )
                .await;
            }
            (None, Routing::FirstHolder, Some(model)) => match first_holder(&shared, &client, model).await? {
                Some(target) => target,
                None => return Err(unknown_model(model, spec.owui)),
            },
        };
        let bytes = strip_body_prefix(&shared, target.idx, bytes)?;
        // A pull, push or create that does not stream answers only when it is done.
        let patient = spec.changes_models() && fields.stream == Some(false);
        // A model run on an instance the client chose is metered as a routed one is.
        if let (Some(route), Some(model)) = (Route::of(spec.path, false), model) {
            if !fields.only_unloads() {
                exchange = shared.exchanges.start(&req, route, model, route.streams(fields.stream));
                if let Some(caller) = &caller {
                    let run = granted.as_deref().unwrap_or(model);
                    exchange.routed(run);
                    let announce = crate::limits::Announce::for_route(spec.path, false);
                    limited = match shared.limiter.admit(
                        &shared.clone().into_inner(),
                        caller,
                        (model, run),
                        announce,
                        &mut exchange,
                    ) {
                        Ok(admitted) => admitted,
                        Err(err) => {
                            exchange.status(actix_web::ResponseError::status_code(&err).as_u16());
                            exchange.failed();
                            return Err(err);
                        }
                    };
                }
            }
        }
        (target, Body::Bytes(bytes), extra_headers, patient)
    } else {
        let target = match pinned {
            Some(idx) => target(&shared, idx)?,
            None => default_target(&shared)?,
        };
        // As the reference, user information goes with every call but a version check.
        let extra_headers = match &caller {
            Some(caller) if spec.path != "/api/version" => caller.forwarded_headers(&settings, None),
            _ => Vec::new(),
        };
        (target, Body::Empty, extra_headers, false)
    };
    let out = Outgoing {
        method: method.clone(),
        path_and_query: upstream_path(&req, spec.path),
        client_headers: req.headers(),
        extra_headers,
        body,
        patient,
    };
    exchange.sending(target.idx, &target.base_url);
    let mut resp = match proxy::send(&client, &settings.upstream, &target, out).await {
        Ok(resp) => resp,
        Err(err) => {
            exchange.status(actix_web::ResponseError::status_code(&err).as_u16());
            exchange.failed();
            return Err(err);
        }
    };
    exchange.status(resp.status().as_u16());
    let added = crate::proxy::Added {
        limits: limited.headroom,
        queue_wait_ms: None,
    };
    // A user's view of one instance's listing holds only the models the user may read.
    if let Some(caller) = caller.as_ref().filter(|c| !c.is_admin()) {
        if let Some(key) = listing_key(spec.path) {
            // HEAD has no listing to filter: its headers are relayed as they are.
            if resp.status().is_success() && method != Method::HEAD {
                return filtered_listing(&mut resp, caller, &settings, target.idx, key).await;
            }
        }
    }
    // Pull, push, create, copy and delete change what instances hold: the catalogue is
    // marked stale once the operation has ended, so the next lookup sees the change.
    let on_end: Option<Box<dyn FnOnce()>> = if spec.changes_models() {
        shared.fleet.invalidate();
        let shared = shared.clone();
        Some(Box::new(move || shared.fleet.invalidate()))
    } else {
        // A limited request counts as running until its answer has been relayed.
        limited
            .permit
            .map(|permit| Box::new(move || drop(permit)) as Box<dyn FnOnce()>)
    };
    if spec.quirk == Quirk::OwuiTrue && resp.status().is_success() {
        return Ok(HttpResponse::Ok().json(true));
    }
    Ok(proxy::relay_with(
        resp,
        &settings.upstream,
        &target,
        &method,
        on_end,
        exchange,
        added,
    ))
}

/// `HEAD`/`POST /api/blobs/{digest}`: the body (a model file of many GB) is streamed through.
/// Whether `digest` is a blob digest as Ollama names them: `sha256:` (or `sha256-`) and 64 hex
/// digits.
fn is_digest(digest: &str) -> bool {
    let hex = digest
        .strip_prefix("sha256:")
        .or_else(|| digest.strip_prefix("sha256-"));
    hex.is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub async fn blob(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
) -> Result<HttpResponse, AppError> {
    auth::require(&req, Level::Admin)?;
    let digest = req.match_info().get("digest").unwrap_or_default().to_owned();
    if !is_digest(&digest) {
        // Checked here, as Ollama checks it: anything else would be sent upstream in a URL.
        return Err(AppError::BadRequest(format!(
            "invalid digest {digest:?}: expected sha256: followed by 64 hex digits"
        )));
    }
    let settings = shared.settings();
    let target = match url_idx(&req, settings.ollama.base_urls.len())? {
        Some(idx) => target(&shared, idx)?,
        None => default_target(&shared)?,
    };
    let path = upstream_path(&req, &format!("/api/blobs/{digest}"));
    let body = if req.method() == Method::POST {
        // Ollama answers an upload of a blob it has at once, without reading it, and then
        // drops the connection under the body still being sent: asked first, the instance
        // says so, and the client gets Ollama's 200 rather than a broken upload.
        if proxy::has_blob(&client, &settings.upstream, &target, &path).await {
            return Ok(HttpResponse::Ok().finish());
        }
        Body::Stream(payload)
    } else {
        Body::Empty
    };
    let out = Outgoing {
        method: req.method().clone(),
        path_and_query: path,
        client_headers: req.headers(),
        extra_headers: Vec::new(),
        body,
        patient: true,
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

/// The array a listing route answers with, and the field naming each model in it.
fn listing_key(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/api/tags" => Some(("models", "model")),
        "/v1/models" => Some(("data", "id")),
        _ => None,
    }
}

/// One instance's listing with only the models `caller` may read; the instance's prefix is
/// put back on each name before the check, as the catalogue names the model.
async fn filtered_listing(
    resp: &mut awc::ClientResponse,
    caller: &auth::Caller,
    settings: &corral_config::Settings,
    idx: usize,
    (key, field): (&str, &str),
) -> Result<HttpResponse, AppError> {
    let body = proxy::read_all(resp, 64 * 1024 * 1024)
        .await
        .map_err(|reason| AppError::UpstreamUnreachable {
            idx,
            url: settings.ollama.base_urls.get(idx).cloned().unwrap_or_default(),
            reason,
        })?;
    let mut value: Value = serde_json::from_slice(&body).map_err(|e| AppError::UpstreamUnreachable {
        idx,
        url: settings.ollama.base_urls.get(idx).cloned().unwrap_or_default(),
        reason: format!("unreadable listing: {e}"),
    })?;
    let prefix = settings.ollama.connection(idx).prefix().map(str::to_owned);
    let bypass = settings.auth.bypass_model_access_control;
    if let Some(Value::Array(items)) = value.get_mut(key) {
        items.retain(|item| {
            let name = item
                .get(field)
                .or_else(|| item.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let id = match &prefix {
                Some(p) => format!("{p}.{name}"),
                None => name.to_owned(),
            };
            caller.can_read(&id, bypass) || caller.can_read(&corral_registry::with_latest(&id), bypass)
        });
    }
    Ok(HttpResponse::Ok().json(value))
}
