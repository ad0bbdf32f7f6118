//! The web console: fleet, connections, models, people and keys in a browser, served by the
//! gateway itself at `server.console_path` (default `/console`).
//!
//! Pages are rendered on the server ([`maud`], escaped by construction) and work as plain
//! HTML forms; one small script (`assets/console.js`, no build step) polls the fleet table,
//! streams a pull's progress and copies a new key. Every route is registered through
//! [`Routes::add`] with its [`Level`], so a user's session gets the same 403 from an admin
//! page as from the admin API, and the route-protection test walks them all.
//!
//! The console calls the same functions as the API (`handlers::accounts`, `handlers::config`,
//! `handlers::fleet`): the same checks, the same store writes, the same reloads.
//!
//! Every state-changing request carries a CSRF token besides the `SameSite` session cookie:
//! an HMAC of the session's token id under the gateway's secret, checked in constant time
//! (the sign-in form, before any session, uses a double-submitted random cookie). Every page
//! goes out with a strict Content-Security-Policy (no inline script or style) and `no-store`.

mod limits;
mod views;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use corral_auth::Role;
use corral_config::{ConnectionSettings, Slots};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::auth::{Admin, Anyone, Caller, Level};
use crate::error::AppError;
use crate::handlers::{accounts, config, fleet, read_body_up_to};
use crate::routes::Routes;
use crate::state::Shared;

/// Where the console is served unless `server.console_path` says otherwise.
pub const DEFAULT_PATH: &str = "/console";

/// The policy every console page is served with: nothing inline, nothing from elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The cookie carrying the sign-in form's CSRF token (before there is a session).
const SIGNIN_CSRF_COOKIE: &str = "corral_console_csrf";

/// The largest console form.
const FORM_LIMIT: usize = 1024 * 1024;

const CSS: &str = include_str!("console/assets/console.css");
const JS: &str = include_str!("console/assets/console.js");

/// Whether `path` (a registered pattern) belongs to the console at its default path or any
/// configured one: console routes are the ones whose handlers live here.
pub fn is_console_path(path: &str) -> bool {
    path == DEFAULT_PATH || path.starts_with(&format!("{DEFAULT_PATH}/"))
}

/// Registers the console's routes under `p`, each with the callers it admits.
pub fn register(r: &mut Routes, p: &str) {
    use Level::{Admin, Any, Public, Verified};
    let at = |s: &str| format!("{p}{s}");
    let (get, post) = (Method::GET, Method::POST);
    r.add(
        get.clone(),
        &at("/signin"),
        Public,
        "Console: sign-in page",
        signin_page,
    )
    .add(post.clone(), &at("/signin"), Public, "Console: sign in", signin)
    .add(
        get.clone(),
        &at("/assets/console.css"),
        Public,
        "Console: style sheet",
        css,
    )
    .add(get.clone(), &at("/assets/console.js"), Public, "Console: script", js)
    .add(post.clone(), &at("/signout"), Any, "Console: sign out", signout)
    .add(get.clone(), p, Any, "Console: home", home)
    .add(
        get.clone(),
        &at("/keys"),
        Verified,
        "Console: the caller's API keys",
        keys_page,
    )
    .add(
        post.clone(),
        &at("/keys"),
        Verified,
        "Console: create an API key",
        create_key,
    )
    .add(
        post.clone(),
        &at("/keys/{id}/revoke"),
        Verified,
        "Console: revoke an API key",
        revoke_key,
    )
    .add(
        get.clone(),
        &at("/my-models"),
        Verified,
        "Console: the models the caller may use",
        my_models,
    )
    .add(
        get.clone(),
        &at("/my-usage"),
        Verified,
        "Console: the caller's usage and what is left of their limits",
        my_usage,
    )
    .add(
        get.clone(),
        &at("/usage"),
        Admin,
        "Console: usage by day, model, user and key",
        usage_page,
    )
    .add(
        get.clone(),
        &at("/limits"),
        Admin,
        "Console: limits and budgets per key, user and group",
        limits::page,
    )
    .add(
        post.clone(),
        &at("/limits"),
        Admin,
        "Console: set the limits of a key, user or group",
        limits::save,
    )
    .add(
        post.clone(),
        &at("/limits/{scope}/{id}/delete"),
        Admin,
        "Console: remove the limits of a key, user or group",
        limits::remove,
    )
    .add(get.clone(), &at("/fleet"), Admin, "Console: fleet", fleet_page)
    .add(
        get.clone(),
        &at("/fleet/rows"),
        Admin,
        "Console: fleet rows (polled)",
        fleet_rows,
    )
    .add(
        get.clone(),
        &at("/connections"),
        Admin,
        "Console: connections",
        connections_page,
    )
    .add(
        post.clone(),
        &at("/connections"),
        Admin,
        "Console: add a connection",
        add_connection,
    )
    .add(
        get.clone(),
        &at("/connections/{idx}"),
        Admin,
        "Console: edit a connection",
        edit_connection_page,
    )
    .add(
        post.clone(),
        &at("/connections/{idx}"),
        Admin,
        "Console: save a connection",
        save_connection,
    )
    .add(
        post.clone(),
        &at("/connections/{idx}/toggle"),
        Admin,
        "Console: enable or disable a connection",
        toggle_connection,
    )
    .add(
        post.clone(),
        &at("/connections/{idx}/verify"),
        Admin,
        "Console: verify a connection",
        verify_connection,
    )
    .add(
        post.clone(),
        &at("/connections/{idx}/delete"),
        Admin,
        "Console: remove a connection",
        delete_connection,
    )
    .add(get.clone(), &at("/models"), Admin, "Console: models", models_page)
    .add(
        post.clone(),
        &at("/models/pull"),
        Admin,
        "Console: pull a model (NDJSON progress)",
        pull,
    )
    .add(
        post.clone(),
        &at("/models/delete"),
        Admin,
        "Console: delete a model everywhere",
        delete_model,
    )
    .add(
        post.clone(),
        &at("/models/unload"),
        Admin,
        "Console: unload a model",
        unload_model,
    )
    .add(
        get.clone(),
        &at("/models/record"),
        Admin,
        "Console: a model record",
        record_page,
    )
    .add(
        post.clone(),
        &at("/models/record"),
        Admin,
        "Console: save a model record",
        save_record,
    )
    .add(
        post.clone(),
        &at("/models/record/delete"),
        Admin,
        "Console: delete a model record",
        delete_record,
    )
    .add(
        get.clone(),
        &at("/people"),
        Admin,
        "Console: users and groups",
        people_page,
    )
    .add(
        post.clone(),
        &at("/people/users"),
        Admin,
        "Console: create a user",
        add_user,
    )
    .add(
        post.clone(),
        &at("/people/users/{id}/role"),
        Admin,
        "Console: change a user's role",
        set_role,
    )
    .add(
        post.clone(),
        &at("/people/users/{id}/delete"),
        Admin,
        "Console: delete a user",
        delete_user,
    )
    .add(
        post.clone(),
        &at("/people/groups"),
        Admin,
        "Console: create a group",
        add_group,
    )
    .add(
        post.clone(),
        &at("/people/groups/{id}"),
        Admin,
        "Console: change a group's members",
        save_group,
    )
    .add(
        post.clone(),
        &at("/people/groups/{id}/delete"),
        Admin,
        "Console: delete a group",
        delete_group,
    )
    .add(
        post,
        &at("/people/signup"),
        Admin,
        "Console: the sign-up switch",
        signup_switch,
    );
}

