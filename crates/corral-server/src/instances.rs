//! What the gateway knows about each instance from its own traffic: requests in flight
//! (per model), recent time to first token, which models it recently served, the adaptive
//! concurrency limit per model, and health; and the per-model admission queues.
//!
//! Keyed by base URL, so the knowledge follows an instance when the list is reordered.
//! Locks here are held for a few instructions and never across an await.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use corral_balance::{AdaptiveLimit, Ewma, Failure, Health, HealthPolicy, HealthState, WaitQueue};
use dashmap::DashMap;

/// How long a model counts as loaded after the gateway saw it serve (Ollama's default
/// keep-alive).
const LOADED_FOR: Duration = Duration::from_secs(300);

/// Maps looked up on every request, by a model's name or an instance's URL: `foldhash`
/// (seeded per process) rather than SipHash, which cost about 230 instructions a lookup here,
/// a dozen lookups a request.
type Map<V> = foldhash::HashMap<String, V>;
type SharedMap<V> = DashMap<String, V, foldhash::fast::RandomState>;

/// Knowledge about every instance, and the per-model admission queues.
#[derive(Default)]
pub struct Instances {
    by_url: SharedMap<Arc<Instance>>,
    queues: SharedMap<Arc<Queue>>,
}

/// Requests waiting for a slot on any instance holding one model, in the order they will be
/// let in ([`WaitQueue`]: turns between users, arrival order within each). Only the front
/// entry may take a slot, and it is woken whenever one may have come free: a request ended,
/// a limit grew, the entry before it left or was let in.
#[derive(Default)]
pub struct Queue {
    waiting: Mutex<WaitQueue<Arc<tokio::sync::Notify>>>,
}

impl Queue {
    /// The waiting requests, locked. Held for a few instructions, never across an await.
    pub fn lock(&self) -> MutexGuard<'_, WaitQueue<Arc<tokio::sync::Notify>>> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes the request at the front, so it checks for a free slot.
    pub fn wake(&self) {
        if let Some((_, next)) = self.lock().front() {
            next.notify_one();
        }
    }

    /// Requests waiting per user (an empty name for callers without one).
    pub fn depths(&self) -> Vec<(String, usize)> {
        self.lock()
            .depths()
            .into_iter()
            .map(|(k, n)| (k.to_owned(), n))
            .collect()
    }
}

/// Knowledge about one instance.
pub struct Instance {
    in_flight: AtomicUsize,
    /// Whether the instance has answered anything yet (a health check, a listing, a request):
    /// until then its health is a default, not something seen.
    seen: AtomicBool,
    inner: Mutex<Inner>,
}

struct Inner {
    per_model: Map<usize>,
    limits: Map<AdaptiveLimit>,
    served: Map<Instant>,
    /// Models that answered a request there since they were last loaded: requests for them
    /// do not wait for a load.
    answered: Map<Instant>,
    health: Health,
    ttft: Ewma,
    duration: Ewma,
}

impl Inner {
    /// The slots learned for `model`; a model not seen yet starts where the instance's other
    /// models got (Ollama's `OLLAMA_NUM_PARALLEL` is one setting per instance), else at 1.
    fn limit_of(&self, model: &str) -> usize {
        match self.limits.get(model) {
            Some(l) => l.limit(),
            None => self.inherited(),
        }
    }

    fn inherited(&self) -> usize {
        let learned = self.limits.values().map(AdaptiveLimit::limit).max();
        learned.unwrap_or_else(|| AdaptiveLimit::default().limit())
    }

