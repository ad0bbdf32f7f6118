//! Picking up changes other replicas saved (configuration, accounts, keys, revocations, model
//! records), off the executor.
//!
//! On PostgreSQL (unless `database.notify` is off) the store's listener pushes each committed
//! change's area, and the watcher reloads at once. Polling the revision counters every half
//! second stays underneath: it is the only way on SQLite, and the fallback when a notification
//! is lost. After the database was lost (the poll failed, or the listening connection dropped
//! and came back) everything is reloaded once, since changes made meanwhile may not have been
//! announced.
//!
//! When the database is unreachable, requests go on with the last known configuration; the
//! watcher logs the outage once and the recovery once.

use std::sync::Arc;
use std::time::Duration;

use corral_store::{Change, Store, StoreError};
use tokio::sync::mpsc;

use crate::state::Shared;

/// How often the revisions are polled; without notifications a change is served within about
/// this long.
const POLL: Duration = Duration::from_millis(500);

/// Starts the watcher on the current actix system, if there is a store.
pub fn spawn(shared: Arc<Shared>) {
    let Some(store) = shared.store() else { return };
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = if shared.settings().database.notify {
        match store.listen(move |change| {
            let _ = tx.send(change);
        }) {
            Ok(Some(listener)) => {
                tracing::info!("listening for other replicas' changes (PostgreSQL LISTEN/NOTIFY)");
                Some(listener)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for changes; polling every {POLL:?} instead");
                None
            }
        }
    } else {
        None
    };
    let mut changes = listener.is_some().then_some(rx);
    actix_rt::spawn(async move {
        // Stops the listener's thread when the watcher ends with the system.
        let _listener = listener;
        let mut healthy = true;
        let mut reload_all = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                change = next(&mut changes) => note(change, &mut reload_all),
            }
            // A burst of changes is one reload.
            while let Some(rx) = changes.as_mut() {
                match rx.try_recv() {
                    Ok(change) => note(Some(change), &mut reload_all),
                    Err(_) => break,
                }
            }
            let full = reload_all || !healthy;
            match poll(&shared, &store, full).await {
                Ok(()) => {
                    shared.lifecycle.database_answered();
                    reload_all = false;
                    if !healthy {
                        tracing::info!("the database answers again; everything reloaded from it");
                        healthy = true;
                    }
                }
                Err(e) => {
                    shared.metrics.database_error();
                    if healthy {
                        tracing::warn!(error = %e, "the database is unreachable; serving with the last known configuration");
                        healthy = false;
                    }
                }
            }
        }
    });
}

/// The next pushed change; pending forever when there is no listener.
async fn next(changes: &mut Option<mpsc::UnboundedReceiver<Change>>) -> Option<Change> {
    match changes {
        Some(rx) => {
            let change = rx.recv().await;
            if change.is_none() {
                // The listener is gone: polling alone from now on.
                *changes = None;
            }
            change
        }
        None => std::future::pending().await,
    }
}

/// Takes note of a pushed change: a listener that lost its connection and got it back means
/// announcements may have been missed, so the next reload is a full one.
fn note(change: Option<Change>, reload_all: &mut bool) {
    match change {
        Some(Change::Reconnected) => {
            tracing::info!("the change listener reconnected; reloading everything");
            *reload_all = true;
        }
        Some(Change::Lost(why)) => {
            tracing::warn!(error = %why, "the change listener lost its connection; polling until it is back");
        }
        Some(Change::Area(_)) | None => {}
    }
}

/// Reloads what changed in the database (everything if `full`), off the executor.
async fn poll(shared: &Arc<Shared>, store: &Store, full: bool) -> Result<(), StoreError> {
    let store = store.clone();
    let known = if full { -1 } else { shared.config_revision() };
    let watched = shared.clone();
    let polled = actix_rt::task::spawn_blocking(move || {
        if watched.auth.enforced() {
            let refreshed = if full {
                watched.auth.reload(&store)
            } else {
                watched.auth.refresh_if_changed(&store)
            };
            refreshed.map_err(|e| StoreError::Query(e.to_string()))?;
        }
        let revision = store.revision("config")?;
        if revision <= known {
            return Ok(None);
        }
        let Some(sealer) = watched.sealer() else {
            return Ok(None);
        };
        Ok::<_, StoreError>(Some((revision, store.load_ollama(sealer)?)))
    })
    .await;
    let change = match polled {
        Ok(r) => r?,
        Err(e) => return Err(StoreError::Query(e.to_string())),
    };
    if let Some((revision, Some(stored))) = change {
        if revision == shared.config_revision() && full {
            // Nothing new after all; applying it again would only mark the catalogue stale.
            return Ok(());
        }
        let ollama = shared.ollama_from_stored(stored);
        match shared.apply_stored(ollama, revision) {
            Ok(()) => tracing::info!(revision, "configuration changed in the database; applied"),
            Err(e) => {
                tracing::error!(revision, error = %e, "configuration in the database is unusable")
            }
        }
    }
    Ok(())
}
