//! State shared by every worker: the settings snapshot, the fleet's catalogue, the
//! balancing policy and the store.
//!
//! Requests read `Arc` snapshots without locking; a change swaps in a new snapshot. The
//! store is touched only off the request path: on admin writes and by the watcher that
//! picks up other replicas' changes.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use corral_config::{OllamaSettings, Settings};
use corral_store::{Sealer, Store, StoredOllama};

use crate::error::AppError;
use crate::fleet::Fleet;

/// State shared by every worker.
pub struct Shared {
    /// Defaults, file and environment: every layer below the database.
    base: Settings,
    settings: ArcSwap<Settings>,
    store: Option<Store>,
    /// Seals and opens the connection keys saved in the store, with a key derived from the secret key.
    sealer: Option<Sealer>,
    /// The `config` revision the current settings were built from.
    config_revision: AtomicI64,
    /// The merged catalogue and its refresh machinery.
    pub fleet: Fleet,
    /// What the gateway's own traffic says about each instance.
    pub instances: crate::instances::Instances,
    /// Users, keys, sessions and model records, in memory.
    pub auth: crate::auth::Auth,
    /// The client-address, unauthenticated-cap, body-deadline and password-pool guard.
    pub guard: crate::guard::Guard,
    /// Serving or draining, and when the database last answered.
    pub lifecycle: crate::lifecycle::Lifecycle,
    /// Usage records waiting to be written.
    pub usage: Arc<crate::usage::UsageBuffer>,
    /// Counts against the limits per key, user and group.
    pub limiter: crate::limits::Limiter,
    /// What Prometheus scrapes (`GET /metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// OpenTelemetry spans, exported over OTLP when configured.
    pub telemetry: crate::telemetry::Telemetry,
    /// Whatever watches finished model-running requests (usage, metrics, limits).
    pub exchanges: crate::exchange::Exchanges,
    picks: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Wraps the start-up settings, with no database.
    pub fn new(settings: Settings) -> Shared {
        let guard = crate::guard::Guard::new(&settings);
        let metrics = Arc::new(crate::metrics::Metrics::new(
            settings.metrics.enable,
            settings.metrics.per_key,
        ));
        let exchanges = crate::exchange::Exchanges::default();
        if metrics.enabled() {
            exchanges.observe(metrics.clone());
        }
        Shared {
            settings: ArcSwap::from_pointee(settings.clone()),
            base: settings,
            store: None,
            sealer: None,
            config_revision: AtomicI64::new(-1),
            fleet: Fleet::default(),
            instances: crate::instances::Instances::default(),
            auth: crate::auth::Auth::default(),
            guard,
            lifecycle: crate::lifecycle::Lifecycle::default(),
            usage: Arc::default(),
            limiter: crate::limits::Limiter::default(),
            metrics,
            telemetry: crate::telemetry::Telemetry::default(),
            exchanges,
            picks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Wraps the start-up settings and the store, applying what admins saved in it.
    /// Blocks on the database: call it at start-up, not on an executor.
    ///
    /// Connection keys still stored in clear text (saved by a release before keys were sealed) are
    /// sealed first, under a key derived from the secret key.
    pub fn with_store(settings: Settings, store: Store) -> Result<Shared, AppError> {
        let mut shared = Shared {
            store: Some(store.clone()),
            ..Shared::new(settings)
        };
        shared.auth.enable(&shared.base.auth.secret_key, &store)?;
        let sealer = Sealer::from_secret(&shared.auth.secret());
        let sealed = store.seal_clear_connection_keys(&sealer)?;
        if sealed > 0 {
            tracing::info!(sealed, "connection keys stored in clear text are now sealed");
        }
        let revision = store.revision("config")?;
        let stored = store.load_ollama(&sealer)?;
        shared.sealer = Some(sealer);
        shared.lifecycle.database_answered();
        if let Some(stored) = stored {
            let ollama = shared.ollama_from_stored(stored);
            shared.apply_stored(ollama, revision)?;
        } else {
            shared.config_revision.store(revision, Ordering::Release);
        }
        Ok(shared)
    }

    /// The sealer for connection keys, when there is a store.
    pub fn sealer(&self) -> Option<&Sealer> {
        self.sealer.as_ref()
    }

    /// The Ollama settings a configuration loaded from the store describes.
    ///
    /// A connection whose saved key does not open (the secret key changed since it was saved) is
    /// disabled, with an error naming it in the log: sending its requests without their key would only
    /// fail upstream. Its other settings stay, so an admin sees it and enters the key again.
    pub fn ollama_from_stored(&self, stored: StoredOllama) -> OllamaSettings {
        let mut ollama = OllamaSettings {
            enable: stored.enable,
            base_urls: stored.base_urls,
            api_configs: stored.api_configs,
            models_cache_ttl: self.base.ollama.models_cache_ttl,
        };
        for (idx, problem) in stored.unreadable_keys {
            let url = ollama.base_urls.get(idx).cloned().unwrap_or_default();
            tracing::error!(
                idx,
                url = %corral_config::loggable_url(&url),
                %problem,
                "the saved key of this connection does not open with the current secret key (auth.secret_key); \
                 the connection is disabled until an admin saves its key again or the previous secret key is restored"
            );
            let conn = ollama.api_configs.entry(idx.to_string()).or_default();
            conn.key = None;
            conn.enable = Some(false);
        }
        ollama
    }

    /// The current settings; cheap, lock-free.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// The store, if Corral has a database.
    pub fn store(&self) -> Option<Store> {
        self.store.clone()
    }

    /// A number per pick, for round robin.
    pub fn next_pick(&self) -> u64 {
        self.picks.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether instance `idx` is ejected now (out of rotation until its ejection ends).
    pub fn is_ejected(&self, idx: usize) -> bool {
        let settings = self.settings();
        let Some(url) = settings.ollama.base_urls.get(idx) else {
            return false;
        };
        let instance = self.instances.get(url.trim_end_matches('/'));
        matches!(
            instance.health(std::time::Instant::now()),
            corral_balance::HealthState::Ejected { .. }
        )
    }

    /// Writes what is buffered in memory to the database: the API keys' last-use times and the
    /// usage records. Blocking: the shutdown calls it off the executor once the last request has
    /// finished. Usage records the database does not take now are lost, and the log says how many.
    pub fn flush_buffers(&self) {
        self.telemetry.flush();
        let Some(store) = &self.store else { return };
        self.auth.flush_key_uses(store, true);
        if self.usage.enabled() {
            match self.usage.write_to(store) {
                Ok(n) => tracing::info!(written = n, "usage records written"),
                Err(e) => tracing::error!(
                    error = %e,
                    lost = self.usage.pending(),
                    "usage records could not be written before exiting; they are lost"
                ),
            }
        }
        if let Err(err) = self.limiter.sync(store) {
            tracing::warn!(error = %err, "could not write the last limit counts");
        }
    }

    /// The `config` revision the current settings reflect.
    pub fn config_revision(&self) -> i64 {
        self.config_revision.load(Ordering::Acquire)
    }

    /// Replaces the settings for every request that starts after this call, and marks the
    /// catalogue stale.
    pub fn set_settings(&self, settings: Settings) {
        self.settings.store(Arc::new(settings));
        self.fleet.invalidate();
    }

    /// Applies an Ollama configuration saved in the database at `revision`, over the lower
    /// layers. An older revision than the one applied is ignored; an invalid one is refused,
    /// and the settings stay as they were.
    pub fn apply_stored(&self, ollama: OllamaSettings, revision: i64) -> Result<(), AppError> {
        if revision < self.config_revision() {
            return Ok(());
        }
        let next = self.base.with_stored_ollama(ollama).map_err(|e| {
            // Unusable, it is still seen: the watcher reports it once, not at every poll.
            self.config_revision.store(revision, Ordering::Release);
            AppError::Internal(format!("stored configuration is invalid: {e}"))
        })?;
        self.set_settings(next);
        self.config_revision.store(revision, Ordering::Release);
        Ok(())
    }
}
