//! The settings value and its validation.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ConfigError;

/// Everything Corral can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where Corral listens and keeps its files.
    pub server: ServerSettings,
    /// Where Corral keeps its state.
    pub database: DatabaseSettings,
    /// The Ollama instances behind Corral.
    pub ollama: OllamaSettings,
    /// How Corral talks to the instances.
    pub upstream: UpstreamSettings,
    /// How Corral chooses among instances.
    pub balance: BalanceSettings,
    /// Who may call Corral.
    pub auth: AuthSettings,
    /// Usage metering: how records are buffered, written and kept.
    pub usage: UsageSettings,
    /// The Prometheus metrics endpoint.
    pub metrics: MetricsSettings,
}

/// Usage metering: one record per model-running request, buffered in memory and written in
/// batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSettings {
    /// Whether usage records are kept at all (needs a database).
    pub enable: bool,
    /// Seconds between two batch writes; a crash loses at most this much usage.
    pub flush_interval: f64,
    /// Records kept in memory while the database is unreachable; beyond it new ones are dropped
    /// and counted.
    pub buffer_size: usize,
    /// Days records are kept; older ones are pruned. 0 keeps them forever.
    pub retention_days: u32,
}

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            enable: true,
            flush_interval: 1.0,
            buffer_size: 100_000,
            retention_days: 0,
        }
    }
}

/// The Prometheus metrics endpoint (`GET /metrics`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Whether requests are counted and `/metrics` is served.
    pub enable: bool,
    /// A bearer token that may read `/metrics`; empty: open on a loopback bind, else admins only.
    pub token: String,
    /// Whether token counts also carry the API key's id (one series per key).
    pub per_key: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enable: true,
            token: String::new(),
            per_key: false,
        }
    }
}

impl fmt::Debug for MetricsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = if self.token.is_empty() { "<unset>" } else { "<redacted>" };
        f.debug_struct("MetricsSettings")
            .field("enable", &self.enable)
            .field("token", &token)
            .field("per_key", &self.per_key)
            .finish()
    }
}

/// How Corral chooses among the instances that hold a model, and when it gives up on one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceSettings {
    /// `model_affinity`, `least_outstanding`, `latency_ewma`, `round_robin` or `random`.
    pub policy: String,
    /// A policy for particular models (catalogue ids such as `llama3.2:latest`), over `policy`.
    pub per_model: BTreeMap<String, String>,
    /// Requests an instance runs at once per model (Ollama's `OLLAMA_NUM_PARALLEL`): learned
    /// from its time to first token (`auto`), or a fixed number.
    pub slots: Slots,
    /// Models an instance keeps loaded at once (Ollama's `OLLAMA_MAX_LOADED_MODELS`); 0 when
    /// unknown.
    pub max_loaded: usize,
    /// Instances tried for one request before it fails (1 disables failover).
    pub max_attempts: usize,
    /// Consecutive failures that take an instance out of rotation.
    pub failures_to_eject: u32,
    /// Seconds an ejected instance stays out before one probe request may test it.
    pub ejection_time: f64,
    /// Seconds between active health checks (`GET /api/version`); 0 turns them off.
    pub health_interval: f64,
    /// Requests that may wait per model when every holder is at its slot limit.
    pub queue_size: usize,
    /// Seconds a request may wait in that queue before it gets a 503.
    pub queue_timeout: f64,
    /// Requests a user lets in per turn of a model's queue, by group name (or id): a user
    /// takes the largest weight of their groups, 1 without one.
    pub queue_weights: BTreeMap<String, u32>,
}

/// The largest weight a group may have in the queue.
pub const MAX_QUEUE_WEIGHT: u32 = 100;

impl Default for BalanceSettings {
    fn default() -> Self {
        BalanceSettings {
            policy: "model_affinity".to_owned(),
            per_model: BTreeMap::new(),
            slots: Slots::Auto,
            max_loaded: 0,
            max_attempts: 3,
            failures_to_eject: 3,
            ejection_time: 5.0,
            health_interval: 5.0,
            queue_size: 64,
            queue_timeout: 60.0,
            queue_weights: BTreeMap::new(),
        }
    }
}

