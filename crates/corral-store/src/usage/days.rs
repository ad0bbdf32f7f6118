//! Usage summed per UTC day and context (`usage_days`): what a report of whole days reads
//! instead of unpacking every record of its range.
//!
//! Each batch is folded into the sums once: [`crate::Store::fold_usage`] marks it `rolled_up`
//! and adds its records in one transaction, and only when the mark changed its row. Folds and
//! prunes hold one lock for their transaction ([`lock`]), so neither sees the other's work half
//! done. A report takes the sums of the whole days of its range and unpacks only the batches not
//! folded yet and the records of the partial days at its ends; pruning takes the records it
//! deletes out of the day it cuts through.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel::sql_types::BigInt;

use super::batch::Packed;
use super::UsageQuery;
use crate::conn::AnyConnection;
use crate::schema::{usage_contexts, usage_days};
use crate::{Backend, StoreError};

/// Milliseconds in a day.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// The day a record counts in: its time over a day, truncated toward zero as the reports' SQL
/// divides.
pub(crate) fn day_of(at_ms: i64) -> i64 {
    at_ms / DAY_MS
}

/// The whole days of the range `[from_ms, to_ms)`, as a range of milliseconds at day bounds,
/// none before the Unix epoch (where truncation would put two days' records in day 0); `None`
/// when the range holds no whole day.
pub(crate) fn whole_days(from_ms: i64, to_ms: i64) -> Option<(i64, i64)> {
    let first = u64::try_from(from_ms.max(0)).ok()?.div_ceil(DAY_MS as u64);
    let first = i64::try_from(first).ok()?.checked_mul(DAY_MS)?;
    let end = to_ms.max(0) / DAY_MS * DAY_MS;
    (first < end).then_some((first, end))
}

/// One context's sums over one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sums {
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cancelled: i64,
    pub failed: i64,
    pub estimated: i64,
    pub ttft_ms_sum: i64,
    pub ttft_count: i64,
    pub duration_ms_sum: i64,
}

impl Sums {
    /// These sums with `more` added (negative ones taken away), each saturating at the largest
    /// count and never below zero.
    fn plus(self, more: &Sums) -> Sums {
        let add = |a: i64, b: i64| a.saturating_add(b).max(0);
        Sums {
            requests: add(self.requests, more.requests),
            input_tokens: add(self.input_tokens, more.input_tokens),
            output_tokens: add(self.output_tokens, more.output_tokens),
            cancelled: add(self.cancelled, more.cancelled),
            failed: add(self.failed, more.failed),
            estimated: add(self.estimated, more.estimated),
            ttft_ms_sum: add(self.ttft_ms_sum, more.ttft_ms_sum),
            ttft_count: add(self.ttft_count, more.ttft_count),
            duration_ms_sum: add(self.duration_ms_sum, more.duration_ms_sum),
        }
    }

    /// Adds record `p` (`sign` 1), or takes it away (`sign` -1).
    pub fn add(&mut self, p: &Packed, sign: i64) {
        let add = |sum: &mut i64, n: i64| *sum = sum.saturating_add(n.saturating_mul(sign));
        add(&mut self.requests, 1);
        add(&mut self.input_tokens, p.input_tokens);
        add(&mut self.output_tokens, p.output_tokens);
        add(&mut self.cancelled, i64::from(p.cancelled));
        add(&mut self.failed, i64::from(p.status >= 400 && !p.cancelled));
        add(&mut self.estimated, i64::from(p.estimated));
        add(&mut self.ttft_ms_sum, p.ttft_ms.unwrap_or(0));
        add(&mut self.ttft_count, i64::from(p.ttft_ms.is_some()));
        add(&mut self.duration_ms_sum, p.duration_ms);
    }
}

/// Sums by (day, context id), in key order: replicas adding to the same rows at once take
/// their locks in one order, so neither waits on the other in a cycle.
pub(crate) type DaySums = BTreeMap<(i64, i64), Sums>;

