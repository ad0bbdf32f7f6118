//! Per-area revision counters: every write bumps its area's counter in the same transaction, so replicas
//! notice changes by polling one cheap query.

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use crate::conn::{write_tx, AnyConnection};
use crate::schema::state_revisions;
use crate::{Store, StoreError};

/// What a write changes, and so which counter it bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Area {
    /// Settings and the Ollama connections.
    Config,
    /// Users, passwords, API keys, groups and revoked tokens.
    Auth,
    /// Model records.
    Models,
}

impl Area {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Area::Config => "config",
            Area::Auth => "auth",
            Area::Models => "models",
        }
    }
}

/// The revision of each area; a replica reloads an area when its number grows.
///
/// Usage stamps (`last_used_at` of keys, `last_active_at` of users) and the purge of expired revoked tokens
/// change no decision another replica makes, so they bump nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revisions {
    /// Settings and the Ollama connections.
    pub config: i64,
    /// Users, passwords, API keys, groups, memberships and revoked tokens.
    pub auth: i64,
    /// Model records.
    pub models: i64,
}

impl Store {
    /// Every area's revision, in one query.
    pub fn revisions(&self) -> Result<Revisions, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<(String, i64)> = state_revisions::table
            .select((state_revisions::area, state_revisions::revision))
            .load(&mut *conn)?;
        let mut revisions = Revisions::default();
        for (area, revision) in rows {
            match area.as_str() {
                "config" => revisions.config = revision,
                "auth" => revisions.auth = revision,
                "models" => revisions.models = revision,
                // Areas added by a newer release sharing this database.
                _ => {}
            }
        }
        Ok(revisions)
    }

    /// The current revision of `area` (`config`, `auth` or `models`); 0 for an unknown area.
    pub fn revision(&self, area: &str) -> Result<i64, StoreError> {
        let mut conn = self.conn()?;
        Ok(state_revisions::table
            .filter(state_revisions::area.eq(area))
            .select(state_revisions::revision)
            .first(&mut *conn)
            .optional()?
            .unwrap_or(0))
    }

    /// Runs `f` in a write transaction that also bumps `area`, and returns `f`'s value.
    pub(crate) fn write<T>(
        &self,
        area: Area,
        f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_revision(area, f).map(|(value, _)| value)
    }

    /// Runs `f` in a write transaction that also bumps `area`, and returns `f`'s value and the new revision.
    ///
    /// The bump comes first: on PostgreSQL its row lock makes writers of one area take turns, so a
    /// delete-then-insert such as the Ollama save never meets rows another transaction inserted meanwhile,
    /// and a count-then-insert such as the first user's role sees every earlier user. (SQLite's
    /// `BEGIN IMMEDIATE` already serialises all writers.)
    pub(crate) fn write_revision<T>(
        &self,
        area: Area,
        f: impl FnOnce(&mut AnyConnection) -> Result<T, StoreError>,
    ) -> Result<(T, i64), StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |c| {
            let revision = bump(c, area)?;
            let value = f(c)?;
            Ok((value, revision))
        })
    }
}

/// Bumps `area`'s revision inside the caller's transaction and returns the new value.
///
/// On PostgreSQL it also queues a notification on [`crate::notify::CHANNEL`] (payload: the area), which
/// PostgreSQL delivers to listening replicas when the transaction commits, and never if it rolls back.
pub(crate) fn bump(conn: &mut AnyConnection, area: Area) -> Result<i64, DieselError> {
    let name = area.as_str();
    diesel::update(state_revisions::table.filter(state_revisions::area.eq(name)))
        .set(state_revisions::revision.eq(state_revisions::revision + 1))
        .execute(conn)?;
    if let AnyConnection::Postgresql(c) = conn {
        diesel::sql_query(format!("NOTIFY {}, '{name}'", crate::notify::CHANNEL)).execute(c)?;
    }
    state_revisions::table
        .filter(state_revisions::area.eq(name))
        .select(state_revisions::revision)
        .first(conn)
}
