//! The simulator's mutable state: held and loaded models, counters, faults, the latch and
//! the per-model slots.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::config::{with_tag, Faults, SimConfig, SimModel};

/// Counters the tests assert on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests per route path (e.g. `/api/chat`).
    pub requests: BTreeMap<String, u64>,
    /// Requests per model name as sent.
    pub requests_by_model: BTreeMap<String, u64>,
    /// Requests whose client went away before they finished.
    pub cancelled: u64,
    /// Model loads caused by requests.
    pub cold_loads: u64,
    /// Requests being served now.
    pub in_flight: u64,
    /// The most requests served at once.
    pub max_in_flight: u64,
    /// Requests that finished.
    pub completed: u64,
    /// Errors injected by faults.
    pub injected_errors: u64,
    /// Prompt tokens reported in the answers that were sent whole (`prompt_eval_count`, or
    /// `usage.prompt_tokens` on the OpenAI routes, whether or not the client asked to see it).
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion tokens reported in the answers that were sent whole (`eval_count`, or
    /// `usage.completion_tokens`).
    #[serde(default)]
    pub completion_tokens: u64,
    /// The last request received (control routes excluded).
    pub last_request: Option<RecordedRequest>,
}

/// A request as the simulator received it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query string.
    pub query: String,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body as text.
    pub body: String,
    /// Body as JSON, if it parsed.
    pub json: Option<serde_json::Value>,
}

struct Loaded {
    name: String,
    last_used: Instant,
    expires_at: chrono::DateTime<chrono::Local>,
}

struct Inner {
    models: Vec<SimModel>,
    loaded: Vec<Loaded>,
    stats: Stats,
    faults: Faults,
    /// The last request received on each path (control routes excluded), so a test can look at
    /// the one it caused even when the gateway's own listings and health checks came after it.
    last_by_path: std::collections::HashMap<String, RecordedRequest>,
    /// The path of the last request of all (`Stats::last_request`, filled in when read).
    last_path: Option<String>,
}

/// One simulated instance.
pub struct Sim {
    pub config: SimConfig,
    /// Blobs uploaded to the instance, by digest (`sha256:<hex>`).
    pub blobs: Mutex<std::collections::HashSet<String>>,
    /// Held while a model loads: like Ollama's scheduler, one load at a time, and requests
    /// for a model being loaded wait for that load instead of starting their own.
    loading: tokio::sync::Mutex<()>,
    inner: Mutex<Inner>,
    latch: Notify,
    latch_open: AtomicBool,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    waiting: AtomicUsize,
    counter: AtomicU64,
}

impl Sim {
    pub fn new(config: SimConfig) -> Sim {
        let now = Instant::now();
        let loaded = config
            .loaded
            .iter()
            .map(|n| Loaded {
                name: with_tag(n),
                last_used: now,
                expires_at: expiry(config.keep_alive),
            })
            .collect();
        let inner = Inner {
            models: config.models.clone(),
            loaded,
            stats: Stats::default(),
            faults: config.faults.clone(),
            last_by_path: Default::default(),
            last_path: None,
        };
        Sim {
            inner: Mutex::new(inner),
            latch: Notify::new(),
            latch_open: AtomicBool::new(false),
            slots: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            counter: AtomicU64::new(0),
            blobs: Mutex::new(std::collections::HashSet::new()),
            loading: tokio::sync::Mutex::new(()),
            config,
        }
    }

    pub fn stats(&self) -> Stats {
        let inner = self.inner.lock();
        let last_request = inner
            .last_path
            .as_ref()
            .and_then(|path| inner.last_by_path.get(path).cloned());
        Stats {
            last_request,
            ..inner.stats.clone()
        }
    }

    /// The last request received on `path` (control routes excluded), if any.
    pub fn last_request_to(&self, path: &str) -> Option<RecordedRequest> {
        self.inner.lock().last_by_path.get(path).cloned()
    }

