//! The admin-saved Ollama connections: the enable switch and each connection with its own
//! settings, written in one transaction.

use std::collections::BTreeMap;

use corral_config::ConnectionSettings;
use diesel::prelude::*;

use crate::schema::{ollama_connections, settings, state_revisions};
use crate::{Store, StoreError};

const ENABLE_KEY: &str = "ollama.enable";

/// What admins saved through `/ollama/config/update`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoredOllama {
    /// `ENABLE_OLLAMA_API`.
    pub enable: bool,
    /// `OLLAMA_BASE_URLS`, in order.
    pub base_urls: Vec<String>,
    /// `OLLAMA_API_CONFIGS`, keyed by index.
    pub api_configs: BTreeMap<String, ConnectionSettings>,
}

impl Store {
    /// The saved Ollama configuration, or `None` if admins never saved one.
    pub fn load_ollama(&self) -> Result<Option<StoredOllama>, StoreError> {
        let mut conn = self.conn()?;
        let enable: Option<String> = settings::table
            .filter(settings::key.eq(ENABLE_KEY))
            .select(settings::value)
            .first(&mut *conn)
            .optional()?;
        let Some(enable) = enable else {
            return Ok(None);
        };
        let enable: bool =
            serde_json::from_str(&enable).map_err(|e| StoreError::Corrupt(format!("{ENABLE_KEY}: {e}")))?;
        let rows: Vec<(i32, String, String)> = ollama_connections::table
            .order(ollama_connections::idx.asc())
            .select((
                ollama_connections::idx,
                ollama_connections::url,
                ollama_connections::config,
            ))
            .load(&mut *conn)?;
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

    /// Replaces the saved Ollama configuration in one transaction and returns the new
    /// `config` revision. Nothing is half-saved: a failure leaves the old configuration.
    pub fn save_ollama(&self, cfg: &StoredOllama, now: i64) -> Result<i64, StoreError> {
        let mut rows = Vec::with_capacity(cfg.base_urls.len());
        for (i, url) in cfg.base_urls.iter().enumerate() {
            let idx = i32::try_from(i).map_err(|_| StoreError::Query("too many connections".to_owned()))?;
            let config = cfg.api_configs.get(&i.to_string()).cloned().unwrap_or_default();
            let config = serde_json::to_string(&config).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            rows.push((
                ollama_connections::idx.eq(idx),
                ollama_connections::url.eq(url.clone()),
                ollama_connections::config.eq(config),
            ));
        }
        let enable = serde_json::Value::Bool(cfg.enable).to_string();
        let mut conn = self.conn()?;
        let revision = conn.transaction::<i64, diesel::result::Error, _>(|c| {
            diesel::delete(settings::table.filter(settings::key.eq(ENABLE_KEY))).execute(c)?;
            diesel::insert_into(settings::table)
                .values((
                    settings::key.eq(ENABLE_KEY),
                    settings::value.eq(&enable),
                    settings::updated_at.eq(now),
                ))
                .execute(c)?;
            diesel::delete(ollama_connections::table).execute(c)?;
            for row in &rows {
                diesel::insert_into(ollama_connections::table)
                    .values(row.clone())
                    .execute(c)?;
            }
            bump(c, "config")
        })?;
        Ok(revision)
    }

    /// The current revision of `area` (`config`): it grows with every write there.
    pub fn revision(&self, area: &str) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        Ok(state_revisions::table
            .filter(state_revisions::area.eq(area))
            .select(state_revisions::revision)
            .first(&mut *conn)
            .optional()?
            .unwrap_or(0))
    }
}

/// Bumps `area`'s revision inside the caller's transaction and returns the new value.
fn bump(conn: &mut crate::AnyConnection, area: &str) -> Result<i64, diesel::result::Error> {
    diesel::update(state_revisions::table.filter(state_revisions::area.eq(area)))
        .set(state_revisions::revision.eq(state_revisions::revision + 1))
        .execute(conn)?;
    state_revisions::table
        .filter(state_revisions::area.eq(area))
        .select(state_revisions::revision)
        .first(conn)
}
