//! Who is calling: credentials checked against an in-memory directory of users, keys,
//! revoked tokens and model records, with no database query on the request path.
//!
//! The directory is loaded from the store at start-up, reloaded right after this replica
//! changes it, and reloaded when another replica's change moves the `auth` or `models`
//! revision (the watcher polls it). Key use times are noted in memory and written in batches.
//!
//! A gateway built without a store or with [`crate::Corral::open_access`] authenticates
//! nobody: every caller acts as an admin. That is for hosts that put their own authentication
//! in front of a mounted gateway, and for tests.

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::HttpMessage as _;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use arc_swap::ArcSwap;
use corral_auth::{messages, AccessControl, Presented, Role, SigninLimiter, UserInfo};
use corral_store::Store;
use dashmap::DashMap;
use serde_json::Value;

use crate::error::AppError;
use crate::limits::Limited;
use crate::state::Shared;

/// The store key of the generated JWT secret.
pub const SECRET_SETTING: &str = "auth.jwt_secret";

/// A user as request handling sees it.
#[derive(Debug, Clone)]
pub struct Member {
    /// The user's id.
    pub id: String,
    /// The lower-cased email.
    pub email: String,
    /// The display name.
    pub name: String,
    /// The role.
    pub role: Role,
    /// The avatar URL.
    pub profile_image_url: String,
    /// The ids of the user's groups.
    pub groups: Vec<String>,
    /// The names of the user's groups.
    pub group_names: Vec<String>,
}

impl Member {
    /// The user as the pure auth crate describes one.
    pub fn info(&self) -> UserInfo {
        UserInfo::new(&self.id, &self.name, &self.email, self.role)
    }
}

/// A model record: who may use the model, and what is applied to its requests.
#[derive(Debug, Clone)]
pub struct ModelRule {
    /// The model id (a catalogue id, or a preset's own id).
    pub id: String,
    /// The model a preset runs on, if it is one.
    pub base_model_id: Option<String>,
    /// The owner.
    pub owner: Option<String>,
    /// Who may read it; `None` is public.
    pub access: Option<AccessControl>,
    /// Model parameters applied to requests (`system` taken out).
    pub params: Value,
    /// The system prompt, if any.
    pub system: Option<String>,
    /// Whether the record is active; an inactive record grants nothing to non-admins.
    pub active: bool,
    /// When the record was made, in Unix seconds.
    pub created_at: i64,
}

#[derive(Debug, Clone)]
struct KeyEntry {
    /// Shared with every caller that presents the key (a request copies it several times).
    id: Arc<str>,
    user_id: String,
    expires_at: Option<i64>,
    /// The limited subjects a request with this key counts against (the key, its user, the
    /// user's groups), made once per directory; `None` when none is limited.
    limited: Option<Limited>,
}

/// Everything authentication and access control read, as one immutable snapshot.
#[derive(Debug, Default)]
///
/// Its maps hash with `foldhash`: each request looks several of them up, and their keys are ids
/// and key digests from the database, not text a client chooses.
pub struct Directory {
    users: FastMap<String, Arc<Member>>,
    keys: FastMap<String, KeyEntry>,
    revoked: foldhash::HashSet<String>,
    models: FastMap<String, Arc<ModelRule>>,
    /// The limited subjects of each user signed in without a key (the user and its groups),
    /// for users with any.
    user_limited: FastMap<String, Limited>,
}

type FastMap<K, V> = foldhash::HashMap<K, V>;

/// Where a scope's limits sit in the table of limits by scope and id that [`Directory::load`]
/// reads and [`crate::limits::subjects_of`] looks subjects up in.
pub(crate) fn scope_slot(scope: corral_auth::limits::Scope) -> usize {
    use corral_auth::limits::Scope;
    match scope {
        Scope::Key => 0,
        Scope::User => 1,
        Scope::Group => 2,
    }
}

