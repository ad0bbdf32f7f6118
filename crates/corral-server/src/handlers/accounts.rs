//! Accounts under `/api/v1`, in Open WebUI's shapes: sign-up, sign-in, sign-out and the
//! current user (`/auths`), API keys, and the admin endpoints for users, groups and model
//! records.
//!
//! Every write goes to the store off the executor and reloads this replica's directory before
//! answering, so a revoked key or a deleted user is refused by the next request; other
//! replicas reload when they see the revision move.

use actix_web::cookie::{time::OffsetDateTime, Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use corral_auth::{messages, Role};
use corral_store::{NewApiKey, NewModel, NewUser, Store, User, UserChanges};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{unix_now, Admin, Anyone, Caller, Level};
use crate::error::AppError;
use crate::state::Shared;

/// Registers the routes under `/api/v1`, each with the callers it admits.
pub fn register(r: &mut crate::routes::Routes) {
    use actix_web::http::Method;
    use Level::{Admin, Any, Public};
    const A: &str = "/api/v1/auths";
    r.add(Method::POST, &format!("{A}/signup"), Public, "Sign up", signup)
        .add(Method::POST, &format!("{A}/signin"), Public, "Sign in", signin)
        .add(Method::GET, &format!("{A}/signout"), Any, "Sign out", signout)
        .add(Method::POST, &format!("{A}/signout"), Any, "Sign out", signout)
        .add(Method::POST, &format!("{A}/add"), Admin, "Create an account", add_user)
        .add(
            Method::GET,
            &format!("{A}/admin/config"),
            Admin,
            "Sign-up settings",
            get_admin_config,
        )
        .add(
            Method::POST,
            &format!("{A}/admin/config"),
            Admin,
            "Change the sign-up settings",
            update_admin_config,
        )
        .add(
            Method::POST,
            &format!("{A}/api_key"),
            Any,
            "Create an API key",
            create_key,
        )
        .add(
            Method::GET,
            &format!("{A}/api_key"),
            Any,
            "The caller's API key",
            get_key,
        )
        .add(
            Method::DELETE,
            &format!("{A}/api_key"),
            Any,
            "Revoke the caller's API keys",
            revoke_all_keys,
        )
        .add(
            Method::GET,
            &format!("{A}/api_keys"),
            Any,
            "The caller's API keys",
            list_keys,
        )
        .add(
            Method::DELETE,
            &format!("{A}/api_keys/{{id}}"),
            Any,
            "Revoke one API key",
            revoke_key,
        )
        .add(Method::GET, A, Any, "The signed-in user", me)
        .add(Method::GET, &format!("{A}/"), Any, "The signed-in user", me);
    const U: &str = "/api/v1/users";
    r.add(Method::GET, U, Admin, "Every user", list_users)
        .add(Method::GET, &format!("{U}/"), Admin, "Every user", list_users)
        .add(
            Method::POST,
            &format!("{U}/update/role"),
            Admin,
            "Change a user's role",
            update_role,
        )
        .add(Method::GET, &format!("{U}/{{id}}"), Admin, "One user", get_user)
        .add(
            Method::POST,
            &format!("{U}/{{id}}/update"),
            Admin,
            "Change a user",
            update_user,
        )
        .add(
            Method::DELETE,
            &format!("{U}/{{id}}"),
            Admin,
            "Delete a user",
            delete_user,
        )
        .add(
            Method::DELETE,
            &format!("{U}/{{id}}/delete"),
            Admin,
            "Delete a user",
            delete_user,
        );
    const G: &str = "/api/v1/groups";
    r.add(Method::GET, G, Admin, "Every group", list_groups)
        .add(Method::GET, &format!("{G}/"), Admin, "Every group", list_groups)
        .add(
            Method::POST,
            &format!("{G}/create"),
            Admin,
            "Create a group",
            create_group,
        )
        .add(
            Method::POST,
            &format!("{G}/id/{{id}}/update"),
            Admin,
            "Change a group",
            update_group,
        )
        .add(
            Method::DELETE,
            &format!("{G}/id/{{id}}/delete"),
            Admin,
            "Delete a group",
            delete_group,
        );
    const M: &str = "/api/v1/models";
    r.add(Method::GET, M, Admin, "Every model record", list_models)
        .add(Method::GET, &format!("{M}/"), Admin, "Every model record", list_models)
        .add(
            Method::POST,
            &format!("{M}/create"),
            Admin,
            "Create a model record",
            create_model,
        )
        .add(Method::GET, &format!("{M}/model"), Admin, "One model record", get_model)
        .add(
            Method::POST,
            &format!("{M}/model/update"),
            Admin,
            "Change a model record",
            update_model,
        )
        .add(
            Method::DELETE,
            &format!("{M}/model/delete"),
            Admin,
            "Delete a model record",
            delete_model,
        );
}

/// Runs `f` on the store off the executor, then reloads this replica's directory.
pub(crate) async fn write<T: Send + 'static>(
    shared: &web::Data<Shared>,
    f: impl FnOnce(&Store) -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let shared = shared.clone().into_inner();
    web::block(move || {
        let store = store_of(&shared)?;
        let out = f(&store)?;
        shared.auth.reload(&store)?;
        Ok(out)
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?
}

/// Runs a read on the store off the executor.
pub(crate) async fn read<T: Send + 'static>(
    shared: &web::Data<Shared>,
    f: impl FnOnce(&Store) -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    let shared = shared.clone().into_inner();
    web::block(move || f(&store_of(&shared)?))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
}

fn store_of(shared: &Shared) -> Result<Store, AppError> {
    shared
        .store()
        .ok_or_else(|| AppError::StoreUnavailable("no database is configured".to_owned()))
}

/// The largest body an account or admin form may have; more is refused with a JSON 413.
const FORM_LIMIT: usize = 1024 * 1024;

/// Parses a JSON body into `T`, with a 400 naming what is wrong.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::BadRequest("missing request body".to_owned()));
    }
    serde_json::from_slice(bytes).map_err(|e| AppError::BadRequest(format!("invalid request body: {e}")))
}

fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role.as_str(),
        "profile_image_url": user.profile_image_url,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "last_active_at": user.last_active_at,
    })
}

/// A fresh session token for `user`, and the `token` cookie that carries it.
pub(crate) fn session_cookie(shared: &Shared, user: &User) -> Result<(corral_auth::Token, Cookie<'static>), AppError> {
    let settings = shared.settings();
    let expires_in = corral_auth::parse_expires_in(&settings.auth.jwt_expires_in)
        .map_err(|e| AppError::Internal(format!("JWT_EXPIRES_IN: {e}")))?;
    let token = corral_auth::issue_token(&shared.auth.secret(), &user.id, chrono::Utc::now(), expires_in)
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let mut cookie = Cookie::build(corral_auth::TOKEN_COOKIE, token.token.clone())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .finish();
    if let Some(at) = token
        .expires_at
        .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok())
    {
        cookie.set_expires(at);
    }
    Ok((token, cookie))
}

/// A signed-in answer: the user, a fresh token in the body and in the `token` cookie.
fn session(shared: &Shared, user: &User) -> Result<HttpResponse, AppError> {
    let (token, cookie) = session_cookie(shared, user)?;
    Ok(HttpResponse::Ok().cookie(cookie).json(json!({
        "token": token.token,
        "token_type": "Bearer",
        "expires_at": token.expires_at,
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role.as_str(),
        "profile_image_url": user.profile_image_url,
        "permissions": {},
    })))
}

#[derive(Deserialize)]
struct SignupForm {
    email: String,
    password: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    profile_image_url: String,
}

/// Checks and normalises a new account's fields (shared with `corral user create`).
fn new_user(form: SignupForm, role: Role, first_user_role: Option<Role>) -> Result<(NewUser, String), AppError> {
    let user = corral_store::check_account(
        &form.email,
        &form.name,
        &form.password,
        role,
        first_user_role,
        form.profile_image_url,
    )
    .map_err(account_error)?;
    Ok((user, form.password))
}

/// Hashes `password` on the bounded password threads (slow and memory-hard by design); a
/// hashing failure is the gateway's own (500).
async fn hash(shared: &Shared, password: String) -> Result<corral_auth::PasswordHash, AppError> {
    Ok(shared
        .guard
        .passwords
        .run(move |scratch| corral_auth::hash_password_in(scratch, &password))
        .await??)
}

/// Creates the user, whose `password_hash` is set.
fn create(store: &Store, user: NewUser) -> Result<User, AppError> {
    insert(store, user, None)
}

/// [`create`], or with `signup` (sign-up's default openness) a sign-up, refused with the
/// reference's 403 when sign-up is closed ([`Store::sign_up`] decides).
fn insert(store: &Store, user: NewUser, signup: Option<bool>) -> Result<User, AppError> {
    store
        .insert_account(user, "", signup, unix_now())
        .map_err(account_error)
}

/// The answer to an account that was not created.
fn account_error(err: corral_store::AccountError) -> AppError {
    use corral_store::AccountError;
    match err {
        AccountError::InvalidEmail | AccountError::Password(_) => AppError::BadRequest(err.to_string()),
        AccountError::EmailTaken => AppError::BadRequest(messages::EMAIL_TAKEN.to_owned()),
        AccountError::SignupClosed => AppError::Forbidden(messages::ACCESS_PROHIBITED.to_owned()),
        AccountError::Store(e) => e.into(),
    }
}

fn default_role(shared: &Shared) -> Role {
    shared
        .settings()
        .auth
        .default_user_role
        .parse()
        .unwrap_or(Role::Pending)
}

use corral_store::{ROLE_SETTING as ROLE_KEY, SIGNUP_SETTING as SIGNUP_KEY};

/// Whether sign-up is open and the role it gives: what an admin saved, else the settings
/// (which, as the reference's persistent configuration, only give the starting values).
fn signup_policy(store: &Store, settings: &corral_config::Settings) -> Result<(bool, Role), AppError> {
    let open = match store.get_setting(SIGNUP_KEY)? {
        Some(Value::Bool(open)) => open,
        _ => settings.auth.enable_signup,
    };
    let role = match store.get_setting(ROLE_KEY)? {
        Some(Value::String(role)) => role.parse().ok(),
        _ => None,
    };
    let role = role.unwrap_or_else(|| settings.auth.default_user_role.parse().unwrap_or(Role::Pending));
    // Without authentication there is one account, and no sign-up after it.
    Ok((open && settings.auth.webui_auth, role))
}