/// How many requests an instance runs at once per model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Slots {
    /// Learned per instance and model from time to first token (`auto`).
    #[default]
    Auto,
    /// Exactly this many (at least 1).
    Fixed(usize),
}

impl Slots {
    /// What a value must look like, for error messages.
    pub const EXPECTED: &'static str = "expected `auto` or a whole number of at least 1";

    /// The fixed number, if not learned.
    pub fn fixed(self) -> Option<usize> {
        match self {
            Slots::Auto => None,
            Slots::Fixed(n) => Some(n),
        }
    }
}

impl fmt::Display for Slots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slots::Auto => f.write_str("auto"),
            Slots::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for Slots {
    type Err = String;

    fn from_str(text: &str) -> Result<Slots, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Slots::Auto);
        }
        match text.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Slots::Fixed(n)),
            _ => Err(format!("{}, not {text:?}", Slots::EXPECTED)),
        }
    }
}

impl Serialize for Slots {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Slots::Auto => s.serialize_str("auto"),
            Slots::Fixed(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Slots {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Slots, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Slots;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`auto` or a whole number of at least 1")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Slots, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Slots, E> {
                match usize::try_from(v) {
                    Ok(n) if n >= 1 => Ok(Slots::Fixed(n)),
                    _ => Err(E::custom(format!("{}, not {v}", Slots::EXPECTED))),
                }
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Slots, E> {
                match u64::try_from(v) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!("{}, not {v}", Slots::EXPECTED))),
                }
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Slots, E> {
                Err(E::custom(format!("{}, not {v}", Slots::EXPECTED)))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Where Corral listens and keeps its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on.
    pub port: u16,
    /// Directory for Corral's own files (the SQLite database by default).
    pub data_dir: String,
    /// Origins a browser may call Corral from; `*` allows any.
    pub cors_allow_origin: Vec<String>,
    /// Log filter, in `tracing` `EnvFilter` syntax.
    pub log: String,
    /// Log line format: `text` or `json`.
    pub log_format: String,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Trusted reverse proxies (addresses or CIDR ranges, `*` for any), whose `Forwarded` and
    /// `X-Forwarded-For` headers name the client.
    pub forwarded_allow_ips: Vec<String>,
    /// Seconds a client has to send a body read whole; 0 means no limit.
    pub body_read_timeout: f64,
    /// Requests without a valid credential one address may have in progress; 0 means no cap.
    pub max_unauthenticated_per_address: usize,
    /// Seconds after SIGTERM or SIGINT during which the gateway still serves while `/ready`
    /// answers 503, before it stops accepting.
    pub shutdown_delay: f64,
    /// Seconds requests in flight get to finish once the gateway stops accepting.
    pub shutdown_grace: f64,
    /// Whether the web console is served.
    pub console: bool,
    /// Where the web console is served, e.g. `/console`.
    pub console_path: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            host: "127.0.0.1".to_owned(),
            port: 8080,
            data_dir: "./data".to_owned(),
            cors_allow_origin: vec!["*".to_owned()],
            log: "info".to_owned(),
            log_format: "text".to_owned(),
            workers: 0,
            forwarded_allow_ips: Vec::new(),
            body_read_timeout: 30.0,
            max_unauthenticated_per_address: 64,
            shutdown_delay: 0.0,
            shutdown_grace: 30.0,
            console: true,
            console_path: "/console".to_owned(),
        }
    }
}

/// The longest duration any setting may give, in seconds: a year.
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// Where Corral keeps its state.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `postgres://…` for PostgreSQL, `sqlite://PATH` or a path for SQLite.
    /// Empty means a SQLite file `corral.db` in `server.data_dir`.
    pub url: String,
    /// Connections kept in the pool.
    pub pool_size: u32,
    /// On PostgreSQL, whether replicas learn of each other's changes through `LISTEN`/`NOTIFY`
    /// (polling stays as the fallback).
    pub notify: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: String::new(),
            pool_size: 0,
            notify: true,
        }
    }
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &crate::loggable_database_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("notify", &self.notify)
            .finish()
    }
}

