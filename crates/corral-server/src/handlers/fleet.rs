//! Routes that speak for the whole fleet: merged listings, the lowest version, fleet-wide
//! pull and delete, and unload.

use std::time::Duration;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};

use super::{read_object, target, unknown_model};
use crate::auth::{Admin, Caller};
use crate::discovery::fetch_json;
use crate::error::AppError;
use crate::proxy::{self, Body, Outgoing};
use crate::state::Shared;
use actix_web::ResponseError as _;

/// How old a merged listing may be, from `ollama.models_cache_ttl`.
fn ttl(shared: &Shared) -> Duration {
    Duration::from_secs(shared.settings().ollama.models_cache_ttl)
}

/// `GET /api/tags`, `GET /ollama/api/tags`: every enabled instance's models, merged.
pub async fn tags(shared: web::Data<Shared>, client: web::Data<awc::Client>, caller: Caller) -> HttpResponse {
    if !shared.settings().ollama.enable {
        return HttpResponse::Ok().json(json!({ "models": [] }));
    }
    let snap = shared.fleet.fresh(&shared, &client, ttl(&shared)).await;
    let settings = shared.settings();
    let now = std::time::Instant::now();
    // Each model lists the health of its instances beside `urls`, e.g. {"0":"healthy"}.
    let bypass = settings.auth.bypass_model_access_control;
    let models: Vec<Value> = snap
        .catalogue
        .models_json()
        .into_iter()
        .filter(|m| m["model"].as_str().is_some_and(|id| caller.can_read(id, bypass)))
        .map(|mut m| {
            let health: serde_json::Map<String, Value> = m["urls"]
                .as_array()
                .map(|urls| {
                    urls.iter()
                        .filter_map(Value::as_u64)
                        .filter_map(|i| {
                            let url = settings.ollama.base_urls.get(usize::try_from(i).ok()?)?;
                            let word = shared.instances.get(url.trim_end_matches('/')).health_word(now);
                            Some((i.to_string(), Value::from(word)))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if let Some(obj) = m.as_object_mut() {
                obj.insert("health".to_owned(), Value::Object(health));
            }
            m
        })
        .collect();
    HttpResponse::Ok().json(json!({ "models": models }))
}

/// `GET /api/ps`, `GET /ollama/api/ps`: every enabled instance's loaded models, merged.
/// Loaded models change with every request, so this listing is always fetched fresh
/// (concurrent callers still share one fetch).
pub async fn ps(shared: web::Data<Shared>, client: web::Data<awc::Client>, _admin: Admin) -> HttpResponse {
    if !shared.settings().ollama.enable {
        return HttpResponse::Ok().json(json!({ "models": [] }));
    }
    let snap = shared.fleet.fresh(&shared, &client, Duration::ZERO).await;
    HttpResponse::Ok().json(json!({ "models": snap.catalogue.ps_json() }))
}

/// `GET /ollama/v1/models`: the merged catalogue in OpenAI's list shape, as Open WebUI
/// answers it.
pub async fn v1_models(shared: web::Data<Shared>, client: web::Data<awc::Client>, caller: Caller) -> HttpResponse {
    let data: Vec<Value> = if shared.settings().ollama.enable {
        let snap = shared.fleet.fresh(&shared, &client, ttl(&shared)).await;
        let now = chrono_now();
        snap.catalogue
            .entries()
            .iter()
            .filter(|e| caller.can_read(&e.id, shared.settings().auth.bypass_model_access_control))
            .map(|e| json!({ "id": e.id, "object": "model", "created": now, "owned_by": "openai" }))
            .collect()
    } else {
        Vec::new()
    };
    HttpResponse::Ok().json(json!({ "data": data, "object": "list" }))
}

fn chrono_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `GET /api/version`, `GET /ollama/api/version`: the lowest version among the enabled
/// instances that answer within the discovery timeout.
pub async fn version(shared: web::Data<Shared>, client: web::Data<awc::Client>) -> Result<HttpResponse, AppError> {
    let settings = shared.settings();
    if !settings.ollama.enable {
        return Ok(HttpResponse::Ok().json(json!({ "version": false })));
    }
    let answers = futures_util::future::join_all((0..settings.ollama.base_urls.len()).map(|idx| {
        let (client, settings, shared) = (&client, &settings, &shared);
        // An ejected instance is not waited on.
        async move {
            if shared.is_ejected(idx) {
                None
            } else {
                fetch_json(client, settings, idx, "/api/version").await
            }
        }
    }))
    .await;
    let versions: Vec<(usize, String)> = answers
        .into_iter()
        .enumerate()
        .filter_map(|(idx, v)| Some((idx, v?.get("version")?.as_str()?.to_owned())))
        .collect();
    match corral_registry::lowest_version(&versions) {
        Some((_, v)) => Ok(HttpResponse::Ok().json(json!({ "version": v }))),
        None => Err(AppError::UpstreamUnreachable {
            idx: 0,
            url: "every instance".to_owned(),
            reason: "no Ollama instance answered /api/version".to_owned(),
        }),
    }
}

/// The instances a fleet-wide operation addresses: `urls` from the body when given, else
/// every enabled instance.
pub(crate) fn chosen_instances(shared: &Shared, body: &Value) -> Result<Vec<usize>, AppError> {
    let settings = shared.settings();
    let n = settings.ollama.base_urls.len();
    let enabled = |i: usize| settings.ollama.connection(i).enabled();
    match body.get("urls") {
        None | Some(Value::Null) => Ok((0..n).filter(|&i| enabled(i)).collect()),
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for item in items {
                let idx = item
                    .as_u64()
                    .and_then(|i| usize::try_from(i).ok())
                    .filter(|&i| i < n)
                    .ok_or_else(|| AppError::BadRequest(format!("urls: {item} is not an instance index below {n}")))?;
                if !enabled(idx) {
                    return Err(AppError::BadRequest(format!("urls: instance {idx} is disabled")));
                }
                if !out.contains(&idx) {
                    out.push(idx);
                }
            }
            Ok(out)
        }
        Some(other) => Err(AppError::BadRequest(format!(
            "urls must be a list of instance indices, got {other}"
        ))),
    }
}

/// `POST /ollama/api/pull/all`: pulls on every enabled instance (or on `urls`) at once and
/// streams one merged NDJSON progress stream whose lines name their instance (`url_idx`).
/// It ends with `{"status":"success"}` when every instance succeeded, else an error line.
pub async fn pull_all(
    _admin: Admin,
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
) -> Result<HttpResponse, AppError> {
    let (fields, mut body) = read_object(payload).await?;
    let model = fields.required("model is required")?;
    let instances = chosen_instances(&shared, &body)?;
    if instances.is_empty() {
        return Err(AppError::Disabled("no enabled Ollama instance to pull to".to_owned()));
    }
    if let Some(obj) = body.as_object_mut() {
        obj.remove("urls");
        obj.insert("model".to_owned(), Value::String(model.clone()));
        obj.insert("stream".to_owned(), Value::Bool(true));
        obj.insert("insecure".to_owned(), Value::Bool(true));
    }
    let payload = Bytes::from(body.to_string());
    let settings = shared.settings();
    let targets = instances
        .iter()
        .map(|&idx| target(&shared, idx))
        .collect::<Result<Vec<_>, _>>()?;
    // Every instance is asked at once, and each one's progress is relayed as soon as it
    // answers: a slow one holds neither the others' answers nor their progress back.
    let mut streams = Vec::new();
    for target in targets {
        let client = client.clone();
        let settings = settings.clone();
        let headers = req.headers().clone();
        let payload = payload.clone();
        let lines = async move {
            let idx = target.idx;
            let out = Outgoing {
                method: Method::POST,
                path_and_query: "/api/pull".to_owned(),
                client_headers: &headers,
                extra_headers: Vec::new(),
                body: Body::Bytes(payload),
                patient: false,
            };
            let lines: stream::LocalBoxStream<'static, Value> =
                match proxy::send(&client, &settings.upstream, &target, out).await {
                    Ok(resp) if resp.status().is_success() => tagged_lines(resp, idx).boxed_local(),
                    Ok(mut resp) => {
                        let status = resp.status();
                        let text = proxy::read_all(&mut resp, 64 * 1024).await.unwrap_or_default();
                        let message = serde_json::from_slice::<Value>(&text)
                            .ok()
                            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                            .unwrap_or_else(|| format!("answered {status}"));
                        stream::iter([json!({ "error": message, "url_idx": idx })]).boxed_local()
                    }
                    Err(err) => stream::iter([json!({ "error": err.to_string(), "url_idx": idx })]).boxed_local(),
                };
            lines
        };
        streams.push(stream::once(lines).flatten().boxed_local());
    }
    shared.fleet.invalidate();
    let fleet_shared = shared.clone().into_inner();
    let outcome = std::rc::Rc::new(std::cell::RefCell::new(Outcome::default()));
    let seen = outcome.clone();
    let lines = stream::select_all(streams).map(move |line| {
        seen.borrow_mut().record(&line);
        line
    });
    let last = stream::once(async move {
        // The pulled model is now on the instances: the next lookup refreshes.
        fleet_shared.fleet.invalidate();
        let mut failed = outcome.borrow().failed.clone();
        failed.sort_unstable();
        if failed.is_empty() {
            json!({ "status": "success" })
        } else {
            json!({ "error": format!("pull failed on instance(s) {failed:?}") })
        }
    });
    let body = lines
        .chain(last)
        .map(|line| Ok::<Bytes, actix_web::Error>(Bytes::from(format!("{line}\n"))));
    Ok(HttpResponse::Ok().content_type("application/x-ndjson").streaming(body))
}

/// Which instances have reported an error so far.
#[derive(Default)]
struct Outcome {
    failed: Vec<usize>,
}

impl Outcome {
    fn record(&mut self, line: &Value) {
        if line.get("error").is_some() {
            if let Some(idx) = line
                .get("url_idx")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok())
            {
                if !self.failed.contains(&idx) {
                    self.failed.push(idx);
                }
            }
        }
    }
}

/// An upstream NDJSON body as JSON lines, each tagged with its instance. An instance whose
/// stream ends without `success` counts as failed.
fn tagged_lines(resp: awc::ClientResponse, idx: usize) -> impl futures_util::Stream<Item = Value> {
    let state = (resp, Vec::<u8>::new(), false, false);
    stream::unfold(state, move |(mut resp, mut buf, mut succeeded, mut done)| async move {
        loop {
            if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let Ok(mut value) = serde_json::from_slice::<Value>(&line[..line.len() - 1]) else {
                    continue;
                };
                if value.get("status").and_then(Value::as_str) == Some("success") {
                    succeeded = true;
                }
                if let Some(obj) = value.as_object_mut() {
                    obj.insert("url_idx".to_owned(), json!(idx));
                }
                return Some((value, (resp, buf, succeeded, done)));
            }
            if done {
                return None;
            }
            match resp.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    done = true;
                    let value = json!({ "error": format!("the instance broke off: {e}"), "url_idx": idx });
                    return Some((value, (resp, buf, succeeded, done)));
                }
                None => {
                    done = true;
                    if !buf.is_empty() {
                        buf.push(b'\n');
                        continue;
                    }
                    if !succeeded {
                        let value = json!({ "error": "the instance ended the pull without success", "url_idx": idx });
                        return Some((value, (resp, buf, succeeded, done)));
                    }
                    return None;
                }
            }
        }
    })
}