    /// The limiter of `model`, made on first use starting at [`Inner::limit_of`]; the name is
    /// copied only then.
    fn limiter(&mut self, model: &str) -> Option<&mut AdaptiveLimit> {
        if !self.limits.contains_key(model) {
            let initial = self.inherited();
            let params = corral_balance::AdaptiveParams {
                initial,
                ..corral_balance::AdaptiveParams::default()
            };
            self.limits.insert(model.to_owned(), AdaptiveLimit::new(params));
        }
        self.limits.get_mut(model)
    }
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Instances {
    /// Every model's queue with requests waiting, and their depth per user.
    pub fn queue_depths(&self) -> Vec<(String, Vec<(String, usize)>)> {
        let mut out: Vec<_> = self
            .queues
            .iter()
            .map(|e| (e.key().clone(), e.value().depths()))
            .filter(|(_, d)| !d.is_empty())
            .collect();
        out.sort();
        out
    }

    /// The admission queue of catalogue model `model`.
    pub fn queue(&self, model: &str) -> Arc<Queue> {
        if let Some(q) = self.queues.get(model) {
            return q.clone();
        }
        self.queues.entry(model.to_owned()).or_default().clone()
    }

    /// The instance at `url`, created on first use.
    pub fn get(&self, url: &str) -> Arc<Instance> {
        if let Some(i) = self.by_url.get(url) {
            return i.clone();
        }
        self.by_url
            .entry(url.to_owned())
            .or_insert_with(|| {
                Arc::new(Instance {
                    in_flight: AtomicUsize::new(0),
                    seen: AtomicBool::new(false),
                    inner: Mutex::new(Inner {
                        per_model: Map::default(),
                        limits: Map::default(),
                        served: Map::default(),
                        answered: Map::default(),
                        health: Health::default(),
                        ttft: Ewma::new(Duration::from_secs(30)),
                        duration: Ewma::new(Duration::from_secs(30)),
                    }),
                })
            })
            .clone()
    }
}

/// A snapshot of one instance for a pick.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// Requests in flight, all models.
    pub in_flight: usize,
    /// Requests in flight for the model asked about.
    pub in_flight_model: usize,
    /// Whether the gateway's mirror of the instance's loaded models holds the model.
    pub recently_served: bool,
    /// How many models the mirror holds; 0 when the gateway has not routed there lately.
    pub served_count: usize,
    /// Recent time to first token.
    pub ttft: Option<Duration>,
    /// Whether ordinary traffic may go there now.
    pub selectable: bool,
    /// The learned concurrency limit for the model (the slots when they are `auto`).
    pub limit: usize,
}

impl Instance {
    /// What a pick for `model` needs to know, at `now`.
    pub fn view(&self, model: &str, now: Instant) -> View {
        let mut inner = lock(&self.inner);
        View {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            in_flight_model: inner.per_model.get(model).copied().unwrap_or(0),
            recently_served: inner
                .served
                .get(model)
                .is_some_and(|t| now.saturating_duration_since(*t) < LOADED_FOR),
            served_count: inner
                .served
                .values()
                .filter(|t| now.saturating_duration_since(**t) < LOADED_FOR)
                .count(),
            ttft: inner.ttft.get(),
            selectable: inner.health.is_selectable(now),
            limit: inner.limit_of(model),
        }
    }

    /// What the metrics read at a scrape: requests in flight (all, and per model), the learned
    /// limits, the loaded models and the health state as a word (`unchecked` until it answered).
    pub fn state(&self, now: Instant) -> InstanceState {
        let mut inner = lock(&self.inner);
        let mut per_model: Vec<(String, usize)> = inner.per_model.iter().map(|(m, n)| (m.clone(), *n)).collect();
        per_model.sort();
        let mut limits: Vec<(String, usize)> = inner.limits.iter().map(|(m, l)| (m.clone(), l.limit())).collect();
        limits.sort();
        let loaded = inner
            .served
            .values()
            .filter(|t| now.saturating_duration_since(**t) < LOADED_FOR)
            .count();
        let health = match inner.health.state(now) {
            HealthState::Ejected { .. } => "ejected",
            HealthState::HalfOpen { .. } => "half_open",
            HealthState::Healthy if !self.seen.load(Ordering::Relaxed) => "unchecked",
            HealthState::Healthy => "healthy",
        };
        InstanceState {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            per_model,
            limits,
            loaded,
            health,
        }
    }

    /// Whether the instance answered a check, a listing or a request since the gateway started.
    pub fn seen(&self) -> bool {
        self.seen.load(Ordering::Relaxed)
    }

