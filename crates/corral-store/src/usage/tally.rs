//! A usage report summed in memory: the records of the batches a report reads, each with its
//! context, and the rows SQL summed from the records of the shape before batches, added into
//! one row per combination of the dimensions' values, as the report's SQL would group them.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::batch::Packed;
use super::days::Sums;
use super::{UsageContext, UsageDimension, UsageQuery, UsageRow};

/// One dimension's value in a row's key: a text or a number, missing ones first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Cell {
    Text(Option<String>),
    Number(Option<i64>),
}

/// The rows of a report being summed, by their dimensions' values in the order asked for.
pub(crate) struct Tally<'q> {
    query: &'q UsageQuery,
    dims: Vec<UsageDimension>,
    rows: BTreeMap<Vec<Cell>, UsageRow>,
    /// Unpacked records summed by context (and day, when grouped by day): numbers only, so a
    /// record costs a lookup and a few additions; the context's filters, groups and names are
    /// applied once per context when the rows are made.
    by_context: foldhash::HashMap<(i64, Option<i64>), ContextSums>,
}

/// A context (none: gone) and the sums of its records.
type ContextSums = (Option<Arc<UsageContext>>, UsageRow);

impl<'q> Tally<'q> {
    pub fn new(query: &'q UsageQuery) -> Tally<'q> {
        let mut dims: Vec<UsageDimension> = Vec::new();
        for dim in &query.group_by {
            if !dims.contains(dim) {
                dims.push(*dim);
            }
        }
        Tally {
            query,
            dims,
            rows: BTreeMap::new(),
            by_context: foldhash::HashMap::default(),
        }
    }

    /// Adds a row summed elsewhere (by SQL), with the dimensions not grouped by left empty.
    pub fn add_row(&mut self, row: UsageRow) {
        let key = self.key_of(&row);
        match self.rows.get_mut(&key) {
            Some(sum) => add_sums(sum, &row),
            None => {
                self.rows.insert(key, row);
            }
        }
    }

    /// Adds one record with its context (none: a record whose context is gone, which the SQL's
    /// outer join also counts, with empty values), if it is in the query's time range; the
    /// filters on the context are applied when the rows are made.
    pub fn add(&mut self, p: &Packed, context: Option<&Arc<UsageContext>>) {
        if p.at_ms < self.query.from_ms || p.at_ms >= self.query.to_ms {
            return;
        }
        // Truncated toward zero, as the SQL divides.
        let day = self
            .grouped(UsageDimension::Day)
            .then_some(super::days::day_of(p.at_ms));
        let (_, sum) = self
            .by_context
            .entry((p.context_id, day))
            .or_insert_with(|| (context.cloned(), zero_row()));
        let record = UsageRow {
            requests: 1,
            input_tokens: p.input_tokens,
            output_tokens: p.output_tokens,
            cancelled: i64::from(p.cancelled),
            failed: i64::from(p.status >= 400 && !p.cancelled),
            estimated: i64::from(p.estimated),
            streamed: i64::from(context.is_some_and(|c| c.streamed)),
            ttft_ms_sum: p.ttft_ms.unwrap_or(0),
            ttft_count: i64::from(p.ttft_ms.is_some()),
            duration_ms_sum: p.duration_ms,
            ..zero_row()
        };
        add_sums(sum, &record);
    }

    /// Adds one context's sums over one `day` (read from the day sums, for a day the query's
    /// range holds whole), as [`Tally::add`] adds each of the records they sum.
    pub fn add_day(&mut self, day: i64, context_id: i64, s: &Sums, context: Option<&Arc<UsageContext>>) {
        let day = self.grouped(UsageDimension::Day).then_some(day);
        let (_, sum) = self
            .by_context
            .entry((context_id, day))
            .or_insert_with(|| (context.cloned(), zero_row()));
        let streamed = context.is_some_and(|c| c.streamed);
        let sums = UsageRow {
            requests: s.requests,
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            cancelled: s.cancelled,
            failed: s.failed,
            estimated: s.estimated,
            streamed: if streamed { s.requests } else { 0 },
            ttft_ms_sum: s.ttft_ms_sum,
            ttft_count: s.ttft_count,
            duration_ms_sum: s.duration_ms_sum,
            ..zero_row()
        };
        add_sums(sum, &sums);
    }

    /// The rows, in the order of their dimensions' values; one row of zeros when the report
    /// groups by nothing and nothing was added.
    pub fn rows(mut self) -> Vec<UsageRow> {
        for ((_, day), (context, sums)) in std::mem::take(&mut self.by_context) {
            self.add_context(context.as_deref(), day, &sums);
        }
        if self.rows.is_empty() && self.dims.is_empty() {
            return vec![zero_row()];
        }
        self.rows.into_values().collect()
    }

    /// Adds the `sums` of one context's records (of `day`, when grouped by day), if the query's
    /// filters take the context: once under each of its groups when grouped by group (once,
    /// with no group, when it has none), as the SQL's outer join with the groups counts them.
    fn add_context(&mut self, context: Option<&UsageContext>, day: Option<i64>, sums: &UsageRow) {
        let q = self.query;
        let user = context.and_then(|c| c.user_id.as_deref());
        let key = context.and_then(|c| c.key_id.as_deref());
        let groups: &[String] = context.map_or(&[], |c| &c.groups);
        let matches = |filter: &Option<String>, value: Option<&str>| filter.as_deref().is_none_or(|f| value == Some(f));
        if !matches(&q.user, user)
            || !matches(&q.key, key)
            || q.model
                .as_deref()
                .is_some_and(|m| context.is_none_or(|c| c.model_run != m && c.model_asked != m))
            || q.instance.is_some_and(|i| context.and_then(|c| c.instance) != Some(i))
            || q.group.as_deref().is_some_and(|g| !groups.iter().any(|x| x == g))
        {
            return;
        }
        let row = UsageRow {
            user_id: self
                .grouped(UsageDimension::User)
                .then(|| user.map(str::to_owned))
                .flatten(),
            key_id: self
                .grouped(UsageDimension::Key)
                .then(|| key.map(str::to_owned))
                .flatten(),
            model: self
                .grouped(UsageDimension::Model)
                .then(|| context.map(|c| c.model_run.clone()))
                .flatten(),
            instance: self
                .grouped(UsageDimension::Instance)
                .then(|| context.and_then(|c| c.instance))
                .flatten(),
            day,
            ..sums.clone()
        };
        if !self.grouped(UsageDimension::Group) || groups.is_empty() {
            self.add_row(row);
        } else {
            for group in groups {
                self.add_row(UsageRow {
                    group_id: Some(group.clone()),
                    ..row.clone()
                });
            }
        }
    }

    fn grouped(&self, dim: UsageDimension) -> bool {
        self.dims.contains(&dim)
    }

    fn key_of(&self, row: &UsageRow) -> Vec<Cell> {
        self.dims
            .iter()
            .map(|dim| match dim {
                UsageDimension::User => Cell::Text(row.user_id.clone()),
                UsageDimension::Key => Cell::Text(row.key_id.clone()),
                UsageDimension::Group => Cell::Text(row.group_id.clone()),
                UsageDimension::Model => Cell::Text(row.model.clone()),
                UsageDimension::Instance => Cell::Number(row.instance.map(i64::from)),
                UsageDimension::Day => Cell::Number(row.day),
            })
            .collect()
    }
}

/// A row with no dimension's value and every sum zero.
fn zero_row() -> UsageRow {
    UsageRow {
        user_id: None,
        key_id: None,
        group_id: None,
        model: None,
        instance: None,
        day: None,
        requests: 0,
        input_tokens: 0,
        output_tokens: 0,
        cancelled: 0,
        failed: 0,
        estimated: 0,
        streamed: 0,
        ttft_ms_sum: 0,
        ttft_count: 0,
        duration_ms_sum: 0,
    }
}

/// Adds `row`'s sums into `sum` (saturating: a report never panics on absurd counts).
fn add_sums(sum: &mut UsageRow, row: &UsageRow) {
    sum.requests = sum.requests.saturating_add(row.requests);
    sum.input_tokens = sum.input_tokens.saturating_add(row.input_tokens);
    sum.output_tokens = sum.output_tokens.saturating_add(row.output_tokens);
    sum.cancelled = sum.cancelled.saturating_add(row.cancelled);
    sum.failed = sum.failed.saturating_add(row.failed);
    sum.estimated = sum.estimated.saturating_add(row.estimated);
    sum.streamed = sum.streamed.saturating_add(row.streamed);
    sum.ttft_ms_sum = sum.ttft_ms_sum.saturating_add(row.ttft_ms_sum);
    sum.ttft_count = sum.ttft_count.saturating_add(row.ttft_count);
    sum.duration_ms_sum = sum.duration_ms_sum.saturating_add(row.duration_ms_sum);
}