/// `POST /api/v1/auths/signup`: the first account becomes admin and, as in the reference,
/// closes sign-up behind it; later ones get the default role while an admin keeps sign-up
/// open (`/api/v1/auths/admin/config`). Limited per address like sign-in.
async fn signup(req: HttpRequest, shared: web::Data<Shared>, payload: web::Payload) -> Result<HttpResponse, AppError> {
    let bytes = super::read_body_up_to(payload, FORM_LIMIT).await?;
    let form: SignupForm = body(&bytes)?;
    // Sign-ups count per address with sign-ins, and per email apart from them.
    limit(&req, &shared, &format!("signup:{}", form.email))?;
    let settings = shared.settings();
    let (mut user, password) = new_user(form, Role::Pending, Some(Role::Admin))?;
    user.password_hash = Some(hash(&shared, password).await?);
    let created = write(&shared, move |store| {
        let (open, role) = signup_policy(store, &settings)?;
        // Refused before the password is hashed when it is plainly closed; the store decides
        // for sure, under the lock that decides the first account.
        if !open && store.count_users()? > 0 {
            return Err(AppError::Forbidden(messages::ACCESS_PROHIBITED.to_owned()));
        }
        user.role = role;
        // The settings' switch (closed without authentication) is the default of the saved one.
        let by_default = settings.auth.enable_signup && settings.auth.webui_auth;
        insert(store, user, Some(by_default))
    })
    .await?;
    tracing::info!(user = %created.id, role = created.role.as_str(), "account created by sign-up");
    session(&shared, &created)
}

/// Counts an attempt against the per-account and per-address limits; 429 past them.
fn limit(req: &HttpRequest, shared: &Shared, email: &str) -> Result<(), AppError> {
    let address = crate::guard::client_ip(req).map(|ip| ip.to_string());
    let limited = shared
        .auth
        .limiter
        .lock()
        .map_err(|_| AppError::Internal("sign-in limiter poisoned".to_owned()))?
        .check_and_record(email, address.as_deref(), chrono::Utc::now());
    limited.map_err(|wait| AppError::RateLimited {
        retry_after: wait.as_secs_ceil().max(1),
        message: messages::RATE_LIMIT_EXCEEDED.to_owned(),
    })
}

/// The sign-up settings in Open WebUI's admin shape.
fn admin_config_json(settings: &corral_config::Settings, open: bool, role: Role) -> Value {
    json!({
        "ENABLE_SIGNUP": open,
        "DEFAULT_USER_ROLE": role.as_str(),
        "ENABLE_API_KEY": settings.auth.enable_api_keys,
        "JWT_EXPIRES_IN": settings.auth.jwt_expires_in,
    })
}

/// `GET /api/v1/auths/admin/config` (admin).
async fn get_admin_config(shared: web::Data<Shared>, _admin: Admin) -> Result<HttpResponse, AppError> {
    let (open, role) = signup_state(&shared).await?;
    Ok(HttpResponse::Ok().json(admin_config_json(&shared.settings(), open, role)))
}

#[derive(Deserialize)]
struct AdminConfigForm {
    #[serde(rename = "ENABLE_SIGNUP", default)]
    enable_signup: Option<bool>,
    #[serde(rename = "DEFAULT_USER_ROLE", default)]
    default_user_role: Option<String>,
}

/// Whether sign-up is open, and the role it gives.
pub(crate) async fn signup_state(shared: &web::Data<Shared>) -> Result<(bool, Role), AppError> {
    let settings = shared.settings();
    read(shared, move |store| signup_policy(store, &settings)).await
}

/// `POST /api/v1/auths/admin/config` (admin): opens or closes sign-up and sets the role of
/// new sign-ups, for every replica; other fields are the settings' and are ignored.
async fn update_admin_config(
    shared: web::Data<Shared>,
    _admin: Admin,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let bytes = super::read_body_up_to(payload, FORM_LIMIT).await?;
    let form: AdminConfigForm = body(&bytes)?;
    let role = form.default_user_role.as_deref().map(parse_role).transpose()?;
    let (open, role) = set_signup(&shared, form.enable_signup, role).await?;
    Ok(HttpResponse::Ok().json(admin_config_json(&shared.settings(), open, role)))
}

/// Opens or closes sign-up and sets the role of new sign-ups, for every replica.
pub(crate) async fn set_signup(
    shared: &web::Data<Shared>,
    enable_signup: Option<bool>,
    role: Option<Role>,
) -> Result<(bool, Role), AppError> {
    let settings = shared.settings();
    write(shared, move |store| {
        let now = unix_now();
        if let Some(open) = enable_signup {
            store.put_setting(SIGNUP_KEY, &Value::Bool(open), now)?;
        }
        if let Some(role) = role {
            store.put_setting(ROLE_KEY, &Value::String(role.as_str().to_owned()), now)?;
        }
        signup_policy(store, &settings)
    })
    .await
}

#[derive(Deserialize)]
struct SigninForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// The single-user mode's account (Open WebUI's `WEBUI_AUTH=false`).
const LOCAL_ADMIN: &str = "admin@localhost";

/// `POST /api/v1/auths/signin`, limited per account and per client address.
async fn signin(req: HttpRequest, shared: web::Data<Shared>, payload: web::Payload) -> Result<HttpResponse, AppError> {
    let bytes = super::read_body_up_to(payload, FORM_LIMIT).await?;
    let mut form: SigninForm = body(&bytes)?;
    if !shared.settings().auth.webui_auth {
        return signin_single_user(shared).await;
    }
    let password = std::mem::take(&mut form.password);
    let user = sign_in(&req, &shared, &form.email, password).await?;
    session(&shared, &user)
}