/// The Ollama instances behind Corral, in Open WebUI's shape.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OllamaSettings {
    /// Whether the Ollama API is served at all.
    pub enable: bool,
    /// The instances' base URLs; the index in this list is the instance's `url_idx`.
    pub base_urls: Vec<String>,
    /// Per-connection settings keyed by index (`"0"`, `"1"`, …).
    pub api_configs: BTreeMap<String, ConnectionSettings>,
    /// Seconds a merged model listing is reused; 0 fetches every time.
    pub models_cache_ttl: u64,
}

impl fmt::Debug for OllamaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<_> = self.base_urls.iter().map(|u| crate::loggable_url(u)).collect();
        f.debug_struct("OllamaSettings")
            .field("enable", &self.enable)
            .field("base_urls", &urls)
            .field("api_configs", &self.api_configs)
            .field("models_cache_ttl", &self.models_cache_ttl)
            .finish()
    }
}

impl Default for OllamaSettings {
    fn default() -> Self {
        OllamaSettings {
            enable: true,
            base_urls: vec!["http://127.0.0.1:11434".to_owned()],
            api_configs: BTreeMap::new(),
            models_cache_ttl: 1,
        }
    }
}

/// Settings of one Ollama connection (Open WebUI's `OLLAMA_API_CONFIGS` entry).
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ConnectionSettings {
    /// A disabled connection is never contacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable: Option<bool>,
    /// Sent upstream as `Authorization: Bearer <key>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `local` or `external`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_type: Option<String>,
    /// Prepended as `<prefix_id>.` to this connection's model ids.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_id: Option<String>,
    /// Tags attached to this connection's models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Value>>,
    /// When non-empty, only these (unprefixed) model ids are served from this connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_ids: Option<Vec<String>>,
    /// Share of traffic relative to other instances of the same priority (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Tier: lower numbers are preferred; a higher one is used only when no lower tier can
    /// serve (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Requests this instance runs at once per model (default `balance.slots`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<Slots>,
    /// Models this instance keeps loaded at once (default `balance.max_loaded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_loaded: Option<usize>,
    /// Fields Corral does not use (e.g. `auth_type`), kept so they round-trip.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ConnectionSettings {
    /// Whether the connection may be contacted (`enable` defaults to true).
    pub fn enabled(&self) -> bool {
        self.enable.unwrap_or(true)
    }

    /// The key, if non-empty.
    pub fn bearer(&self) -> Option<&str> {
        self.key.as_deref().filter(|k| !k.is_empty())
    }

    /// The prefix, if non-empty.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix_id.as_deref().filter(|p| !p.is_empty())
    }
}

impl fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSettings")
            .field("enable", &self.enable)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field("connection_type", &self.connection_type)
            .field("prefix_id", &self.prefix_id)
            .field("tags", &self.tags)
            .field("model_ids", &self.model_ids)
            .field("weight", &self.weight)
            .field("priority", &self.priority)
            .field("slots", &self.slots)
            .field("max_loaded", &self.max_loaded)
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// How Corral talks to the instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// Seconds to establish a TCP connection to an instance.
    pub connect_timeout: f64,
    /// Seconds to wait for an instance's response headers; 0 waits without limit.
    /// Ollama sends headers with the first token, after any model load.
    pub first_byte_timeout: f64,
    /// Seconds a response may go silent between two chunks; 0 waits without limit.
    /// A long generation is never cut while chunks keep coming.
    pub idle_timeout: f64,
    /// Seconds each instance gets to answer a model listing before it is left out.
    pub discovery_timeout: f64,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: 5.0,
            first_byte_timeout: 600.0,
            idle_timeout: 300.0,
            discovery_timeout: 3.0,
        }
    }
}

