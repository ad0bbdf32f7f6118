//! The fleet's model catalogue, kept in memory and refreshed off the request path.
//!
//! A background task refreshes the catalogue on a timer. Requests read the current snapshot
//! without locking; one that needs a fresher one (a listing past its TTL, a model that is not
//! in the snapshot) triggers a refresh and waits for it, and concurrent requests share that
//! one refresh instead of each asking every instance.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use corral_registry::Catalogue;
use tokio::sync::Notify;

use crate::discovery::{fetch_listings, Listings};
use crate::state::Shared;

/// One merged view of the fleet, as fetched at one moment.
pub struct Snapshot {
    /// The merged catalogue.
    pub catalogue: Catalogue,
    /// The raw listings it was merged from.
    pub listings: Listings,
    /// When the listings were fetched.
    pub fetched_at: Instant,
    /// The settings generation it was fetched with.
    pub generation: u64,
    /// Each instance's last `/api/tags` answer, by base URL, kept while it is silent: a model
    /// asked for then is told apart as "on an instance that is down" or "unknown".
    pub last_seen: Arc<std::collections::HashMap<String, serde_json::Value>>,
}

/// The catalogue and the machinery that keeps it fresh.
#[derive(Default)]
pub struct Fleet {
    snapshot: ArcSwapOption<Snapshot>,
    refreshing: AtomicBool,
    refreshed: Notify,
    generation: AtomicU64,
}

impl Fleet {
    /// The current snapshot, if any refresh has completed.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full()
    }

    /// Marks the settings as changed: the next read refreshes.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The settings generation, bumped by [`Fleet::invalidate`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A snapshot no older than `max_age` and taken with the current settings, refreshing
    /// (once, shared with concurrent callers) if needed. A refresh that ends after the call
    /// began is fresh enough whatever `max_age` is, so callers that wait share it.
    pub async fn fresh(&self, shared: &Shared, client: &awc::Client, max_age: Duration) -> Arc<Snapshot> {
        let asked = Instant::now();
        loop {
            if let Some(snap) = self.snapshot() {
                let recent = snap.fetched_at.elapsed() <= max_age || snap.fetched_at >= asked;
                if snap.generation == self.generation() && recent {
                    return snap;
                }
            }
            let notified = self.refreshed.notified();
            if self.refreshing.swap(true, Ordering::AcqRel) {
                // Someone else is refreshing; wait for them, then look again.
                notified.await;
                continue;
            }
            // Lets the others go however this refresh ends, the caller going away included.
            let _turn = Refreshing(self);
            return self.refresh_now(shared, client).await;
        }
    }

    /// Fetches every instance's listings and swaps in the merged catalogue.
    pub async fn refresh_now(&self, shared: &Shared, client: &awc::Client) -> Arc<Snapshot> {
        let generation = self.generation();
        let settings = shared.settings();
        let out = |idx: usize| shared.is_ejected(idx);
        let previous = self.snapshot().filter(|p| p.generation == generation);
        let began = Instant::now();
        let listings = fetch_listings(client, &settings, &out, previous.as_ref().map(|p| &p.listings)).await;
        shared.metrics.catalogue_refreshed(began.elapsed());
        let catalogue = crate::catalogue::merge(&settings, &listings);
        let mut last_seen = self
            .snapshot()
            .map(|p| p.last_seen.as_ref().clone())
            .unwrap_or_default();
        for (url, tags) in settings.ollama.base_urls.iter().zip(&listings.tags) {
            if let Some(tags) = tags {
                shared.instances.get(url.trim_end_matches('/')).mark_seen();
                last_seen.insert(url.trim_end_matches('/').to_owned(), tags.clone());
            }
        }
        let snap = Arc::new(Snapshot {
            catalogue,
            listings,
            fetched_at: Instant::now(),
            generation,
            last_seen: Arc::new(last_seen),
        });
        self.snapshot.store(Some(snap.clone()));
        snap
    }
}

/// The refresh a request is running; when it ends, waiters are woken to look again.
struct Refreshing<'a>(&'a Fleet);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
        self.0.refreshed.notify_waiters();
    }
}

/// Keeps the catalogue fresh in the background, on the current actix system.
pub fn spawn_refresher(shared: Arc<Shared>) {
    actix_rt::spawn(async move {
        let client = crate::proxy::client(&shared.settings().upstream);
        loop {
            shared.fleet.refresh_now(&shared, &client).await;
            tokio::time::sleep(refresh_interval(&shared)).await;
        }
    });
}

/// How often the background task refreshes: the cache TTL, within 2 to 30 seconds.
fn refresh_interval(shared: &Shared) -> Duration {
    let ttl = shared.settings().ollama.models_cache_ttl;
    Duration::from_secs(ttl.clamp(2, 30))
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::Ordering;

    use super::{Fleet, Refreshing};

    #[test]
    fn a_refresh_dropped_midway_lets_the_next_caller_refresh() {
        let fleet = Fleet::default();
        let mut refresh = Box::pin(async {
            fleet.refreshing.store(true, Ordering::Release);
            let _turn = Refreshing(&fleet);
            std::future::pending::<()>().await;
        });
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(refresh.as_mut().poll(&mut cx).is_pending());
        assert!(fleet.refreshing.load(Ordering::Acquire));
        drop(refresh);
        assert!(!fleet.refreshing.load(Ordering::Acquire), "the flag was left set");
    }
}
