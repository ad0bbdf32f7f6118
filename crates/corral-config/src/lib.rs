//! Corral's settings, layered from built-in defaults, a TOML file and environment variables.
//!
//! This crate is pure: callers read the file and the environment and pass them in as values
//! (`&str` and an [`Env`]), so tests can build any layering without touching the process.
//! The server adds the last layer, what admins saved in the database, through
//! [`Settings::with_stored_ollama`].
#![doc = include_str!("../README.md")]

mod env;
mod keys;
mod proxies;
mod settings;

pub use env::{env_overrides, Env};
pub use keys::{reference_markdown, EnvKind, SettingDoc, SETTINGS};
pub use proxies::{client_address, TrustedProxies};
pub use settings::{
    AuthSettings, BalanceSettings, ConnectionSettings, DatabaseSettings, MetricsSettings, OllamaSettings,
    ServerSettings, Settings, Slots, UpstreamSettings,
};

/// Why a configuration was refused. Every variant names the key and the problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The TOML file does not parse.
    #[error("config file: {0}")]
    File(String),
    /// An environment variable has a value that cannot be used.
    #[error("{var}: {problem}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong with its value.
        problem: String,
    },
    /// A key is unknown or has a value of the wrong type.
    #[error("{key}: {problem}")]
    Key {
        /// The dotted key, e.g. `server.port`.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

impl ConfigError {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ConfigError::File(_) => "file",
            ConfigError::Env { .. } => "env",
            ConfigError::Key { .. } => "key",
        }
    }

    pub(crate) fn key(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// An instance URL fit for a log line: any `user:password@` in it replaced by `***@`.
pub fn loggable_url(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let authority_end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]).into(),
        None => url.into(),
    }
}

/// A database URL fit for a log line: credentials before `@` and any `password=` parameter
/// replaced by `***`.
pub fn loggable_database_url(url: &str) -> String {
    let mut out = loggable_url(url).into_owned();
    let mut from = 0;
    while let Some(at) = out[from..].find("password=").map(|i| from + i + "password=".len()) {
        let end = out[at..].find(['&', ' ', '#']).map_or(out.len(), |i| at + i);
        out.replace_range(at..end, "***");
        from = at + 3;
    }
    out
}

/// Layers defaults, then `file` (TOML text, if any), then `env`, and validates the result.
pub fn load(file: Option<&str>, env: &dyn Env) -> Result<Settings, ConfigError> {
    let defaults =
        config::Config::try_from(&Settings::default()).map_err(|e| ConfigError::key("<defaults>", e.to_string()))?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(text) = file {
        // Parse once on our own so a syntax error names its line, then hand it to `config`.
        toml::from_str::<toml::Table>(text).map_err(|e| ConfigError::File(e.to_string()))?;
        builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
    }
    for (key, value) in env_overrides(env)? {
        builder = builder
            .set_override(key.clone(), value)
            .map_err(|e| ConfigError::key(key, e.to_string()))?;
    }
    let layered = builder.build().map_err(|e| ConfigError::File(e.to_string()))?;
    let settings: Settings = serde_path_to_error::deserialize(layered).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." { "<root>".to_owned() } else { path };
        ConfigError::key(key, e.into_inner().to_string())
    })?;
    settings.validate()?;
    Ok(settings)
}

#[cfg(test)]
mod tests;