/// Who may call Corral.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// With `false`, Corral runs in Open WebUI's single-user mode.
    pub webui_auth: bool,
    /// The JWT signing secret; empty means generated once and kept in the database.
    pub secret_key: String,
    /// Whether new accounts may sign up.
    pub enable_signup: bool,
    /// Role given to accounts after the first: `pending`, `user` or `admin`.
    pub default_user_role: String,
    /// Token lifetime, e.g. `4w`, `12h`, `-1` for no expiry.
    pub jwt_expires_in: String,
    /// Whether users may create and use `sk-` API keys.
    pub enable_api_keys: bool,
    /// Let every user see and use every model.
    pub bypass_model_access_control: bool,
    /// Send `X-OpenWebUI-User-*` headers upstream.
    pub forward_user_info_headers: bool,
    /// Threads hashing and verifying passwords; 0 means one per core, at most 4.
    pub password_workers: usize,
    /// Password checks that may wait for a thread.
    pub password_queue: usize,
    /// Seconds a password check may wait for a thread.
    pub password_wait: f64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            webui_auth: true,
            secret_key: String::new(),
            enable_signup: true,
            default_user_role: "pending".to_owned(),
            jwt_expires_in: "4w".to_owned(),
            enable_api_keys: true,
            bypass_model_access_control: false,
            forward_user_info_headers: false,
            password_workers: 0,
            password_queue: 32,
            password_wait: 5.0,
        }
    }
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = if self.secret_key.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        };
        f.debug_struct("AuthSettings")
            .field("webui_auth", &self.webui_auth)
            .field("secret_key", &secret)
            .field("enable_signup", &self.enable_signup)
            .field("default_user_role", &self.default_user_role)
            .field("jwt_expires_in", &self.jwt_expires_in)
            .field("enable_api_keys", &self.enable_api_keys)
            .field("bypass_model_access_control", &self.bypass_model_access_control)
            .field("forward_user_info_headers", &self.forward_user_info_headers)
            .finish()
    }
}

impl Settings {
    /// Checks what types alone cannot; the error names the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.host.trim().is_empty() {
            return Err(ConfigError::key("server.host", "must not be empty"));
        }
        let path = &self.server.console_path;
        let path_ok = path.len() > 1
            && path.starts_with('/')
            && !path.ends_with('/')
            && !path.contains("//")
            && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
        if !path_ok {
            return Err(ConfigError::key(
                "server.console_path",
                "must be a path such as /console: a leading `/`, no trailing `/`, letters, digits, `-`, `_`, `.`",
            ));
        }
        if !matches!(self.server.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::key("server.log_format", "must be `text` or `json`"));
        }
        if self.server.data_dir.trim().is_empty() {
            return Err(ConfigError::key("server.data_dir", "must not be empty"));
        }
        for (i, origin) in self.server.cors_allow_origin.iter().enumerate() {
            if origin != "*" && url::Url::parse(origin).is_err() {
                return Err(ConfigError::key(
                    format!("server.cors_allow_origin[{i}]"),
                    format!("{origin:?} is neither `*` nor an origin such as https://app.example"),
                ));
            }
        }
        for (i, entry) in self.server.forwarded_allow_ips.iter().enumerate() {
            if let Err(why) = crate::TrustedProxies::parse(std::slice::from_ref(entry)) {
                return Err(ConfigError::key(format!("server.forwarded_allow_ips[{i}]"), why));
            }
        }
        let db = self.database.url.trim();
        let known_scheme = ["postgres://", "postgresql://", "sqlite://", "/", "."]
            .iter()
            .any(|p| db.starts_with(p));
        if !db.is_empty() && !known_scheme {
            return Err(ConfigError::key(
                "database.url",
                "must start with postgres://, postgresql://, sqlite:// or be a file path",
            ));
        }
        self.ollama.validate()?;
        // Durations are capped so that time arithmetic on them cannot overflow; a year is
        // longer than any wait a gateway should make.
        let durations = [
            ("server.shutdown_delay", self.server.shutdown_delay, true),
            ("server.shutdown_grace", self.server.shutdown_grace, true),
            ("upstream.connect_timeout", self.upstream.connect_timeout, false),
            ("upstream.first_byte_timeout", self.upstream.first_byte_timeout, true),
            ("upstream.idle_timeout", self.upstream.idle_timeout, true),
            ("upstream.discovery_timeout", self.upstream.discovery_timeout, false),
            ("balance.health_interval", self.balance.health_interval, true),
            ("balance.queue_timeout", self.balance.queue_timeout, true),
            ("balance.ejection_time", self.balance.ejection_time, false),
            ("server.body_read_timeout", self.server.body_read_timeout, true),
            ("auth.password_wait", self.auth.password_wait, false),
            ("usage.flush_interval", self.usage.flush_interval, false),
        ];
        for (key, value, zero_ok) in durations {
            if !value.is_finite() || value < 0.0 || (!zero_ok && value == 0.0) || value > MAX_SECONDS {
                let want = if zero_ok {
                    "a number of seconds from 0"
                } else {
                    "a positive number of seconds"
                };
                return Err(ConfigError::key(
                    key,
                    format!("{value} is not {want} up to {MAX_SECONDS} (a year)"),
                ));
            }
        }
        if let Err(err) = self.balance.policy.parse::<corral_balance::PolicyKind>() {
            return Err(ConfigError::key("balance.policy", err.to_string()));
        }
        for (model, policy) in &self.balance.per_model {
            if let Err(err) = policy.parse::<corral_balance::PolicyKind>() {
                return Err(ConfigError::key(format!("balance.per_model.{model}"), err.to_string()));
            }
        }
        if self.usage.buffer_size == 0 {
            return Err(ConfigError::key("usage.buffer_size", "must be at least 1"));
        }
        if self.usage.retention_days > 36_500 {
            return Err(ConfigError::key(
                "usage.retention_days",
                format!(
                    "{} is more than 36500 (a hundred years); 0 keeps records forever",
                    self.usage.retention_days
                ),
            ));
        }
        for (group, weight) in &self.balance.queue_weights {
            if !(1..=MAX_QUEUE_WEIGHT).contains(weight) {
                return Err(ConfigError::key(
                    format!("balance.queue_weights.{group}"),
                    format!("{weight} is not a whole number from 1 to {MAX_QUEUE_WEIGHT}"),
                ));
            }
        }
        if self.auth.password_queue == 0 {
            return Err(ConfigError::key("auth.password_queue", "must be at least 1"));
        }
        if self.balance.slots == Slots::Fixed(0) {
            return Err(ConfigError::key("balance.slots", Slots::EXPECTED));
        }
        if self.balance.max_attempts == 0 {
            return Err(ConfigError::key("balance.max_attempts", "must be at least 1"));
        }
        if !["pending", "user", "admin"].contains(&self.auth.default_user_role.as_str()) {
            return Err(ConfigError::key(
                "auth.default_user_role",
                format!("{:?} is not one of pending, user, admin", self.auth.default_user_role),
            ));
        }
        Ok(())
    }

    /// Replaces the Ollama connection settings with what admins saved, after validating them.
    pub fn with_stored_ollama(&self, stored: OllamaSettings) -> Result<Settings, ConfigError> {
        stored.validate()?;
        let mut next = self.clone();
        next.ollama = stored;
        Ok(next)
    }
}

