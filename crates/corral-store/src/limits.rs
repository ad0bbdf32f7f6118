//! Limits per API key, user or group, and the counters replicas share to enforce them.

use corral_auth::limits::{CounterKey, Limits, Metric, Scope};
use diesel::backend::Backend;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Text};
use diesel::sqlite::Sqlite;
use diesel::upsert::excluded;

use crate::conn::{on_backend, write_tx};
use crate::revisions::Area;
use crate::schema::{api_keys, groups, limit_counters, limits, users};
use crate::{Store, StoreError};

/// One replica's counts written in one statement: `rows` is a JSON array of
/// `[scope, subject_id, metric, bucket, value]`, each an upsert of the replica's own row.
///
/// Not diesel's `insert_into(…).on_conflict(…)`, nor `sql_query`: diesel prepares both anew at
/// every execution (it caches neither `ON CONFLICT` nor raw SQL), and the sync runs four times
/// a second whatever the load. This statement's text is the same whatever the rows, so each
/// connection prepares it once and keeps it. With [`ReadCounts`], a sync of five counters on
/// SQLite went from about 460,000 instructions to 155,000 (callgrind).
struct WriteCounts<'a> {
    replica: &'a str,
    now: i64,
    rows: &'a str,
}

impl WriteCounts<'_> {
    /// The statement around `source`, the backend's function that turns a JSON array into rows
    /// (each row's column `value`).
    fn walk<'b, DB>(&'b self, mut out: AstPass<'_, 'b, DB>, source: (&str, &str)) -> QueryResult<()>
    where
        DB: Backend + HasSqlType<Text> + HasSqlType<BigInt>,
        str: ToSql<Text, DB>,
        i64: ToSql<BigInt, DB>,
    {
        out.push_sql(
            "INSERT INTO limit_counters (scope, subject_id, metric, bucket, replica, value, updated_at) \
             SELECT value ->> 0, value ->> 1, value ->> 2, CAST(value ->> 3 AS BIGINT), ",
        );
        out.push_bind_param::<Text, _>(self.replica)?;
        out.push_sql(", CAST(value ->> 4 AS BIGINT), ");
        out.push_bind_param::<BigInt, _>(&self.now)?;
        out.push_sql(" FROM ");
        out.push_sql(source.0);
        out.push_bind_param::<Text, _>(self.rows)?;
        out.push_sql(source.1);
        // `WHERE true`: SQLite reads `ON` after a bare `FROM` as a join's.
        out.push_sql(
            " WHERE true ON CONFLICT (scope, subject_id, metric, bucket, replica) \
             DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        );
        Ok(())
    }
}

impl QueryId for WriteCounts<'_> {
    type QueryId = WriteCounts<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Sqlite> for WriteCounts<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        self.walk(out, ("json_each(", ")"))
    }
}

impl QueryFragment<Pg> for WriteCounts<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.walk(out, ("json_array_elements(CAST(", " AS json))"))
    }
}

impl<Conn> RunQueryDsl<Conn> for WriteCounts<'_> {}

/// The other replicas' counts still in use (see [`Store::sync_limit_counters`]), summed per
/// counter by the database: a row per counter, however many replicas counted it. Every start
/// of a replica is a new replica id, and a budget's hourly rows stay for its whole period, so
/// rows per counter grow with every restart (a bench's dozens of runs; a month of rolling
/// deploys), and a sync four times a second would otherwise read them all.
///
/// Written out rather than in diesel's DSL, whose `OR` of groups diesel walks three times an
/// execution to find the cached statement and bind it.
struct ReadCounts<'a> {
    replica: &'a str,
    minute: i64,
    hour: i64,
    fresh_since: i64,
}

impl ReadCounts<'_> {
    /// The statement, with `sum` the backend's sum of `value` kept within a `BIGINT`.
    fn walk<'b, DB>(&'b self, mut out: AstPass<'_, 'b, DB>, sum: &str) -> QueryResult<()>
    where
        DB: Backend + HasSqlType<Text> + HasSqlType<BigInt>,
        str: ToSql<Text, DB>,
        i64: ToSql<BigInt, DB>,
    {
        out.push_sql("SELECT scope, subject_id, metric, bucket, ");
        out.push_sql(sum);
        out.push_sql(" FROM limit_counters WHERE replica <> ");
        out.push_bind_param::<Text, _>(self.replica)?;
        out.push_sql(" AND value > 0 AND ((metric IN ('requests', 'tokens') AND bucket >= ");
        out.push_bind_param::<BigInt, _>(&self.minute)?;
        out.push_sql(") OR (metric = 'budget' AND bucket >= ");
        out.push_bind_param::<BigInt, _>(&self.hour)?;
        out.push_sql(") OR (metric = 'in_flight' AND updated_at >= ");
        out.push_bind_param::<BigInt, _>(&self.fresh_since)?;
        out.push_sql(")) GROUP BY scope, subject_id, metric, bucket");
        Ok(())
    }
}