    /// The instance answered something (a listing): it is up.
    pub fn mark_seen(&self) {
        self.seen.store(true, Ordering::Relaxed);
    }

    /// Takes the half-open probe, if one is due.
    pub fn try_probe(&self, now: Instant) -> bool {
        lock(&self.inner).health.try_probe(now)
    }

    /// The health state, for the status view.
    pub fn health(&self, now: Instant) -> HealthState {
        lock(&self.inner).health.state(now)
    }

    /// Counts a request for `model` as in flight until the guard is dropped; dropping it
    /// wakes the next request waiting in `queue`.
    ///
    /// The request also loads the model there: the mirror of loaded models records it and,
    /// when the instance keeps at most `max_loaded`, drops the least recently used one, as
    /// Ollama evicts it. `listed_loaded` says whether the instance's `/api/ps` listed the
    /// model, for when the gateway has not routed it there yet. Whether the model was surely
    /// loaded (not loading) decides whether the request's time to first token may teach the
    /// adaptive limit: a load's wait is not queueing.
    pub fn begin(
        self: &Arc<Self>,
        model: &str,
        queue: Arc<Queue>,
        max_loaded: Option<usize>,
        listed_loaded: bool,
    ) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        inner
            .answered
            .retain(|_, t| now.saturating_duration_since(*t) < LOADED_FOR);
        let warm = inner.answered.contains_key(model) || (listed_loaded && !inner.served.contains_key(model));
        let concurrency = match inner.per_model.get_mut(model) {
            Some(count) => {
                *count += 1;
                *count
            }
            None => {
                inner.per_model.insert(model.to_owned(), 1);
                1
            }
        };
        inner
            .served
            .retain(|_, t| now.saturating_duration_since(*t) < LOADED_FOR);
        set(&mut inner.served, model, now);
        if let Some(max) = max_loaded.filter(|m| *m > 0) {
            while inner.served.len() > max {
                let busy: Vec<String> = inner
                    .per_model
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(m, _)| m.clone())
                    .collect();
                let victim = inner
                    .served
                    .iter()
                    .filter(|(m, _)| !busy.contains(m))
                    .min_by_key(|(_, t)| **t)
                    .map(|(m, _)| m.clone());
                let Some(victim) = victim else { break };
                inner.served.remove(&victim);
                inner.answered.remove(&victim);
            }
        }
        drop(inner);
        InFlight {
            instance: self.clone(),
            model: model.to_owned(),
            queue,
            started: Instant::now(),
            concurrency,
            warm,
        }
    }

    /// Feeds the adaptive limit of `model` with a request's time to first token; true when
    /// the limit grew (so a waiting request may start).
    pub fn sample(&self, request: &InFlight, ttft: Duration, now: Instant) -> bool {
        if !request.warm {
            return false;
        }
        let mut inner = lock(&self.inner);
        let Some(limit) = inner.limiter(&request.model) else {
            return false;
        };
        let before = limit.limit();
        let verdict = limit.on_sample(ttft, request.concurrency, now);
        let after = limit.limit();
        if after != before {
            tracing::debug!(model = %request.model, before, after, ?verdict, "adaptive slots changed");
        }
        after > before
    }

    /// The instance answered `request` that it is busy (503, 429): the model's limit falls.
    pub fn busy(&self, request: &InFlight) {
        let mut inner = lock(&self.inner);
        let Some(limit) = inner.limiter(&request.model) else {
            return;
        };
        limit.on_busy(request.concurrency);
        tracing::debug!(model = %request.model, after = limit.limit(), "instance busy; adaptive slots fell");
    }

    /// The learned limit per model, for the status view.
    pub fn limits(&self) -> Vec<(String, usize)> {
        let inner = lock(&self.inner);
        let mut out: Vec<_> = inner.limits.iter().map(|(m, l)| (m.clone(), l.limit())).collect();
        out.sort();
        out
    }

    /// Records an active health check; returns the state before and after.
    pub fn checked(&self, ok: bool, policy: &HealthPolicy, now: Instant) -> (HealthState, HealthState) {
        if ok {
            self.mark_seen();
        }
        let mut inner = lock(&self.inner);
        let before = inner.health.state(now);
        match (ok, before) {
            // A good check brings a half-open instance back; an ejection still runs its time.
            (true, HealthState::HalfOpen { .. } | HealthState::Healthy) => inner.health.on_success(),
            (true, HealthState::Ejected { .. }) => {}
            (false, _) => {
                inner.health.on_failure(now, Failure::Connect, policy);
            }
        }
        (before, inner.health.state(now))
    }

    /// The instance answered a request that ran nothing (a show, an unload): it is up, and an
    /// unloaded model is no longer counted as loaded there. Its quick answer says nothing
    /// about time to first token.
    pub fn answered(&self, model: &str, unloads: bool) {
        self.mark_seen();
        let mut inner = lock(&self.inner);
        inner.health.on_success();
        if unloads {
            inner.served.remove(model);
        }
    }

    /// The instance answered (headers after `ttft`) with a status that is not a server error.
    pub fn succeeded(&self, model: &str, ttft: Duration, unloads: bool, now: Instant) {
        self.mark_seen();
        let mut inner = lock(&self.inner);
        inner.health.on_success();
        inner.ttft.observe(ttft, now);
        if unloads {
            inner.served.remove(model);
            inner.answered.remove(model);
        } else {
            set(&mut inner.served, model, now);
            set(&mut inner.answered, model, now);
        }
    }

    /// The instance failed; returns true if this ejected it.
    pub fn failed(&self, why: Failure, policy: &HealthPolicy, now: Instant) -> bool {
        lock(&self.inner).health.on_failure(now, why, policy)
    }

    /// Requests in flight, recent time to first token and recent duration, for the status view.
    pub fn load(&self) -> (usize, Option<Duration>, Option<Duration>) {
        let inner = lock(&self.inner);
        (
            self.in_flight.load(Ordering::Relaxed),
            inner.ttft.get(),
            inner.duration.get(),
        )
    }

    /// The health state as a word, for listings.
    pub fn health_word(&self, now: Instant) -> &'static str {
        match self.health(now) {
            HealthState::Healthy => "healthy",
            HealthState::Ejected { .. } => "ejected",
            HealthState::HalfOpen { .. } => "half_open",
        }
    }
}