impl Directory {
    /// Reads the directory from the store. Blocking.
    pub fn load(store: &Store, now: i64) -> Result<Directory, corral_store::StoreError> {
        let names: HashMap<String, String> = store.list_groups()?.into_iter().map(|g| (g.id, g.name)).collect();
        let mut groups: HashMap<String, Vec<String>> = HashMap::new();
        for (group, user) in store.group_memberships()? {
            groups.entry(user).or_default().push(group);
        }
        let users: FastMap<String, Arc<Member>> = store
            .list_users()?
            .into_iter()
            .map(|u| {
                let ids = groups.remove(&u.id).unwrap_or_default();
                let member = Member {
                    group_names: ids.iter().filter_map(|id| names.get(id).cloned()).collect(),
                    groups: ids,
                    id: u.id.clone(),
                    email: u.email,
                    name: u.name,
                    role: u.role,
                    profile_image_url: u.profile_image_url,
                };
                (u.id, Arc::new(member))
            })
            .collect();
        let revoked = store.revoked_tokens(now)?.into_iter().map(|t| t.jti).collect();
        let models = store
            .list_models()?
            .into_iter()
            .map(|m| {
                let mut params = m.params;
                let system = params
                    .as_object_mut()
                    .and_then(|p| p.remove("system"))
                    .and_then(|s| s.as_str().map(str::to_owned))
                    .filter(|s| !s.is_empty());
                let access = match &m.access_control {
                    None => None,
                    Some(value) => match AccessControl::from_json(value) {
                        Ok(access) => access,
                        // An access control that cannot be read grants nobody.
                        Err(_) => Some(AccessControl::private()),
                    },
                };
                let rule = ModelRule {
                    id: m.id.clone(),
                    base_model_id: m.base_model_id,
                    owner: m.user_id,
                    access,
                    params,
                    system,
                    active: m.is_active,
                    created_at: m.created_at,
                };
                (m.id, Arc::new(rule))
            })
            .collect();
        let mut limits: [FastMap<String, Arc<corral_auth::limits::Limits>>; 3] = Default::default();
        for l in store.list_limits()?.into_iter().filter(|l| !l.limits.is_empty()) {
            limits[scope_slot(l.scope)].insert(l.subject_id, Arc::new(l.limits));
        }
        let subjects = |key: Option<&str>, user: Option<&Arc<Member>>| {
            let user = user.map(|u| (u.id.as_str(), &u.groups[..]));
            crate::limits::subjects_of(&limits, key, user)
        };
        let keys = store
            .active_api_keys(now)?
            .into_iter()
            .map(|k| {
                let entry = KeyEntry {
                    limited: subjects(Some(&k.key.id), users.get(&k.key.user_id)),
                    id: Arc::from(k.key.id),
                    user_id: k.key.user_id,
                    expires_at: k.key.expires_at,
                };
                (k.hash.as_str().to_owned(), entry)
            })
            .collect();
        let user_limited = users
            .iter()
            .filter_map(|(id, user)| Some((id.clone(), subjects(None, Some(user))?)))
            .collect();
        Ok(Directory {
            users,
            keys,
            revoked,
            models,
            user_limited,
        })
    }

    /// The user with this id.
    pub fn user(&self, id: &str) -> Option<&Arc<Member>> {
        self.users.get(id)
    }

    /// The record of model `id`.
    pub fn model(&self, id: &str) -> Option<&Arc<ModelRule>> {
        self.models.get(id)
    }

    /// The preset a client names `requested`: a record with a base model, looked up by the
    /// name as sent, then with `:latest` implied.
    pub fn preset(&self, requested: &str) -> Option<&Arc<ModelRule>> {
        self.models
            .get(requested)
            .or_else(|| self.models.get(&corral_registry::with_latest(requested)))
            .filter(|r| r.base_model_id.is_some())
    }

    /// Every preset (records with a base model).
    pub fn presets(&self) -> impl Iterator<Item = &Arc<ModelRule>> {
        self.models.values().filter(|r| r.base_model_id.is_some())
    }

