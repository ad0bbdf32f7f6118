//! A small, bounded pool for password hashing and verification.
//!
//! argon2id is slow and memory-hard by design: each hash or verification takes about 19 MiB
//! for tens of milliseconds. Run on the general blocking pool (up to hundreds of threads),
//! a burst of sign-ins with wrong passwords, which needs no credential, runs hundreds at once
//! and takes gigabytes, which the allocator keeps. Here at most `workers` run at once, on
//! threads of their own, and at most `queue` wait, each for at most `wait`; the rest are
//! refused at once with a 503 and `Retry-After`, so memory stays bounded whatever the load.
//! API keys (SHA-256) never come here, so key holders are not slowed by a sign-in storm.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_auth::Scratch;

use crate::error::AppError;

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// The pool; cheap to share behind an `Arc`.
pub struct PasswordPool {
    jobs: SyncSender<(Instant, Job)>,
    wait: Duration,
    workers: usize,
}

impl PasswordPool {
    /// Starts `workers` threads (0: one per core, at most 4) behind a queue of `queue`.
    pub fn new(workers: usize, queue: usize, wait: Duration) -> PasswordPool {
        let workers = match workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from).min(4),
            n => n,
        };
        let (jobs, rx) = sync_channel::<(Instant, Job)>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("corral-password-{i}"))
                .spawn(move || work(&rx));
            if let Err(err) = spawned {
                tracing::error!(%err, "could not start a password thread");
            }
        }
        PasswordPool { jobs, wait, workers }
    }

    /// How many checks run at once at most.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `f` on a password thread, with that thread's argon2 memory, and waits for its
    /// answer; a full queue or a wait past the limit is a 503 with `Retry-After`, and the job
    /// is then not run at all.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Scratch) -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let deadline = Instant::now() + self.wait;
        let job: Job = Box::new(move |scratch| {
            let _ = tx.send(f(scratch));
        });
        match self.jobs.try_send((deadline, job)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(busy("too many password checks are waiting")),
            Err(TrySendError::Disconnected(_)) => {
                return Err(AppError::Internal("the password threads are gone".to_owned()))
            }
        }
        match tokio::time::timeout(self.wait, rx).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(busy("the password check waited too long")),
            Err(_) => Err(busy("the password check waited too long")),
        }
    }
}

fn busy(reason: &str) -> AppError {
    AppError::Busy {
        retry_after: 1,
        reason: format!("{reason}; sign-in is busy"),
    }
}

/// A password thread: takes jobs one at a time, each in the thread's one argon2 memory
/// (allocated once, so memory stays at `workers` times 19 MiB whatever the load); a job whose
/// caller stopped waiting is dropped unrun (its deadline passed while it queued).
fn work(rx: &Mutex<Receiver<(Instant, Job)>>) {
    let mut scratch = Scratch::default();
    loop {
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((deadline, job)) = next else { return };
        if Instant::now() <= deadline {
            job(&mut scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::PasswordPool;
    use crate::error::AppError;

    #[actix_web::test]
    async fn at_most_workers_run_at_once_and_the_overflow_is_refused() {
        let pool = Arc::new(PasswordPool::new(2, 4, Duration::from_secs(5)));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (pool, running, peak, release_rx) = (pool.clone(), running.clone(), peak.clone(), release_rx.clone());
            tasks.push(actix_rt::spawn(async move {
                pool.run(move |_| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let _ = release_rx.lock().map(|rx| rx.recv());
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        // Let every task reach the pool, then release the jobs one by one.
        tokio::task::yield_now().await;
        for _ in 0..20 {
            let _ = release_tx.send(());
        }
        let mut ok = 0;
        let mut busy = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => ok += 1,
                Err(AppError::Busy { retry_after, .. }) => {
                    assert_eq!(retry_after, 1);
                    busy += 1
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            peak.load(Ordering::SeqCst) <= 2,
            "{} ran at once",
            peak.load(Ordering::SeqCst)
        );
        // Two running and four queued at most were admitted when the burst arrived.
        assert!((2..=6).contains(&ok), "{ok} admitted");
        assert_eq!(ok + busy, 20);
    }
}
