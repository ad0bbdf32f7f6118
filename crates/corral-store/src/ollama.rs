//! The admin-saved Ollama connections: the enable switch and each connection with its own settings,
//! written in one transaction.

use std::collections::BTreeMap;

use corral_config::ConnectionSettings;
use diesel::prelude::*;

use crate::conn::snapshot_tx;
use crate::revisions::Area;
use crate::schema::{ollama_connections, settings};
use crate::{Store, StoreError};

/// The settings key holding `ENABLE_OLLAMA_API`; its presence means admins saved a configuration.
pub(crate) const ENABLE_KEY: &str = "ollama.enable";

/// What admins saved through `/ollama/config/update`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredOllama {
    /// `ENABLE_OLLAMA_API`.
    pub enable: bool,
    /// `OLLAMA_BASE_URLS`, in order.
    pub base_urls: Vec<String>,
    /// `OLLAMA_API_CONFIGS`, keyed by index (`"0"`, `"1"`, …); connections with default settings have no entry.
    pub api_configs: BTreeMap<String, ConnectionSettings>,
}

impl Store {
    /// The saved Ollama configuration, or `None` if admins never saved one.
    ///
    /// The enable switch and the connections are read from one snapshot, so a save running at the same
    /// time is seen whole or not at all.
    pub fn load_ollama_config(&self) -> Result<Option<StoredOllama>, StoreError> {
        let mut conn = self.conn()?;
        let (enable, rows) = snapshot_tx(&mut conn, |c| {
            let enable: Option<String> = settings::table
                .filter(settings::key.eq(ENABLE_KEY))
                .select(settings::value)
                .first(c)
                .optional()?;
            let rows: Vec<(i32, String, String)> = ollama_connections::table
                .order(ollama_connections::idx.asc())
                .select((
                    ollama_connections::idx,
                    ollama_connections::url,
                    ollama_connections::config,
                ))
                .load(c)?;
            Ok::<_, StoreError>((enable, rows))
        })?;
        let Some(enable) = enable else {
            return Ok(None);
        };
        let enable: bool =
            serde_json::from_str(&enable).map_err(|e| StoreError::Corrupt(format!("{ENABLE_KEY}: {e}")))?;
        let mut stored = StoredOllama {
            enable,
            ..StoredOllama::default()
        };
        for (position, (idx, url, config)) in rows.into_iter().enumerate() {
            if usize::try_from(idx).ok() != Some(position) {
                return Err(StoreError::Corrupt(format!(
                    "connection indices are not contiguous at {idx}"
                )));
            }
            let config: ConnectionSettings =
                serde_json::from_str(&config).map_err(|e| StoreError::Corrupt(format!("connection {idx}: {e}")))?;
            if config != ConnectionSettings::default() {
                stored.api_configs.insert(position.to_string(), config);
            }
            stored.base_urls.push(url);
        }
        Ok(Some(stored))
    }

    /// Replaces the enable switch and every connection in one transaction, and returns the new `config`
    /// revision.
    ///
    /// Nothing is half-saved: a failure leaves the old configuration and revision. Settings are kept for
    /// indexes `0..base_urls.len()` only, so entries for removed connections (and legacy URL keys) are
    /// dropped, as Open WebUI prunes them.
    pub fn save_ollama_config(
        &self,
        enable: bool,
        base_urls: &[String],
        api_configs: &BTreeMap<String, ConnectionSettings>,
        now: i64,
    ) -> Result<i64, StoreError> {
        let mut rows = Vec::with_capacity(base_urls.len());
        for (i, url) in base_urls.iter().enumerate() {
            let idx = i32::try_from(i).map_err(|_| StoreError::Query("too many connections".to_owned()))?;
            let config = api_configs.get(&i.to_string()).cloned().unwrap_or_default();
            let config = serde_json::to_string(&config).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            rows.push((
                ollama_connections::idx.eq(idx),
                ollama_connections::url.eq(url.clone()),
                ollama_connections::config.eq(config),
            ));
        }
        let enable = serde_json::Value::Bool(enable).to_string();
        let ((), revision) = self.write_revision(Area::Config, |c| {
            crate::settings::upsert(c, ENABLE_KEY, &enable, now)?;
            diesel::delete(ollama_connections::table).execute(c)?;
            // One statement per row: MultiConnection has no multi-row insert, and there are few connections.
            for row in &rows {
                diesel::insert_into(ollama_connections::table)
                    .values(row.clone())
                    .execute(c)?;
            }
            Ok(())
        })?;
        Ok(revision)
    }

    /// [`Store::load_ollama_config`], under the name the server first used.
    pub fn load_ollama(&self) -> Result<Option<StoredOllama>, StoreError> {
        self.load_ollama_config()
    }

    /// [`Store::save_ollama_config`] taking the whole [`StoredOllama`].
    pub fn save_ollama(&self, cfg: &StoredOllama, now: i64) -> Result<i64, StoreError> {
        self.save_ollama_config(cfg.enable, &cfg.base_urls, &cfg.api_configs, now)
    }
}