    /// The limited subjects a request of `user` signed in without a key counts against.
    pub fn user_limited(&self, user: &str) -> Option<&Limited> {
        self.user_limited.get(user)
    }

    /// How many users there are.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }
}

/// The authentication state of a gateway.
pub struct Auth {
    enforced: AtomicBool,
    directory: ArcSwap<Directory>,
    secret: ArcSwap<Vec<u8>>,
    revisions: Mutex<(i64, i64)>,
    /// Sign-in attempts per account and per address.
    pub limiter: Mutex<SigninLimiter>,
    /// Key id → when it was last used, waiting to be written.
    key_uses: DashMap<String, i64, foldhash::fast::RandomState>,
    /// The last time keys' use times were written.
    flushed: AtomicI64,
    /// The last time expired revocations were deleted.
    purged: AtomicI64,
    /// Loads of the directory from the store.
    reloads: std::sync::atomic::AtomicU64,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            enforced: AtomicBool::new(false),
            directory: ArcSwap::from_pointee(Directory::default()),
            secret: ArcSwap::from_pointee(Vec::new()),
            revisions: Mutex::new((-1, -1)),
            limiter: Mutex::new(SigninLimiter::default()),
            key_uses: DashMap::default(),
            flushed: AtomicI64::new(0),
            purged: AtomicI64::new(0),
            reloads: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Auth {
    /// Turns authentication on for a gateway with `store`: the signing secret is the
    /// configured one, else the one generated once and kept in the store. Blocking.
    pub fn enable(&self, configured_secret: &str, store: &Store) -> Result<(), AppError> {
        let secret = if configured_secret.is_empty() {
            let proposal = Value::String(corral_auth::generate_jwt_secret());
            let saved = store.setting_or_insert(SECRET_SETTING, &proposal, unix_now())?;
            saved
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| AppError::Internal(format!("stored {SECRET_SETTING} is not a string")))?
        } else {
            configured_secret.to_owned()
        };
        self.secret.store(Arc::new(secret.into_bytes()));
        self.reload(store)?;
        self.enforced.store(true, Ordering::Release);
        Ok(())
    }

    /// Lets every caller in as an admin.
    pub fn disable(&self) {
        self.enforced.store(false, Ordering::Release);
    }

    /// Whether callers must authenticate.
    pub fn enforced(&self) -> bool {
        self.enforced.load(Ordering::Acquire)
    }

    /// The signing secret.
    pub fn secret(&self) -> Arc<Vec<u8>> {
        self.secret.load_full()
    }

