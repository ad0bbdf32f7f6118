//! Pushed changes on PostgreSQL: every write that bumps a revision also sends `NOTIFY corral_changes`
//! (see `revisions::bump`), and [`Store::listen`] keeps one dedicated connection that `LISTEN`s for them.
//!
//! diesel's `PgConnection::notifications_iter` reads what has already arrived on the socket without a
//! round trip to the server and without blocking, but it cannot wait on the socket. The listener therefore
//! checks its connection's buffer every [`CHECK_EVERY`] on its own thread: a notification is seen within
//! that, plus the time the replica takes to reload. The connection is pinged every [`PING_EVERY`] so a
//! silently dead one is noticed; after a loss the listener reconnects (every [`RETRY_EVERY`]) and reports
//! [`Change::Reconnected`], since notifications sent meanwhile were lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection, RunQueryDsl};

use crate::{Backend, Store};

/// The channel writes notify and replicas listen on.
pub(crate) const CHANNEL: &str = "corral_changes";

/// How often the listening connection's buffer is checked for notifications.
const CHECK_EVERY: Duration = Duration::from_millis(2);

/// How often the listening connection is pinged to notice a silent loss.
const PING_EVERY: Duration = Duration::from_secs(5);

/// How often a lost listening connection is opened again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// What a listener reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Another writer committed a change in this area (`config`, `auth` or `models`).
    Area(String),
    /// The listening connection was lost and is back: notifications sent meanwhile were missed, so
    /// everything should be reloaded once.
    Reconnected,
    /// The listening connection was lost; the listener keeps trying to open it again.
    Lost(String),
}

/// A running listener; dropping it stops its thread within a few milliseconds.
#[derive(Debug)]
pub struct Listener {
    stop: Arc<AtomicBool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Store {
    /// On PostgreSQL, starts a thread with its own connection that `LISTEN`s for other writers' changes
    /// and calls `on_change` for each (on that thread: keep it short, e.g. send on a channel). Returns
    /// `None` on SQLite, where only polling [`Store::revisions`] sees changes.
    ///
    /// The first connection is opened before this returns, so a change committed after it is reported.
    pub fn listen(&self, on_change: impl Fn(Change) + Send + 'static) -> Result<Option<Listener>, crate::StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let target = self.target.clone();
        let name = self.name.clone();
        let conn = subscribe(&target).map_err(|e| {
            crate::StoreError::Unavailable(format!("cannot listen for changes on the database {name}: {e}"))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("corral-listen".to_owned())
            .spawn(move || run(conn, &target, &stopped, &on_change))
            .map_err(|e| crate::StoreError::Unavailable(format!("cannot start the change listener: {e}")))?;
        Ok(Some(Listener { stop }))
    }
}

/// Opens a connection and subscribes it to [`CHANNEL`].
fn subscribe(target: &str) -> Result<PgConnection, String> {
    let mut conn = PgConnection::establish(target).map_err(|e| e.to_string())?;
    diesel::sql_query(format!("LISTEN {CHANNEL}"))
        .execute(&mut conn)
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// The listener's loop: report notifications, ping, reconnect after a loss, until `stop`.
fn run(mut conn: PgConnection, target: &str, stop: &AtomicBool, on_change: &dyn Fn(Change)) {
    let mut pinged = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let mut lost = None;
        for notification in conn.notifications_iter() {
            match notification {
                Ok(n) if n.channel == CHANNEL => on_change(Change::Area(n.payload)),
                Ok(_) => {}
                Err(e) => {
                    lost = Some(e.to_string());
                    break;
                }
            }
        }
        if lost.is_none() && pinged.elapsed() >= PING_EVERY {
            pinged = Instant::now();
            if let Err(e) = diesel::sql_query("SELECT 1").execute(&mut conn) {
                lost = Some(e.to_string());
            }
        }
        if let Some(why) = lost {
            on_change(Change::Lost(why));
            match reconnect(target, stop) {
                Some(fresh) => {
                    conn = fresh;
                    pinged = Instant::now();
                    on_change(Change::Reconnected);
                }
                None => return,
            }
            continue;
        }
        std::thread::sleep(CHECK_EVERY);
    }
}

/// Opens the listening connection again, retrying until it works or `stop`.
fn reconnect(target: &str, stop: &AtomicBool) -> Option<PgConnection> {
    while !stop.load(Ordering::Acquire) {
        if let Ok(conn) = subscribe(target) {
            return Some(conn);
        }
        std::thread::sleep(RETRY_EVERY);
    }
    None
}
