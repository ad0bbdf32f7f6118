//! The bridge between the settings, the fetched listings and `corral-registry`'s pure merge.

use corral_config::Settings;
use corral_registry::{Catalogue, ConnectionView};

use crate::discovery::Listings;

/// The registry's view of the configured connections.
pub fn connections(settings: &Settings) -> Vec<ConnectionView> {
    settings
        .ollama
        .base_urls
        .iter()
        .enumerate()
        .map(|(idx, url)| {
            let conn = settings.ollama.connection(idx);
            ConnectionView {
                idx,
                url: url.clone(),
                enabled: conn.enabled(),
                prefix_id: conn.prefix().map(str::to_owned),
                tags: conn.tags.clone(),
                model_ids: conn.model_ids.clone().unwrap_or_default(),
                connection_type: conn.connection_type.clone(),
            }
        })
        .collect()
}

/// Merges the listings into one catalogue.
pub fn merge(settings: &Settings, listings: &Listings) -> Catalogue {
    Catalogue::merge(&connections(settings), &listings.tags, &listings.ps)
}