    /// The current directory; cheap, lock-free.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.load_full()
    }

    /// Reloads the directory from the store now. Blocking: call it off the executor.
    pub fn reload(&self, store: &Store) -> Result<(), AppError> {
        let revisions = store.revisions()?;
        let directory = Directory::load(store, unix_now())?;
        if let Ok(mut seen) = self.revisions.lock() {
            // The directory is at least as new as the revisions read before it. A reload that
            // read older revisions than one already applied raced a write and that write's own
            // reload (the watcher woken by another change, say): applying it would bring back
            // what the write changed, such as a revoked key.
            if revisions.auth < seen.0 || revisions.models < seen.1 {
                return Ok(());
            }
            self.directory.store(Arc::new(directory));
            *seen = (revisions.auth, revisions.models);
        } else {
            self.directory.store(Arc::new(directory));
        }
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many times the directory was loaded from the store.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Reloads the directory if another replica changed it since the last load. Blocking.
    pub fn refresh_if_changed(&self, store: &Store) -> Result<(), AppError> {
        let revisions = store.revisions()?;
        let seen = self.revisions.lock().map(|s| *s).unwrap_or((-1, -1));
        if seen != (revisions.auth, revisions.models) {
            self.reload(store)?;
        }
        self.flush_key_uses(store, false);
        self.purge_revocations(store);
        Ok(())
    }

    /// Deletes revocations of tokens that have expired anyway, about once an hour. Blocking.
    fn purge_revocations(&self, store: &Store) {
        let now = unix_now();
        if now - self.purged.load(Ordering::Relaxed) < 3600 {
            return;
        }
        self.purged.store(now, Ordering::Relaxed);
        match store.purge_revoked_tokens(now) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired token revocations deleted"),
            Err(err) => tracing::debug!(error = %err, "could not delete expired token revocations"),
        }
    }

    /// Writes the keys' last-use times, at most every few seconds unless `now`. Blocking.
    pub fn flush_key_uses(&self, store: &Store, force: bool) {
        let now = unix_now();
        if !force && now - self.flushed.load(Ordering::Relaxed) < 5 {
            return;
        }
        self.flushed.store(now, Ordering::Relaxed);
        let mut by_time: HashMap<i64, Vec<String>> = HashMap::new();
        let ids: Vec<String> = self.key_uses.iter().map(|e| e.key().clone()).collect();
        for id in ids {
            if let Some((id, at)) = self.key_uses.remove(&id) {
                by_time.entry(at).or_default().push(id);
            }
        }
        for (at, ids) in by_time {
            if let Err(err) = store.touch_api_keys(&ids, at) {
                tracing::debug!(error = %err, "could not record API key use");
            }
        }
    }

    fn note_key_use(&self, id: &str, now: i64) {
        // A key in use is nearly always there already: its id is copied only the first time.
        match self.key_uses.get_mut(id) {
            Some(mut at) => *at = now,
            None => {
                self.key_uses.insert(id.to_owned(), now);
            }
        }
    }
}

/// The seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The authenticated caller of a route that needs a verified user (`user` or `admin`).
///
/// `user` is `None` when the gateway authenticates nobody; such a caller acts as an admin.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user, when authentication is on.
    pub user: Option<Arc<Member>>,
    /// The session token's id and expiry, when the caller used a token.
    pub session: Option<(String, Option<i64>)>,
    /// The directory the caller was checked against.
    pub directory: Arc<Directory>,
    /// The API key's id, when the credential was an API key.
    pub key_id: Option<Arc<str>>,
    /// The limited subjects the caller's requests count against (its key, its user, the
    /// user's groups), from the directory; `None` when none is limited.
    pub limited: Option<Limited>,
}

/// The caller of an admin route.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

/// The caller of a route any signed-in user may call, pending ones included.
#[derive(Debug, Clone)]
pub struct Anyone(pub Caller);

/// Which callers a route admits (Open WebUI's none, verified and admin, plus pending users).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Everyone, signed in or not.
    Public,
    /// Everyone, but a credential that is presented must verify (a bad one is a 401, so a
    /// client "verifying" its key learns it is wrong).
    Checked,
    /// Any signed-in user, pending ones included.
    Any,
    /// Users and admins.
    Verified,
    /// Admins.
    Admin,
    /// The metrics scraper: the `metrics.token` bearer token when one is set; else anyone
    /// while the gateway listens on a loopback address; else admins.
    Metrics,
}

