//! State shared by every worker: the current settings snapshot.
//!
//! Requests read an `Arc` snapshot without locking; a change swaps in a new snapshot.

use std::sync::Arc;

use arc_swap::ArcSwap;
use corral_config::Settings;

/// State shared by every worker.
pub struct Shared {
    settings: ArcSwap<Settings>,
}

impl Shared {
    /// Wraps the start-up settings.
    pub fn new(settings: Settings) -> Shared {
        Shared {
            settings: ArcSwap::from_pointee(settings),
        }
    }

    /// The current settings; cheap, lock-free.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Replaces the settings for every request that starts after this call.
    pub fn set_settings(&self, settings: Settings) {
        self.settings.store(Arc::new(settings));
    }
}