/// For a console page asked for without a valid session, the redirect to the sign-in page.
pub fn signin_redirect(req: &HttpRequest, err: &AppError) -> Option<HttpResponse> {
    if !matches!(err, AppError::Unauthorized(_)) || req.method() != Method::GET {
        return None;
    }
    // A pending user is signed in: they get the refusal, not the sign-in page again.
    if crate::auth::require(req, Level::Any).is_ok() {
        return None;
    }
    let shared = req.app_data::<web::Data<Shared>>()?;
    let prefix = shared.settings().server.console_path.clone();
    let path = req.path();
    if path == prefix || path.starts_with(&format!("{prefix}/")) {
        Some(see_other(&format!("{prefix}/signin")))
    } else {
        None
    }
}

/// What every page needs: where the console is, the caller, and their CSRF token.
pub(crate) struct Ctx {
    pub prefix: String,
    pub csrf: String,
    pub email: String,
    pub admin: bool,
}

fn ctx(shared: &Shared, caller: &Caller) -> Ctx {
    Ctx {
        prefix: shared.settings().server.console_path.clone(),
        csrf: csrf_token(shared, caller),
        email: caller.user.as_ref().map(|u| u.email.clone()).unwrap_or_default(),
        admin: caller.user.as_ref().is_none_or(|u| u.role == Role::Admin),
    }
}

fn mac(shared: &Shared) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&shared.auth.secret()).ok()?;
    mac.update(b"corral-console-csrf\0");
    Some(mac)
}

/// What a caller's CSRF token is bound to: the session token's id, else the user.
fn csrf_basis(caller: &Caller) -> String {
    match (&caller.session, &caller.user) {
        (Some((jti, _)), _) => format!("session:{jti}"),
        (None, Some(user)) => format!("user:{}", user.id),
        (None, None) => "open".to_owned(),
    }
}

/// The caller's CSRF token: an HMAC of their session under the gateway's secret.
fn csrf_token(shared: &Shared, caller: &Caller) -> String {
    mac(shared).map_or_else(String::new, |mut mac| {
        mac.update(csrf_basis(caller).as_bytes());
        hex::encode(mac.finalize().into_bytes())
    })
}

/// Checks a presented CSRF token in constant time.
fn check_csrf(shared: &Shared, caller: &Caller, presented: &str) -> Result<(), AppError> {
    let stale = || AppError::Forbidden("the console's CSRF token is missing or stale: reload the page".to_owned());
    let presented = hex::decode(presented).map_err(|_| stale())?;
    let mut mac = mac(shared).ok_or_else(stale)?;
    mac.update(csrf_basis(caller).as_bytes());
    mac.verify_slice(&presented).map_err(|_| stale())
}

/// A submitted form, its CSRF token checked.
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    fn parse(bytes: &[u8]) -> Result<Form, AppError> {
        serde_urlencoded::from_bytes(bytes)
            .map(Form)
            .map_err(|e| AppError::BadRequest(format!("invalid form: {e}")))
    }

    /// The first value of `name`, trimmed; empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.trim())
    }

    /// Every non-empty value of `name` (checkboxes).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether a checkbox `name` was ticked.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

async fn form(shared: &Shared, caller: &Caller, payload: web::Payload) -> Result<Form, AppError> {
    let bytes = read_body_up_to(payload, FORM_LIMIT).await?;
    let form = Form::parse(&bytes)?;
    check_csrf(shared, caller, form.get("csrf"))?;
    Ok(form)
}