/// The credential a request presents: the `Authorization` header, else the `token` cookie,
/// chosen as the reference chooses them (section 6.3).
pub fn presented(req: &HttpRequest) -> Result<Presented, AppError> {
    let header = match req.headers().get(actix_web::http::header::AUTHORIZATION) {
        None => None,
        Some(value) => match value.to_str() {
            Ok(text) => Some(text),
            // Bytes beyond visible ASCII: another scheme is ignored, a bearer value refused.
            Err(_) => match corral_auth::parse_authorization_bytes(value.as_bytes()) {
                corral_auth::Credential::Other(_) => None,
                _ => return Err(unauthorized(messages::NOT_AUTHENTICATED)),
            },
        },
    };
    // Of several `token` cookies (a stale one with a longer path comes first), the last
    // counts, as in the reference's cookie parser.
    let cookie = req
        .headers()
        .get_all(actix_web::http::header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .filter_map(corral_auth::token_from_cookie_header)
        .last();
    Ok(corral_auth::select_credential(header, cookie))
}

/// Checks the caller of `req` against `level`; `None` for a public route.
pub fn require(req: &HttpRequest, level: Level) -> Result<Option<Caller>, AppError> {
    match level {
        Level::Public => Ok(None),
        Level::Checked => match presented(req) {
            Ok(Presented::Missing) => Ok(None),
            _ => authenticate(req, Level::Any).map(Some),
        },
        Level::Metrics => metrics_access(req),
        level => authenticate(req, level).map(Some),
    }
}

/// Who may read `/metrics` (see [`Level::Metrics`]).
fn metrics_access(req: &HttpRequest) -> Result<Option<Caller>, AppError> {
    let Some(shared) = req.app_data::<web::Data<Shared>>() else {
        return authenticate(req, Level::Admin).map(Some);
    };
    let settings = shared.settings();
    let token = settings.metrics.token.as_bytes();
    if token.is_empty() {
        if crate::handlers::config::listens_on_loopback(&settings) {
            return Ok(None);
        }
    } else {
        let presented = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if let Some(given) = presented {
            use subtle::ConstantTimeEq as _;
            if bool::from(given.ct_eq(token)) {
                return Ok(None);
            }
        }
    }
    let caller = authenticate(req, Level::Admin)?;
    if caller.user.is_none() {
        // Nobody is authenticated here, and the address is not loopback: only the token opens it.
        return Err(AppError::Forbidden(
            "/metrics is served on a non-loopback address only to metrics.token or an admin".to_owned(),
        ));
    }
    Ok(Some(caller))
}

impl FromRequest for Caller {
    type Error = AppError;
    type Future = Ready<Result<Caller, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, Level::Verified))
    }
}

impl FromRequest for Admin {
    type Error = AppError;
    type Future = Ready<Result<Admin, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, Level::Admin).map(Admin))
    }
}

impl FromRequest for Anyone {
    type Error = AppError;
    type Future = Ready<Result<Anyone, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req, Level::Any).map(Anyone))
    }
}

/// A caller whose credential the guard middleware already checked, kept in the
/// request's extensions so the route's extractor does not check it again.
#[derive(Debug, Clone)]
pub struct Identified(pub Caller);

fn authenticate(req: &HttpRequest, level: Level) -> Result<Caller, AppError> {
    let cached = req.extensions().get::<Identified>().map(|i| i.0.clone());
    let caller = match cached {
        Some(caller) => caller,
        None => identify(req)?,
    };
    let Some(user) = caller.user.as_ref() else {
        // Nobody is authenticated: every caller acts as an admin.
        return Ok(caller);
    };
    let admitted = match level {
        Level::Public | Level::Checked | Level::Any => true,
        Level::Verified => matches!(user.role, Role::User | Role::Admin),
        Level::Admin | Level::Metrics => user.role == Role::Admin,
    };
    if !admitted {
        // A signed-in user without the role is forbidden, not unauthenticated: the reference
        // answers 401 here (its section 8.1, item 19), which clients read as "sign in again".
        // A pending account gets 401, as the reference's verified check gives it.
        return Err(if user.role == Role::Pending {
            unauthorized(messages::ACCESS_PROHIBITED)
        } else {
            AppError::Forbidden(messages::ACCESS_PROHIBITED.to_owned())
        });
    }
    Ok(caller)
}

