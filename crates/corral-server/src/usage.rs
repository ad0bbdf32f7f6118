//! Usage metering off the request path: each finished model-running request leaves a record
//! in a bounded in-memory buffer (a push under a short lock, no query); a background task
//! writes the buffer in batches every `usage.flush_interval`, keeps it through a database
//! outage and writes it when the database is back, and prunes records past
//! `usage.retention_days`. The drain writes what is left before the process exits.
//!
//! What can be lost: on a crash (or SIGKILL), the records of at most the last flush interval
//! (plus, during an outage, everything buffered); when the buffer is full, new records, which
//! are counted (`dropped`) and logged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_store::{Store, StoreError, UsageRecord};
use serde::Serialize;

use crate::state::Shared;

/// Marks a request whose body the gateway changed to ask for the usage event of its stream
/// (`stream_options.include_usage`): the event is taken out of what the client receives.
#[derive(Debug, Clone, Copy)]
pub struct StripUsageEvent;

/// Records written per transaction.
const BATCH: usize = 2000;

/// How often records past the retention period are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Seconds between two log lines about dropped records.
const DROP_LOG_EVERY_MS: i64 = 10_000;

/// The buffer of records waiting to be written, and its counters.
pub struct UsageBuffer {
    queue: Mutex<VecDeque<UsageRecord>>,
    /// Records taken out by the writer and not yet written (they count against the capacity).
    in_flight: AtomicUsize,
    capacity: AtomicUsize,
    enabled: AtomicBool,
    /// Held by whoever writes, so the periodic writer and the drain take turns.
    writing: Mutex<()>,
    written: AtomicU64,
    dropped: AtomicU64,
    /// Whether the last write failed (so the outage and the recovery are logged once each).
    failing: AtomicBool,
    last_drop_log_ms: AtomicI64,
}

/// The buffer's counters, for `GET /api/v1/usage/status`.
#[derive(Debug, Clone, Serialize)]
pub struct UsageStatus {
    /// Whether records are kept.
    pub enabled: bool,
    /// Records waiting to be written.
    pub pending: usize,
    /// The most records the buffer holds (`usage.buffer_size`).
    pub capacity: usize,
    /// Records written since start.
    pub written: u64,
    /// Records dropped since start because the buffer was full.
    pub dropped: u64,
    /// Whether the last write failed (the database was unreachable).
    pub database_failing: bool,
}

impl Default for UsageBuffer {
    fn default() -> Self {
        UsageBuffer {
            queue: Mutex::new(VecDeque::new()),
            in_flight: AtomicUsize::new(0),
            capacity: AtomicUsize::new(corral_config::UsageSettings::default().buffer_size),
            enabled: AtomicBool::new(false),
            writing: Mutex::new(()),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            last_drop_log_ms: AtomicI64::new(i64::MIN / 2),
        }
    }
}

