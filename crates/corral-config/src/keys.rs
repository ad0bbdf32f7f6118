//! The table of every setting: its key, environment names and meaning.
//!
//! `docs/configuration.md` is checked against this table by a test, and the environment
//! mapping in `env.rs` is driven by it, so the three cannot drift apart.

/// How an environment variable's text becomes a setting value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    /// Taken as it is.
    Text,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// A whole number.
    Int,
    /// A number of seconds.
    Seconds,
    /// A list separated by `;`.
    List,
    /// Open WebUI's `AIOHTTP_CLIENT_TIMEOUT`: seconds, or empty for no limit.
    OptionalSeconds,
    /// Open WebUI's `MODELS_CACHE_TTL`: seconds, or empty for "until restart".
    CacheTtl,
}

/// One documented setting.
#[derive(Debug, Clone, Copy)]
pub struct SettingDoc {
    /// Dotted key as in the TOML file, e.g. `server.port`.
    pub key: &'static str,
    /// Environment variables that set it, strongest first.
    pub env: &'static [&'static str],
    /// How the environment text is read.
    pub kind: EnvKind,
    /// The default, as shown in the docs.
    pub default: &'static str,
    /// One sentence on what it does.
    pub doc: &'static str,
}

/// Every setting Corral reads.
pub const SETTINGS: &[SettingDoc] = &[
    SettingDoc { key: "server.host", env: &["CORRAL_SERVER__HOST", "HOST"], kind: EnvKind::Text, default: "127.0.0.1", doc: "Address to listen on." },
    SettingDoc { key: "server.port", env: &["CORRAL_SERVER__PORT", "PORT"], kind: EnvKind::Int, default: "8080", doc: "Port to listen on." },
    SettingDoc { key: "server.data_dir", env: &["CORRAL_SERVER__DATA_DIR", "DATA_DIR"], kind: EnvKind::Text, default: "./data", doc: "Directory for Corral's own files, including the default SQLite database." },
    SettingDoc { key: "server.cors_allow_origin", env: &["CORRAL_SERVER__CORS_ALLOW_ORIGIN", "CORS_ALLOW_ORIGIN"], kind: EnvKind::List, default: "*", doc: "Origins a browser may call Corral from, separated by `;`; `*` allows any. Only requests that carry `Origin` (a browser's) get CORS headers; the rest get only `Vary: Origin, …`." },
    SettingDoc { key: "server.log", env: &["CORRAL_SERVER__LOG", "RUST_LOG"], kind: EnvKind::Text, default: "info", doc: "Log filter in `tracing` EnvFilter syntax." },
    SettingDoc { key: "server.log_format", env: &["CORRAL_SERVER__LOG_FORMAT", "CORRAL_LOG_FORMAT"], kind: EnvKind::Text, default: "text", doc: "Log lines as human-readable `text` or one JSON object per line (`json`), fields included, for log collectors." },
    SettingDoc { key: "server.workers", env: &["CORRAL_SERVER__WORKERS"], kind: EnvKind::Int, default: "0", doc: "Worker threads; 0 means one per core." },
    SettingDoc { key: "server.forwarded_allow_ips", env: &["CORRAL_SERVER__FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS"], kind: EnvKind::List, default: "(empty: trust no proxy)", doc: "Addresses or CIDR ranges of trusted reverse proxies, separated by `;` or `,` (`*` trusts any peer); only from them are `Forwarded` and `X-Forwarded-For` read for the client address used by the sign-in limiter, the connection cap and the access log." },
    SettingDoc { key: "server.body_read_timeout", env: &["CORRAL_SERVER__BODY_READ_TIMEOUT"], kind: EnvKind::Seconds, default: "30", doc: "Seconds a client has to send a request body the gateway reads whole (a streamed blob upload instead may not pause longer than this between two chunks); past it the request gets a JSON 408. 0 waits without limit." },
    SettingDoc { key: "server.max_unauthenticated_per_address", env: &["CORRAL_SERVER__MAX_UNAUTHENTICATED_PER_ADDRESS"], kind: EnvKind::Int, default: "64", doc: "Requests without a valid credential that one client address may have in progress at once; more get a JSON 429. 0 means no cap." },
    SettingDoc { key: "server.shutdown_delay", env: &["CORRAL_SERVER__SHUTDOWN_DELAY"], kind: EnvKind::Seconds, default: "0", doc: "Seconds after SIGTERM or SIGINT during which the gateway still accepts and serves while `/ready` answers 503, so a load balancer or Kubernetes takes it out of rotation before it stops accepting (then `server.shutdown_grace` begins)." },
    SettingDoc { key: "server.shutdown_grace", env: &["CORRAL_SERVER__SHUTDOWN_GRACE"], kind: EnvKind::Seconds, default: "30", doc: "Seconds requests in flight and streams get to finish once the gateway stops accepting after SIGTERM or SIGINT (new connections are refused, `/ready` answers 503); a request still queued a second before it ends gets a 503 with `Retry-After`. A second signal exits at once." },
    SettingDoc { key: "server.console", env: &["CORRAL_SERVER__CONSOLE"], kind: EnvKind::Bool, default: "true", doc: "Whether the web console (fleet, connections, models, people, keys) is served at `server.console_path`; it needs a database, as it signs in with Corral's accounts." },
    SettingDoc { key: "server.console_path", env: &["CORRAL_SERVER__CONSOLE_PATH"], kind: EnvKind::Text, default: "/console", doc: "Where the web console is served: a path with a leading `/` and no trailing one." },
    SettingDoc { key: "database.url", env: &["CORRAL_DATABASE__URL", "DATABASE_URL"], kind: EnvKind::Text, default: "(empty: `<data_dir>/corral.db`)", doc: "`postgres://…` selects PostgreSQL; `sqlite://PATH` or a path selects SQLite." },
    SettingDoc { key: "database.pool_size", env: &["CORRAL_DATABASE__POOL_SIZE"], kind: EnvKind::Int, default: "0 (8 for PostgreSQL, 4 for SQLite)", doc: "Connections kept in the pool." },
    SettingDoc { key: "database.notify", env: &["CORRAL_DATABASE__NOTIFY"], kind: EnvKind::Bool, default: "true", doc: "On PostgreSQL, replicas learn of each other's changes (configuration, accounts, keys, revocations, model records) at once through `LISTEN`/`NOTIFY`; the half-second poll stays as the fallback, and is the only way on SQLite or with false." },
    SettingDoc { key: "ollama.enable", env: &["CORRAL_OLLAMA__ENABLE", "ENABLE_OLLAMA_API"], kind: EnvKind::Bool, default: "true", doc: "Whether the Ollama API is served at all." },
    SettingDoc { key: "ollama.base_urls", env: &["CORRAL_OLLAMA__BASE_URLS", "OLLAMA_BASE_URLS", "OLLAMA_BASE_URL"], kind: EnvKind::List, default: "http://127.0.0.1:11434", doc: "The instances' base URLs separated by `;`; the position is the instance's `url_idx`." },
    SettingDoc { key: "ollama.api_configs", env: &[], kind: EnvKind::Text, default: "{}", doc: "Per-connection settings keyed by index: `enable`, `key`, `connection_type`, `prefix_id`, `tags`, `model_ids`, and Corral's `weight`, `priority`, `slots`, `max_loaded` (file or admin API only)." },
    SettingDoc { key: "ollama.models_cache_ttl", env: &["CORRAL_OLLAMA__MODELS_CACHE_TTL", "MODELS_CACHE_TTL"], kind: EnvKind::CacheTtl, default: "1", doc: "Seconds a merged model listing is reused; empty keeps it until a change or restart." },
    SettingDoc { key: "upstream.connect_timeout", env: &["CORRAL_UPSTREAM__CONNECT_TIMEOUT"], kind: EnvKind::Seconds, default: "5", doc: "Seconds to open a connection to an instance." },
    SettingDoc { key: "upstream.first_byte_timeout", env: &["CORRAL_UPSTREAM__FIRST_BYTE_TIMEOUT", "AIOHTTP_CLIENT_TIMEOUT"], kind: EnvKind::OptionalSeconds, default: "600", doc: "Seconds to wait for an instance's response headers (sent with the first token, after any model load); 0 or empty waits without limit. Blob uploads, and pulls, pushes and creates that do not stream, answer only when done and are not held to it." },
    SettingDoc { key: "upstream.idle_timeout", env: &["CORRAL_UPSTREAM__IDLE_TIMEOUT", "AIOHTTP_CLIENT_TIMEOUT"], kind: EnvKind::OptionalSeconds, default: "300", doc: "Seconds a response may stay silent between two chunks; a stream that keeps producing is never cut. 0 or empty waits without limit." },
    SettingDoc { key: "upstream.discovery_timeout", env: &["CORRAL_UPSTREAM__DISCOVERY_TIMEOUT", "AIOHTTP_CLIENT_TIMEOUT_MODEL_LIST"], kind: EnvKind::Seconds, default: "3", doc: "Seconds each instance gets to answer a model listing before it is left out of it." },
    SettingDoc { key: "balance.policy", env: &["CORRAL_BALANCE__POLICY"], kind: EnvKind::Text, default: "model_affinity", doc: "How an instance is chosen among those holding a model: `model_affinity` (loaded and free first, then loadable without eviction, then least loaded), `least_outstanding`, `latency_ewma`, `round_robin` or `random` (Open WebUI's)." },
    SettingDoc { key: "balance.per_model", env: &[], kind: EnvKind::Text, default: "{}", doc: "A policy for particular models, e.g. `[balance.per_model]` `\"llama3.2:latest\" = \"least_outstanding\"` (file only)." },
    SettingDoc { key: "balance.slots", env: &["CORRAL_BALANCE__SLOTS"], kind: EnvKind::Text, default: "auto", doc: "Requests an instance runs at once per model, as Ollama's `OLLAMA_NUM_PARALLEL`: `auto` learns it per instance and model from the time to first token (starting at 1, growing while it stays flat, falling when requests queue at the instance, latency grows for every request, or the instance answers busy with 503 or 429); a number fixes it. Per connection: `slots`, a number or `auto`." },
    SettingDoc { key: "balance.max_loaded", env: &["CORRAL_BALANCE__MAX_LOADED"], kind: EnvKind::Int, default: "0 (unknown)", doc: "Models an instance keeps loaded at once, as Ollama's `OLLAMA_MAX_LOADED_MODELS`; lets `model_affinity` avoid loads that evict another model. Per connection: `max_loaded`." },
    SettingDoc { key: "balance.max_attempts", env: &["CORRAL_BALANCE__MAX_ATTEMPTS"], kind: EnvKind::Int, default: "3", doc: "Instances tried for one request when one fails before sending anything (1 disables failover)." },
    SettingDoc { key: "balance.failures_to_eject", env: &["CORRAL_BALANCE__FAILURES_TO_EJECT"], kind: EnvKind::Int, default: "3", doc: "Consecutive failures (connection errors, timeouts, 5xx answers) that take an instance out of rotation." },
    SettingDoc { key: "balance.ejection_time", env: &["CORRAL_BALANCE__EJECTION_TIME"], kind: EnvKind::Seconds, default: "5", doc: "Seconds an ejected instance stays out before one probe request may test it; doubles while it keeps failing, up to 2 minutes." },
    SettingDoc { key: "balance.health_interval", env: &["CORRAL_BALANCE__HEALTH_INTERVAL"], kind: EnvKind::Seconds, default: "5", doc: "Seconds between active health checks (`GET /api/version` on each enabled instance); 0 turns them off." },
    SettingDoc { key: "balance.queue_size", env: &["CORRAL_BALANCE__QUEUE_SIZE"], kind: EnvKind::Int, default: "64", doc: "Requests that may wait, per model, when every instance holding it is at its slot limit; beyond it, 503 with `Retry-After`." },
    SettingDoc { key: "balance.queue_timeout", env: &["CORRAL_BALANCE__QUEUE_TIMEOUT"], kind: EnvKind::Seconds, default: "60", doc: "Seconds a request may wait in that queue before it gets a 503 with `Retry-After`." },
    SettingDoc { key: "balance.queue_weights", env: &[], kind: EnvKind::Text, default: "{}", doc: "Weights in the models' queues by group, e.g. `[balance.queue_weights]` `research = 3`: waiting users take turns, and a user lets in as many requests per turn as the largest weight of their groups (1 to 100; 1 without one). Keys are group names or ids (file only)." },
    SettingDoc { key: "auth.webui_auth", env: &["CORRAL_AUTH__WEBUI_AUTH", "WEBUI_AUTH"], kind: EnvKind::Bool, default: "true", doc: "With false, Corral runs in Open WebUI's single-user mode." },
    SettingDoc { key: "auth.secret_key", env: &["CORRAL_AUTH__SECRET_KEY", "CORRAL_SECRET_KEY", "WEBUI_SECRET_KEY"], kind: EnvKind::Text, default: "(empty: generated once, kept in the database)", doc: "Secret that signs session tokens and seals the connection keys saved in the database." },
    SettingDoc { key: "auth.enable_signup", env: &["CORRAL_AUTH__ENABLE_SIGNUP", "ENABLE_SIGNUP"], kind: EnvKind::Bool, default: "true", doc: "Whether new accounts may sign up: the starting value, as Open WebUI's persistent setting. The first account always may, becomes admin and closes sign-up; an admin reopens it with `POST /api/v1/auths/admin/config`, whose saved value then wins." },
    SettingDoc { key: "auth.default_user_role", env: &["CORRAL_AUTH__DEFAULT_USER_ROLE", "DEFAULT_USER_ROLE"], kind: EnvKind::Text, default: "pending", doc: "Role of accounts after the first: pending, user or admin; the starting value, which an admin's saved one (`/api/v1/auths/admin/config`) replaces." },
    SettingDoc { key: "auth.jwt_expires_in", env: &["CORRAL_AUTH__JWT_EXPIRES_IN", "JWT_EXPIRES_IN"], kind: EnvKind::Text, default: "4w", doc: "Session token lifetime (`<n><ms|s|m|h|d|w>`…; `-1` for none)." },
    SettingDoc { key: "auth.enable_api_keys", env: &["CORRAL_AUTH__ENABLE_API_KEYS", "ENABLE_API_KEYS"], kind: EnvKind::Bool, default: "true", doc: "Whether users may create and use `sk-` API keys." },
    SettingDoc { key: "auth.bypass_model_access_control", env: &["CORRAL_AUTH__BYPASS_MODEL_ACCESS_CONTROL", "BYPASS_MODEL_ACCESS_CONTROL"], kind: EnvKind::Bool, default: "false", doc: "Let every user see and use every model." },
    SettingDoc { key: "auth.forward_user_info_headers", env: &["CORRAL_AUTH__FORWARD_USER_INFO_HEADERS", "ENABLE_FORWARD_USER_INFO_HEADERS"], kind: EnvKind::Bool, default: "false", doc: "Send `X-OpenWebUI-User-*` and chat id headers upstream." },
    SettingDoc { key: "auth.password_workers", env: &["CORRAL_AUTH__PASSWORD_WORKERS"], kind: EnvKind::Int, default: "0 (one per core, at most 4)", doc: "Threads that hash and verify passwords (argon2id, 19 MiB each); at most this many run at once whatever the load." },
    SettingDoc { key: "auth.password_queue", env: &["CORRAL_AUTH__PASSWORD_QUEUE"], kind: EnvKind::Int, default: "32", doc: "Sign-ins, sign-ups and password changes that may wait for a password thread; more get a JSON 503 with `Retry-After`." },
    SettingDoc { key: "auth.password_wait", env: &["CORRAL_AUTH__PASSWORD_WAIT"], kind: EnvKind::Seconds, default: "5", doc: "Seconds a waiting password check may wait for a thread before it gets a JSON 503 with `Retry-After`." },
    SettingDoc { key: "usage.enable", env: &["CORRAL_USAGE__ENABLE"], kind: EnvKind::Bool, default: "true", doc: "Keep a usage record of every model-running request (user, key, groups, model, instance, route, status, prompt and completion tokens, time to first token, duration) in the database; needs a database." },
    SettingDoc { key: "usage.flush_interval", env: &["CORRAL_USAGE__FLUSH_INTERVAL"], kind: EnvKind::Seconds, default: "1", doc: "Seconds between two batch writes of usage records (never a query per request); a crash loses at most this much usage, a graceful stop none." },
    SettingDoc { key: "usage.buffer_size", env: &["CORRAL_USAGE__BUFFER_SIZE"], kind: EnvKind::Int, default: "100000", doc: "Usage records kept in memory while they wait to be written, as during a database outage (about 300 bytes each); when it is full, new records are dropped, counted (`dropped` in `GET /api/v1/usage/status`) and logged." },
    SettingDoc { key: "usage.retention_days", env: &["CORRAL_USAGE__RETENTION_DAYS"], kind: EnvKind::Int, default: "0 (keep forever)", doc: "Days usage records are kept; older ones are deleted at start-up and every hour." },
    SettingDoc { key: "metrics.enable", env: &["CORRAL_METRICS__ENABLE"], kind: EnvKind::Bool, default: "true", doc: "Whether requests are counted and `GET /metrics` serves them in Prometheus' text format (docs/metrics.md); false answers it 404 and skips the counting." },
    SettingDoc { key: "metrics.token", env: &["CORRAL_METRICS__TOKEN"], kind: EnvKind::Text, default: "(empty)", doc: "A bearer token that may read `/metrics` (`Authorization: Bearer <token>`), for a Prometheus server. Empty: `/metrics` is open when Corral listens on a loopback address, else it needs an admin's credential." },
    SettingDoc { key: "metrics.per_key", env: &["CORRAL_METRICS__PER_KEY"], kind: EnvKind::Bool, default: "false", doc: "Whether token counts are also kept per API key (`corral_key_tokens_total`); one series per key and model, so off by default." },
];

/// The documented setting with this dotted key.
pub fn find(key: &str) -> Option<&'static SettingDoc> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The reference section of `docs/configuration.md`, generated from [`SETTINGS`].
pub fn reference_markdown() -> String {
    let mut out = String::from("| key | environment | default | meaning |\n| --- | --- | --- | --- |\n");
    for s in SETTINGS {
        let env = if s.env.is_empty() {
            "(file or admin API only)".to_owned()
        } else {
            s.env.iter().map(|e| format!("`{e}`")).collect::<Vec<_>>().join(", ")
        };
        out.push_str(&format!("| `{}` | {} | {} | {} |\n", s.key, env, s.default, s.doc));
    }
    out
}
