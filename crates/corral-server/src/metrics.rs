//! Prometheus metrics: what the gateway counts, and `GET /metrics`.
//!
//! Two kinds of figures, kept apart so the request path pays only for the first:
//!
//! - **Events** (requests, tokens, latencies, failovers, ejections, refreshes) are counters and
//!   histograms of [`prometheus_client`], bumped where they happen: a read-locked hash lookup
//!   and an atomic add or a short mutex per figure. A model-running request's figures are
//!   recorded once, from its finished exchange record (`Metrics` is an [`crate::exchange::Observer`]).
//! - **State** (requests in flight, queue depths, slots, loaded models, health, the config
//!   revision, the process's memory, files and CPU) is read when Prometheus scrapes, from what
//!   the gateway keeps anyway; nothing on the request path maintains it for the metrics.
//!
//! Names follow Prometheus' conventions: a `corral_` prefix, base units (`_seconds`, `_bytes`),
//! `_total` on counters. Instances are labelled by their index in `ollama.base_urls` (their
//! URLs may carry credentials). `docs/metrics.md` lists every metric.
//!
//! Other parts of the gateway report through the hooks on [`Metrics`]:
//! [`Metrics::usage_buffer_depth`] (usage records waiting to be written) and
//! [`Metrics::rate_limited`] (requests refused by a rate limit, by kind).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::state::Shared;

/// Request durations and time to first token: 10 ms to 10 minutes.
/// The `model` label of a request for a model no instance lists.
pub const UNKNOWN_MODEL: &str = "(unknown)";

const LATENCY_BUCKETS: [f64; 16] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Time per output token: 1 ms to 2 s.
const TOKEN_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 2.0];
/// The gateway's own time: 50 µs to 1 s.
const OVERHEAD_BUCKETS: [f64; 13] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Catalogue refreshes: 1 ms to 30 s.
const REFRESH_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0];

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}
fn per_token() -> Histogram {
    Histogram::new(TOKEN_BUCKETS)
}

/// A model-running request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route family (`chat`, `generate`, `openai_chat`, …).
    pub route: String,
    /// The catalogue model it ran.
    pub model: String,
    /// The instance's index, or empty when none answered.
    pub instance: String,
    /// `2xx`, `4xx`, `5xx`.
    pub status: &'static str,
}

/// Labels: model and instance.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelInstance {
    /// The catalogue model.
    pub model: String,
    /// The instance's index.
    pub instance: String,
}

/// Labels: model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    /// The catalogue model.
    pub model: String,
}

/// Labels: instance.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabel {
    /// The instance's index.
    pub instance: String,
}

/// Labels: tokens of a model on an instance, in or out.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The catalogue model.
    pub model: String,
    /// The instance's index.
    pub instance: String,
    /// `input` or `output`.
    pub r#type: &'static str,
}

/// Labels: tokens of a group's members (or a key) on a model.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OwnerTokenLabels {
    /// The group's id (`group`) or the key's id (`key`).
    pub owner: String,
    /// The catalogue model.
    pub model: String,
    /// `input` or `output`.
    pub r#type: &'static str,
}

/// Labels: an instance and a kind of event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceKind {
    /// The instance's index.
    pub instance: String,
    /// What happened.
    pub kind: &'static str,
}

/// Labels: one word.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What happened.
    pub kind: String,
}

/// Labels: a queue refusal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelReason {
    /// The catalogue model.
    pub model: String,
    /// `full`, `timeout` or `shutdown`.
    pub reason: &'static str,
}

/// Labels: every HTTP request, by route family and status class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `ollama`, `openai`, `owui`, `accounts`, `admin`, `meta`, `other`.
    pub family: &'static str,
    /// `1xx` … `5xx`.
    pub status: &'static str,
}