/// One row of `usage_days`: day, context id, then the sums in [`Sums`]' order.
pub(crate) type Row = (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);

impl From<&Row> for Sums {
    fn from(r: &Row) -> Sums {
        Sums {
            requests: r.2,
            input_tokens: r.3,
            output_tokens: r.4,
            cancelled: r.5,
            failed: r.6,
            estimated: r.7,
            ttft_ms_sum: r.8,
            ttft_count: r.9,
            duration_ms_sum: r.10,
        }
    }
}

/// Contexts named in one statement at most (well under either backend's limit on parameters);
/// past it, the rows of every context of the days are read and the rest filtered in memory.
const MAX_LISTED: usize = 10_000;

/// The rows of the days from `first` to before `end` (day numbers), of the contexts `query`'s
/// user, key, model and instance filters take (its group filter is applied with the rest, per
/// context, when the report's rows are made).
pub(crate) fn load(c: &mut AnyConnection, first: i64, end: i64, query: &UsageQuery) -> Result<Vec<Row>, StoreError> {
    let mut rows = usage_days::table
        .filter(usage_days::day.ge(first))
        .filter(usage_days::day.lt(end))
        .into_boxed();
    if query.user.is_some() || query.key.is_some() || query.model.is_some() || query.instance.is_some() {
        let mut contexts = usage_contexts::table
            .select(usage_contexts::id)
            .into_boxed::<<AnyConnection as diesel::Connection>::Backend>();
        if let Some(user) = &query.user {
            contexts = contexts.filter(usage_contexts::user_id.eq(user.clone()));
        }
        if let Some(key) = &query.key {
            contexts = contexts.filter(usage_contexts::key_id.eq(key.clone()));
        }
        if let Some(model) = &query.model {
            contexts = contexts.filter(
                usage_contexts::model_run
                    .eq(model.clone())
                    .or(usage_contexts::model_asked.eq(model.clone())),
            );
        }
        if let Some(instance) = query.instance {
            contexts = contexts.filter(usage_contexts::instance.eq(instance));
        }
        let ids: Vec<i64> = contexts.load(c)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if ids.len() <= MAX_LISTED {
            rows = rows.filter(usage_days::context_id.eq_any(ids));
        }
    }
    Ok(rows.load(c)?)
}

/// A PostgreSQL advisory-lock key held, for its transaction, by every fold and prune: a prune
/// reads what it takes out of the day sums and deletes it in separate statements, so neither
/// another prune nor a fold may change the batches or the sums in between. On SQLite their
/// transactions (`BEGIN IMMEDIATE`) already run one at a time.
const LOCK: i64 = 0x0063_6f72_7261_6c64; // "corrald"

/// How long [`lock`] waits for another replica's fold or prune.
pub(crate) enum Wait {
    /// A second, then the fold fails and the writer tries again after its next write: the
    /// writer folds between writes, and a replica's long prune must not stall the others'.
    Briefly,
    /// Until the lock is free (a prune, which runs once an hour).
    AsLongAsItTakes,
}

/// Takes the lock of folds and prunes until the transaction ends (PostgreSQL), reading at READ
/// COMMITTED whatever the database's default (under a snapshot taken before the wait, the
/// previous holder's changes would be invisible).
pub(crate) fn lock(c: &mut AnyConnection, wait: Wait) -> Result<(), StoreError> {
    if let AnyConnection::Postgresql(pg) = c {
        diesel::sql_query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").execute(pg)?;
        if matches!(wait, Wait::Briefly) {
            diesel::sql_query("SET LOCAL lock_timeout = '1s'").execute(pg)?;
        }
        diesel::sql_query(format!("SELECT pg_advisory_xact_lock({LOCK})")).execute(pg)?;
    }
    Ok(())
}