/// Who presents the credential of `req`, any role (pending included); an error for a missing,
/// malformed, unknown, expired or revoked one. Without authentication, an admin-like caller.
pub fn identify(req: &HttpRequest) -> Result<Caller, AppError> {
    let shared = req
        .app_data::<web::Data<Shared>>()
        .ok_or_else(|| AppError::Internal("the gateway's state is not registered".to_owned()))?;
    let auth = &shared.auth;
    let directory = auth.directory();
    if !auth.enforced() {
        return Ok(Caller {
            user: None,
            session: None,
            directory,
            key_id: None,
            limited: None,
        });
    }
    let settings = shared.settings();
    let now = unix_now();
    let (user, session, key_id, limited) = match presented(req)? {
        Presented::Missing | Presented::Malformed => return Err(unauthorized(messages::NOT_AUTHENTICATED)),
        Presented::ApiKey { key, .. } => {
            if !settings.auth.enable_api_keys {
                return Err(AppError::Forbidden(messages::API_KEY_NOT_ALLOWED.to_owned()));
            }
            let hash = key.hash();
            let entry = directory
                .keys
                .get(hash.as_str())
                .filter(|k| k.expires_at.is_none_or(|at| at > now))
                .ok_or_else(|| unauthorized(messages::INVALID_TOKEN))?;
            auth.note_key_use(&entry.id, now);
            let limited = entry.limited.clone();
            (directory.user(&entry.user_id), None, Some(entry.id.clone()), limited)
        }
        Presented::Jwt { token, .. } => {
            let claims = corral_auth::verify_token(&auth.secret(), &token, chrono::Utc::now())
                .map_err(|_| unauthorized(messages::UNAUTHORIZED))?;
            if directory.revoked.contains(&claims.jti) {
                return Err(unauthorized(messages::TOKEN_REVOKED));
            }
            let limited = directory.user_limited(&claims.id).cloned();
            (
                directory.user(&claims.id),
                Some((claims.jti, claims.exp)),
                None,
                limited,
            )
        }
    };
    let user = user.cloned().ok_or_else(|| unauthorized(messages::INVALID_TOKEN))?;
    Ok(Caller {
        user: Some(user),
        session,
        directory,
        key_id,
        limited,
    })
}

fn unauthorized(message: &str) -> AppError {
    AppError::Unauthorized(message.to_owned())
}

/// A model the caller may use: the catalogue id, and its record if it has one.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The model's id.
    pub id: String,
    /// Its record (for a preset, the preset's).
    pub rule: Option<Arc<ModelRule>>,
    /// When the client named a preset: the base model to ask the instance for.
    pub base: Option<String>,
}

impl Grant {
    /// The model name to route by: the base model of a preset, else what the client sent.
    pub fn routed<'a>(&'a self, requested: &'a str) -> &'a str {
        self.base.as_deref().unwrap_or(requested)
    }

    /// Renames a preset to its base model in a request body (`model`, and `name` if set).
    /// Returns whether anything changed.
    pub fn rename(&self, body: &mut Value) -> bool {
        let (Some(base), Some(obj)) = (&self.base, body.as_object_mut()) else {
            return false;
        };
        let mut changed = false;
        for key in ["model", "name"] {
            if let Some(slot) = obj.get_mut(key).filter(|v| v.as_str().is_some_and(|s| !s.is_empty())) {
                *slot = Value::String(base.clone());
                changed = true;
            }
        }
        changed
    }
}

impl Caller {
    /// Whether the caller acts as an admin (an admin, or nobody is authenticated).
    pub fn is_admin(&self) -> bool {
        self.user.as_ref().is_none_or(|u| u.role == Role::Admin)
    }

    /// Whether the caller may list and use model `id`.
    pub fn can_read(&self, id: &str, bypass: bool) -> bool {
        let Some(user) = &self.user else {
            return true;
        };
        let rule = self
            .directory
            .model(id)
            .filter(|r| r.active || user.role == Role::Admin);
        let record = rule.map(|r| corral_auth::ModelRecord {
            owner_id: r.owner.as_deref().unwrap_or_default(),
            access_control: r.access.as_ref(),
        });
        corral_auth::can_read(&user.id, user.role, &user.groups, record, bypass)
    }