/// `DELETE /ollama/api/delete/all`: deletes the model from every enabled instance that holds
/// it (or from `urls`), and reports each instance's answer.
pub async fn delete_all(
    _admin: Admin,
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
) -> Result<HttpResponse, AppError> {
    let (fields, body) = read_object(payload).await?;
    let model = fields.required("model is required")?;
    let wanted = chosen_instances(&shared, &body)?;
    let results = delete_everywhere(&req, &shared, &client, &model, &wanted, true).await?;
    let all_ok = results.iter().all(|r| r["status"] == json!(true));
    let status = if all_ok {
        actix_web::http::StatusCode::OK
    } else {
        actix_web::http::StatusCode::BAD_GATEWAY
    };
    Ok(HttpResponse::build(status).json(json!({ "status": all_ok, "results": results })))
}

/// `DELETE /api/delete` at the root: Ollama's delete, from every enabled instance holding the
/// model (from one only, a client behind Corral would still see it listed). Ollama's answers:
/// an empty 200 when every holder deleted it, a 404 for an unknown model; a 502 naming each
/// instance that failed otherwise.
pub async fn delete_root(
    _admin: Admin,
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
) -> Result<HttpResponse, AppError> {
    let (fields, _) = read_object(payload).await?;
    let model = fields.required("model is required")?;
    let every: Vec<usize> = (0..shared.settings().ollama.base_urls.len()).collect();
    let results = delete_everywhere(&req, &shared, &client, &model, &every, false).await?;
    let failed: Vec<&Value> = results.iter().filter(|r| r["status"] != json!(true)).collect();
    if failed.is_empty() {
        return Ok(HttpResponse::Ok().finish());
    }
    let which: Vec<String> = failed
        .iter()
        .map(|r| format!("instance {}: {}", r["url_idx"], r["error"].as_str().unwrap_or("failed")))
        .collect();
    let err = AppError::Partial(format!(
        "model '{model}' was not deleted everywhere ({})",
        which.join("; ")
    ));
    let mut body = err.body();
    body["results"] = Value::Array(results);
    Ok(HttpResponse::build(err.status_code()).json(body))
}