impl OllamaSettings {
    /// Checks URLs and that every per-connection entry names an existing URL.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, raw) in self.base_urls.iter().enumerate() {
            check_base_url(raw).map_err(|p| ConfigError::key(format!("ollama.base_urls[{i}]"), p))?;
        }
        for key in self.api_configs.keys() {
            let known = match key.parse::<usize>() {
                Ok(i) => i < self.base_urls.len(),
                Err(_) => false,
            };
            if !known {
                return Err(ConfigError::key(
                    format!("ollama.api_configs.{key}"),
                    format!("names no connection: there are {} base URLs", self.base_urls.len()),
                ));
            }
        }
        Ok(())
    }

    /// The settings of connection `idx`, or the defaults. Borrowed: requests read it often.
    pub fn connection(&self, idx: usize) -> &ConnectionSettings {
        static DEFAULT: ConnectionSettings = ConnectionSettings {
            enable: None,
            key: None,
            connection_type: None,
            prefix_id: None,
            tags: None,
            model_ids: None,
            weight: None,
            priority: None,
            slots: None,
            max_loaded: None,
            extra: BTreeMap::new(),
        };
        // The key is the index in decimal, written on the stack: a request asks several times.
        self.api_configs
            .get(itoa::Buffer::new().format(idx))
            .unwrap_or(&DEFAULT)
    }
}

/// A base URL must be absolute http(s) with a host and no query or fragment.
fn check_base_url(raw: &str) -> Result<(), String> {
    let parsed = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{raw:?} must use http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{raw:?} has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{raw:?} must not have a query or fragment"));
    }
    Ok(())
}
