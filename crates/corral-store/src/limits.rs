//! Limits per API key, user or group, and the counters replicas share to enforce them.

use corral_auth::limits::{CounterKey, Limits, Metric, Scope};
use diesel::prelude::*;
use diesel::upsert::excluded;

use crate::conn::{on_backend, write_tx};
use crate::revisions::Area;
use crate::schema::{api_keys, groups, limit_counters, limits, users};
use crate::{Store, StoreError};

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
            for (key, value) in rows {
                let value = i64::try_from(*value).unwrap_or(i64::MAX);
                on_backend!(c, c => diesel::insert_into(limit_counters::table)
                    .values((
                        limit_counters::scope.eq(key.subject.0.as_str()),
                        limit_counters::subject_id.eq(&key.subject.1),
                        limit_counters::metric.eq(key.metric.as_str()),
                        limit_counters::bucket.eq(key.bucket),
                        limit_counters::replica.eq(replica),
                        limit_counters::value.eq(value),
                        limit_counters::updated_at.eq(now),
                    ))
                    .on_conflict((
                        limit_counters::scope,
                        limit_counters::subject_id,
                        limit_counters::metric,
                        limit_counters::bucket,
                        limit_counters::replica,
                    ))
                    .do_update()
                    .set((
                        limit_counters::value.eq(excluded(limit_counters::value)),
                        limit_counters::updated_at.eq(excluded(limit_counters::updated_at)),
                    ))
                    .execute(c))?;
            }
            // `metric = … OR metric = …`, not `IN (…)`: diesel prepares a statement with a list
            // anew each time, this one once per connection (the sync runs four times a second).
            let windows = limit_counters::metric
                .eq("requests")
                .or(limit_counters::metric.eq("tokens"))
                .and(limit_counters::bucket.ge(minute))
                .or(limit_counters::metric.eq("budget").and(limit_counters::bucket.ge(hour)))
                .or(limit_counters::metric
                    .eq("in_flight")
                    .and(limit_counters::updated_at.ge(fresh_since)));
            let found: Vec<(String, String, String, i64, i64)> = limit_counters::table
                .filter(limit_counters::replica.ne(replica))
                .filter(limit_counters::value.gt(0))
                .filter(windows)
                .select((
                    limit_counters::scope,
                    limit_counters::subject_id,
                    limit_counters::metric,
                    limit_counters::bucket,
                    limit_counters::value,
                ))
                .load(c)?;
            let mut sums: std::collections::BTreeMap<CounterKey, u64> = std::collections::BTreeMap::new();
            for (scope, subject, metric, bucket, value) in found {
                let (Some(scope), Some(metric)) = (Scope::parse(&scope), Metric::parse(&metric)) else {
                    continue;
                };
                let key = CounterKey {
                    subject: (scope, subject),
                    metric,
                    bucket,
                };
                let sum = sums.entry(key).or_default();
                *sum = sum.saturating_add(u64::try_from(value).unwrap_or(0));
            }
            Ok(sums.into_iter().collect())
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