/// Deletes `model` from every instance in `wanted` that holds it, all at once, and reports
/// each answer in instance order.
pub(crate) async fn delete_everywhere(
    req: &HttpRequest,
    shared: &Shared,
    client: &awc::Client,
    model: &str,
    wanted: &[usize],
    owui: bool,
) -> Result<Vec<Value>, AppError> {
    let snap = shared.fleet.fresh(shared, client, Duration::from_secs(1)).await;
    let entry = snap
        .catalogue
        .resolve(model)
        .ok_or_else(|| unknown_model(model, owui))?;
    let holders: Vec<usize> = entry.urls.iter().copied().filter(|i| wanted.contains(i)).collect();
    let settings = shared.settings();
    let targets = holders
        .iter()
        .map(|&idx| target(shared, idx))
        .collect::<Result<Vec<_>, _>>()?;
    // Every instance is asked at once; the answers are reported in instance order.
    let deletes = targets.iter().map(|target| {
        let idx = target.idx;
        let name = snap.catalogue.upstream_name(idx, &entry.id).to_owned();
        let out = Outgoing {
            method: Method::DELETE,
            path_and_query: "/api/delete".to_owned(),
            client_headers: req.headers(),
            extra_headers: Vec::new(),
            body: Body::Bytes(Bytes::from(json!({ "model": name }).to_string())),
            patient: false,
        };
        let settings = &settings;
        async move {
            match proxy::send(client, &settings.upstream, target, out).await {
                Ok(resp) if resp.status().is_success() => json!({ "url_idx": idx, "status": true }),
                Ok(resp) => json!({ "url_idx": idx, "status": false, "error": format!("answered {}", resp.status()) }),
                Err(e) => json!({ "url_idx": idx, "status": false, "error": e.to_string() }),
            }
        }
    });
    let results = futures_util::future::join_all(deletes).await;
    shared.fleet.invalidate();
    Ok(results)
}