/// Checks an email and password, counted against the sign-in limits: the account, or the
/// reference's refusal.
pub(crate) async fn sign_in(
    req: &HttpRequest,
    shared: &Shared,
    email: &str,
    password: String,
) -> Result<User, AppError> {
    limit(req, shared, email)?;
    let email = corral_auth::normalize_email(email);
    // The lookup and the verification both run on the bounded password threads: a burst of
    // sign-ins then holds a few threads, not one blocking thread (and its memory) each.
    let store = store_of(shared)?;
    shared
        .guard
        .passwords
        .run(move |scratch| {
            let found = store.get_user_with_password(&email)?;
            // The same work whether or not the account exists, so timing tells nothing.
            let ok = match &found {
                Some((_, Some(hash))) => corral_auth::verify_password_in(scratch, &password, hash),
                _ => corral_auth::verify_dummy_password_in(scratch, &password),
            };
            match found {
                Some((user, _)) if ok => Ok(user),
                _ => Err(AppError::BadRequest(messages::INVALID_CRED.to_owned())),
            }
        })
        .await?
}

async fn signin_single_user(shared: web::Data<Shared>) -> Result<HttpResponse, AppError> {
    let password_hash = Some(hash(&shared, "admin".to_owned()).await?);
    let user = write(&shared, move |store| {
        if let Some(user) = store.get_user_by_email(LOCAL_ADMIN)? {
            return Ok(user);
        }
        if store.count_users()? > 0 {
            return Err(AppError::BadRequest(messages::EXISTING_USERS.to_owned()));
        }
        let user = NewUser {
            email: LOCAL_ADMIN.to_owned(),
            name: "User".to_owned(),
            role: Role::Admin,
            first_user_role: Some(Role::Admin),
            profile_image_url: String::new(),
            password_hash,
        };
        create(store, user)
    })
    .await?;
    session(&shared, &user)
}

/// `GET|POST /api/v1/auths/signout`: the session token is refused from now on, on every
/// replica, for the rest of its lifetime.
async fn signout(shared: web::Data<Shared>, caller: Anyone) -> Result<HttpResponse, AppError> {
    sign_out(&shared, &caller.0).await?;
    Ok(HttpResponse::Ok()
        .cookie(removed_cookie())
        .json(json!({ "status": true })))
}

/// Revokes the caller's session token, on every replica, for the rest of its lifetime.
pub(crate) async fn sign_out(shared: &web::Data<Shared>, caller: &Caller) -> Result<(), AppError> {
    if let Some((jti, exp)) = caller.session.clone() {
        write(shared, move |store| {
            Ok(store.revoke_token(&jti, exp.unwrap_or(i64::MAX))?)
        })
        .await?;
    }
    Ok(())
}

/// A cookie that removes the session cookie.
pub(crate) fn removed_cookie() -> Cookie<'static> {
    let mut gone = Cookie::build(corral_auth::TOKEN_COOKIE, "").path("/").finish();
    gone.make_removal();
    gone
}

/// `GET /api/v1/auths/`: the signed-in user.
async fn me(req: HttpRequest, caller: Anyone) -> Result<HttpResponse, AppError> {
    let Some(user) = caller.0.user.clone() else {
        return Err(AppError::Unauthorized(messages::NOT_AUTHENTICATED.to_owned()));
    };
    // The token that was verified, chosen from the header and the cookie as authentication
    // chose it; a key holder gets none.
    let token = match crate::auth::presented(&req)? {
        corral_auth::Presented::Jwt { token, .. } if caller.0.session.is_some() => Some(token),
        _ => None,
    };
    Ok(HttpResponse::Ok().json(json!({
        "token": token,
        "token_type": "Bearer",
        "expires_at": caller.0.session.as_ref().and_then(|s| s.1),
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role.as_str(),
        "profile_image_url": user.profile_image_url,
        "permissions": {},
    })))
}

#[derive(Deserialize)]
pub(crate) struct AddForm {
    pub(crate) email: String,
    pub(crate) password: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) role: Option<String>,
    #[serde(default)]
    pub(crate) profile_image_url: String,
}

pub(crate) fn parse_role(role: &str) -> Result<Role, AppError> {
    role.parse()
        .map_err(|_| AppError::BadRequest(format!("role must be admin, user or pending, got {role:?}")))
}

/// `POST /api/v1/auths/add` (admin): creates an account.
async fn add_user(shared: web::Data<Shared>, _admin: Admin, payload: web::Payload) -> Result<HttpResponse, AppError> {
    let bytes = super::read_body_up_to(payload, FORM_LIMIT).await?;
    let form: AddForm = body(&bytes)?;
    let created = add_account(&shared, form).await?;
    Ok(HttpResponse::Ok().json(user_json(&created)))
}

/// Creates an account as an admin does (`POST /api/v1/auths/add`).
pub(crate) async fn add_account(shared: &web::Data<Shared>, form: AddForm) -> Result<User, AppError> {
    let role = match form.role.as_deref() {
        Some(r) => parse_role(r)?,
        None => default_role(shared),
    };
    let signup = SignupForm {
        email: form.email,
        password: form.password,
        name: form.name,
        profile_image_url: form.profile_image_url,
    };
    let (mut user, password) = new_user(signup, role, None)?;
    user.password_hash = Some(hash(shared, password).await?);
    write(shared, move |store| create(store, user)).await
}

fn caller_user(caller: &Caller) -> Result<std::sync::Arc<crate::auth::Member>, AppError> {
    caller
        .user
        .clone()
        .ok_or_else(|| AppError::Forbidden("this gateway authenticates nobody: there are no accounts".to_owned()))
}

