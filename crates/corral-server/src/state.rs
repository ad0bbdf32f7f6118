//! State shared by every worker: the current settings snapshot, the fleet's catalogue and
//! the balancing policy.
//!
//! Requests read `Arc` snapshots without locking; a change swaps in a new snapshot.

use std::sync::Arc;

use arc_swap::ArcSwap;
use corral_balance::Policy;
use corral_config::Settings;

use crate::fleet::Fleet;

/// State shared by every worker.
pub struct Shared {
    settings: ArcSwap<Settings>,
    /// The merged catalogue and its refresh machinery.
    pub fleet: Fleet,
    /// How an instance is chosen among those holding a model.
    pub policy: Box<dyn Policy>,
}

impl Shared {
    /// Wraps the start-up settings.
    pub fn new(settings: Settings) -> Shared {
        Shared {
            settings: ArcSwap::from_pointee(settings),
            fleet: Fleet::default(),
            policy: Box::new(corral_balance::Random),
        }
    }

    /// The current settings; cheap, lock-free.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    /// Replaces the settings for every request that starts after this call, and marks the
    /// catalogue stale.
    pub fn set_settings(&self, settings: Settings) {
        self.settings.store(Arc::new(settings));
        self.fleet.invalidate();
    }
}