/// The gateway's event metrics, and the registry they are served from.
pub struct Metrics {
    enabled: bool,
    per_key: bool,
    registry: Registry,
    /// Every HTTP request, by family and status class.
    pub http_requests: Family<HttpLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<ModelLabel, Histogram>,
    ttft: Family<ModelLabel, Histogram>,
    tpot: Family<ModelLabel, Histogram>,
    overhead: Histogram,
    tokens: Family<TokenLabels, Counter>,
    group_tokens: Family<OwnerTokenLabels, Counter>,
    key_tokens: Family<OwnerTokenLabels, Counter>,
    queue_wait: Family<ModelLabel, Histogram>,
    queue_refused: Family<ModelReason, Counter>,
    ejections: Family<InstanceLabel, Counter>,
    failovers: Family<ModelLabel, Counter>,
    retried: Family<ModelLabel, Counter>,
    cold_loads: Family<ModelInstance, Counter>,
    upstream_errors: Family<InstanceKind, Counter>,
    outcomes: Family<KindLabel, Counter>,
    catalogue_refreshes: Counter,
    catalogue_refresh_seconds: Histogram,
    database_errors: Counter,
    rate_limited: Family<KindLabel, Counter>,
    usage_buffer: AtomicI64,
    started: Instant,
    scrapes: AtomicU64,
    /// Resolved handles, so the request path bumps figures without building label sets.
    cache: Cache,
}

/// The figures a model-running request bumps, resolved for one route, model, instance and
/// status class. prometheus-client's metrics are shared handles: a clone counts into the
/// same series as its family's.
struct RequestHandles {
    /// The model label, for the figures made on first use.
    model: ModelLabel,
    /// The instance label; `None` when no instance answered (no token series then).
    instance: Option<String>,
    requests: Counter,
    duration: Histogram,
    // Made when first bumped, as the families would: a request without them adds no series.
    ttft: OnceLock<Histogram>,
    tpot: OnceLock<Histogram>,
    retried: OnceLock<Counter>,
    /// Input and output tokens.
    tokens: [OnceLock<Counter>; 2],
}

/// What identifies a [`RequestHandles`] beside its model.
#[derive(Clone, Copy, PartialEq, Eq)]
struct RequestKey {
    route: crate::exchange::Route,
    instance: Option<usize>,
    status: &'static str,
}

/// One model's request handles, by the rest of their labels.
type ByKey = Vec<(RequestKey, Arc<RequestHandles>)>;

/// Handles resolved on first use. The label sets they stand for are the families' own, so
/// they are bounded as the series are (models the catalogue lists, instances, fixed words).
#[derive(Default)]
struct Cache {
    /// By model name (looked up by `&str`, no allocation), then a short list by key.
    requests: RwLock<foldhash::HashMap<String, ByKey>>,
    /// Queue waits by model name.
    queue_wait: RwLock<foldhash::HashMap<String, Histogram>>,
    /// HTTP requests by route family and status class.
    http: [[OnceLock<Counter>; 5]; FAMILIES.len()],
    /// Outcomes: completed, cancelled, failed.
    outcomes: [OnceLock<Counter>; 3],
}