#[derive(Deserialize, Default)]
pub(crate) struct KeyForm {
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Seconds until the key stops working.
    #[serde(default)]
    pub(crate) expires_in: Option<i64>,
}

fn key_json(key: &corral_store::ApiKey) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "expires_at": key.expires_at,
    })
}

/// `POST /api/v1/auths/api_key`: a new `sk-` key, shown this once.
async fn create_key(
    shared: web::Data<Shared>,
    caller: Anyone,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let bytes = super::read_body_up_to(payload, FORM_LIMIT).await?;
    let form: KeyForm = if bytes.iter().all(u8::is_ascii_whitespace) {
        KeyForm::default()
    } else {
        body(&bytes)?
    };
    let (key, plain) = new_key(&shared, &caller.0, form).await?;
    let mut answer = key_json(&key);
    answer["api_key"] = Value::String(plain.expose().to_owned());
    Ok(HttpResponse::Ok().json(answer))
}

/// Creates an `sk-` key for the caller: the record, and the key itself, to be shown once.
pub(crate) async fn new_key(
    shared: &web::Data<Shared>,
    caller: &Caller,
    form: KeyForm,
) -> Result<(corral_store::ApiKey, corral_auth::PlainKey), AppError> {
    if !shared.settings().auth.enable_api_keys {
        return Err(AppError::Forbidden(messages::API_KEY_CREATION_NOT_ALLOWED.to_owned()));
    }
    let user = caller_user(caller)?;
    if form.expires_in.is_some_and(|s| s <= 0) {
        return Err(AppError::BadRequest(
            "expires_in must be a positive number of seconds".to_owned(),
        ));
    }
    let (plain, hash, prefix) = corral_auth::generate_api_key();
    let now = unix_now();
    let new = NewApiKey {
        user_id: user.id.clone(),
        name: form.name.unwrap_or_else(|| "default".to_owned()),
        prefix,
        hash,
        expires_at: form.expires_in.map(|s| now.saturating_add(s)),
    };
    let key = write(shared, move |store| Ok(store.create_api_key(&new, now)?)).await?;
    Ok((key, plain))
}

async fn own_keys(shared: &web::Data<Shared>, user_id: String) -> Result<Vec<corral_store::ApiKey>, AppError> {
    let now = unix_now();
    let keys = read(shared, move |store| Ok(store.list_api_keys(&user_id)?)).await?;
    Ok(keys.into_iter().filter(|k| k.is_active(now)).collect())
}

