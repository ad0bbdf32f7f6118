//! Usage summed per UTC day and context (`usage_days`): what a report of whole days reads
//! instead of unpacking every record of its range.
//!
//! Each batch is folded into the sums once: [`crate::Store::fold_usage`] marks it `rolled_up`
//! and adds its records in one transaction, and only when the mark changed the row, so replicas
//! folding the same batch at once count it once (PostgreSQL makes the second wait for the
//! first's row lock, then finds the mark set). A report takes the sums of the whole days of its
//! range and unpacks only the batches not folded yet and the records of the partial days at its
//! ends; pruning takes the records it deletes from the day it cuts through.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel::sql_types::BigInt;

use super::batch::Packed;
use crate::conn::AnyConnection;
use crate::schema::usage_days;
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

/// The rows of the days from `first` to before `end` (day numbers).
pub(crate) fn load(c: &mut AnyConnection, first: i64, end: i64) -> Result<Vec<Row>, StoreError> {
    Ok(usage_days::table
        .filter(usage_days::day.ge(first))
        .filter(usage_days::day.lt(end))
        .load(c)?)
}

/// Adds `sums` to the stored ones (a row made where there is none), in key order.
pub(crate) fn add(c: &mut AnyConnection, backend: Backend, sums: &DaySums) -> Result<(), StoreError> {
    if sums.is_empty() {
        return Ok(());
    }
    let p = |n: usize| match backend {
        Backend::Postgres => format!("${n}"),
        Backend::Sqlite => format!("?{n}"),
    };
    const SUMS: [&str; 9] = [
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
    let sql = format!(
        "INSERT INTO usage_days (day, context_id, {}) VALUES ({}) ON CONFLICT (day, context_id) DO UPDATE SET {}",
        SUMS.join(", "),
        (1..=11).map(p).collect::<Vec<_>>().join(", "),
        SUMS.iter()
            .map(|s| format!("{s} = usage_days.{s} + excluded.{s}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (&(day, context_id), s) in sums {
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