impl UsageBuffer {
    /// Turns metering on with room for `capacity` records.
    pub fn enable(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Ordering::Release);
        self.enabled.store(true, Ordering::Release);
    }

    /// Whether records are kept.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Adds a record; when the buffer is full, drops it, counts it and logs (at most every ten
    /// seconds). Never blocks beyond a short lock; never queries.
    pub fn push(&self, record: UsageRecord) {
        if !self.enabled() {
            return;
        }
        let capacity = self.capacity.load(Ordering::Acquire);
        {
            let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if queue.len() + self.in_flight.load(Ordering::Acquire) < capacity {
                queue.push_back(record);
                return;
            }
        }
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let now = now_ms();
        let last = self.last_drop_log_ms.load(Ordering::Relaxed);
        if now - last >= DROP_LOG_EVERY_MS
            && self
                .last_drop_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                dropped,
                capacity,
                "the usage buffer is full (usage.buffer_size): usage records are being dropped until the database takes them"
            );
        }
    }

    /// Writes every buffered record, batch by batch, and returns how many were written; stops at
    /// the first failure, leaving the rest (the failed batch included, in order) buffered.
    /// Blocking: call it off the executor.
    pub fn write_to(&self, store: &Store) -> Result<usize, StoreError> {
        let _writing = self.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut total = 0;
        loop {
            let batch: Vec<UsageRecord> = {
                let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = queue.len().min(BATCH);
                self.in_flight.store(n, Ordering::Release);
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                break;
            }
            let n = batch.len();
            match store.insert_usage(&batch) {
                Ok(_) => {
                    self.in_flight.store(0, Ordering::Release);
                    self.written.fetch_add(n as u64, Ordering::Relaxed);
                    total += n;
                }
                Err(err) => {
                    // Back at the front, in order: only this writer takes from the front.
                    let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    for record in batch.into_iter().rev() {
                        queue.push_front(record);
                    }
                    self.in_flight.store(0, Ordering::Release);
                    drop(queue);
                    if !self.failing.swap(true, Ordering::AcqRel) {
                        tracing::warn!(
                            error = %err,
                            pending = self.pending(),
                            "usage records cannot be written; they are kept in memory (usage.buffer_size) until the database answers"
                        );
                    }
                    return Err(err);
                }
            }
        }
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::info!(
                written = total,
                "the database answers again; buffered usage records written"
            );
        }
        Ok(total)
    }

    /// Records waiting to be written.
    pub fn pending(&self) -> usize {
        let queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        queue.len() + self.in_flight.load(Ordering::Acquire)
    }

    /// The counters.
    pub fn status(&self) -> UsageStatus {
        UsageStatus {
            enabled: self.enabled(),
            pending: self.pending(),
            capacity: self.capacity.load(Ordering::Acquire),
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            database_failing: self.failing.load(Ordering::Acquire),
        }
    }
}

impl crate::exchange::Observer for UsageBuffer {
    fn finished(&self, f: &crate::exchange::Finished) {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.push(UsageRecord {
            // Time-ordered (version 7): records of one millisecond append to the table's
            // (at_ms, id) order instead of landing at random places in it.
            id: uuid::Uuid::now_v7().to_string(),
            at_ms: f.at_ms,
            user_id: f.user_id.clone(),
            key_id: f.key_id.as_deref().map(str::to_owned),
            groups: f.groups.clone(),
            model_asked: f.model_asked.clone(),
            model_run: f.model_run.clone(),
            instance: f.instance.and_then(|i| i32::try_from(i).ok()),
            route: f.route.as_str().to_owned(),
            status: i32::from(f.status),
            streamed: f.streamed,
            cancelled: f.outcome == crate::exchange::Outcome::Cancelled,
            estimated: f.estimated,
            input_tokens: count(f.input_tokens),
            output_tokens: count(f.output_tokens),
            ttft_ms: f.ttft.map(ms),
            duration_ms: ms(f.duration),
        });
    }
}

/// Turns metering on (when `usage.enable` and there is a database) and starts the writer on the
/// current actix system: a batch write every `usage.flush_interval`, pruning at start-up and
/// every hour when `usage.retention_days` is set.
pub fn spawn(shared: Arc<Shared>) {
    let settings = shared.settings();
    let Some(store) = shared.store() else { return };
    if !settings.usage.enable {
        return;
    }
    shared.usage.enable(settings.usage.buffer_size);
    shared.exchanges.observe(shared.usage.clone());
    actix_rt::spawn(async move {
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            let settings = shared.settings();
            let interval = Duration::from_secs_f64(settings.usage.flush_interval);
            tokio::time::sleep(interval).await;
            let retention = settings.usage.retention_days;
            let prune = retention > 0 && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
            let (writer, store) = (shared.clone(), store.clone());
            let done = actix_rt::task::spawn_blocking(move || {
                let wrote = writer.usage.write_to(&store).is_ok();
                if wrote && prune {
                    let cutoff = now_ms() - i64::from(retention) * 86_400_000;
                    match store.prune_usage(cutoff) {
                        Ok(n) => {
                            if n > 0 {
                                tracing::info!(pruned = n, retention_days = retention, "old usage records deleted");
                            }
                            return true;
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot prune old usage records; trying again later"),
                    }
                }
                false
            })
            .await;
            if matches!(done, Ok(true)) {
                last_prune = Some(tokio::time::Instant::now());
            }
        }
    });
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