impl Query for ReadCounts<'_> {
    type SqlType = (Text, Text, Text, BigInt, BigInt);
}

impl QueryId for ReadCounts<'_> {
    type QueryId = ReadCounts<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Sqlite> for ReadCounts<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        // SQLite's `SUM` fails on an overflow; `TOTAL` adds as a double (exact up to 2^53), and
        // the cast of a double past the largest integer gives the largest integer.
        self.walk(out, "CAST(TOTAL(value) AS INTEGER)")
    }
}

impl QueryFragment<Pg> for ReadCounts<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // PostgreSQL's `SUM` of `BIGINT` is a `NUMERIC`, exact.
        self.walk(out, "CAST(LEAST(SUM(value), 9223372036854775807) AS BIGINT)")
    }
}

impl<Conn> RunQueryDsl<Conn> for ReadCounts<'_> {}

/// Limits as stored, with whose they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLimits {
    /// Key, user or group.
    pub scope: Scope,
    /// The key's, user's or group's id.
    pub subject_id: String,
    /// The limits.
    pub limits: Limits,
    /// Unix seconds of the last change.
    pub updated_at: i64,
}

fn parse_row(scope: &str, subject_id: String, spec: &str, updated_at: i64) -> Result<StoredLimits, StoreError> {
    let scope = Scope::parse(scope).ok_or_else(|| StoreError::Corrupt(format!("limit scope {scope:?}")))?;
    let value: serde_json::Value =
        serde_json::from_str(spec).map_err(|e| StoreError::Corrupt(format!("limits of {subject_id}: {e}")))?;
    let limits = Limits::from_json(&value).map_err(|e| StoreError::Corrupt(format!("limits of {subject_id}: {e}")))?;
    Ok(StoredLimits {
        scope,
        subject_id,
        limits,
        updated_at,
    })
}

fn subject_exists(c: &mut crate::conn::AnyConnection, scope: Scope, id: &str) -> Result<bool, StoreError> {
    let n: i64 = match scope {
        // A revoked key is as good as deleted.
        Scope::Key => api_keys::table
            .filter(api_keys::id.eq(id))
            .filter(api_keys::revoked_at.is_null())
            .count()
            .get_result(c)?,
        Scope::User => users::table.filter(users::id.eq(id)).count().get_result(c)?,
        Scope::Group => groups::table.filter(groups::id.eq(id)).count().get_result(c)?,
    };
    Ok(n > 0)
}

/// Deletes the limits and counters of subjects that are being deleted, inside the caller's
/// transaction: `ids` of one scope.
pub(crate) fn forget_subjects(
    c: &mut crate::conn::AnyConnection,
    scope: Scope,
    ids: &[String],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    diesel::delete(
        limits::table
            .filter(limits::scope.eq(scope.as_str()))
            .filter(limits::subject_id.eq_any(ids)),
    )
    .execute(c)?;
    diesel::delete(
        limit_counters::table
            .filter(limit_counters::scope.eq(scope.as_str()))
            .filter(limit_counters::subject_id.eq_any(ids)),
    )
    .execute(c)?;
    Ok(())
}

impl Store {
    /// Sets the limits of a key, user or group (replacing any), and bumps the `auth` revision.
    ///
    /// An unknown or revoked key, or an unknown user or group, gives [`StoreError::NotFound`] and
    /// saves nothing.
    pub fn put_limits(&self, scope: Scope, id: &str, spec: &Limits, now: i64) -> Result<StoredLimits, StoreError> {
        let text = spec.to_json().to_string();
        self.write(Area::Auth, |c| {
            if !subject_exists(c, scope, id)? {
                return Err(StoreError::NotFound);
            }
            on_backend!(c, c => diesel::insert_into(limits::table)
                .values((
                    limits::scope.eq(scope.as_str()),
                    limits::subject_id.eq(id),
                    limits::spec.eq(&text),
                    limits::updated_at.eq(now),
                ))
                .on_conflict((limits::scope, limits::subject_id))
                .do_update()
                .set((limits::spec.eq(excluded(limits::spec)), limits::updated_at.eq(excluded(limits::updated_at))))
                .execute(c))?;
            Ok(())
        })?;
        Ok(StoredLimits {
            scope,
            subject_id: id.to_owned(),
            limits: spec.clone(),
            updated_at: now,
        })
    }

