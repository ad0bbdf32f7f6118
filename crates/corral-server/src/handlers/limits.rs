//! `/api/v1/limits`: limits per API key, user and group, set by admins, and what is left of
//! them for the caller.
//!
//! - `GET /api/v1/limits` (admin): every limit set.
//! - `GET|PUT|DELETE /api/v1/limits/{scope}/{id}` (admin): one key's (`key`, by its id),
//!   user's (`user`) or group's (`group`) limits. `PUT` replaces them whole with
//!   `{"requests_per_minute", "tokens_per_minute", "concurrent_requests", "budget": {"tokens",
//!   "period", "reset", "models"}}`; a bad field is a 400 naming it, an unknown or revoked key,
//!   an unknown user or group a 404, and nothing is saved.
//! - `GET /api/v1/limits/me` (any signed-in caller): the limits that apply to this credential
//!   and what is left of each; `?model=` counts a budget limited to some models for that one.

use actix_web::{web, HttpRequest, HttpResponse};
use corral_auth::limits::{Limits, Scope};
use serde_json::{json, Value};

use crate::auth::{unix_now, Admin, Anyone, Level};
use crate::error::AppError;
use crate::handlers::accounts;
use crate::state::Shared;

/// Registers the routes.
pub fn register(r: &mut crate::routes::Routes) {
    use actix_web::http::Method;
    const L: &str = "/api/v1/limits";
    r.add(
        Method::GET,
        L,
        Level::Admin,
        "Every limit per key, user and group",
        list,
    )
    .add(
        Method::GET,
        &format!("{L}/me"),
        Level::Any,
        "The caller's limits and what is left of them",
        me,
    )
    .add(
        Method::GET,
        &format!("{L}/{{scope}}/{{id}}"),
        Level::Admin,
        "The limits of one key, user or group",
        get,
    )
    .add(
        Method::PUT,
        &format!("{L}/{{scope}}/{{id}}"),
        Level::Admin,
        "Set the limits of one key, user or group",
        put,
    )
    .add(
        Method::DELETE,
        &format!("{L}/{{scope}}/{{id}}"),
        Level::Admin,
        "Remove the limits of one key, user or group",
        delete,
    );
}

fn scope_of(text: &str) -> Result<Scope, AppError> {
    Scope::parse(text)
        .ok_or_else(|| AppError::BadRequest(format!("scope: unknown scope {text:?}; expected key, user or group")))
}

fn stored_json(stored: &corral_store::StoredLimits) -> Value {
    let mut value = stored.limits.to_json();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("scope".to_owned(), json!(stored.scope.as_str()));
        obj.insert("id".to_owned(), json!(stored.subject_id));
        obj.insert("updated_at".to_owned(), json!(stored.updated_at));
    }
    value
}

fn not_found(scope: Scope, id: &str) -> impl Fn(corral_store::StoreError) -> AppError + '_ {
    move |err| match err {
        corral_store::StoreError::NotFound => AppError::NotFound(format!("id: no {} {id}", scope.as_str())),
        other => other.into(),
    }
}

/// Replaces the limits of one key, user or group (an unknown or revoked key, an unknown user
/// or group is a 404, nothing saved), and reloads this replica's directory. The API and the
/// console both save through here.
pub(crate) async fn set(
    shared: &web::Data<Shared>,
    scope: Scope,
    id: String,
    limits: Limits,
) -> Result<corral_store::StoredLimits, AppError> {
    accounts::write(shared, move |store| {
        store
            .put_limits(scope, &id, &limits, unix_now())
            .map_err(not_found(scope, &id))
    })
    .await
}

/// Removes the limits of one key, user or group (a 404 when none are set), and reloads this
/// replica's directory.
pub(crate) async fn remove(shared: &web::Data<Shared>, scope: Scope, id: String) -> Result<(), AppError> {
    accounts::write(shared, move |store| {
        store.delete_limits(scope, &id).map_err(|e| match e {
            corral_store::StoreError::NotFound => {
                AppError::NotFound(format!("id: no limits are set for {} {id}", scope.as_str()))
            }
            other => other.into(),
        })
    })
    .await
}

/// `GET /api/v1/limits`.
async fn list(shared: web::Data<Shared>, _admin: Admin) -> Result<HttpResponse, AppError> {
    let all = accounts::read(&shared, |store| Ok(store.list_limits()?)).await?;
    Ok(HttpResponse::Ok().json(all.iter().map(stored_json).collect::<Vec<_>>()))
}

/// `GET /api/v1/limits/{scope}/{id}`.
async fn get(
    shared: web::Data<Shared>,
    _admin: Admin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (scope, id) = path.into_inner();
    let scope = scope_of(&scope)?;
    let found = accounts::read(&shared, move |store| {
        Ok(store.get_limits(scope, &id)?.ok_or((scope, id)))
    })
    .await?;
    match found {
        Ok(stored) => Ok(HttpResponse::Ok().json(stored_json(&stored))),
        Err((scope, id)) => Err(AppError::NotFound(format!(
            "id: no limits are set for {} {id}",
            scope.as_str()
        ))),
    }
}

/// `PUT /api/v1/limits/{scope}/{id}`.
async fn put(
    shared: web::Data<Shared>,
    _admin: Admin,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let (scope, id) = path.into_inner();
    let scope = scope_of(&scope)?;
    let bytes = super::read_body_up_to(payload, 64 * 1024).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::BadRequest("body: missing request body".to_owned()));
    }
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|e| AppError::BadRequest(format!("body: invalid JSON: {e}")))?;
    let limits = Limits::from_json(&value).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let stored = set(&shared, scope, id, limits).await?;
    Ok(HttpResponse::Ok().json(stored_json(&stored)))
}

/// `DELETE /api/v1/limits/{scope}/{id}`.
async fn delete(
    shared: web::Data<Shared>,
    _admin: Admin,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (scope, id) = path.into_inner();
    let scope = scope_of(&scope)?;
    remove(&shared, scope, id).await?;
    Ok(HttpResponse::Ok().json(true))
}

/// `GET /api/v1/limits/me`.
async fn me(req: HttpRequest, shared: web::Data<Shared>, Anyone(caller): Anyone) -> Result<HttpResponse, AppError> {
    let model = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("model").cloned());
    Ok(HttpResponse::Ok().json(shared.limiter.remaining(&caller, model.as_deref())))
}