/// `POST /ollama/api/unload`: unloads the model on every instance holding it.
pub async fn unload(
    _admin: Admin,
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
) -> Result<HttpResponse, AppError> {
    let (fields, _) = read_object(payload).await?;
    let model = fields.required("Missing name of the model to unload.")?;
    unload_model(&req, &shared, &client, &model).await?;
    Ok(HttpResponse::Ok().json(json!({ "status": true })))
}

/// Unloads `model` on every instance holding it, all at once.
pub(crate) async fn unload_model(
    req: &HttpRequest,
    shared: &Shared,
    client: &awc::Client,
    model: &str,
) -> Result<(), AppError> {
    let snap = shared.fleet.fresh(shared, client, Duration::from_secs(1)).await;
    let entry = snap
        .catalogue
        .resolve(model)
        .ok_or_else(|| unknown_model(model, true))?;
    let settings = shared.settings();
    let targets = entry
        .urls
        .iter()
        .map(|&idx| target(shared, idx))
        .collect::<Result<Vec<_>, _>>()?;
    // Every holder is asked at once.
    let unloads = targets.iter().map(|target| {
        let idx = target.idx;
        let name = snap.catalogue.upstream_name(idx, &entry.id).to_owned();
        let out = Outgoing {
            method: Method::POST,
            path_and_query: "/api/generate".to_owned(),
            client_headers: req.headers(),
            extra_headers: Vec::new(),
            body: Body::Bytes(Bytes::from(
                json!({ "model": name, "keep_alive": 0, "prompt": "" }).to_string(),
            )),
            patient: false,
        };
        let (settings, id) = (&settings, &entry.id);
        async move {
            match proxy::send(client, &settings.upstream, target, out).await {
                Ok(resp) if resp.status().is_success() => {
                    shared.instances.get(&target.base_url).answered(id, true);
                    None
                }
                Ok(resp) => Some(json!({ "url_idx": idx, "error": format!("answered {}", resp.status()) })),
                Err(e) => Some(json!({ "url_idx": idx, "error": e.to_string() })),
            }
        }
    });
    let failures: Vec<Value> = futures_util::future::join_all(unloads)
        .await
        .into_iter()
        .flatten()
        .collect();
    shared.fleet.invalidate();
    if failures.is_empty() {
        Ok(())
    } else {
        let message = format!(
            "Failed to unload model on {} nodes: {}",
            failures.len(),
            Value::from(failures)
        );
        Err(AppError::Partial(message))
    }
}