/// Route families of [`family`], in a fixed order.
const FAMILIES: [&str; 6] = ["openai", "accounts", "owui", "ollama", "meta", "other"];
/// Status classes of [`status_class`], in a fixed order.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Metrics {
    /// The metrics of a gateway; with `enabled` false every hook returns at once.
    pub fn new(enabled: bool, per_key: bool) -> Metrics {
        let mut registry = Registry::with_prefix("corral");
        let mut m = Metrics {
            enabled,
            per_key,
            http_requests: Family::default(),
            requests: Family::default(),
            duration: Family::new_with_constructor(latency),
            ttft: Family::new_with_constructor(latency),
            tpot: Family::new_with_constructor(per_token),
            overhead: Histogram::new(OVERHEAD_BUCKETS),
            tokens: Family::default(),
            group_tokens: Family::default(),
            key_tokens: Family::default(),
            queue_wait: Family::new_with_constructor(latency),
            queue_refused: Family::default(),
            ejections: Family::default(),
            failovers: Family::default(),
            retried: Family::default(),
            cold_loads: Family::default(),
            upstream_errors: Family::default(),
            outcomes: Family::default(),
            catalogue_refreshes: Counter::default(),
            catalogue_refresh_seconds: Histogram::new(REFRESH_BUCKETS),
            database_errors: Counter::default(),
            rate_limited: Family::default(),
            usage_buffer: AtomicI64::new(0),
            started: Instant::now(),
            scrapes: AtomicU64::new(0),
            registry: Registry::default(),
            cache: Cache::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests answered, by route family and status class",
            m.http_requests.clone(),
        );
        r.register(
            "requests",
            "Model-running requests finished, by route, model, instance and status class",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Model-running requests: arrival to the answer's end",
            m.duration.clone(),
        );
        r.register(
            "time_to_first_token_seconds",
            "Model-running requests: arrival to the first byte of the answer relayed",
            m.ttft.clone(),
        );
        r.register(
            "time_per_output_token_seconds",
            "Model-running requests with output tokens: (duration - time to first token) / (output tokens - 1)",
            m.tpot.clone(),
        );
        r.register(
            "overhead_seconds",
            "The gateway's own time per model-running request: arrival to the upstream request sent, less the queue wait",
            m.overhead.clone(),
        );
        r.register(
            "tokens",
            "Tokens by model, instance and type (input, output)",
            m.tokens.clone(),
        );
        r.register(
            "group_tokens",
            "Tokens by user group (owner), model and type; a user in several groups counts in each",
            m.group_tokens.clone(),
        );
        r.register(
            "key_tokens",
            "Tokens by API key id (owner), model and type; kept only with metrics.per_key",
            m.key_tokens.clone(),
        );
        r.register(
            "queue_wait_seconds",
            "Time requests waited for a slot in their model's admission queue (0 when they did not wait)",
            m.queue_wait.clone(),
        );
        r.register(
            "queue_refused",
            "Requests refused by a model's admission queue: full, timeout, shutdown",
            m.queue_refused.clone(),
        );
        r.register(
            "ejections",
            "Times an instance was taken out of rotation",
            m.ejections.clone(),
        );
        r.register(
            "failovers",
            "Times a request moved to another instance after one failed before answering",
            m.failovers.clone(),
        );
        r.register(
            "retried_requests",
            "Model-running requests that took more than one attempt",
            m.retried.clone(),
        );
        r.register(
            "cold_loads",
            "Requests sent where their model was not known to be loaded",
            m.cold_loads.clone(),
        );
        r.register(
            "upstream_errors",
            "Upstream failures by instance and kind: connect, timeout, status_5xx, busy, stream",
            m.upstream_errors.clone(),
        );
        r.register(
            "request_outcomes",
            "Model-running requests by outcome: completed, cancelled (client gone), failed",
            m.outcomes.clone(),
        );
        r.register(
            "catalogue_refreshes",
            "Catalogue refreshes (every instance's listings asked)",
            m.catalogue_refreshes.clone(),
        );
        r.register(
            "catalogue_refresh_duration_seconds",
            "How long catalogue refreshes took",
            m.catalogue_refresh_seconds.clone(),
        );
        r.register(
            "database_errors",
            "Failed database calls of the watcher (reloads, revision polls)",
            m.database_errors.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused by a rate limit, by kind",
            m.rate_limited.clone(),
        );
        m.registry = registry;
        m
    }

    /// Whether requests are counted and `/metrics` is served.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Counts one HTTP request of route `family` ([`family`]) answered with `status`.
    pub fn http_request_in(&self, family: &'static str, status: u16) {
        if !self.enabled {
            return;
        }
        let class = status_class(status);
        let (Some(f), Some(c)) = (
            FAMILIES.iter().position(|x| *x == family),
            CLASSES.iter().position(|x| *x == class),
        ) else {
            self.http_requests
                .get_or_create(&HttpLabels { family, status: class })
                .inc();
            return;
        };
        self.cache.http[f][c]
            .get_or_init(|| {
                self.http_requests
                    .get_or_create(&HttpLabels { family, status: class })
                    .clone()
            })
            .inc();
    }

    /// An instance was taken out of rotation.
    pub fn ejected(&self, instance: usize) {
        if self.enabled {
            self.ejections
                .get_or_create(&InstanceLabel {
                    instance: instance.to_string(),
                })
                .inc();
        }
    }

    /// A request for `model` moves on from an instance that failed before answering.
    pub fn failover(&self, model: &str) {
        if self.enabled {
            self.failovers
                .get_or_create(&ModelLabel {
                    model: model.to_owned(),
                })
                .inc();
        }
    }

    /// A request for `model` was sent to `instance` where the model was not known to be loaded.
    pub fn cold_load(&self, model: &str, instance: usize) {
        if self.enabled {
            self.cold_loads
                .get_or_create(&ModelInstance {
                    model: model.to_owned(),
                    instance: instance.to_string(),
                })
                .inc();
        }
    }

    /// An upstream failure on `instance`: `connect`, `timeout`, `status_5xx`, `busy`, `stream`.
    pub fn upstream_error(&self, instance: usize, kind: &'static str) {
        if self.enabled {
            self.upstream_errors
                .get_or_create(&InstanceKind {
                    instance: instance.to_string(),
                    kind,
                })
                .inc();
        }
    }

    /// A request for `model` was let in after waiting `waited` in its admission queue (zero:
    /// it started at once).
    pub fn queue_waited(&self, model: &str, waited: Duration) {
        if !self.enabled {
            return;
        }
        let seconds = waited.as_secs_f64();
        if let Some(h) = read(&self.cache.queue_wait).get(model) {
            h.observe(seconds);
            return;
        }
        let h = self
            .queue_wait
            .get_or_create(&ModelLabel {
                model: model.to_owned(),
            })
            .clone();
        h.observe(seconds);
        write(&self.cache.queue_wait).insert(model.to_owned(), h);
    }

    /// A request for `model` was refused by its admission queue (`full`, `timeout`, `shutdown`).
    pub fn queue_refused(&self, model: &str, reason: &'static str) {
        if self.enabled {
            self.queue_refused
                .get_or_create(&ModelReason {
                    model: model.to_owned(),
                    reason,
                })
                .inc();
        }
    }

    /// A catalogue refresh took `took`.
    pub fn catalogue_refreshed(&self, took: Duration) {
        if self.enabled {
            self.catalogue_refreshes.inc();
            self.catalogue_refresh_seconds.observe(took.as_secs_f64());
        }
    }

    /// A database call of the watcher failed.
    pub fn database_error(&self) {
        if self.enabled {
            self.database_errors.inc();
        }
    }

    /// Hook for usage metering: the usage records waiting in memory to be written, after each
    /// change (served as the gauge `corral_usage_buffer_depth`).
    pub fn usage_buffer_depth(&self, depth: usize) {
        self.usage_buffer
            .store(i64::try_from(depth).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Hook for rate limits: a request refused by a limit of `kind` (e.g. `requests`, `tokens`,
    /// `concurrency`; served as `corral_rate_limited_total{kind}`).
    pub fn rate_limited(&self, kind: &str) {
        if self.enabled {
            self.rate_limited
                .get_or_create(&KindLabel { kind: kind.to_owned() })
                .inc();
        }
    }

    /// The text Prometheus scrapes: the event metrics, then the state read now.
    pub fn render(&self, shared: &Shared) -> String {
        self.scrapes.fetch_add(1, Ordering::Relaxed);
        self.usage_buffer_depth(shared.usage.pending());
        let mut out = String::with_capacity(16 * 1024);
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        let state = state_registry(shared, self);
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &state);
        out
    }
}

impl crate::exchange::Observer for Metrics {
    /// Records one finished model-running request: its count, latencies, tokens and outcome.
    fn finished(&self, f: &crate::exchange::Finished) {
        if !self.enabled {
            return;
        }
        // A model no instance lists is the client's own text: one label for all of them, so
        // requests for made-up names cannot grow the series without bound.
        let model_name: &str = if f.model_run.is_empty() {
            UNKNOWN_MODEL
        } else {
            &f.model_run
        };
        let h = self.request_handles(f, model_name);
        h.requests.inc();
        h.duration.observe(f.duration.as_secs_f64());
        if let Some(ttft) = f.ttft {
            h.ttft
                .get_or_init(|| self.ttft.get_or_create(&h.model).clone())
                .observe(ttft.as_secs_f64());
            if f.output_tokens > 1 {
                let per = f.duration.saturating_sub(ttft).as_secs_f64() / (f.output_tokens - 1) as f64;
                h.tpot
                    .get_or_init(|| self.tpot.get_or_create(&h.model).clone())
                    .observe(per);
            }
        }
        if let Some(overhead) = f.overhead {
            self.overhead.observe(overhead.as_secs_f64());
        }
        if f.attempts > 1 {
            h.retried
                .get_or_init(|| self.retried.get_or_create(&h.model).clone())
                .inc();
        }
        if f.outcome == crate::exchange::Outcome::Failed && f.status < 400 && f.status != 0 {
            // The instance answered, then broke off or went silent.
            if let Some(idx) = f.instance {
                self.upstream_error(idx, "stream");
            }
        }
        let outcome = f.outcome as usize;
        self.cache.outcomes[outcome]
            .get_or_init(|| {
                self.outcomes
                    .get_or_create(&KindLabel {
                        kind: f.outcome.as_str().to_owned(),
                    })
                    .clone()
            })
            .inc();
        if let Some(instance) = &h.instance {
            for (i, (kind, n)) in [("input", f.input_tokens), ("output", f.output_tokens)]
                .into_iter()
                .enumerate()
            {
                if n > 0 {
                    h.tokens[i]
                        .get_or_init(|| {
                            self.tokens
                                .get_or_create(&TokenLabels {
                                    model: h.model.model.clone(),
                                    instance: instance.clone(),
                                    r#type: kind,
                                })
                                .clone()
                        })
                        .inc_by(n);
                }
            }
        }
        if f.groups.is_empty() && (f.key_id.is_none() || !self.per_key) {
            return;
        }
        for (kind, n) in [("input", f.input_tokens), ("output", f.output_tokens)] {
            if n == 0 {
                continue;
            }
            for group in &f.groups {
                self.group_tokens
                    .get_or_create(&OwnerTokenLabels {
                        owner: group.clone(),
                        model: model_name.to_owned(),
                        r#type: kind,
                    })
                    .inc_by(n);
            }
            if let Some(key) = f.key_id.as_ref().filter(|_| self.per_key) {
                self.key_tokens
                    .get_or_create(&OwnerTokenLabels {
                        owner: key.to_string(),
                        model: model_name.to_owned(),
                        r#type: kind,
                    })
                    .inc_by(n);
            }
        }
    }
}

impl Metrics {
    /// The handles of a finished request's series: looked up by the model's name under a read
    /// lock; resolved through the families (and kept) the first time.
    fn request_handles(&self, f: &crate::exchange::Finished, model: &str) -> Arc<RequestHandles> {
        let key = RequestKey {
            route: f.route,
            instance: f.instance,
            status: status_class(f.status),
        };
        if let Some(list) = read(&self.cache.requests).get(model) {
            if let Some((_, h)) = list.iter().find(|(k, _)| *k == key) {
                return h.clone();
            }
        }
        let instance = f.instance.map(|i| i.to_string()).unwrap_or_default();
        let by_model = ModelLabel {
            model: model.to_owned(),
        };
        let h = Arc::new(RequestHandles {
            requests: self
                .requests
                .get_or_create(&RequestLabels {
                    route: f.route.as_str().to_owned(),
                    model: model.to_owned(),
                    instance: instance.clone(),
                    status: key.status,
                })
                .clone(),
            duration: self.duration.get_or_create(&by_model).clone(),
            ttft: OnceLock::new(),
            tpot: OnceLock::new(),
            retried: OnceLock::new(),
            tokens: [OnceLock::new(), OnceLock::new()],
            model: by_model,
            instance: f.instance.map(|_| instance),
        });
        write(&self.cache.requests)
            .entry(model.to_owned())
            .or_default()
            .push((key, h.clone()));
        h
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `2xx` and friends.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The route family of a path, for the HTTP request counter.
pub fn family(path: &str) -> &'static str {
    if path.starts_with("/v1/") || path == "/api/chat/completions" || path == "/api/models" {
        "openai"
    } else if path.starts_with("/api/v1/") {
        "accounts"
    } else if path.starts_with("/ollama") {
        "owui"
    } else if path.starts_with("/api/") {
        "ollama"
    } else if matches!(path, "/health" | "/ready" | "/metrics" | "/openapi.json" | "/" | "") {
        "meta"
    } else {
        "other"
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    instance: String,
    state: &'static str,
}

/// The state metrics, read now into a registry made for this scrape.
fn state_registry(shared: &Shared, metrics: &Metrics) -> Registry {
    let mut r = Registry::with_prefix("corral");
    let settings = shared.settings();
    let now = Instant::now();

    let in_flight = Family::<ModelInstance, Gauge>::default();
    let slots_limit = Family::<ModelInstance, Gauge>::default();
    let loaded = Family::<InstanceLabel, Gauge>::default();
    let health = Family::<HealthLabels, Gauge>::default();
    let instance_in_flight = Family::<InstanceLabel, Gauge>::default();
    for (idx, url) in settings.ollama.base_urls.iter().enumerate() {
        let label = InstanceLabel {
            instance: idx.to_string(),
        };
        let instance = shared.instances.get(url.trim_end_matches('/'));
        let seen = instance.state(now);
        instance_in_flight.get_or_create(&label).set(gauge(seen.in_flight));
        for (model, n) in &seen.per_model {
            in_flight
                .get_or_create(&ModelInstance {
                    model: model.clone(),
                    instance: label.instance.clone(),
                })
                .set(gauge(*n));
        }
        let fixed = settings
            .ollama
            .connection(idx)
            .slots
            .unwrap_or(settings.balance.slots)
            .fixed();
        // Every model with a learned limit or a request in flight there.
        let models = seen
            .limits
            .iter()
            .map(|(m, _)| m)
            .chain(seen.per_model.iter().map(|(m, _)| m));
        for model in models {
            let learned = seen.limits.iter().find(|(m, _)| m == model).map_or(1, |(_, l)| *l);
            slots_limit
                .get_or_create(&ModelInstance {
                    model: model.clone(),
                    instance: label.instance.clone(),
                })
                .set(gauge(fixed.unwrap_or(learned)));
        }
        let listed = shared
            .fleet
            .snapshot()
            .map_or(0, |snap| snap.catalogue.loaded_on(idx).len());
        loaded
            .get_or_create(&label)
            .set(gauge(if seen.loaded > 0 { seen.loaded } else { listed }));
        for state in ["healthy", "half_open", "ejected", "unchecked"] {
            let value = i64::from(seen.health == state);
            health
                .get_or_create(&HealthLabels {
                    instance: label.instance.clone(),
                    state,
                })
                .set(value);
        }
    }
    r.register(
        "instance_in_flight",
        "Model-running requests in flight per instance",
        instance_in_flight,
    );
    r.register(
        "in_flight",
        "Model-running requests in flight (slots in use) per instance and model",
        in_flight,
    );
    r.register(
        "slots_limit",
        "Slots per instance and model: the fixed setting, or what auto slots learned",
        slots_limit,
    );
    r.register(
        "loaded_models",
        "Models loaded per instance, as the gateway's traffic (else /api/ps) says",
        loaded,
    );
    r.register(
        "instance_health",
        "1 for the instance's health state (healthy, half_open, ejected, unchecked: no check or answer yet)",
        health,
    );

    let depth = Family::<ModelLabel, Gauge>::default();
    for (model, users) in shared.instances.queue_depths() {
        let n: usize = users.iter().map(|(_, n)| n).sum();
        depth.get_or_create(&ModelLabel { model }).set(gauge(n));
    }
    r.register("queue_depth", "Requests waiting in each model's admission queue", depth);

    let revision = Gauge::<i64>::default();
    revision.set(shared.config_revision());
    r.register(
        "config_revision",
        "The database configuration revision applied (-1: none)",
        revision,
    );
    let models = Gauge::<i64>::default();
    models.set(
        shared
            .fleet
            .snapshot()
            .map_or(0, |s| gauge(s.catalogue.entries().len())),
    );
    r.register("catalogue_models", "Models in the merged catalogue", models);
    let buffer = Gauge::<i64>::default();
    buffer.set(metrics.usage_buffer.load(Ordering::Relaxed));
    r.register(
        "usage_buffer_depth",
        "Usage records waiting in memory to be written",
        buffer,
    );
    let ready_db = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    ready_db.set(shared.lifecycle.database_silent_for().map_or(-1.0, |d| d.as_secs_f64()));
    r.register(
        "database_silent_seconds",
        "Seconds since the database last answered (-1: never, or no database)",
        ready_db,
    );
    let reloads = Counter::<u64>::default();
    reloads.inc_by(shared.auth.reloads());
    r.register(
        "directory_reloads",
        "Loads of the users, keys and model records from the database",
        reloads,
    );
    let draining = Gauge::<i64>::default();
    draining.set(i64::from(shared.lifecycle.draining()));
    r.register("draining", "1 once a stop signal came", draining);

    process(&mut r, metrics);
    r
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The process's resident memory, open files and CPU time, read from `/proc/self`.
fn process(r: &mut Registry, metrics: &Metrics) {
    let rss = Gauge::<i64>::default();
    let fds = Gauge::<i64>::default();
    let cpu = Counter::<f64, std::sync::atomic::AtomicU64>::default();
    let uptime = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    if let Some(bytes) = read_rss() {
        rss.set(bytes);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        fds.set(gauge(dir.count()));
    }
    if let Some(secs) = read_cpu_seconds() {
        cpu.inc_by(secs);
    }
    uptime.set(metrics.started.elapsed().as_secs_f64());
    r.register(
        "process_resident_memory_bytes",
        "Resident memory of the gateway process",
        rss,
    );
    r.register("process_open_fds", "Open file descriptors of the gateway process", fds);
    r.register(
        "process_cpu_seconds",
        "CPU time (user and system) the gateway process used",
        cpu,
    );
    r.register(
        "uptime_seconds",
        "Seconds since the gateway's metrics were set up",
        uptime,
    );
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn read_rss() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime of `/proc/self/stat`, in seconds (clock ticks of 1/100 s, Linux's `USER_HZ`).
fn read_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: fields count from after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_figures_read_from_proc() {
        assert!(super::read_rss().is_some_and(|b| b > 0));
        assert!(super::read_cpu_seconds().is_some());
    }

    #[test]
    fn status_classes_and_families() {
        assert_eq!(super::status_class(204), "2xx");
        assert_eq!(super::status_class(503), "5xx");
        assert_eq!(super::family("/api/chat"), "ollama");
        assert_eq!(super::family("/v1/chat/completions"), "openai");
        assert_eq!(super::family("/ollama/api/tags"), "owui");
        assert_eq!(super::family("/api/v1/auths/signin"), "accounts");
        assert_eq!(super::family("/metrics"), "meta");
    }
}
