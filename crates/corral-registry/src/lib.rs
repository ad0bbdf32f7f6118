//! The fleet's model catalogue.
#![doc = include_str!("../README.md")]

mod catalogue;
mod error;
mod merge;
mod names;
mod version;

use serde_json::{Map, Value};

pub use catalogue::Catalogue;
pub use error::RegistryError;
pub use names::{strip_prefix, with_latest};
pub use version::{lowest_version, version_key};

/// One configured Ollama connection, as the merge needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConnectionView {
    /// Index in the configured list: the instance's `url_idx`, and its slot in the bodies
    /// given to [`Catalogue::merge`].
    pub idx: usize,
    /// Base URL.
    pub url: String,
    /// A disabled connection contributes nothing, whatever its slot holds.
    pub enabled: bool,
    /// Prepended as `<prefix>.` to this connection's model ids (an empty prefix is none).
    pub prefix_id: Option<String>,
    /// Attached as `tags` to this connection's models when non-empty; opaque to Corral.
    pub tags: Option<Vec<Value>>,
    /// When non-empty, only these unprefixed model ids (exact, tag included) are taken from
    /// this connection's `/api/tags`.
    pub model_ids: Vec<String>,
    /// `local` (the default when absent or empty) or `external`.
    pub connection_type: Option<String>,
}

/// One model of the merged catalogue (or of the merged `/api/ps` list).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The id clients use: the upstream `model`, with the first holder's prefix.
    pub id: String,
    /// Indices of the instances that hold it, lowest first, without repeats.
    pub urls: Vec<usize>,
    /// The model object to list (from the lowest-index holder), with Corral's fields added
    /// (`model` prefixed, `urls`, `connection_type`, `tags`, `expires_at`).
    pub object: Map<String, Value>,
}

#[cfg(test)]
mod tests;
