//! The admin-saved Ollama connections: the enable switch and each connection with its own settings,
//! written in one transaction, each connection's key sealed (see [`crate::Sealer`]).

use std::collections::BTreeMap;

use corral_config::ConnectionSettings;
use diesel::prelude::*;

use crate::conn::{snapshot_tx, write_tx};
use crate::revisions::Area;
use crate::schema::{ollama_connections, settings};
use crate::sealing::{is_sealed, OpenError, Sealer};
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
    /// Connections whose saved key did not open with the current secret key, by index, with why; their
    /// `key` is absent from `api_configs`. Always empty when saving.
    pub unreadable_keys: BTreeMap<usize, OpenError>,
}

impl Store {
    /// The saved Ollama configuration, or `None` if admins never saved one.
    ///
    /// The enable switch and the connections are read from one snapshot, so a save running at the same
    /// time is seen whole or not at all. Sealed keys are opened with `sealer`; a key that does not open
    /// (the secret key changed) is left out and its connection listed in `unreadable_keys`, so the rest of
    /// the configuration still loads. A key still in clear text (saved before sealing) is read as it is.
    pub fn load_ollama_config(&self, sealer: &Sealer) -> Result<Option<StoredOllama>, StoreError> {
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
            let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("connection {idx}: {e}"));
            let mut config: serde_json::Value = serde_json::from_str(&config).map_err(corrupt)?;
            if let Some(fields) = config.as_object_mut() {
                if let Some(serde_json::Value::String(key)) = fields.get("key") {
                    if is_sealed(key) {
                        match sealer.open(key, &url) {
                            Ok(plain) => {
                                fields.insert("key".to_owned(), serde_json::Value::String(plain));
                            }
                            Err(e) => {
                                fields.remove("key");
                                stored.unreadable_keys.insert(position, e);
                            }
                        }
                    }
                }
            }
            let config: ConnectionSettings = serde_json::from_value(config).map_err(corrupt)?;
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
    /// dropped, as Open WebUI prunes them. Each connection's key is sealed with `sealer`, bound to its URL.
    pub fn save_ollama_config(
        &self,
        enable: bool,
        base_urls: &[String],
        api_configs: &BTreeMap<String, ConnectionSettings>,
        sealer: &Sealer,
        now: i64,
    ) -> Result<i64, StoreError> {
        let mut rows = Vec::with_capacity(base_urls.len());
        for (i, url) in base_urls.iter().enumerate() {
            let idx = i32::try_from(i).map_err(|_| StoreError::Query("too many connections".to_owned()))?;
            let mut config = api_configs.get(&i.to_string()).cloned().unwrap_or_default();
            if let Some(key) = config.key.as_mut() {
                *key = sealer.seal(key, url);
            }
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
    pub fn load_ollama(&self, sealer: &Sealer) -> Result<Option<StoredOllama>, StoreError> {
        self.load_ollama_config(sealer)
    }

    /// [`Store::save_ollama_config`] taking the whole [`StoredOllama`].
    pub fn save_ollama(&self, cfg: &StoredOllama, sealer: &Sealer, now: i64) -> Result<i64, StoreError> {
        self.save_ollama_config(cfg.enable, &cfg.base_urls, &cfg.api_configs, sealer, now)
    }

    /// Seals every connection key still stored in clear text (saved before keys were sealed), in one
    /// transaction, and returns how many it sealed. Idempotent: the server runs it at every start-up.
    ///
    /// The configuration it describes does not change, so no revision moves.
    pub fn seal_clear_connection_keys(&self, sealer: &Sealer) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |c| {
            let rows: Vec<(i32, String, String)> = ollama_connections::table
                .select((
                    ollama_connections::idx,
                    ollama_connections::url,
                    ollama_connections::config,
                ))
                .load(c)?;
            let mut sealed = 0;
            for (idx, url, config) in rows {
                let mut config: serde_json::Value =
                    serde_json::from_str(&config).map_err(|e| StoreError::Corrupt(format!("connection {idx}: {e}")))?;
                let Some(fields) = config.as_object_mut() else {
                    continue;
                };
                let Some(serde_json::Value::String(key)) = fields.get("key") else {
                    continue;
                };
                if is_sealed(key) {
                    continue;
                }
                let key = sealer.seal(key, &url);
                fields.insert("key".to_owned(), serde_json::Value::String(key));
                diesel::update(ollama_connections::table.filter(ollama_connections::idx.eq(idx)))
                    .set(ollama_connections::config.eq(config.to_string()))
                    .execute(c)?;
                sealed += 1;
            }
            Ok(sealed)
        })
    }
}
