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

use corral_store::{Store, StoreError, UsageContext, UsageRecord};
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

/// Contexts kept for reuse (a context is who asked for what, where; see [`UsageContext`]); past
/// this many the cache starts over, so clients naming ever new models cannot grow it.
const CONTEXTS_CACHED: usize = 4096;

/// Seconds between two log lines about dropped records.
const DROP_LOG_EVERY_MS: i64 = 10_000;

/// The buffer of records waiting to be written, and its counters.
pub struct UsageBuffer {
    queue: Mutex<VecDeque<UsageRecord>>,
    /// Records taken out by the writer and not yet written (they count against the capacity).
    in_flight: AtomicUsize,
    capacity: AtomicUsize,
    enabled: AtomicBool,
    /// Held by whoever writes, so the periodic writer and the drain take turns; holds the size
    /// of the batch whose write failed (0: none), which is at the queue's front and goes again
    /// whole, so that one the database stored without acknowledging it is stored once.
    writing: Mutex<usize>,
    written: AtomicU64,
    dropped: AtomicU64,
    /// Whether the last write failed (so the outage and the recovery are logged once each).
    failing: AtomicBool,
    last_drop_log_ms: AtomicI64,
    /// The next record's `seq`: a random high half for this process (replicas sharing a
    /// database draw different ones), a count in the low half.
    next_seq: AtomicI64,
    /// The contexts of recent records by a hash of their fields, so a request's record shares
    /// its context with the others of the same caller, model and route instead of copying it.
    contexts: Mutex<foldhash::HashMap<u64, Arc<UsageContext>>>,
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
            writing: Mutex::new(0),
            written: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            last_drop_log_ms: AtomicI64::new(i64::MIN / 2),
            next_seq: AtomicI64::new(seq_base()),
            contexts: Mutex::default(),
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
    /// the first failure, leaving the rest (the failed batch included, in order, to go again
    /// whole) buffered.
    /// Blocking: call it off the executor.
    pub fn write_to(&self, store: &Store) -> Result<usize, StoreError> {
        let mut failed = self.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut total = 0;
        loop {
            let batch: Vec<UsageRecord> = {
                let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = match std::mem::take(&mut *failed) {
                    0 => queue.len().min(BATCH),
                    again => again.min(queue.len()),
                };
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
                    *failed = n;
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

impl UsageBuffer {
    /// The context of `f`: the cached one when a recent record had the same, else a new one
    /// (made outside the lock), cached.
    fn context_of(&self, f: &crate::exchange::Finished) -> Arc<UsageContext> {
        use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
        let instance = f.instance.and_then(|i| i32::try_from(i).ok());
        let route = f.route.as_str();
        let mut h = foldhash::fast::FixedState::with_seed(0).build_hasher();
        (&f.user_id, f.key_id.as_deref(), &f.groups, &f.model_asked, &f.model_run).hash(&mut h);
        (instance, route, f.streamed).hash(&mut h);
        let key = h.finish();
        let same = |c: &UsageContext| {
            c.user_id == f.user_id
                && c.key_id.as_deref() == f.key_id.as_deref()
                && c.model_asked == f.model_asked
                && c.model_run == f.model_run
                && c.instance == instance
                && c.route == route
                && c.streamed == f.streamed
                && f.groups.iter().all(|g| c.groups.contains(g))
                && c.groups.iter().all(|g| f.groups.contains(g))
        };
        let lock = || self.contexts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(context) = lock().get(&key).filter(|c| same(c)) {
            return context.clone();
        }
        let context = Arc::new(
            UsageContext {
                id: 0,
                user_id: f.user_id.clone(),
                key_id: f.key_id.as_deref().map(str::to_owned),
                groups: f.groups.clone(),
                model_asked: f.model_asked.clone(),
                model_run: f.model_run.clone(),
                instance,
                route: route.to_owned(),
                streamed: f.streamed,
            }
            .identified(),
        );
        let mut cached = lock();
        if cached.len() >= CONTEXTS_CACHED {
            cached.clear();
        }
        cached.insert(key, context.clone());
        context
    }
}

impl crate::exchange::Observer for UsageBuffer {
    fn finished(&self, f: &crate::exchange::Finished) {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        if !self.enabled() {
            return;
        }
        self.push(UsageRecord {
            at_ms: f.at_ms,
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            context: self.context_of(f),
            status: i32::from(f.status),
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
        let folding = Arc::new(Folding {
            ok: AtomicBool::new(true),
            // At start-up, whatever a release before the day sums stored.
            behind: AtomicBool::new(true),
        });
        loop {
            let settings = shared.settings();
            let interval = Duration::from_secs_f64(settings.usage.flush_interval);
            tokio::time::sleep(interval).await;
            let retention = settings.usage.retention_days;
            let prune = retention > 0 && last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
            let (writer, store, folding) = (shared.clone(), store.clone(), folding.clone());
            let done = actix_rt::task::spawn_blocking(move || {
                let written = writer.usage.write_to(&store);
                let wrote = written.is_ok();
                // Not while the database is away (a second wait for it each tick).
                if written.is_ok_and(|n| n > 0) || (wrote && folding.behind.load(Ordering::Acquire)) {
                    fold(&store, &folding);
                }
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

/// Batches folded into the day sums by one transaction; a write folds up to [`FOLD_ROUNDS`] of
/// those while each finds a full load.
const FOLD_MAX: usize = 64;

/// Transactions of [`FOLD_MAX`] batches a write folds at most: about a million records a flush
/// interval (a batch holds up to a thousand), far more than one gateway writes, so a backlog
/// (what a release before the day sums stored, what piled up while folding failed, or what
/// another replica of a release before wrote) shrinks with every write.
const FOLD_ROUNDS: usize = 16;

/// How folding goes: whether the last fold worked (to log when that changes), and whether it
/// left batches to fold (to fold again after a write that wrote nothing).
struct Folding {
    ok: AtomicBool,
    behind: AtomicBool,
}

/// Folds the batches written since the last time (and some of any backlog) into the day sums
/// that reports of whole days read ([`corral_store::Store::fold_usage`]). A failure only leaves
/// reports to unpack those batches until the next try; it is logged when it starts and ends.
fn fold(store: &Store, folding: &Folding) {
    let mut rounds = 0;
    let outcome = loop {
        match store.fold_usage(FOLD_MAX) {
            Ok(n) if n == FOLD_MAX && rounds + 1 < FOLD_ROUNDS => rounds += 1,
            Ok(n) => break Ok(n == FOLD_MAX),
            Err(e) => break Err(e),
        }
    };
    match outcome {
        Ok(behind) => {
            folding.behind.store(behind, Ordering::Release);
            if !folding.ok.swap(true, Ordering::AcqRel) {
                tracing::info!("usage batches are folded into the day sums again");
            }
        }
        Err(e) => {
            folding.behind.store(true, Ordering::Release);
            if folding.ok.swap(false, Ordering::AcqRel) {
                tracing::warn!(error = %e, "cannot fold usage batches into the day sums; reports unpack them meanwhile");
            }
        }
    }
}

/// The first `seq` of this process: 31 random bits above a 32-bit count. A process never repeats
/// a `seq`; two processes writing to one database (replicas, or one restarted) give a record the
/// `(at_ms, seq)` of another only when they drew the same 31 bits (one chance in two billion per
/// pair) and counted to the same number in the same millisecond.
fn seq_base() -> i64 {
    let random = uuid::Uuid::new_v4().as_u128() as u64;
    ((random >> 33) as i64) << 32
}

fn now_ms() -> i64 {
    crate::exchange::unix_ms(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::UsageBuffer;
    use crate::exchange::{Finished, Observer as _, Outcome, Route};

    fn finished(user: &str, groups: &[&str], model: &str) -> Finished {
        Finished {
            at_ms: 1_764_900_000_000,
            route: Route::Chat,
            user_id: Some(user.to_owned()),
            key_id: Some(Arc::from("key-1")),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            model_asked: model.to_owned(),
            model_run: format!("{model}:latest"),
            instance: Some(0),
            instance_url: None,
            status: 200,
            streamed: false,
            input_tokens: 3,
            output_tokens: 4,
            estimated: false,
            chunks: 1,
            bytes: 10,
            queue_wait: None,
            ttft: Some(Duration::from_millis(2)),
            duration: Duration::from_millis(5),
            overhead: None,
            attempts: 1,
            outcome: Outcome::Completed,
        }
    }

    #[test]
    fn records_of_one_caller_model_and_route_share_one_context() {
        let buffer = UsageBuffer::default();
        buffer.enable(100);
        for f in [
            finished("alice", &["b", "a"], "llama3.2"),
            finished("alice", &["b", "a"], "llama3.2"),
            finished("alice", &["a", "b"], "llama3.2"),
            finished("alice", &["a", "b"], "qwen3"),
            finished("bob", &[], "llama3.2"),
        ] {
            buffer.finished(&f);
        }
        let queue = buffer.queue.lock().unwrap();
        let r: Vec<_> = queue.iter().collect();
        assert_eq!(r.len(), 5);
        // The same caller, groups, model and route: one context, not a copy per record.
        assert!(Arc::ptr_eq(&r[0].context, &r[1].context));
        // Groups in another order are the same context, stored with its groups sorted.
        assert_eq!(r[2].context, r[0].context);
        assert_eq!(r[0].context.groups, ["a", "b"]);
        assert_eq!(r[0].context.key_id.as_deref(), Some("key-1"));
        // Another model or caller is another context.
        assert_ne!(r[3].context.id, r[0].context.id);
        assert_ne!(r[4].context.id, r[0].context.id);
        assert!(r.iter().all(|r| r.context.id >= 0));
        // Every record has a seq of its own.
        let mut seqs: Vec<_> = r.iter().map(|r| r.seq).collect();
        seqs.dedup();
        assert_eq!(seqs.len(), 5);
        assert_eq!((r[0].input_tokens, r[0].output_tokens, r[0].ttft_ms), (3, 4, Some(2)));
    }

    #[test]
    fn the_context_cache_starts_over_when_full() {
        let buffer = UsageBuffer::default();
        buffer.enable(super::CONTEXTS_CACHED + 10);
        for i in 0..super::CONTEXTS_CACHED + 5 {
            buffer.finished(&finished("alice", &[], &format!("model-{i}")));
        }
        let cached = buffer.contexts.lock().unwrap().len();
        assert!(cached <= super::CONTEXTS_CACHED, "{cached} contexts cached");
        assert_eq!(buffer.pending(), super::CONTEXTS_CACHED + 5, "every record kept");
    }
}