/// Adds `sums` to the stored ones, saturating at the largest count and never below zero; a
/// row left with no request goes. The stored rows are read and written back whole, under
/// [`lock`] (no other fold or prune runs at the same time).
pub(crate) fn add(c: &mut AnyConnection, backend: Backend, sums: &DaySums) -> Result<(), StoreError> {
    if sums.is_empty() {
        return Ok(());
    }
    // The keys are in order, so equal days are next to each other.
    let mut days: Vec<i64> = sums.keys().map(|&(day, _)| day).collect();
    days.dedup();
    let mut contexts: Vec<i64> = sums.keys().map(|&(_, context)| context).collect();
    contexts.sort_unstable();
    contexts.dedup();
    let mut stored = usage_days::table.filter(usage_days::day.eq_any(days)).into_boxed();
    if contexts.len() <= MAX_LISTED {
        stored = stored.filter(usage_days::context_id.eq_any(contexts));
    }
    let stored: BTreeMap<(i64, i64), Sums> = stored
        .load::<Row>(c)?
        .iter()
        .filter(|r| sums.contains_key(&(r.0, r.1)))
        .map(|r| ((r.0, r.1), Sums::from(r)))
        .collect();
    let p = |n: usize| super::param(backend, n);
    let sql = format!(
        "INSERT INTO usage_days (day, context_id, {}) VALUES ({}) ON CONFLICT (day, context_id) DO UPDATE SET {}",
        COLUMNS.join(", "),
        (1..=11).map(p).collect::<Vec<_>>().join(", "),
        COLUMNS
            .iter()
            .map(|s| format!("{s} = excluded.{s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (&(day, context_id), more) in sums {
        let s = stored.get(&(day, context_id)).copied().unwrap_or_default().plus(more);
        if s.requests <= 0 {
            diesel::delete(
                usage_days::table
                    .filter(usage_days::day.eq(day))
                    .filter(usage_days::context_id.eq(context_id)),
            )
            .execute(c)?;
            continue;
        }
        diesel::sql_query(&sql)
            .bind::<BigInt, _>(day)
            .bind::<BigInt, _>(context_id)
            .bind::<BigInt, _>(s.requests)
            .bind::<BigInt, _>(s.input_tokens)
            .bind::<BigInt, _>(s.output_tokens)
            .bind::<BigInt, _>(s.cancelled)
            .bind::<BigInt, _>(s.failed)
            .bind::<BigInt, _>(s.estimated)
            .bind::<BigInt, _>(s.ttft_ms_sum)
            .bind::<BigInt, _>(s.ttft_count)
            .bind::<BigInt, _>(s.duration_ms_sum)
            .execute(c)?;
    }
    Ok(())
}

/// The sums' columns, in [`Sums`]' order.
const COLUMNS: [&str; 9] = [
    "requests",
    "input_tokens",
    "output_tokens",
    "cancelled",
    "failed",
    "estimated",
    "ttft_ms_sum",
    "ttft_count",
    "duration_ms_sum",
];

#[cfg(test)]
mod tests {
    use super::{day_of, whole_days, DAY_MS};

    #[test]
    fn whole_days_are_those_the_range_holds_entirely() {
        assert_eq!(whole_days(0, i64::MAX), Some((0, i64::MAX / DAY_MS * DAY_MS)));
        assert_eq!(whole_days(DAY_MS, 3 * DAY_MS), Some((DAY_MS, 3 * DAY_MS)));
        assert_eq!(whole_days(DAY_MS + 1, 3 * DAY_MS - 1), None);
        assert_eq!(whole_days(DAY_MS - 1, 3 * DAY_MS - 1), Some((DAY_MS, 2 * DAY_MS)));
        assert_eq!(whole_days(DAY_MS / 2, DAY_MS + DAY_MS / 2), None);
        assert_eq!(whole_days(-5 * DAY_MS, DAY_MS), Some((0, DAY_MS)));
        assert_eq!(whole_days(i64::MAX - 1, i64::MAX), None);
        assert_eq!(whole_days(5, 5), None);
        assert_eq!(day_of(DAY_MS - 1), 0);
        assert_eq!(day_of(DAY_MS), 1);
    }
}