    /// Counts the tokens an answer reports, as it is sent whole (its last part produced).
    pub fn served(&self, prompt: usize, completion: usize) {
        let mut inner = self.inner.lock();
        inner.stats.prompt_tokens += prompt as u64;
        inner.stats.completion_tokens += completion as u64;
    }

    pub fn reset_stats(&self) {
        let mut inner = self.inner.lock();
        let in_flight = inner.stats.in_flight;
        inner.stats = Stats {
            in_flight,
            ..Stats::default()
        };
        inner.last_by_path.clear();
        inner.last_path = None;
    }

    pub fn faults(&self) -> Faults {
        self.inner.lock().faults.clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.inner.lock().faults = faults;
        self.latch_open.store(false, Ordering::Release);
    }

    pub fn release_latch(&self) {
        self.latch_open.store(true, Ordering::Release);
        self.latch.notify_waiters();
    }

    /// Waits until the latch is released.
    pub async fn wait_latch(&self) {
        loop {
            let notified = self.latch.notified();
            if self.latch_open.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    pub fn set_models(&self, models: Vec<SimModel>) {
        self.inner.lock().models = models;
    }

    pub fn models(&self) -> Vec<SimModel> {
        self.inner.lock().models.clone()
    }

    /// The held model called `name` (case-insensitive, `:latest` implied).
    pub fn find(&self, name: &str) -> Option<SimModel> {
        let want = with_tag(name).to_ascii_lowercase();
        self.inner
            .lock()
            .models
            .iter()
            .find(|m| m.name.to_ascii_lowercase() == want)
            .cloned()
    }

    pub fn add_model(&self, model: SimModel) {
        let mut inner = self.inner.lock();
        inner.models.retain(|m| !m.name.eq_ignore_ascii_case(&model.name));
        inner.models.push(model);
    }

    /// Removes a held model; false if there was none.
    pub fn remove_model(&self, name: &str) -> bool {
        let want = with_tag(name).to_ascii_lowercase();
        let mut inner = self.inner.lock();
        let before = inner.models.len();
        inner.models.retain(|m| m.name.to_ascii_lowercase() != want);
        inner.loaded.retain(|l| l.name.to_ascii_lowercase() != want);
        inner.models.len() != before
    }

    pub fn loaded_models(&self) -> Vec<String> {
        self.inner.lock().loaded.iter().map(|l| l.name.clone()).collect()
    }

    /// Loaded models with their expiry, latest expiry first.
    pub fn loaded_with_expiry(&self) -> Vec<(SimModel, chrono::DateTime<chrono::Local>)> {
        let inner = self.inner.lock();
        let mut out: Vec<_> = inner
            .loaded
            .iter()
            .filter_map(|l| {
                inner
                    .models
                    .iter()
                    .find(|m| m.name == l.name)
                    .map(|m| (m.clone(), l.expires_at))
            })
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.1));
        out
    }