/// `GET /ollama/status`: each instance's health, loaded models, requests in flight, recent
/// time to first token and slots (the learned limit per model when `auto`), and the requests
/// waiting per model and per user, as the gateway sees them.
pub async fn status(
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    admin: Admin,
) -> Result<HttpResponse, AppError> {
    super::config::admin_only(&shared, &admin)?;
    Ok(HttpResponse::Ok().json(status_json(&shared, &client).await))
}

/// The fleet's status as `GET /ollama/status` answers it.
pub async fn status_json(shared: &Shared, client: &awc::Client) -> Value {
    let settings = shared.settings();
    let snap = shared.fleet.fresh(shared, client, Duration::ZERO).await;
    let now = std::time::Instant::now();
    let instances: Vec<Value> = settings
        .ollama
        .base_urls
        .iter()
        .enumerate()
        .map(|(idx, url)| {
            let conn = settings.ollama.connection(idx);
            let instance = shared.instances.get(url.trim_end_matches('/'));
            let health = instance.health_word(now);
            let (in_flight, ttft, duration) = instance.load();
            let answered = snap.listings.tags.get(idx).is_some_and(Option::is_some);
            json!({
                "url_idx": idx,
                "url": url,
                "enabled": conn.enabled(),
                "reachable": answered,
                "health": health,
                "in_flight": in_flight,
                "ttft_ms": ttft.map(|d| d.as_secs_f64() * 1000.0),
                "duration_ms": duration.map(|d| d.as_secs_f64() * 1000.0),
                "loaded": snap.catalogue.loaded_on(idx),
                "slots": conn.slots.unwrap_or(settings.balance.slots),
                "learned_slots": instance.limits().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            })
        })
        .collect();
    let queues: serde_json::Map<String, Value> = shared
        .instances
        .queue_depths()
        .into_iter()
        .map(|(model, users)| {
            let waiting: usize = users.iter().map(|(_, n)| n).sum();
            let users: serde_json::Map<String, Value> = users.into_iter().map(|(u, n)| (u, json!(n))).collect();
            (model, json!({ "waiting": waiting, "users": users }))
        })
        .collect();
    json!({
        "policy": settings.balance.policy,
        "slots": settings.balance.slots,
        "instances": instances,
        "queues": queues,
    })
}