    /// Checks that the caller may use the model the client calls `requested`, whose catalogue
    /// id is `id` (or, for a model no instance lists, `requested` with `:latest` implied).
    pub fn grant(&self, settings: &corral_config::Settings, id: &str) -> Result<Grant, AppError> {
        if !self.can_read(id, settings.auth.bypass_model_access_control) {
            return Err(AppError::Forbidden(messages::MODEL_NOT_FOUND.to_owned()));
        }
        Ok(Grant {
            id: id.to_owned(),
            rule: self.directory.model(id).cloned(),
            base: None,
        })
    }

    /// The preset the client names `requested`, if the caller may see it exists.
    pub fn preset(&self, requested: &str) -> Option<Arc<ModelRule>> {
        self.directory
            .preset(requested)
            .filter(|p| p.active || self.is_admin())
            .cloned()
    }

    /// Resolves the model the client names against the catalogue (refreshing it once on a
    /// miss) and checks the caller may use it.
    ///
    /// A name that is a preset's (a model record with a base model, as the reference's
    /// workspace models are) resolves to its base model, with the preset's access control,
    /// params and system prompt; an inactive preset is an admin's alone.
    pub async fn model_for(&self, shared: &Shared, client: &awc::Client, requested: &str) -> Result<Grant, AppError> {
        if let Some(preset) = self.preset(requested) {
            if !self.can_read(&preset.id, shared.settings().auth.bypass_model_access_control) {
                return Err(AppError::Forbidden(messages::MODEL_NOT_FOUND.to_owned()));
            }
            let base = preset.base_model_id.clone().unwrap_or_default();
            let id = match crate::handlers::holders(shared, client, &base).await? {
                Some((_, id, _)) => id,
                // Nobody holds the base model: routing answers that, naming it.
                None => corral_registry::with_latest(&base),
            };
            return Ok(Grant {
                id,
                rule: Some(preset),
                base: Some(base),
            });
        }
        if self.is_admin() {
            // Admins may use anything: no lookup beyond the catalogue at hand, and the
            // routing gives its own answer for a model nobody holds.
            let id = shared
                .fleet
                .snapshot()
                .and_then(|snap| snap.catalogue.resolve(requested).map(|e| e.id.clone()))
                .unwrap_or_else(|| corral_registry::with_latest(requested));
            let rule = self.directory.model(&id).cloned();
            return Ok(Grant { id, rule, base: None });
        }
        let id = match crate::handlers::holders(shared, client, requested).await {
            Ok(Some((_, id, _))) => id,
            // Refuse with the same answer whether the model exists or not.
            Ok(None) => return Err(AppError::Forbidden(messages::MODEL_NOT_FOUND.to_owned())),
            // Maybe on an instance that did not answer: say so only about a model the caller
            // may read, so an outage does not tell private models from missing ones.
            Err(err @ AppError::NoInstance { .. }) => {
                let bypass = shared.settings().auth.bypass_model_access_control;
                let readable =
                    self.can_read(requested, bypass) || self.can_read(&corral_registry::with_latest(requested), bypass);
                return Err(if readable {
                    err
                } else {
                    AppError::Forbidden(messages::MODEL_NOT_FOUND.to_owned())
                });
            }
            Err(other) => return Err(other),
        };
        self.grant(&shared.settings(), &id)
    }

    /// The catalogue ids the caller may see.
    /// The models (and presets) the caller may see, each with when it was made in Unix seconds:
    /// the instance's `modified_at`, a preset's record time.
    pub async fn visible_models(&self, shared: &Shared, client: &awc::Client) -> Result<Vec<(String, i64)>, AppError> {
        let settings = shared.settings();
        if !settings.ollama.enable {
            return Ok(Vec::new());
        }
        let ttl = std::time::Duration::from_secs(settings.ollama.models_cache_ttl);
        let snap = shared.fleet.fresh(shared, client, ttl).await;
        let bypass = settings.auth.bypass_model_access_control;
        let mut ids: Vec<(String, i64)> = snap
            .catalogue
            .entries()
            .iter()
            .filter(|e| self.can_read(&e.id, bypass))
            .map(|e| (e.id.clone(), modified_at(&e.object)))
            .collect();
        // Presets the caller may use, whose base model the fleet has.
        let mut presets: Vec<(String, i64)> = self
            .directory
            .presets()
            .filter(|p| p.active || self.is_admin())
            .filter(|p| !ids.iter().any(|(id, _)| *id == p.id) && self.can_read(&p.id, bypass))
            .filter(|p| {
                p.base_model_id
                    .as_deref()
                    .is_some_and(|base| snap.catalogue.resolve(base).is_some())
            })
            .map(|p| (p.id.clone(), p.created_at))
            .collect();
        presets.sort();
        ids.extend(presets);
        Ok(ids)
    }