/// `GET /api/v1/auths/api_key`: the caller's working keys (never the keys themselves).
async fn get_key(shared: web::Data<Shared>, caller: Anyone) -> Result<HttpResponse, AppError> {
    let user = caller_user(&caller.0)?;
    let keys = own_keys(&shared, user.id.clone()).await?;
    let Some(newest) = keys.iter().max_by_key(|k| k.created_at) else {
        return Err(AppError::NotFound(messages::API_KEY_NOT_FOUND.to_owned()));
    };
    Ok(HttpResponse::Ok().json(json!({
        "api_key": format!("{}…", newest.prefix),
        "keys": keys.iter().map(key_json).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/auths/api_keys`: the caller's keys, revoked and expired ones included.
async fn list_keys(shared: web::Data<Shared>, caller: Anyone) -> Result<HttpResponse, AppError> {
    let keys = all_keys(&shared, &caller.0).await?;
    let now = unix_now();
    let shaped: Vec<Value> = keys
        .iter()
        .map(|k| {
            let mut v = key_json(k);
            v["revoked_at"] = json!(k.revoked_at);
            v["active"] = json!(k.is_active(now));
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(shaped))
}

/// The caller's keys, revoked and expired ones included.
pub(crate) async fn all_keys(
    shared: &web::Data<Shared>,
    caller: &Caller,
) -> Result<Vec<corral_store::ApiKey>, AppError> {
    let user_id = caller_user(caller)?.id.clone();
    read(shared, move |store| Ok(store.list_api_keys(&user_id)?)).await
}

/// `DELETE /api/v1/auths/api_key`: revokes every key of the caller; `true` if there was one.
async fn revoke_all_keys(shared: web::Data<Shared>, caller: Anyone) -> Result<HttpResponse, AppError> {
    let user = caller_user(&caller.0)?;
    let keys = own_keys(&shared, user.id.clone()).await?;
    if keys.is_empty() {
        return Ok(HttpResponse::Ok().json(false));
    }
    let ids: Vec<String> = keys.into_iter().map(|k| k.id).collect();
    write(&shared, move |store| {
        let now = unix_now();
        for id in &ids {
            store.revoke_api_key(id, now)?;
        }
        Ok(())
    })
    .await?;
    Ok(HttpResponse::Ok().json(true))
}

/// `DELETE /api/v1/auths/api_keys/{id}`: revokes one key of the caller (an admin: anyone's).
async fn revoke_key(
    shared: web::Data<Shared>,
    caller: Anyone,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    revoke_one(&shared, &caller.0, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(true))
}

/// Revokes key `id` of the caller (an admin: anyone's).
pub(crate) async fn revoke_one(shared: &web::Data<Shared>, caller: &Caller, id: String) -> Result<(), AppError> {
    let user = caller_user(caller)?;
    let admin = user.role == Role::Admin;
    write(shared, move |store| {
        match store.get_api_key(&id)? {
            Some(key) if key.user_id == user.id || admin => {}
            _ => return Err(AppError::NotFound(format!("no API key {id}"))),
        }
        Ok(store.revoke_api_key(&id, unix_now())?)
    })
    .await
}

/// `GET /api/v1/users/` (admin).
async fn list_users(shared: web::Data<Shared>, _admin: Admin) -> Result<HttpResponse, AppError> {
    let users = read(&shared, |store| Ok(store.list_users()?)).await?;
    Ok(HttpResponse::Ok().json(users.iter().map(user_json).collect::<Vec<_>>()))
}

/// `GET /api/v1/users/{id}` (admin).
async fn get_user(shared: web::Data<Shared>, _admin: Admin, path: web::Path<String>) -> Result<HttpResponse, AppError> {
    let id = path.into_inner();
    let user = read(&shared, move |store| {
        store.get_user(&id)?.ok_or_else(|| user_not_found(&id))
    })
    .await?;
    Ok(HttpResponse::Ok().json(user_json(&user)))
}

fn user_not_found(id: &str) -> AppError {
    AppError::NotFound(format!("no user {id}"))
}

#[derive(Deserialize)]
struct RoleForm {
    id: String,
    role: String,
}

/// `POST /api/v1/users/update/role` (admin): `{"id", "role"}`.
async fn update_role(shared: web::Data<Shared>, admin: Admin, payload: web::Payload) -> Result<HttpResponse, AppError> {
    let bytes = super::read_body_up_to(payload, FORM_LIMIT).await?;
    let form: RoleForm = body(&bytes)?;
    let changes = UserChanges {
        role: Some(parse_role(&form.role)?),
        ..UserChanges::default()
    };
    change_user(shared, admin, form.id, changes, None).await
}

#[derive(Deserialize)]
struct UserForm {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    profile_image_url: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `POST /api/v1/users/{id}/update` (admin): any of email, name, role, avatar, password.
async fn update_user(
    shared: web::Data<Shared>,
    admin: Admin,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let bytes = super::read_body_up_to(payload, FORM_LIMIT).await?;
    let form: UserForm = body(&bytes)?;
    let email = form.email.map(|e| corral_auth::normalize_email(&e));
    if email.as_deref().is_some_and(|e| !corral_auth::is_valid_email(e)) {
        return Err(AppError::BadRequest("Invalid email format".to_owned()));
    }
    let password = form.password.filter(|p| !p.is_empty());
    if let Some(p) = &password {
        corral_auth::check_password_policy(p)?;
    }
    let changes = UserChanges {
        email,
        name: form.name.filter(|n| !n.trim().is_empty()),
        role: form.role.as_deref().map(parse_role).transpose()?,
        profile_image_url: form.profile_image_url,
    };
    change_user(shared, admin, path.into_inner(), changes, password).await
}

async fn change_user(
    shared: web::Data<Shared>,
    admin: Admin,
    id: String,
    changes: UserChanges,
    password: Option<String>,
) -> Result<HttpResponse, AppError> {
    let user = change_account(&shared, &admin, id, changes, password).await?;
    Ok(HttpResponse::Ok().json(user_json(&user)))
}

/// Changes account `id` as `admin`, protecting the first account and the admin's own role.
pub(crate) async fn change_account(
    shared: &web::Data<Shared>,
    admin: &Admin,
    id: String,
    changes: UserChanges,
    password: Option<String>,
) -> Result<User, AppError> {
    let me = admin.0.user.as_ref().map(|u| u.id.clone());
    if me.as_deref() == Some(id.as_str()) && changes.role.is_some_and(|r| r != Role::Admin) {
        return Err(AppError::Forbidden(
            "admins cannot take their own admin role away".to_owned(),
        ));
    }
    let password_hash = match password {
        Some(password) => Some(hash(shared, password).await?),
        None => None,
    };
    write(shared, move |store| {
        if store.get_user(&id)?.is_none() {
            return Err(user_not_found(&id));
        }
        // The first account is changed by no one but itself (its role by no one), so another
        // admin can neither demote it nor take it over through its email or password.
        if is_first_user(store, &id)?
            && (me.as_deref() != Some(id.as_str()) || changes.role.is_some_and(|r| r != Role::Admin))
        {
            return Err(AppError::Forbidden(messages::ACTION_PROHIBITED.to_owned()));
        }
        if let Some(email) = &changes.email {
            if store.get_user_by_email(email)?.is_some_and(|u| u.id != id) {
                return Err(AppError::BadRequest(messages::EMAIL_TAKEN.to_owned()));
            }
        }
        let now = unix_now();
        if let Some(hash) = &password_hash {
            store.set_password_hash(&id, hash, now)?;
        }
        Ok(store.update_user(&id, &changes, now)?)
    })
    .await
}

/// `DELETE /api/v1/users/{id}` (admin): the user's keys and sessions stop working at once.
async fn delete_user(
    shared: web::Data<Shared>,
    admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    delete_account(&shared, &admin, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(true))
}

/// Deletes account `id` as `admin`: never the admin's own, never the first account.
pub(crate) async fn delete_account(shared: &web::Data<Shared>, admin: &Admin, id: String) -> Result<(), AppError> {
    if admin.0.user.as_ref().is_some_and(|u| u.id == id) {
        return Err(AppError::Forbidden("admins cannot delete their own account".to_owned()));
    }
    write(shared, move |store| {
        if is_first_user(store, &id)? {
            return Err(AppError::Forbidden(messages::ACTION_PROHIBITED.to_owned()));
        }
        store.delete_user(&id).map_err(|e| match e {
            corral_store::StoreError::NotFound => user_not_found(&id),
            other => other.into(),
        })
    })
    .await
}

/// Whether `id` is the first account, the instance's own admin, which no other admin may
/// demote or delete (as in the reference).
pub(crate) fn is_first_user(store: &Store, id: &str) -> Result<bool, AppError> {
    Ok(store.first_user_id()?.as_deref() == Some(id))
}

#[derive(Deserialize)]
pub(crate) struct GroupForm {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) user_ids: Option<Vec<String>>,
}

fn group_json(group: &corral_store::Group, members: &[String]) -> Value {
    json!({
        "id": group.id,
        "name": group.name,
        "description": group.description,
        "user_ids": members,
        "created_at": group.created_at,
        "updated_at": group.updated_at,
    })
}

/// `GET /api/v1/groups/` (admin).
async fn list_groups(shared: web::Data<Shared>, _admin: Admin) -> Result<HttpResponse, AppError> {
    let groups = read(&shared, |store| {
        let mut out = Vec::new();
        for g in store.list_groups()? {
            let members = store.group_members(&g.id)?;
            out.push(group_json(&g, &members));
        }
        Ok(out)
    })
    .await?;
    Ok(HttpResponse::Ok().json(groups))
}

fn set_members(store: &Store, group_id: &str, user_ids: &[String]) -> Result<Vec<String>, AppError> {
    for user in user_ids {
        if store.get_user(user)?.is_none() {
            return Err(AppError::BadRequest(format!("user_ids: no user {user}")));
        }
    }
    for current in store.group_members(group_id)? {
        if !user_ids.contains(&current) {
            store.remove_group_member(group_id, &current)?;
        }
    }
    for user in user_ids {
        store.add_group_member(group_id, user)?;
    }
    Ok(store.group_members(group_id)?)
}

/// `POST /api/v1/groups/create` (admin): `{"name", "description", "user_ids"}`.
async fn create_group(
    shared: web::Data<Shared>,
    _admin: Admin,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let bytes = super::read_body_up_to(payload, FORM_LIMIT).await?;
    let form: GroupForm = body(&bytes)?;
    Ok(HttpResponse::Ok().json(new_group(&shared, form).await?))
}

/// Creates a group with its members.
pub(crate) async fn new_group(shared: &web::Data<Shared>, form: GroupForm) -> Result<Value, AppError> {
    if form.name.trim().is_empty() {
        return Err(AppError::BadRequest("name must not be empty".to_owned()));
    }
    write(shared, move |store| {
        let group = store.create_group(form.name.trim(), &form.description, unix_now())?;
        let members = set_members(store, &group.id, form.user_ids.as_deref().unwrap_or_default())?;
        Ok(group_json(&group, &members))
    })
    .await
}

/// `POST /api/v1/groups/id/{id}/update` (admin).
async fn update_group(
    shared: web::Data<Shared>,
    _admin: Admin,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let bytes = super::read_body_up_to(payload, FORM_LIMIT).await?;
    let form: GroupForm = body(&bytes)?;
    Ok(HttpResponse::Ok().json(change_group(&shared, path.into_inner(), form).await?))
}

/// Changes group `id`: name, description and, when given, its members.
pub(crate) async fn change_group(shared: &web::Data<Shared>, id: String, form: GroupForm) -> Result<Value, AppError> {
    write(shared, move |store| {
        if store.get_group(&id)?.is_none() {
            return Err(AppError::NotFound(format!("no group {id}")));
        }
        let group = store.update_group(&id, form.name.trim(), &form.description, unix_now())?;
        let members = match &form.user_ids {
            Some(ids) => set_members(store, &id, ids)?,
            None => store.group_members(&id)?,
        };
        Ok(group_json(&group, &members))
    })
    .await
}

/// `DELETE /api/v1/groups/id/{id}/delete` (admin).
async fn delete_group(
    shared: web::Data<Shared>,
    _admin: Admin,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    remove_group(&shared, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(true))
}

/// Deletes group `id`.
pub(crate) async fn remove_group(shared: &web::Data<Shared>, id: String) -> Result<(), AppError> {
    write(shared, move |store| {
        store.delete_group(&id).map_err(|e| match e {
            corral_store::StoreError::NotFound => AppError::NotFound(format!("no group {id}")),
            other => other.into(),
        })
    })
    .await
}

/// A model record as sent to create or update one. On update a field left out keeps its
/// stored value (an explicit `"access_control": null` makes the model public); on create it
/// takes its default.
#[derive(Deserialize, Default)]
pub(crate) struct ModelForm {
    #[serde(default)]
    pub(crate) id: String,
    #[serde(default, deserialize_with = "present")]
    pub(crate) base_model_id: Option<Value>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) params: Option<Value>,
    #[serde(default)]
    pub(crate) meta: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    pub(crate) access_control: Option<Value>,
    #[serde(default)]
    pub(crate) is_active: Option<bool>,
}

/// A field that was sent, `null` included (`None` is a field left out).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl ModelForm {
    fn into_new(self, owner: Option<String>) -> Result<NewModel, AppError> {
        if self.id.trim().is_empty() {
            return Err(AppError::BadRequest("id must not be empty".to_owned()));
        }
        let empty = || json!({});
        let fresh = corral_store::Model {
            id: self.id.clone(),
            base_model_id: None,
            name: self.id.clone(),
            user_id: owner,
            params: empty(),
            meta: empty(),
            access_control: None,
            is_active: true,
            created_at: 0,
            updated_at: 0,
        };
        self.merge(fresh)
    }

    /// The record `current` with the fields this form sets.
    fn merge(self, current: corral_store::Model) -> Result<NewModel, AppError> {
        let params = self.params.unwrap_or(current.params);
        if !params.is_object() {
            return Err(AppError::BadRequest("params must be an object".to_owned()));
        }
        let base_model_id = match self.base_model_id {
            None => current.base_model_id,
            Some(Value::Null) => None,
            Some(Value::String(b)) => Some(b).filter(|b| !b.trim().is_empty()),
            Some(_) => {
                return Err(AppError::BadRequest(
                    "base_model_id must be a string or null".to_owned(),
                ))
            }
        };
        let access_control = match self.access_control {
            None => current.access_control,
            Some(Value::Null) => None,
            Some(ac) => {
                corral_auth::AccessControl::from_json(&ac)
                    .map_err(|e| AppError::BadRequest(format!("access_control: {e}")))?;
                Some(ac)
            }
        };
        Ok(NewModel {
            id: current.id,
            base_model_id,
            name: self.name.unwrap_or(current.name),
            user_id: current.user_id,
            params,
            meta: self.meta.unwrap_or(current.meta),
            access_control,
            is_active: self.is_active.unwrap_or(current.is_active),
        })
    }
}

fn model_json(m: &corral_store::Model) -> Value {
    json!({
        "id": m.id,
        "base_model_id": m.base_model_id,
        "name": m.name,
        "user_id": m.user_id,
        "params": m.params,
        "meta": m.meta,
        "access_control": m.access_control,
        "is_active": m.is_active,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
    })
}

#[derive(Deserialize)]
struct ModelId {
    id: String,
}

/// `GET /api/v1/models/` (admin): every model record.
async fn list_models(shared: web::Data<Shared>, _admin: Admin) -> Result<HttpResponse, AppError> {
    let models = read(&shared, |store| Ok(store.list_models()?)).await?;
    Ok(HttpResponse::Ok().json(models.iter().map(model_json).collect::<Vec<_>>()))
}

/// `GET /api/v1/models/model?id=` (admin).
async fn get_model(
    shared: web::Data<Shared>,
    _admin: Admin,
    query: web::Query<ModelId>,
) -> Result<HttpResponse, AppError> {
    let id = query.into_inner().id;
    let model = read(&shared, move |store| {
        store
            .get_model(&id)?
            .ok_or_else(|| AppError::NotFound(format!("no model record {id}")))
    })
    .await?;
    Ok(HttpResponse::Ok().json(model_json(&model)))
}

/// `POST /api/v1/models/create` (admin).
async fn create_model(
    shared: web::Data<Shared>,
    admin: Admin,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let bytes = super::read_body_up_to(payload, FORM_LIMIT).await?;
    let form: ModelForm = body(&bytes)?;
    let model = new_model(&shared, &admin, form).await?;
    Ok(HttpResponse::Ok().json(model_json(&model)))
}

/// Creates a model record owned by `admin`.
pub(crate) async fn new_model(
    shared: &web::Data<Shared>,
    admin: &Admin,
    form: ModelForm,
) -> Result<corral_store::Model, AppError> {
    let new = form.into_new(admin.0.user.as_ref().map(|u| u.id.clone()))?;
    write(shared, move |store| {
        if store.get_model(&new.id)?.is_some() {
            return Err(AppError::Conflict(format!("a model record {} already exists", new.id)));
        }
        Ok(store.create_model(&new, unix_now())?)
    })
    .await
}

/// `POST /api/v1/models/model/update?id=` (admin): replaces the record.
async fn update_model(
    shared: web::Data<Shared>,
    _admin: Admin,
    query: web::Query<ModelId>,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let bytes = super::read_body_up_to(payload, FORM_LIMIT).await?;
    let form: ModelForm = body(&bytes)?;
    let model = change_model(&shared, query.into_inner().id, form).await?;
    Ok(HttpResponse::Ok().json(model_json(&model)))
}

/// Changes model record `id` with the fields `form` sets.
pub(crate) async fn change_model(
    shared: &web::Data<Shared>,
    id: String,
    form: ModelForm,
) -> Result<corral_store::Model, AppError> {
    if !form.id.is_empty() && form.id != id {
        return Err(AppError::BadRequest(format!(
            "the body's id {:?} is not the record's id {id:?}; a record's id cannot change",
            form.id
        )));
    }
    write(shared, move |store| {
        let Some(current) = store.get_model(&id)? else {
            return Err(AppError::NotFound(format!("no model record {id}")));
        };
        let new = form.merge(current)?;
        Ok(store.update_model(&new, unix_now())?)
    })
    .await
}

/// `DELETE /api/v1/models/model/delete?id=` (admin).
async fn delete_model(
    shared: web::Data<Shared>,
    _admin: Admin,
    query: web::Query<ModelId>,
) -> Result<HttpResponse, AppError> {
    remove_model(&shared, query.into_inner().id).await?;
    Ok(HttpResponse::Ok().json(true))
}

/// Deletes model record `id`.
pub(crate) async fn remove_model(shared: &web::Data<Shared>, id: String) -> Result<(), AppError> {
    write(shared, move |store| {
        store.delete_model(&id).map_err(|e| match e {
            corral_store::StoreError::NotFound => AppError::NotFound(format!("no model record {id}")),
            other => other.into(),
        })
    })
    .await
}