    /// Loads `model` if needed; returns how long the request waited for it (about zero when
    /// warm).
    pub async fn load(&self, model: &SimModel) -> Duration {
        let started = Instant::now();
        if self.mark_used(&model.name) {
            return Duration::from_micros(20);
        }
        let _one_load_at_a_time = self.loading.lock().await;
        // Someone else may have loaded it while this request waited.
        if self.mark_used(&model.name) {
            return started.elapsed().max(Duration::from_micros(20));
        }
        self.inner.lock().stats.cold_loads += 1;
        if !self.config.load_time.is_zero() {
            tokio::time::sleep(self.config.load_time).await;
        }
        let mut inner = self.inner.lock();
        let max = self.config.max_loaded;
        while max > 0 && inner.loaded.len() >= max {
            // Evict the least recently used model.
            let Some(lru) = inner
                .loaded
                .iter()
                .enumerate()
                .min_by_key(|(_, l)| l.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            inner.loaded.remove(lru);
        }
        inner.loaded.push(Loaded {
            name: model.name.clone(),
            last_used: Instant::now(),
            expires_at: expiry(self.config.keep_alive),
        });
        started.elapsed().max(Duration::from_micros(20))
    }

    /// Marks a loaded model as just used; false if it is not loaded.
    fn mark_used(&self, name: &str) -> bool {
        let mut inner = self.inner.lock();
        match inner.loaded.iter_mut().find(|l| l.name == name) {
            Some(l) => {
                l.last_used = Instant::now();
                true
            }
            None => false,
        }
    }

    /// Records that a request on `model` finished: its keep-alive restarts.
    pub fn touch(&self, model: &str, keep_alive: Option<Duration>) {
        let mut inner = self.inner.lock();
        if keep_alive == Some(Duration::ZERO) {
            inner.loaded.retain(|l| l.name != model);
            return;
        }
        if let Some(l) = inner.loaded.iter_mut().find(|l| l.name == model) {
            l.last_used = Instant::now();
            l.expires_at = expiry(keep_alive.unwrap_or(self.config.keep_alive));
        }
    }

    pub fn unload(&self, model: &str) {
        self.inner.lock().loaded.retain(|l| l.name != model);
    }

    /// Takes a slot for `model`, waiting in the queue; `None` when the queue is full.
    pub async fn slot(&self, model: &str) -> Option<OwnedSemaphorePermit> {
        let sem = {
            let mut slots = self.slots.lock();
            slots
                .entry(model.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.config.num_parallel.max(1))))
                .clone()
        };
        if let Ok(permit) = sem.clone().try_acquire_owned() {
            return Some(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.config.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let _unqueue = Unqueue(&self.waiting);
        sem.acquire_owned().await.ok()
    }

    /// Counts a request and remembers it; the ticket counts it finished or cancelled.
    pub fn begin(self: &Arc<Self>, req: &HttpRequest, route: &str, body: &[u8], model: Option<&str>) -> Ticket {
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let text = String::from_utf8_lossy(body).into_owned();
        let recorded = RecordedRequest {
            method: req.method().to_string(),
            path: req.path().to_owned(),
            query: req.query_string().to_owned(),
            headers,
            json: serde_json::from_str(&text).ok(),
            body: text,
        };
        let mut inner = self.inner.lock();
        *inner.stats.requests.entry(route.to_owned()).or_default() += 1;
        if let Some(m) = model {
            *inner.stats.requests_by_model.entry(m.to_owned()).or_default() += 1;
        }
        inner.stats.in_flight += 1;
        inner.stats.max_in_flight = inner.stats.max_in_flight.max(inner.stats.in_flight);
        // Kept once, by path; the path's copy reuses the last one's room.
        match &mut inner.last_path {
            Some(last) => last.clone_from(&recorded.path),
            none => *none = Some(recorded.path.clone()),
        }
        match inner.last_by_path.get_mut(&recorded.path) {
            Some(slot) => *slot = recorded,
            None => {
                inner.last_by_path.insert(recorded.path.clone(), recorded);
            }
        }
        Ticket {
            sim: self.clone(),
            finished: false,
        }
    }

    pub fn count_injected(&self) {
        self.inner.lock().stats.injected_errors += 1;
    }

    /// A fresh number for ids and seeds.
    pub fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }
}

/// Decrements the queue count when a waiting request gets its slot or goes away.
struct Unqueue<'a>(&'a AtomicUsize);

impl Drop for Unqueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request in flight. Dropped unfinished, it counts as cancelled by the client.
pub struct Ticket {
    sim: Arc<Sim>,
    finished: bool,
}

impl Ticket {
    /// The request ran to its end (successfully or with an error it sent).
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.sim.inner.lock();
        inner.stats.in_flight = inner.stats.in_flight.saturating_sub(1);
        if self.finished {
            inner.stats.completed += 1;
        } else {
            inner.stats.cancelled += 1;
        }
    }
}

fn expiry(keep_alive: Duration) -> chrono::DateTime<chrono::Local> {
    let delta = chrono::Duration::from_std(keep_alive).unwrap_or(chrono::Duration::days(365 * 292));
    chrono::Local::now() + delta
}
