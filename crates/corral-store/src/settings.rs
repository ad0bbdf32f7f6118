//! Admin-saved settings and generated secrets: one JSON document per key.

use std::collections::BTreeMap;

use diesel::prelude::*;
use serde_json::Value;

use crate::conn::on_backend;
use crate::revisions::Area;
use crate::schema::settings;
use crate::{Store, StoreError};

/// Keys the store itself uses; [`Store::put_setting`] refuses them.
pub(crate) const RESERVED_KEYS: [&str; 2] = [crate::ollama::ENABLE_KEY, crate::users::FIRST_USER_KEY];

impl Store {
    /// The JSON value saved under `key`, if any.
    pub fn get_setting(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let mut conn = self.conn()?;
        let text: Option<String> = settings::table
            .filter(settings::key.eq(key))
            .select(settings::value)
            .first(&mut *conn)
            .optional()?;
        text.map(|t| parse(key, &t)).transpose()
    }

    /// Every saved setting, by key.
    pub fn list_settings(&self) -> Result<BTreeMap<String, Value>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<(String, String)> = settings::table
            .select((settings::key, settings::value))
            .load(&mut *conn)?;
        rows.into_iter().map(|(k, v)| parse(&k, &v).map(|v| (k, v))).collect()
    }

    /// Saves `value` under `key`, replacing what was there, and bumps the `config` revision.
    ///
    /// Keys the store manages itself (such as `ollama.enable`) are refused with [`StoreError::Conflict`].
    pub fn put_setting(&self, key: &str, value: &Value, now: i64) -> Result<(), StoreError> {
        if RESERVED_KEYS.contains(&key) {
            return Err(StoreError::Conflict(format!(
                "the setting {key} is managed by the store"
            )));
        }
        let text = value.to_string();
        self.write(Area::Config, |conn| {
            upsert(conn, key, &text, now)?;
            Ok(())
        })
    }

    /// Deletes the setting `key`; returns whether it existed. Bumps the `config` revision if it did.
    pub fn delete_setting(&self, key: &str) -> Result<bool, StoreError> {
        if RESERVED_KEYS.contains(&key) {
            return Err(StoreError::Conflict(format!(
                "the setting {key} is managed by the store"
            )));
        }
        let deleted = self.write(Area::Config, |conn| {
            let n = diesel::delete(settings::table.filter(settings::key.eq(key))).execute(conn)?;
            if n == 0 {
                // Nothing changed: roll back so the revision does not move.
                return Err(StoreError::NotFound);
            }
            Ok(n)
        });
        match deleted {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The value saved under `key`, saving `value` first if there is none; every caller gets the same answer.
    ///
    /// For generated secrets (such as the JWT signing secret): replicas starting together each propose one,
    /// and all of them end up using whichever was saved first. Bumps `config` only when it saves.
    pub fn setting_or_insert(&self, key: &str, value: &Value, now: i64) -> Result<Value, StoreError> {
        if let Some(existing) = self.get_setting(key)? {
            return Ok(existing);
        }
        let text = value.to_string();
        let mut conn = self.conn()?;
        let stored = crate::conn::write_tx(&mut conn, |c| {
            let inserted = on_backend!(c, c => diesel::insert_into(settings::table)
                .values((settings::key.eq(key), settings::value.eq(&text), settings::updated_at.eq(now)))
                .on_conflict_do_nothing()
                .execute(c))?;
            if inserted > 0 {
                crate::revisions::bump(c, Area::Config)?;
            }
            settings::table
                .filter(settings::key.eq(key))
                .select(settings::value)
                .first::<String>(c)
                .map_err(StoreError::from)
        })?;
        parse(key, &stored)
    }
}

/// Inserts or replaces one setting inside the caller's transaction.
pub(crate) fn upsert(
    conn: &mut crate::conn::AnyConnection,
    key: &str,
    text: &str,
    now: i64,
) -> Result<usize, diesel::result::Error> {
    on_backend!(conn, c => diesel::insert_into(settings::table)
        .values((settings::key.eq(key), settings::value.eq(text), settings::updated_at.eq(now)))
        .on_conflict(settings::key)
        .do_update()
        .set((settings::value.eq(text), settings::updated_at.eq(now)))
        .execute(c))
}

/// Parses a stored JSON value, naming its key if it is corrupt.
fn parse(key: &str, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("setting {key}: {e}")))
}