    /// The limits of a key, user or group, if any are set.
    pub fn get_limits(&self, scope: Scope, id: &str) -> Result<Option<StoredLimits>, StoreError> {
        let mut conn = self.conn()?;
        let row: Option<(String, String, String, i64)> = limits::table
            .find((scope.as_str(), id))
            .select((limits::scope, limits::subject_id, limits::spec, limits::updated_at))
            .first(&mut *conn)
            .optional()?;
        row.map(|(s, id, spec, at)| parse_row(&s, id, &spec, at)).transpose()
    }

    /// Deletes the limits of a key, user or group and bumps the `auth` revision;
    /// [`StoreError::NotFound`] if none were set.
    pub fn delete_limits(&self, scope: Scope, id: &str) -> Result<(), StoreError> {
        self.write(Area::Auth, |c| {
            match diesel::delete(limits::table.find((scope.as_str(), id))).execute(c)? {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
    }

    /// Every limit set, by scope and id; a row that does not read (written by a newer release)
    /// is left out.
    pub fn list_limits(&self) -> Result<Vec<StoredLimits>, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<(String, String, String, i64)> = limits::table
            .order((limits::scope.asc(), limits::subject_id.asc()))
            .select((limits::scope, limits::subject_id, limits::spec, limits::updated_at))
            .load(&mut *conn)?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, id, spec, at)| parse_row(&s, id, &spec, at).ok())
            .collect())
    }

    /// One replica's counter sync, in one transaction: writes `rows` (this replica's own
    /// counts, absolute, so a retried write counts nothing twice), then reads the other
    /// replicas' counts still in use: minute windows from `minute`, budget hours from `hour`,
    /// and requests in flight written since `fresh_since` (a replica that died stops counting
    /// after that). Returns the others' sums per counter.
    pub fn sync_limit_counters(
        &self,
        replica: &str,
        rows: &[(CounterKey, u64)],
        (minute, hour): (i64, i64),
        fresh_since: i64,
        now: i64,
    ) -> Result<Vec<(CounterKey, u64)>, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |c| {
            // Counts are not worth a disk flush: a PostgreSQL crash loses at most the last
            // few syncs, and the commit returns without waiting for the WAL (about 4 ms instead
            // of 10 to 14 ms on the development machine under load).
            if let crate::conn::AnyConnection::Postgresql(pg) = c {
                diesel::sql_query("SET LOCAL synchronous_commit TO OFF").execute(pg)?;
            }
            if !rows.is_empty() {
                let rows: Vec<(&str, &str, &str, i64, i64)> = rows
                    .iter()
                    .map(|(key, value)| {
                        (
                            key.subject.0.as_str(),
                            key.subject.1.as_str(),
                            key.metric.as_str(),
                            key.bucket,
                            i64::try_from(*value).unwrap_or(i64::MAX),
                        )
                    })
                    .collect();
                let rows = crate::usage::to_json(&rows)?;
                let write = WriteCounts {
                    replica,
                    now,
                    rows: &rows,
                };
                on_backend!(c, c => write.execute(c))?;
            }
            let read = ReadCounts {
                replica,
                minute,
                hour,
                fresh_since,
            };
            let found: Vec<(String, String, String, i64, i64)> = on_backend!(c, c => read.load(c))?;
            // One row per counter, summed by the database; a scope or metric this release does
            // not know (a newer replica's) is left out.
            let mut sums: Vec<(CounterKey, u64)> = found
                .into_iter()
                .filter_map(|(scope, subject, metric, bucket, value)| {
                    let key = CounterKey {
                        subject: (Scope::parse(&scope)?, subject),
                        metric: Metric::parse(&metric)?,
                        bucket,
                    };
                    Some((key, u64::try_from(value).unwrap_or(0)))
                })
                .collect();
            sums.sort_unstable();
            Ok(sums)
        })
    }

    /// Deletes counter rows nobody reads any more (see [`Store::sync_limit_counters`]); returns
    /// how many.
    pub fn prune_limit_counters(&self, (minute, hour): (i64, i64), fresh_since: i64) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let stale = limit_counters::metric
            .eq_any(["requests", "tokens"])
            .and(limit_counters::bucket.lt(minute))
            .or(limit_counters::metric.eq("budget").and(limit_counters::bucket.lt(hour)))
            .or(limit_counters::metric
                .eq("in_flight")
                .and(limit_counters::updated_at.lt(fresh_since)));
        Ok(diesel::delete(limit_counters::table.filter(stale)).execute(&mut *conn)?)
    }
}
