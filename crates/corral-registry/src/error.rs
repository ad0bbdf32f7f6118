//! The registry's error type.

/// Why the catalogue refused a lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No model of the catalogue answers to the name, even with `:latest` implied.
    #[error("Model '{model}' was not found")]
    ModelNotFound {
        /// The name as it was looked up, with `:latest` implied (as Open WebUI reports it).
        model: String,
    },
}

impl RegistryError {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::ModelNotFound { .. } => "model_not_found",
        }
    }
}
