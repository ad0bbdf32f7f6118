//! Picking up configuration changes other replicas saved: a cheap revision poll, off the
//! executor, and a reload only when the revision moved.
//!
//! When the database is unreachable, requests go on with the last known configuration; the
//! watcher logs the outage once and the recovery once.

use std::sync::Arc;
use std::time::Duration;

use crate::state::Shared;

/// How often the revision is polled; a change is served within about this long.
const POLL: Duration = Duration::from_millis(500);

/// Starts the watcher on the current actix system, if there is a store.
pub fn spawn(shared: Arc<Shared>) {
    let Some(store) = shared.store() else { return };
    actix_rt::spawn(async move {
        let mut healthy = true;
        loop {
            tokio::time::sleep(POLL).await;
            let store = store.clone();
            let known = shared.config_revision();
            let watched = shared.clone();
            let polled = actix_rt::task::spawn_blocking(move || {
                if watched.auth.enforced() {
                    watched
                        .auth
                        .refresh_if_changed(&store)
                        .map_err(|e| corral_store::StoreError::Query(e.to_string()))?;
                }
                let revision = store.revision("config")?;
                if revision <= known {
                    return Ok(None);
                }
                let Some(sealer) = watched.sealer() else {
                    return Ok(None);
                };
                Ok(Some((revision, store.load_ollama(sealer)?)))
            })
            .await;
            let result: Result<_, corral_store::StoreError> = match polled {
                Ok(r) => r,
                Err(e) => Err(corral_store::StoreError::Query(e.to_string())),
            };
            match result {
                Ok(change) => {
                    if !healthy {
                        tracing::info!("the database answers again");
                        healthy = true;
                    }
                    if let Some((revision, Some(stored))) = change {
                        let ollama = shared.ollama_from_stored(stored);
                        match shared.apply_stored(ollama, revision) {
                            Ok(()) => tracing::info!(revision, "configuration changed in the database; applied"),
                            Err(e) => {
                                tracing::error!(revision, error = %e, "configuration in the database is unusable")
                            }
                        }
                    }
                }
                Err(e) => {
                    if healthy {
                        tracing::warn!(error = %e, "the database is unreachable; serving with the last known configuration");
                        healthy = false;
                    }
                }
            }
        }
    });
}