    /// Applies the model record's params and system prompt to an OpenAI chat body.
    pub fn apply_openai(&self, grant: &Grant, body: &mut Value) {
        self.apply_openai_params(grant, body);
        if let Some(system) = grant.rule.as_ref().and_then(|r| r.system.as_deref()) {
            self.apply_system(system, body);
        }
    }

    /// Applies the model record's params to an OpenAI body (chat or completion).
    pub fn apply_openai_params(&self, grant: &Grant, body: &mut Value) {
        if let Some(rule) = &grant.rule {
            if has_params(&rule.params) {
                corral_auth::apply_params_openai(&rule.params, body);
            }
        }
    }

    /// Applies the model record's system prompt to an OpenAI chat body.
    pub fn apply_openai_system(&self, grant: &Grant, body: &mut Value) {
        if let Some(system) = grant.rule.as_ref().and_then(|r| r.system.as_deref()) {
            self.apply_system(system, body);
        }
    }

    /// Applies the model record's params to a native body (`/api/chat` or `/api/generate`)
    /// the gateway converted from an OpenAI request: the same casts and placement as on
    /// `/api/chat`, so a param means the same on every route.
    pub fn apply_native_params(&self, grant: &Grant, body: &mut Value) {
        if let Some(rule) = &grant.rule {
            if has_params(&rule.params) {
                corral_auth::apply_params_ollama(&rule.params, body);
            }
        }
    }

    /// Applies the model record's params and system prompt to a native `/api/chat` body.
    pub fn apply_native_chat(&self, grant: &Grant, body: &mut Value) {
        let Some(rule) = &grant.rule else { return };
        if has_params(&rule.params) {
            corral_auth::apply_params_ollama(&rule.params, body);
        }
        if let Some(system) = rule.system.as_deref() {
            self.apply_system(system, body);
        }
    }

    fn apply_system(&self, system: &str, body: &mut Value) {
        let variables = body.pointer("/metadata/variables").cloned();
        let info = self.user.as_ref().map(|u| u.info());
        let Some(Value::Array(messages)) = body.get_mut("messages") else {
            return;
        };
        let now = chrono::Local::now().naive_local();
        corral_auth::apply_system_prompt(system, messages, variables.as_ref(), info.as_ref(), now);
    }

    /// The user-info headers to send upstream, when `auth.forward_user_info_headers` is on.
    pub fn forwarded_headers(
        &self,
        settings: &corral_config::Settings,
        body: Option<&Value>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        if !settings.auth.forward_user_info_headers {
            return out;
        }
        let Some(user) = &self.user else { return out };
        let mut pairs = corral_auth::user_info_headers(&user.info());
        if let Some(chat) = body.and_then(|b| b.pointer("/metadata/chat_id")) {
            pairs.extend(corral_auth::chat_id_header(chat));
        }
        for (name, value) in pairs {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
                out.push((name, value));
            }
        }
        out
    }
}

/// Whether a params object sets anything.
/// A listed model's `modified_at` in Unix seconds, as Ollama's `/v1/models` gives `created`;
/// 0 when the instance gave none that parses.
pub(crate) fn modified_at(object: &serde_json::Map<String, Value>) -> i64 {
    object
        .get("modified_at")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp())
}

fn has_params(params: &Value) -> bool {
    params.as_object().is_some_and(|p| p.values().any(|v| !v.is_null()))
}