/// `map[model] = value`, copying the name only for a model not there yet (a request nearly
/// always finds its model there).
fn set<V>(map: &mut Map<V>, model: &str, value: V) {
    match map.get_mut(model) {
        Some(slot) => *slot = value,
        None => {
            map.insert(model.to_owned(), value);
        }
    }
}

/// One instance as the metrics see it at a scrape.
pub struct InstanceState {
    /// Requests in flight, all models.
    pub in_flight: usize,
    /// Requests in flight per model.
    pub per_model: Vec<(String, usize)>,
    /// The learned slot limit per model.
    pub limits: Vec<(String, usize)>,
    /// Models the gateway's mirror counts as loaded.
    pub loaded: usize,
    /// `healthy`, `half_open`, `ejected` or `unchecked`.
    pub health: &'static str,
}

/// A request in flight; dropping it (the response ended or was abandoned) releases it.
pub struct InFlight {
    instance: Arc<Instance>,
    model: String,
    queue: Arc<Queue>,
    started: Instant,
    /// Requests in flight for the model there when this one began, itself included.
    concurrency: usize,
    /// Whether the model was known to be loaded there when it began.
    warm: bool,
}

impl InFlight {
    /// Whether the model was known to be loaded on the instance when the request began.
    pub fn warm(&self) -> bool {
        self.warm
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.instance.in_flight.fetch_sub(1, Ordering::Relaxed);
        let mut inner = lock(&self.instance.inner);
        if let Some(n) = inner.per_model.get_mut(&self.model) {
            *n = n.saturating_sub(1);
        }
        let now = Instant::now();
        inner.duration.observe(now - self.started, now);
        drop(inner);
        self.queue.wake();
    }
}