/// A page with the console's security headers.
fn html(status: StatusCode, markup: maud::Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("X-Frame-Options", "DENY"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(markup.into_string())
}

fn ok(markup: maud::Markup) -> HttpResponse {
    html(StatusCode::OK, markup)
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location.to_owned()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// Back to `page` with a note (`msg`) or an error (`err`) shown on it.
fn back(ctx: &Ctx, page: &str, outcome: Result<String, AppError>) -> HttpResponse {
    let (key, text) = match outcome {
        Ok(msg) => ("msg", msg),
        Err(err) => ("err", err.to_string()),
    };
    let query = serde_urlencoded::to_string([(key, text)]).unwrap_or_default();
    see_other(&format!("{}{page}?{query}", ctx.prefix))
}

/// The note or error a redirect carries.
#[derive(serde::Deserialize, Default)]
pub(crate) struct Flash {
    #[serde(default)]
    pub msg: Option<String>,
    #[serde(default)]
    pub err: Option<String>,
}

fn flash(req: &HttpRequest) -> Flash {
    web::Query::<Flash>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

// ---- assets and session -------------------------------------------------------------------

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(CSS)
}

async fn js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(JS)
}

fn prefix_of(shared: &Shared) -> String {
    shared.settings().server.console_path.clone()
}

fn signin_form(shared: &Shared, error: Option<String>, email: &str, status: StatusCode) -> HttpResponse {
    let prefix = prefix_of(shared);
    let token = hex::encode(rand::random::<[u8; 16]>());
    let cookie = Cookie::build(SIGNIN_CSRF_COOKIE, token.clone())
        .path(prefix.clone())
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    let mut resp = html(status, views::signin(&prefix, &token, error.as_deref(), email));
    let _ = resp.add_cookie(&cookie);
    resp
}

/// `GET {console}/signin`.
async fn signin_page(shared: web::Data<Shared>) -> HttpResponse {
    signin_form(&shared, None, "", StatusCode::OK)
}

/// `POST {console}/signin`: the API's sign-in (limits, password check), then the session
/// cookie the API sets.
async fn signin(req: HttpRequest, shared: web::Data<Shared>, payload: web::Payload) -> Result<HttpResponse, AppError> {
    let bytes = read_body_up_to(payload, FORM_LIMIT).await?;
    let form = Form::parse(&bytes)?;
    let cookie = req.cookie(SIGNIN_CSRF_COOKIE).map(|c| c.value().to_owned());
    let presented = form.get("csrf");
    let same = cookie.is_some_and(|c| !c.is_empty() && constant_eq(c.as_bytes(), presented.as_bytes()));
    if !same {
        let error = "The form expired: sign in again.".to_owned();
        return Ok(signin_form(
            &shared,
            Some(error),
            form.get("email"),
            StatusCode::FORBIDDEN,
        ));
    }
    let email = form.get("email").to_owned();
    match accounts::sign_in(&req, &shared, &email, form.get("password").to_owned()).await {
        Ok(user) => {
            let (_, cookie) = accounts::session_cookie(&shared, &user)?;
            let mut resp = see_other(&prefix_of(&shared));
            resp.add_cookie(&cookie)
                .map_err(|e| AppError::Internal(e.to_string()))?;
            Ok(resp)
        }
        Err(AppError::BadRequest(message)) => Ok(signin_form(&shared, Some(message), &email, StatusCode::BAD_REQUEST)),
        Err(err) => Err(err),
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST {console}/signout`: the API's sign-out.
async fn signout(shared: web::Data<Shared>, caller: Anyone, payload: web::Payload) -> Result<HttpResponse, AppError> {
    form(&shared, &caller.0, payload).await?;
    accounts::sign_out(&shared, &caller.0).await?;
    let mut resp = see_other(&format!("{}/signin", prefix_of(&shared)));
    resp.add_cookie(&accounts::removed_cookie())
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(resp)
}

/// `GET {console}`: admins to the fleet, users to their models, pending users to a wait.
async fn home(shared: web::Data<Shared>, caller: Anyone) -> HttpResponse {
    let ctx = ctx(&shared, &caller.0);
    match caller.0.user.as_ref().map(|u| u.role) {
        Some(Role::Pending) => ok(views::pending(&ctx)),
        Some(Role::User) => see_other(&format!("{}/my-models", ctx.prefix)),
        _ => see_other(&format!("{}/fleet", ctx.prefix)),
    }
}

// ---- keys and models for everyone --------------------------------------------------------

async fn keys_page(req: HttpRequest, shared: web::Data<Shared>, caller: Caller) -> Result<HttpResponse, AppError> {
    let ctx = ctx(&shared, &caller);
    let keys = accounts::all_keys(&shared, &caller).await?;
    Ok(ok(views::keys(
        &ctx,
        &flash(&req),
        &keys,
        None,
        crate::auth::unix_now(),
    )))
}

async fn create_key(
    shared: web::Data<Shared>,
    caller: Caller,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let form = form(&shared, &caller, payload).await?;
    let ctx = ctx(&shared, &caller);
    let days = form.get("expires_days");
    let expires_in = if days.is_empty() {
        None
    } else {
        match days.parse::<i64>() {
            Ok(d) if d > 0 => Some(d.saturating_mul(86_400)),
            _ => {
                let flash = Flash {
                    err: Some("Expires in: a whole number of days, at least 1".to_owned()),
                    msg: None,
                };
                let keys = accounts::all_keys(&shared, &caller).await?;
                return Ok(html(
                    StatusCode::BAD_REQUEST,
                    views::keys(&ctx, &flash, &keys, None, crate::auth::unix_now()),
                ));
            }
        }
    };
    let name = Some(form.get("name").to_owned()).filter(|n| !n.is_empty());
    let (key, plain) = accounts::new_key(&shared, &caller, accounts::KeyForm { name, expires_in }).await?;
    let keys = accounts::all_keys(&shared, &caller).await?;
    // The key is in this answer only (not stored, not cached: `no-store`).
    Ok(ok(views::keys(
        &ctx,
        &Flash::default(),
        &keys,
        Some((&key.name, plain.expose())),
        crate::auth::unix_now(),
    )))
}

async fn revoke_key(
    shared: web::Data<Shared>,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    form(&shared, &caller, payload).await?;
    let ctx = ctx(&shared, &caller);
    let outcome = accounts::revoke_one(&shared, &caller, path.into_inner())
        .await
        .map(|()| "Key revoked.".to_owned());
    Ok(back(&ctx, "/keys", outcome))
}

/// A model as the console lists it.
pub(crate) struct ModelRow {
    pub id: String,
    pub size: Option<u64>,
    pub holders: Vec<(usize, String)>,
    pub loaded: Vec<usize>,
}

async fn catalogue_rows(shared: &Shared, client: &awc::Client) -> Vec<ModelRow> {
    let settings = shared.settings();
    if !settings.ollama.enable {
        return Vec::new();
    }
    let snap = shared
        .fleet
        .fresh(shared, client, std::time::Duration::from_secs(1))
        .await;
    let loaded: Vec<(usize, Vec<String>)> = (0..settings.ollama.base_urls.len())
        .map(|i| (i, snap.catalogue.loaded_on(i).into_iter().map(str::to_owned).collect()))
        .collect();
    snap.catalogue
        .entries()
        .iter()
        .map(|e| ModelRow {
            id: e.id.clone(),
            size: e.object.get("size").and_then(Value::as_u64),
            holders: e
                .urls
                .iter()
                .map(|&i| (i, settings.ollama.base_urls.get(i).cloned().unwrap_or_default()))
                .collect(),
            loaded: loaded
                .iter()
                .filter(|(_, ids)| ids.contains(&e.id))
                .map(|(i, _)| *i)
                .collect(),
        })
        .collect()
}

/// The usage tables of the console: one report per dimension.
pub(crate) struct UsageTables {
    /// Days the tables cover, up to now.
    pub days: i64,
    /// Per dimension (its name and its rows), in the order shown.
    pub tables: Vec<(&'static str, Vec<UsageLine>)>,
}

/// One row of a usage table.
pub(crate) struct UsageLine {
    /// What the row is: a day, a model, a user's email, a key's id.
    pub label: String,
    pub requests: i64,
    pub prompt: i64,
    pub completion: i64,
}

/// `GET /console/usage?days=N` (admin): the last N days (30; 1 to 366) by day, model, user and key.
async fn usage_page(req: HttpRequest, shared: web::Data<Shared>, admin: Admin) -> Result<HttpResponse, AppError> {
    let ctx = ctx(&shared, &admin.0);
    let days = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("days").and_then(|d| d.parse::<i64>().ok()))
        .unwrap_or(30)
        .clamp(1, 366);
    let tables = usage_tables(&shared, &admin.0, None, days).await?;
    Ok(ok(views::usage(&ctx, &tables)))
}

/// `GET /console/my-usage`: the caller's usage in the last 30 days by day and model, and
/// what is left of each limit that applies to them.
async fn my_usage(shared: web::Data<Shared>, caller: Caller) -> Result<HttpResponse, AppError> {
    let ctx = ctx(&shared, &caller);
    let user = caller.user.as_ref().map(|u| u.id.clone());
    let tables = usage_tables(&shared, &caller, Some(user), 30).await?;
    let remaining = shared.limiter.remaining(&caller, None);
    Ok(ok(views::my_usage(&ctx, &tables, &remaining)))
}

/// The usage of the last `days` days, by day and model (and by user and key when `only` is
/// `None`, an admin's view of everyone; else only that user's).
async fn usage_tables(
    shared: &web::Data<Shared>,
    caller: &Caller,
    only: Option<Option<String>>,
    days: i64,
) -> Result<UsageTables, AppError> {
    use corral_store::{UsageDimension as D, UsageQuery};
    let from_ms = chrono::Utc::now().timestamp_millis() - days * 86_400_000;
    let mut dims = vec![("day", D::Day), ("model", D::Model)];
    if only.is_none() {
        dims.extend([("user", D::User), ("key", D::Key)]);
    }
    let user = only.flatten();
    let reports = crate::handlers::usage::read(shared, move |store| {
        dims.into_iter()
            .map(|(name, dim)| {
                let query = UsageQuery {
                    from_ms,
                    to_ms: i64::MAX,
                    group_by: vec![dim],
                    user: user.clone(),
                    ..UsageQuery::default()
                };
                Ok((name, store.usage_report(&query)?))
            })
            .collect::<Result<Vec<_>, AppError>>()
    })
    .await?;
    let label = |name: &str, r: &corral_store::UsageRow| -> String {
        match name {
            "day" => r
                .day
                .and_then(|d| chrono::DateTime::from_timestamp(d * 86_400, 0))
                .map(|t| t.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
            "model" => r.model.clone().unwrap_or_default(),
            "user" => match &r.user_id {
                Some(id) => caller
                    .directory
                    .user(id)
                    .map_or_else(|| id.clone(), |u| u.email.clone()),
                None => "(no account)".to_owned(),
            },
            _ => r.key_id.clone().unwrap_or_else(|| "(session)".to_owned()),
        }
    };
    Ok(UsageTables {
        days,
        tables: reports
            .into_iter()
            .map(|(name, rows)| {
                let mut lines: Vec<UsageLine> = rows
                    .iter()
                    .map(|r| UsageLine {
                        label: label(name, r),
                        requests: r.requests,
                        prompt: r.input_tokens,
                        completion: r.output_tokens,
                    })
                    .collect();
                if name != "day" {
                    lines.sort_by_key(|l| std::cmp::Reverse(l.prompt + l.completion));
                }
                (name, lines)
            })
            .collect(),
    })
}

async fn my_models(
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    caller: Caller,
) -> Result<HttpResponse, AppError> {
    let ctx = ctx(&shared, &caller);
    let bypass = shared.settings().auth.bypass_model_access_control;
    let rows: Vec<ModelRow> = catalogue_rows(&shared, &client)
        .await
        .into_iter()
        .filter(|m| caller.can_read(&m.id, bypass))
        .collect();
    let mut presets: Vec<(String, String)> = caller
        .directory
        .presets()
        .filter(|p| caller.can_read(&p.id, bypass))
        .map(|p| (p.id.clone(), p.base_model_id.clone().unwrap_or_default()))
        .collect();
    presets.sort();
    Ok(ok(views::my_models(&ctx, &rows, &presets)))
}

// ---- fleet --------------------------------------------------------------------------------

/// One instance as the fleet page shows it.
pub(crate) struct InstanceRow {
    pub idx: usize,
    pub url: String,
    pub enabled: bool,
    pub health: String,
    pub version: Option<String>,
    pub loaded: Vec<String>,
    pub in_flight: u64,
    pub queued: u64,
    pub ttft_ms: Option<f64>,
}

async fn instance_rows(shared: &Shared, client: &awc::Client) -> Vec<InstanceRow> {
    let status = fleet::status_json(shared, client).await;
    let settings = shared.settings();
    let snap = shared
        .fleet
        .fresh(shared, client, std::time::Duration::from_secs(1))
        .await;
    let versions = futures_util::future::join_all((0..settings.ollama.base_urls.len()).map(|idx| {
        let settings = &settings;
        // An ejected instance is not asked (nor logged about) every refresh.
        async move {
            if shared.is_ejected(idx) {
                None
            } else {
                crate::discovery::fetch_json(client, settings, idx, "/api/version").await
            }
        }
    }))
    .await;
    let queues: Vec<(String, u64)> = status["queues"]
        .as_object()
        .map(|q| {
            q.iter()
                .map(|(m, v)| (m.clone(), v["waiting"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    status["instances"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(idx, i)| InstanceRow {
            idx,
            url: i["url"].as_str().unwrap_or_default().to_owned(),
            enabled: i["enabled"].as_bool().unwrap_or(false),
            health: if i["enabled"].as_bool() == Some(false) {
                "disabled".to_owned()
            // Asked just now and silent: shown at once, before the health checks eject it.
            } else if (i["reachable"].as_bool() == Some(false) || versions.get(idx).is_some_and(Option::is_none))
                && i["health"] == "healthy"
            {
                "unreachable".to_owned()
            } else {
                i["health"].as_str().unwrap_or("unknown").to_owned()
            },
            version: versions
                .get(idx)
                .and_then(|v| v.as_ref()?.get("version")?.as_str().map(str::to_owned)),
            loaded: i["loaded"]
                .as_array()
                .map(|l| l.iter().filter_map(|m| m.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            in_flight: i["in_flight"].as_u64().unwrap_or(0),
            queued: queues
                .iter()
                .filter(|(m, _)| snap.catalogue.resolve(m).is_some_and(|e| e.urls.contains(&idx)))
                .map(|(_, n)| n)
                .sum(),
            ttft_ms: i["ttft_ms"].as_f64(),
        })
        .collect()
}

async fn fleet_page(
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    admin: Admin,
) -> Result<HttpResponse, AppError> {
    let ctx = ctx(&shared, &admin.0);
    let rows = instance_rows(&shared, &client).await;
    let interval = shared.settings().balance.health_interval;
    Ok(ok(views::fleet(&ctx, &rows, interval)))
}

async fn fleet_rows(
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    _admin: Admin,
) -> Result<HttpResponse, AppError> {
    let rows = instance_rows(&shared, &client).await;
    Ok(ok(views::fleet_rows(&rows)))
}

// ---- connections --------------------------------------------------------------------------

/// A connection as the form shows it (the key masked).
#[derive(Default, Clone)]
pub(crate) struct ConnForm {
    pub url: String,
    pub key: String,
    pub prefix_id: String,
    pub tags: String,
    pub model_ids: String,
    pub weight: String,
    pub priority: String,
    pub slots: String,
    pub enable: bool,
}

impl ConnForm {
    fn from_saved(url: &str, conn: &ConnectionSettings) -> ConnForm {
        let tags = conn
            .tags
            .iter()
            .flatten()
            .map(|t| match t {
                Value::String(s) => s.clone(),
                other => other
                    .get("name")
                    .and_then(Value::as_str)
                    .map_or_else(|| other.to_string(), str::to_owned),
            })
            .collect::<Vec<_>>()
            .join(", ");
        ConnForm {
            url: url.to_owned(),
            key: if conn.bearer().is_some() {
                config::KEY_MASK.to_owned()
            } else {
                String::new()
            },
            prefix_id: conn.prefix_id.clone().unwrap_or_default(),
            tags,
            model_ids: conn.model_ids.clone().unwrap_or_default().join(", "),
            weight: conn.weight.map(|w| w.to_string()).unwrap_or_default(),
            priority: conn.priority.map(|w| w.to_string()).unwrap_or_default(),
            slots: conn.slots.map(|s| s.to_string()).unwrap_or_default(),
            enable: conn.enabled(),
        }
    }

    fn from_form(form: &Form) -> ConnForm {
        ConnForm {
            url: form.get("url").to_owned(),
            key: form.get("key").to_owned(),
            prefix_id: form.get("prefix_id").to_owned(),
            tags: form.get("tags").to_owned(),
            model_ids: form.get("model_ids").to_owned(),
            weight: form.get("weight").to_owned(),
            priority: form.get("priority").to_owned(),
            slots: form.get("slots").to_owned(),
            enable: form.has("enable"),
        }
    }

    /// The connection's settings, or the errors of each field.
    fn settings(&self) -> Result<Value, FieldErrors> {
        let mut errors = FieldErrors::default();
        let list = |text: &str| -> Option<Vec<String>> {
            let items: Vec<String> = text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            (!items.is_empty()).then_some(items)
        };
        let mut number = |field: &str, text: &str| -> Option<u32> {
            if text.is_empty() {
                return None;
            }
            let parsed = text.parse::<u32>().ok();
            if parsed.is_none() {
                errors.add(field, "must be a whole number of at least 0");
            }
            parsed
        };
        let weight = number("weight", &self.weight);
        let priority = number("priority", &self.priority);
        let slots = if self.slots.is_empty() {
            None
        } else {
            match self.slots.parse::<Slots>() {
                Ok(s) => Some(s),
                Err(e) => {
                    errors.add("slots", &e);
                    None
                }
            }
        };
        if self.url.is_empty() {
            errors.add("url", "is required");
        }
        if !errors.0.is_empty() {
            return Err(errors);
        }
        let conn = ConnectionSettings {
            enable: Some(self.enable),
            key: Some(self.key.clone()).filter(|k| !k.is_empty()),
            prefix_id: Some(self.prefix_id.clone()).filter(|p| !p.is_empty()),
            tags: list(&self.tags).map(|t| t.into_iter().map(Value::String).collect()),
            model_ids: list(&self.model_ids),
            weight,
            priority,
            slots,
            ..ConnectionSettings::default()
        };
        serde_json::to_value(conn).map_err(|e| FieldErrors(vec![(String::new(), e.to_string())]))
    }
}

/// Errors by form field (`""`: the form as a whole).
#[derive(Default)]
pub(crate) struct FieldErrors(pub Vec<(String, String)>);

impl FieldErrors {
    fn add(&mut self, field: &str, message: &str) {
        self.0.push((field.to_owned(), message.to_owned()));
    }

    pub fn of(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|(f, _)| f == field).map(|(_, m)| m.as_str())
    }

    /// The API's refusal of a configuration, at the field it names.
    fn from_api(message: &str) -> FieldErrors {
        let fields = ["key", "prefix_id", "tags", "model_ids", "weight", "priority", "slots"];
        let field = if message.starts_with("OLLAMA_BASE_URLS") || message.starts_with("url") {
            "url"
        } else {
            fields
                .iter()
                .find(|f| message.contains(&format!(".{f}")) || message.contains(&format!("`{f}`")))
                .copied()
                .unwrap_or("")
        };
        // The field is named by the form; the message keeps only what is wrong.
        let text = message
            .split_once(": ")
            .filter(|_| !field.is_empty())
            .map_or(message, |(_, rest)| rest);
        FieldErrors(vec![(field.to_owned(), text.to_owned())])
    }
}

/// The saved connections in the admin API's shape (keys masked).
fn current_config(shared: &Shared) -> Value {
    config::shape(&shared.settings().ollama)
}

/// A change to the connections: the API's validation and save, and the error at its field.
async fn save_config(shared: &Shared, value: &Value) -> Result<(), FieldErrors> {
    match config::save(shared, value).await {
        Ok(_) => Ok(()),
        Err(AppError::BadRequest(message)) => Err(FieldErrors::from_api(&message)),
        Err(other) => Err(FieldErrors(vec![(String::new(), other.to_string())])),
    }
}

fn connection_list(shared: &Shared) -> Vec<(usize, ConnForm)> {
    let settings = shared.settings();
    settings
        .ollama
        .base_urls
        .iter()
        .enumerate()
        .map(|(i, url)| (i, ConnForm::from_saved(url, settings.ollama.connection(i))))
        .collect()
}

async fn connections_page(req: HttpRequest, shared: web::Data<Shared>, admin: Admin) -> HttpResponse {
    let ctx = ctx(&shared, &admin.0);
    let fresh = ConnForm {
        enable: true,
        ..ConnForm::default()
    };
    ok(views::connections(
        &ctx,
        &flash(&req),
        &connection_list(&shared),
        &fresh,
        &FieldErrors::default(),
    ))
}

async fn add_connection(
    shared: web::Data<Shared>,
    admin: Admin,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let form = form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let conn = ConnForm::from_form(&form);
    let result = match conn.settings() {
        Err(errors) => Err(errors),
        Ok(settings) => {
            let mut value = current_config(&shared);
            let n = value["OLLAMA_BASE_URLS"].as_array().map_or(0, Vec::len);
            if let Some(urls) = value["OLLAMA_BASE_URLS"].as_array_mut() {
                urls.push(Value::String(conn.url.clone()));
            }
            value["OLLAMA_API_CONFIGS"][n.to_string()] = settings;
            save_config(&shared, &value).await
        }
    };
    Ok(match result {
        Ok(()) => back(&ctx, "/connections", Ok(format!("Connection {} added.", conn.url))),
        Err(errors) => html(
            StatusCode::BAD_REQUEST,
            views::connections(&ctx, &Flash::default(), &connection_list(&shared), &conn, &errors),
        ),
    })
}

fn connection_at(shared: &Shared, idx: usize) -> Result<ConnForm, AppError> {
    connection_list(shared)
        .into_iter()
        .nth(idx)
        .map(|(_, c)| c)
        .ok_or_else(|| AppError::NotFound(format!("no connection {idx}")))
}

async fn edit_connection_page(
    shared: web::Data<Shared>,
    admin: Admin,
    path: web::Path<usize>,
) -> Result<HttpResponse, AppError> {
    let ctx = ctx(&shared, &admin.0);
    let idx = path.into_inner();
    let conn = connection_at(&shared, idx)?;
    Ok(ok(views::connection_edit(&ctx, idx, &conn, &FieldErrors::default())))
}

async fn save_connection(
    shared: web::Data<Shared>,
    admin: Admin,
    path: web::Path<usize>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let form = form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let idx = path.into_inner();
    connection_at(&shared, idx)?;
    let conn = ConnForm::from_form(&form);
    let result = match conn.settings() {
        Err(errors) => Err(errors),
        Ok(settings) => {
            let mut value = current_config(&shared);
            value["OLLAMA_BASE_URLS"][idx] = Value::String(conn.url.clone());
            value["OLLAMA_API_CONFIGS"][idx.to_string()] = settings;
            save_config(&shared, &value).await
        }
    };
    Ok(match result {
        Ok(()) => back(&ctx, "/connections", Ok(format!("Connection {idx} saved."))),
        Err(errors) => html(
            StatusCode::BAD_REQUEST,
            views::connection_edit(&ctx, idx, &conn, &errors),
        ),
    })
}

async fn toggle_connection(
    shared: web::Data<Shared>,
    admin: Admin,
    path: web::Path<usize>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let idx = path.into_inner();
    let conn = connection_at(&shared, idx)?;
    let mut value = current_config(&shared);
    let key = idx.to_string();
    if value["OLLAMA_API_CONFIGS"].get(&key).is_none() {
        value["OLLAMA_API_CONFIGS"][&key] = json!({});
    }
    value["OLLAMA_API_CONFIGS"][&key]["enable"] = Value::Bool(!conn.enable);
    let outcome = save_config(&shared, &value)
        .await
        .map(|()| format!("Connection {idx} {}.", if conn.enable { "disabled" } else { "enabled" }))
        .map_err(|e| AppError::BadRequest(e.0.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; ")));
    Ok(back(&ctx, "/connections", outcome))
}

async fn verify_connection(
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    admin: Admin,
    path: web::Path<usize>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let idx = path.into_inner();
    let conn = connection_at(&shared, idx)?;
    let key = Some(conn.key.as_str()).filter(|k| !k.is_empty());
    let outcome = config::check(&shared, &client, &conn.url, key).await.map(|v| {
        format!(
            "Connection {idx} verified: Ollama {}.",
            v["version"].as_str().unwrap_or("(no version)")
        )
    });
    Ok(back(&ctx, "/connections", outcome))
}

async fn delete_connection(
    shared: web::Data<Shared>,
    admin: Admin,
    path: web::Path<usize>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let idx = path.into_inner();
    let conn = connection_at(&shared, idx)?;
    let value = current_config(&shared);
    let mut urls = value["OLLAMA_BASE_URLS"].as_array().cloned().unwrap_or_default();
    urls.remove(idx);
    // The later connections move down one place, with their settings.
    let configs: serde_json::Map<String, Value> = value["OLLAMA_API_CONFIGS"]
        .as_object()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| {
            let i = k.parse::<usize>().ok()?;
            match i.cmp(&idx) {
                std::cmp::Ordering::Less => Some((k, v)),
                std::cmp::Ordering::Equal => None,
                std::cmp::Ordering::Greater => Some(((i - 1).to_string(), v)),
            }
        })
        .collect();
    let next = json!({
        "ENABLE_OLLAMA_API": value["ENABLE_OLLAMA_API"],
        "OLLAMA_BASE_URLS": urls,
        "OLLAMA_API_CONFIGS": configs,
    });
    let outcome = save_config(&shared, &next)
        .await
        .map(|()| format!("Connection {} removed.", conn.url))
        .map_err(|e| AppError::BadRequest(e.0.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; ")));
    Ok(back(&ctx, "/connections", outcome))
}

// ---- models -------------------------------------------------------------------------------

async fn models_page(
    req: HttpRequest,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    admin: Admin,
) -> Result<HttpResponse, AppError> {
    let ctx = ctx(&shared, &admin.0);
    let rows = catalogue_rows(&shared, &client).await;
    let records = accounts::read(&shared, |store| Ok(store.list_models()?)).await?;
    let groups = choices(&shared).await?.groups;
    let instances: Vec<(usize, String, bool)> = connection_list(&shared)
        .into_iter()
        .map(|(i, c)| (i, c.url, c.enable))
        .collect();
    Ok(ok(views::models(
        &ctx,
        &flash(&req),
        &rows,
        &records,
        &groups,
        &instances,
    )))
}

/// `POST {console}/models/pull`: the fleet pull (`POST /ollama/api/pull/all`), its NDJSON
/// progress streamed to the page's script, which sends the CSRF token as a header.
async fn pull(
    admin: Admin,
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
) -> Result<HttpResponse, AppError> {
    let token = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    check_csrf(&shared, &admin.0, &token)?;
    fleet::pull_all(admin, req, payload, shared, client).await
}

async fn delete_model(
    req: HttpRequest,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    admin: Admin,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let form = form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let model = form.get("model").to_owned();
    let outcome = async {
        let every = fleet::chosen_instances(&shared, &Value::Null)?;
        let results = fleet::delete_everywhere(&req, &shared, &client, &model, &every, true).await?;
        let failed: Vec<String> = results
            .iter()
            .filter(|r| r["status"] != json!(true))
            .map(|r| format!("instance {}: {}", r["url_idx"], r["error"].as_str().unwrap_or("failed")))
            .collect();
        if failed.is_empty() {
            Ok(format!("{model} deleted from {} instance(s).", results.len()))
        } else {
            Err(AppError::Partial(format!(
                "{model} was not deleted everywhere: {}",
                failed.join("; ")
            )))
        }
    }
    .await;
    Ok(back(&ctx, "/models", outcome))
}

async fn unload_model(
    req: HttpRequest,
    shared: web::Data<Shared>,
    client: web::Data<awc::Client>,
    admin: Admin,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let form = form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let model = form.get("model").to_owned();
    let outcome = fleet::unload_model(&req, &shared, &client, &model)
        .await
        .map(|()| format!("{model} unloaded."));
    Ok(back(&ctx, "/models", outcome))
}

/// A model record as the form shows it.
pub(crate) struct RecordForm {
    pub id: String,
    pub exists: bool,
    pub name: String,
    pub base_model_id: String,
    pub system: String,
    pub params: String,
    pub public: bool,
    pub group_ids: Vec<String>,
    pub user_ids: Vec<String>,
    pub active: bool,
}

impl RecordForm {
    fn from_model(m: &corral_store::Model) -> RecordForm {
        let mut params = m.params.clone();
        let system = params
            .as_object_mut()
            .and_then(|p| p.remove("system"))
            .and_then(|s| s.as_str().map(str::to_owned))
            .unwrap_or_default();
        let ids = |kind: &str| -> Vec<String> {
            m.access_control
                .as_ref()
                .and_then(|ac| ac["read"][kind].as_array())
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        RecordForm {
            id: m.id.clone(),
            exists: true,
            name: m.name.clone(),
            base_model_id: m.base_model_id.clone().unwrap_or_default(),
            system,
            params: serde_json::to_string_pretty(&params).unwrap_or_else(|_| "{}".to_owned()),
            public: m.access_control.is_none(),
            group_ids: ids("group_ids"),
            user_ids: ids("user_ids"),
            active: m.is_active,
        }
    }

    fn fresh(id: &str, base: &str) -> RecordForm {
        RecordForm {
            id: id.to_owned(),
            exists: false,
            name: id.to_owned(),
            base_model_id: base.to_owned(),
            system: String::new(),
            params: "{}".to_owned(),
            public: true,
            group_ids: Vec::new(),
            user_ids: Vec::new(),
            active: true,
        }
    }
}

/// Users and groups to pick from: (id, label).
pub(crate) struct Choices {
    pub groups: Vec<(String, String)>,
    pub users: Vec<(String, String)>,
}

async fn choices(shared: &web::Data<Shared>) -> Result<Choices, AppError> {
    accounts::read(shared, |store| {
        Ok(Choices {
            groups: store.list_groups()?.into_iter().map(|g| (g.id, g.name)).collect(),
            users: store.list_users()?.into_iter().map(|u| (u.id, u.email)).collect(),
        })
    })
    .await
}

#[derive(serde::Deserialize)]
struct RecordQuery {
    id: String,
    #[serde(default)]
    base: String,
}

async fn record_page(
    shared: web::Data<Shared>,
    admin: Admin,
    query: web::Query<RecordQuery>,
) -> Result<HttpResponse, AppError> {
    let ctx = ctx(&shared, &admin.0);
    let RecordQuery { id, base } = query.into_inner();
    if id.trim().is_empty() {
        return Err(AppError::BadRequest("id: is required".to_owned()));
    }
    let wanted = id.clone();
    let saved = accounts::read(&shared, move |store| Ok(store.get_model(&wanted)?)).await?;
    let record = saved
        .as_ref()
        .map_or_else(|| RecordForm::fresh(&id, &base), RecordForm::from_model);
    let choices = choices(&shared).await?;
    Ok(ok(views::record(&ctx, &record, &choices, &FieldErrors::default())))
}

async fn save_record(shared: web::Data<Shared>, admin: Admin, payload: web::Payload) -> Result<HttpResponse, AppError> {
    let form = form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let id = form.get("id").to_owned();
    let wanted = id.clone();
    let exists = accounts::read(&shared, move |store| Ok(store.get_model(&wanted)?.is_some())).await?;
    let record = RecordForm {
        id: id.clone(),
        exists,
        name: form.get("name").to_owned(),
        base_model_id: form.get("base_model_id").to_owned(),
        system: form.get("system").to_owned(),
        params: form.get("params").to_owned(),
        public: form.get("access") != "restricted",
        group_ids: form.all("group_ids"),
        user_ids: form.all("user_ids"),
        active: form.has("active"),
    };
    let mut errors = FieldErrors::default();
    if id.is_empty() {
        errors.add("id", "is required");
    }
    let mut params = if record.params.is_empty() {
        json!({})
    } else {
        match serde_json::from_str::<Value>(&record.params) {
            Ok(v) if v.is_object() => v,
            _ => {
                errors.add("params", "must be a JSON object, e.g. {\"temperature\": 0.2}");
                json!({})
            }
        }
    };
    if !errors.0.is_empty() {
        let choices = choices(&shared).await?;
        return Ok(html(
            StatusCode::BAD_REQUEST,
            views::record(&ctx, &record, &choices, &errors),
        ));
    }
    if let Some(p) = params.as_object_mut() {
        p.remove("system");
        if !record.system.is_empty() {
            p.insert("system".to_owned(), Value::String(record.system.clone()));
        }
    }
    let access = if record.public {
        Value::Null
    } else {
        json!({
            "read": {"group_ids": record.group_ids, "user_ids": record.user_ids},
            "write": {"group_ids": [], "user_ids": []},
        })
    };
    let model_form = accounts::ModelForm {
        id: id.clone(),
        base_model_id: Some(if record.base_model_id.is_empty() {
            Value::Null
        } else {
            Value::String(record.base_model_id.clone())
        }),
        name: Some(if record.name.is_empty() {
            id.clone()
        } else {
            record.name.clone()
        }),
        params: Some(params),
        meta: None,
        access_control: Some(access),
        is_active: Some(record.active),
    };
    let saved = if exists {
        accounts::change_model(&shared, id.clone(), model_form).await
    } else {
        accounts::new_model(&shared, &admin, model_form).await
    };
    Ok(match saved {
        Ok(_) => back(&ctx, "/models", Ok(format!("Model record {id} saved."))),
        Err(AppError::BadRequest(message)) => {
            let choices = choices(&shared).await?;
            let field = if message.starts_with("access_control") {
                "access"
            } else if message.starts_with("params") {
                "params"
            } else {
                ""
            };
            let errors = FieldErrors(vec![(field.to_owned(), message)]);
            html(StatusCode::BAD_REQUEST, views::record(&ctx, &record, &choices, &errors))
        }
        Err(other) => back(&ctx, "/models", Err(other)),
    })
}

async fn delete_record(
    shared: web::Data<Shared>,
    admin: Admin,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let form = form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let id = form.get("id").to_owned();
    let outcome = accounts::remove_model(&shared, id.clone())
        .await
        .map(|()| format!("Model record {id} deleted."));
    Ok(back(&ctx, "/models", outcome))
}

// ---- people -------------------------------------------------------------------------------

/// The people page's data.
pub(crate) struct People {
    pub users: Vec<corral_store::User>,
    pub first: Option<String>,
    pub groups: Vec<(corral_store::Group, Vec<String>)>,
    pub signup_open: bool,
    pub signup_role: Role,
}

async fn people_page(req: HttpRequest, shared: web::Data<Shared>, admin: Admin) -> Result<HttpResponse, AppError> {
    let ctx = ctx(&shared, &admin.0);
    let (signup_open, signup_role) = accounts::signup_state(&shared).await?;
    let people = accounts::read(&shared, move |store| {
        let mut groups = Vec::new();
        for g in store.list_groups()? {
            let members = store.group_members(&g.id)?;
            groups.push((g, members));
        }
        Ok(People {
            users: store.list_users()?,
            first: store.first_user_id()?,
            groups,
            signup_open,
            signup_role,
        })
    })
    .await?;
    let me = admin.0.user.as_ref().map(|u| u.id.clone()).unwrap_or_default();
    Ok(ok(views::people(&ctx, &flash(&req), &people, &me)))
}

async fn add_user(shared: web::Data<Shared>, admin: Admin, payload: web::Payload) -> Result<HttpResponse, AppError> {
    let form = form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let add = accounts::AddForm {
        email: form.get("email").to_owned(),
        password: form.get("password").to_owned(),
        name: form.get("name").to_owned(),
        role: Some(form.get("role").to_owned()).filter(|r| !r.is_empty()),
        profile_image_url: String::new(),
    };
    let outcome = accounts::add_account(&shared, add)
        .await
        .map(|u| format!("User {} created.", u.email));
    Ok(back(&ctx, "/people", outcome))
}

async fn set_role(
    shared: web::Data<Shared>,
    admin: Admin,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let form = form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let outcome = async {
        let role = accounts::parse_role(form.get("role"))?;
        let changes = corral_store::UserChanges {
            role: Some(role),
            ..corral_store::UserChanges::default()
        };
        let user = accounts::change_account(&shared, &admin, path.into_inner(), changes, None).await?;
        Ok(format!("{} is now {}.", user.email, user.role.as_str()))
    }
    .await;
    Ok(back(&ctx, "/people", outcome))
}

async fn delete_user(
    shared: web::Data<Shared>,
    admin: Admin,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let outcome = accounts::delete_account(&shared, &admin, path.into_inner())
        .await
        .map(|()| "User deleted.".to_owned());
    Ok(back(&ctx, "/people", outcome))
}

async fn add_group(shared: web::Data<Shared>, admin: Admin, payload: web::Payload) -> Result<HttpResponse, AppError> {
    let form = form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let group = accounts::GroupForm {
        name: form.get("name").to_owned(),
        description: form.get("description").to_owned(),
        user_ids: Some(form.all("user_ids")),
    };
    let outcome = accounts::new_group(&shared, group)
        .await
        .map(|g| format!("Group {} created.", g["name"].as_str().unwrap_or_default()));
    Ok(back(&ctx, "/people", outcome))
}

async fn save_group(
    shared: web::Data<Shared>,
    admin: Admin,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let form = form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let group = accounts::GroupForm {
        name: form.get("name").to_owned(),
        description: form.get("description").to_owned(),
        user_ids: Some(form.all("user_ids")),
    };
    let outcome = accounts::change_group(&shared, path.into_inner(), group)
        .await
        .map(|g| format!("Group {} saved.", g["name"].as_str().unwrap_or_default()));
    Ok(back(&ctx, "/people", outcome))
}

async fn delete_group(
    shared: web::Data<Shared>,
    admin: Admin,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let outcome = accounts::remove_group(&shared, path.into_inner())
        .await
        .map(|()| "Group deleted.".to_owned());
    Ok(back(&ctx, "/people", outcome))
}

async fn signup_switch(
    shared: web::Data<Shared>,
    admin: Admin,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let form = form(&shared, &admin.0, payload).await?;
    let ctx = ctx(&shared, &admin.0);
    let outcome = async {
        let role = accounts::parse_role(form.get("role"))?;
        let (open, role) = accounts::set_signup(&shared, Some(form.has("open")), Some(role)).await?;
        Ok(format!(
            "Sign-up is {}; new accounts get the role {}.",
            if open { "open" } else { "closed" },
            role.as_str()
        ))
    }
    .await;
    Ok(back(&ctx, "/people", outcome))
}

/// Sizes as people read them.
pub(crate) fn human_size(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    #[allow(clippy::cast_precision_loss)]
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit + 1 < units.len() {
        size /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{size:.1} {}", units[unit])
    }
}
