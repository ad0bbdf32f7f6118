//! Usage records: one per model-running request, written in batches (one row a batch, its
//! records packed), summed per user, key, group, model, instance or day, and pruned after the
//! retention period.

mod batch;
mod days;
mod report;
mod tally;

use std::sync::Arc;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Binary, Integer, Nullable, Text};

use crate::conn::{on_backend, snapshot_tx, write_tx};
use crate::schema::{usage_batches, usage_context_groups, usage_contexts, usage_days, usage_records};
use crate::{Backend, Store, StoreError};

pub use report::{usage_columns, usage_csv, usage_table, UsageParamError};

/// The batches after key `(l, b)` in key order. `last_ms >= l`, implied by the rest, bounds the
/// index scan, which otherwise starts again at the range's start for every page.
macro_rules! after_key {
    ($l:expr, $b:expr) => {
        usage_batches::last_ms.ge($l).and(
            usage_batches::last_ms
                .gt($l)
                .or(usage_batches::last_ms.eq($l).and(usage_batches::batch_id.gt($b))),
        )
    };
}

/// The batches not folded yet, spelled as the partial index's condition, which SQLite needs to
/// use it (a bound `false` would scan every batch).
fn unfolded() -> diesel::expression::SqlLiteral<diesel::sql_types::Bool> {
    diesel::dsl::sql("NOT rolled_up")
}

/// Statement parameter `n` as `backend` spells it.
fn param(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Postgres => format!("${n}"),
        Backend::Sqlite => format!("?{n}"),
    }
}

/// One model-running request, as metered: when, what it cost, and its context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// Unix milliseconds when the request arrived.
    pub at_ms: i64,
    /// Tells apart the records of one millisecond (made by the gateway, unique to the process
    /// that made it): writing a record twice keeps one row.
    pub seq: i64,
    /// Who asked for what, where: shared by every record of the same combination.
    pub context: Arc<UsageContext>,
    /// The status the client got.
    pub status: i32,
    /// Whether the client went away before the answer ended.
    pub cancelled: bool,
    /// Whether the token counts are estimated (chunks relayed) rather than the instance's own.
    pub estimated: bool,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Milliseconds from arrival to the first byte relayed.
    pub ttft_ms: Option<i64>,
    /// Milliseconds from arrival to the end.
    pub duration_ms: i64,
}

/// What a record shares with every other request of the same caller, key, groups, model asked
/// and run, instance, route and streaming: stored once (`usage_contexts`), each record pointing
/// at it by id. Make one with [`UsageContext::identified`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageContext {
    /// Made from the other fields ([`UsageContext::identified`]); negative for the contexts
    /// carried over from the storage shape before contexts, one per record.
    pub id: i64,
    /// The caller's user id (none in open access).
    pub user_id: Option<String>,
    /// The API key's id, when the credential was an API key (never the key).
    pub key_id: Option<String>,
    /// The ids of the groups the caller belonged to, sorted.
    pub groups: Vec<String>,
    /// The model as the client named it.
    pub model_asked: String,
    /// The catalogue id the request ran on.
    pub model_run: String,
    /// The index of the instance that answered, if one did.
    pub instance: Option<i32>,
    /// The route (`chat`, `generate`, `openai_chat`, …).
    pub route: String,
    /// Whether the answer was streamed.
    pub streamed: bool,
}

impl UsageContext {
    /// The context with its groups sorted (once each) and its id made from its fields: the
    /// first eight bytes of the SHA-256 of them (each with its length), the sign bit cleared.
    /// The same on every replica and every version, so replicas sharing PostgreSQL store a
    /// combination once; two combinations share an id with a chance of about n²/2⁶⁴ for n
    /// combinations ever stored.
    #[must_use]
    pub fn identified(mut self) -> Self {
        use sha2::Digest as _;
        self.groups.sort_unstable();
        self.groups.dedup();
        let mut h = sha2::Sha256::new();
        let mut text = |t: Option<&str>| match t {
            None => h.update([0u8]),
            Some(t) => {
                h.update([1u8]);
                h.update((t.len() as u64).to_le_bytes());
                h.update(t.as_bytes());
            }
        };
        text(self.user_id.as_deref());
        text(self.key_id.as_deref());
        text(Some(&self.model_asked));
        text(Some(&self.model_run));
        text(Some(&self.route));
        for g in &self.groups {
            text(Some(g));
        }
        h.update((self.groups.len() as u64).to_le_bytes());
        h.update(self.instance.map_or([0u8; 5], |i| {
            let [a, b, c, d] = i.to_le_bytes();
            [1, a, b, c, d]
        }));
        h.update([u8::from(self.streamed)]);
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        self.id = (u64::from_le_bytes(first) >> 1) as i64;
        self
    }
}

/// The distinct contexts of `records`, each once, in the order of their ids: replicas adding
/// the same new contexts at once take their keys in one order, so neither waits on the other
/// in a cycle (PostgreSQL would abort one of them as deadlocked).
fn distinct_contexts(records: &[UsageRecord]) -> Vec<&UsageContext> {
    let mut seen = foldhash::HashSet::default();
    let mut distinct: Vec<&UsageContext> = records
        .iter()
        .filter(|r| seen.insert(r.context.id))
        .map(|r| &*r.context)
        .collect();
    distinct.sort_unstable_by_key(|c| c.id);
    distinct
}

/// SQLite: a context, written unless stored already; its groups, written when it was new.
const INSERT_CONTEXT_SQLITE: &str = "INSERT OR IGNORE INTO usage_contexts (id, user_id, key_id, model_asked, \
model_run, instance, route, streamed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

const INSERT_CONTEXT_GROUP_SQLITE: &str =
    "INSERT OR IGNORE INTO usage_context_groups (context_id, group_id) VALUES (?1, ?2)";

/// SQLite: a batch, unless stored already (retried after its acknowledgement was lost).
const INSERT_BATCH_SQLITE: &str =
    "INSERT OR IGNORE INTO usage_batches (last_ms, batch_id, first_ms, records) VALUES (?1, ?2, ?3, ?4)";

const INSERT_CONTEXTS_PG: &str = "INSERT INTO usage_contexts (id, user_id, key_id, model_asked, model_run, \
instance, route, streamed) SELECT (v->>0)::bigint, v->>1, v->>2, v->>3, v->>4, (v->>5)::integer, v->>6, \
(v->>7)::boolean FROM json_array_elements($1::json) AS v ORDER BY 1 ON CONFLICT DO NOTHING";

const INSERT_CONTEXT_GROUPS_PG: &str = "INSERT INTO usage_context_groups (context_id, group_id) \
SELECT (v->>0)::bigint, v->>1 FROM json_array_elements($1::json) AS v ORDER BY 1, 2 ON CONFLICT DO NOTHING";

const INSERT_BATCH_PG: &str = "INSERT INTO usage_batches (last_ms, batch_id, first_ms, records) \
VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";

/// What a usage report may be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UsageDimension {
    /// The caller's user id.
    User,
    /// The API key's id.
    Key,
    /// Each group the caller belonged to (a request counts once under each of its groups).
    Group,
    /// The model run.
    Model,
    /// The instance that answered.
    Instance,
    /// The UTC day.
    Day,
}

impl UsageDimension {
    /// Every dimension, in report column order.
    pub const ALL: [UsageDimension; 6] = [
        UsageDimension::User,
        UsageDimension::Key,
        UsageDimension::Group,
        UsageDimension::Model,
        UsageDimension::Instance,
        UsageDimension::Day,
    ];

    /// The name in `group_by`.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageDimension::User => "user",
            UsageDimension::Key => "key",
            UsageDimension::Group => "group",
            UsageDimension::Model => "model",
            UsageDimension::Instance => "instance",
            UsageDimension::Day => "day",
        }
    }

    /// The dimension named `name` in `group_by`.
    pub fn parse(name: &str) -> Option<UsageDimension> {
        UsageDimension::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// The SQL expressions selected (and grouped by) for this dimension.
    fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            UsageDimension::User => &[("c.user_id", "user_id")],
            UsageDimension::Key => &[("c.key_id", "key_id")],
            UsageDimension::Group => &[("g.group_id", "group_id")],
            UsageDimension::Model => &[("c.model_run", "model")],
            UsageDimension::Instance => &[("c.instance", "instance")],
            UsageDimension::Day => &[("(u.at_ms / 86400000)", "day")],
        }
    }
}

/// Which records a report covers and how it groups them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageQuery {
    /// Unix milliseconds, inclusive.
    pub from_ms: i64,
    /// Unix milliseconds, exclusive.
    pub to_ms: i64,
    /// The dimensions to group by (none: one total row).
    pub group_by: Vec<UsageDimension>,
    /// Only this user's records.
    pub user: Option<String>,
    /// Only this API key's records.
    pub key: Option<String>,
    /// Only records of this model (run or asked for).
    pub model: Option<String>,
    /// Only records of this instance index.
    pub instance: Option<i32>,
    /// Only records of callers in this group.
    pub group: Option<String>,
}

/// One row of a usage report: the group's values (set only for the dimensions grouped by) and sums.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct UsageRow {
    /// The user id.
    #[diesel(sql_type = Nullable<Text>)]
    pub user_id: Option<String>,
    /// The API key id.
    #[diesel(sql_type = Nullable<Text>)]
    pub key_id: Option<String>,
    /// The group id.
    #[diesel(sql_type = Nullable<Text>)]
    pub group_id: Option<String>,
    /// The model run.
    #[diesel(sql_type = Nullable<Text>)]
    pub model: Option<String>,
    /// The instance index.
    #[diesel(sql_type = Nullable<Integer>)]
    pub instance: Option<i32>,
    /// The UTC day, in days since the Unix epoch.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub day: Option<i64>,
    /// Requests.
    #[diesel(sql_type = BigInt)]
    pub requests: i64,
    /// Prompt tokens.
    #[diesel(sql_type = BigInt)]
    pub input_tokens: i64,
    /// Completion tokens.
    #[diesel(sql_type = BigInt)]
    pub output_tokens: i64,
    /// Requests whose client went away.
    #[diesel(sql_type = BigInt)]
    pub cancelled: i64,
    /// Requests that got an error status (cancelled ones aside).
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    /// Requests whose counts are estimated.
    #[diesel(sql_type = BigInt)]
    pub estimated: i64,
    /// Streamed requests.
    #[diesel(sql_type = BigInt)]
    pub streamed: i64,
    /// The sum of the times to first token that were measured, in milliseconds.
    #[diesel(sql_type = BigInt)]
    pub ttft_ms_sum: i64,
    /// How many times to first token were measured.
    #[diesel(sql_type = BigInt)]
    pub ttft_count: i64,
    /// The sum of the durations, in milliseconds.
    #[diesel(sql_type = BigInt)]
    pub duration_ms_sum: i64,
}

impl Store {
    /// Writes `records` in one transaction; returns how many were new. The same records written
    /// again (a batch retried whole after its acknowledgement was lost) are skipped, so retrying
    /// a batch never counts a request twice.
    ///
    /// Records are packed into batches (`usage_batches`, one row per `usage::batch::batches` of
    /// them, keyed by the time of the newest record and the `seq` of the first), each record
    /// pointing at its context (caller, key, groups, models, instance, route, streaming),
    /// written once per batch that has it and stored once (`usage_contexts`,
    /// `usage_context_groups`). A row per record cost SQLite about 4,200 instructions a request
    /// at best (a table without rowid keyed by time, thirty-two records a statement), 5 % of a
    /// request to an upstream that answers at once; a batch costs a few bytes a record. Reports
    /// unpack the batches of the time range they read.
    ///
    /// SQLite's writer has a connection of its own (`rusqlite`) with prepared statements;
    /// PostgreSQL gets the contexts as one JSON text it unpacks itself and each batch as a
    /// `bytea`.
    pub fn insert_usage(&self, records: &[UsageRecord]) -> Result<usize, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        if self.backend == Backend::Sqlite {
            return self.insert_usage_sqlite(records);
        }
        let distinct = distinct_contexts(records);
        let batches = batch::batches(records);
        let mut conn = self.conn()?;
        write_tx(&mut conn, |c| {
            let contexts: Vec<_> = distinct
                .iter()
                .map(|x| {
                    (
                        x.id,
                        &x.user_id,
                        &x.key_id,
                        &x.model_asked,
                        &x.model_run,
                        x.instance,
                        &x.route,
                        x.streamed,
                    )
                })
                .collect();
            diesel::sql_query(INSERT_CONTEXTS_PG)
                .bind::<Text, _>(to_json(&contexts)?)
                .execute(c)?;
            let groups: Vec<(i64, &str)> = distinct
                .iter()
                .flat_map(|x| x.groups.iter().map(move |g| (x.id, g.as_str())))
                .collect();
            if !groups.is_empty() {
                diesel::sql_query(INSERT_CONTEXT_GROUPS_PG)
                    .bind::<Text, _>(to_json(&groups)?)
                    .execute(c)?;
            }
            let mut inserted = 0;
            for b in &batches {
                let new = diesel::sql_query(INSERT_BATCH_PG)
                    .bind::<BigInt, _>(b.last_ms)
                    .bind::<BigInt, _>(b.batch_id)
                    .bind::<BigInt, _>(b.first_ms)
                    .bind::<Binary, _>(&b.records)
                    .execute(c)?;
                if new > 0 {
                    inserted += b.len;
                }
            }
            Ok(inserted)
        })
    }

    /// [`Store::insert_usage`] on SQLite, through the writer's own connection (opened at the first
    /// batch, after the migrations; dropped after a failure and opened again at the next batch).
    fn insert_usage_sqlite(&self, records: &[UsageRecord]) -> Result<usize, StoreError> {
        let mut writer = self
            .usage_writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let conn = match &mut *writer {
            Some(conn) => conn,
            empty => empty.insert(self.open_usage_writer()?),
        };
        let written = write_records_sqlite(conn, records);
        if written.is_err() {
            *writer = None;
        }
        written.map_err(|e| sqlite_error(&self.name, e))
    }

    fn open_usage_writer(&self) -> Result<rusqlite::Connection, StoreError> {
        let conn = rusqlite::Connection::open(&self.target).map_err(|e| sqlite_error(&self.name, e))?;
        conn.execute_batch(crate::conn::SQLITE_PRAGMAS)
            .map_err(|e| sqlite_error(&self.name, e))?;
        Ok(conn)
    }

    /// The usage `query` asks for: one row per combination of its dimensions' values that has
    /// records (ordered by them, a missing value first), or one total row when it groups by
    /// nothing. Records of the shape before batches are summed by SQL; the whole UTC days of
    /// the range are read as day sums per context for the batches folded into them
    /// ([`Store::fold_usage`]), and the other records in batches (of batches not folded yet, or
    /// at the partial days at the range's ends) as they are unpacked, a page of batches at a
    /// time (a report holds one page, not its whole range); all read in one snapshot. So a
    /// month's or all time's report costs a row per day and context (and the batches not folded
    /// yet), not a record per request.
    /// A batch that cannot be unpacked (another format version, written by a newer release, or
    /// one cut short) is left out and logged.
    pub fn usage_report(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        /// Batches read at once: at most about 4 MB.
        const PAGE: i64 = 64;
        let sql = report_sql(query, self.backend);
        let mut conn = self.conn()?;
        let mut tally = tally::Tally::new(query);
        let mut skipped = 0usize;
        // The whole days of the range come summed (`usage_days`) for the batches folded into
        // them; every other record in the range is unpacked: those of batches not folded yet,
        // and those at the partial days at the range's ends. Without whole days, every record.
        let whole = days::whole_days(query.from_ms, query.to_ms);
        let (whole_from, whole_to) = whole.unwrap_or((i64::MAX, i64::MIN));
        let unpacked = |rolled_up: bool, at_ms: i64| !rolled_up || at_ms < whole_from || at_ms >= whole_to;
        snapshot_tx(&mut conn, |c| {
            let q = diesel::sql_query(sql)
                .bind::<BigInt, _>(query.from_ms)
                .bind::<BigInt, _>(query.to_ms)
                .bind::<Nullable<Text>, _>(query.user.as_deref())
                .bind::<Nullable<Text>, _>(query.key.as_deref())
                .bind::<Nullable<Text>, _>(query.model.as_deref())
                .bind::<Nullable<Integer>, _>(query.instance)
                .bind::<Nullable<Text>, _>(query.group.as_deref());
            for row in on_backend!(&mut *c, c => q.load::<UsageRow>(c))? {
                tally.add_row(row);
            }
            let mut contexts = None;
            if let Some((first, end)) = whole {
                let rows = days::load(c, days::day_of(first), days::day_of(end), query)?;
                if !rows.is_empty() {
                    let contexts = match &mut contexts {
                        Some(contexts) => contexts,
                        none => none.insert(load_contexts(c)?),
                    };
                    for row in &rows {
                        tally.add_day(row.0, row.1, &days::Sums::from(row), contexts.get(&row.1));
                    }
                }
            }
            // The batches to unpack, in parts that each read one index range: without whole
            // days, every batch holding a record in the range; with them, the batches not folded
            // yet (through the partial index on them) and the folded ones holding records in the
            // partial days at either end (a batch spans under an hour, so none is in two parts).
            let parts: Vec<(i64, i64, Option<bool>)> = match whole {
                None => vec![(query.from_ms, query.to_ms, None)],
                Some((first, end)) => [
                    (query.from_ms, query.to_ms, Some(false)),
                    (query.from_ms, first, Some(true)),
                    (end, query.to_ms, Some(true)),
                ]
                .into_iter()
                .filter(|(lo, hi, _)| lo < hi)
                .collect(),
            };
            for (lo, hi, folded) in parts {
                let mut after: Option<(i64, i64)> = None;
                loop {
                    let mut q = usage_batches::table
                        .filter(usage_batches::last_ms.ge(lo))
                        .filter(usage_batches::last_ms.lt(hi.saturating_add(batch::SPAN_MS)))
                        .filter(usage_batches::first_ms.lt(hi))
                        .order((usage_batches::last_ms.asc(), usage_batches::batch_id.asc()))
                        .select((
                            usage_batches::last_ms,
                            usage_batches::batch_id,
                            usage_batches::records,
                            usage_batches::rolled_up,
                        ))
                        .limit(PAGE)
                        .into_boxed();
                    match folded {
                        Some(false) => q = q.filter(unfolded()),
                        Some(true) => q = q.filter(usage_batches::rolled_up.eq(true)),
                        None => {}
                    }
                    if let Some((l, b)) = after {
                        q = q.filter(after_key!(l, b));
                    }
                    let page: Vec<(i64, i64, Vec<u8>, bool)> = q.load(c)?;
                    let Some(&(l, b, _, _)) = page.last() else { break };
                    after = Some((l, b));
                    let contexts = match &mut contexts {
                        Some(contexts) => contexts,
                        none => none.insert(load_contexts(c)?),
                    };
                    for (_, _, bytes, rolled_up) in &page {
                        match batch::decode(bytes) {
                            Ok(records) => {
                                for p in records.filter(|p| unpacked(*rolled_up, p.at_ms)) {
                                    tally.add(&p, contexts.get(&p.context_id));
                                }
                            }
                            Err(_) => skipped += 1,
                        }
                    }
                    if page.len() < PAGE as usize {
                        break;
                    }
                }
            }
            Ok::<_, StoreError>(())
        })?;
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "usage batches that cannot be unpacked (another format version, or cut short) were left out of a report"
            );
        }
        Ok(tally.rows())
    }

    /// Folds up to `max` batches not folded yet (oldest first) into the day sums that reports of
    /// whole days read; returns how many it folded. Each batch is marked and its records added
    /// in one transaction, and only when the mark changed its row, so a batch is counted once
    /// however many replicas fold. Records from before 1970 are left out of the sums (reports
    /// always unpack those). A batch that cannot be unpacked (another format version) is left
    /// as it is, and read again by every fold. Called by the usage writer after each write,
    /// which also folds what a release before this one stored.
    pub fn fold_usage(&self, max: usize) -> Result<usize, StoreError> {
        const PAGE: i64 = 64;
        let backend = self.backend;
        let mut conn = self.conn()?;
        write_tx(&mut conn, |c| {
            days::lock(c, days::Wait::Briefly)?;
            let mut sums = days::DaySums::new();
            let mut folded = 0;
            let mut after: Option<(i64, i64)> = None;
            while folded < max {
                let unrolled = usage_batches::table
                    .filter(unfolded())
                    .order((usage_batches::last_ms.asc(), usage_batches::batch_id.asc()))
                    .select((usage_batches::last_ms, usage_batches::batch_id, usage_batches::records))
                    .limit(PAGE);
                let page: Vec<(i64, i64, Vec<u8>)> = match after {
                    None => unrolled.load(c)?,
                    Some((l, b)) => unrolled.filter(after_key!(l, b)).load(c)?,
                };
                let Some(&(l, b, _)) = page.last() else { break };
                after = Some((l, b));
                for (last_ms, batch_id, bytes) in &page {
                    if folded >= max {
                        break;
                    }
                    let Ok(records) = batch::decode(bytes).map(Iterator::collect::<Vec<_>>) else {
                        continue;
                    };
                    let marked = diesel::update(
                        usage_batches::table
                            .filter(usage_batches::last_ms.eq(last_ms))
                            .filter(usage_batches::batch_id.eq(batch_id))
                            .filter(usage_batches::rolled_up.eq(false)),
                    )
                    .set(usage_batches::rolled_up.eq(true))
                    .execute(c)?;
                    if marked == 0 {
                        continue;
                    }
                    for p in records.iter().filter(|p| p.at_ms >= 0) {
                        sums.entry((days::day_of(p.at_ms), p.context_id)).or_default().add(p, 1);
                    }
                    folded += 1;
                }
                if page.len() < PAGE as usize {
                    break;
                }
            }
            days::add(c, backend, &sums)?;
            Ok(folded)
        })
    }

    /// Every record stored (oldest first), for tests and exports.
    pub fn usage_records(&self) -> Result<Vec<UsageRecord>, StoreError> {
        type Row = (i64, i64, i64, i32, bool, bool, i64, i64, Option<i64>, i64);
        let mut conn = self.conn()?;
        // One snapshot: a prune between the reads would leave records without their context.
        let (rows, batches, contexts) = snapshot_tx(&mut conn, |c| {
            let rows: Vec<Row> = usage_records::table
                .order((usage_records::at_ms.asc(), usage_records::seq.asc()))
                .load(c)?;
            let batches: Vec<Vec<u8>> = usage_batches::table.select(usage_batches::records).load(c)?;
            Ok::<_, StoreError>((rows, batches, load_contexts(c)?))
        })?;
        let mut packed: Vec<batch::Packed> = rows
            .into_iter()
            .map(|r| batch::Packed {
                at_ms: r.0,
                seq: r.1,
                context_id: r.2,
                status: r.3,
                cancelled: r.4,
                estimated: r.5,
                input_tokens: r.6,
                output_tokens: r.7,
                ttft_ms: r.8,
                duration_ms: r.9,
            })
            .collect();
        for bytes in &batches {
            packed.extend(batch::decode(bytes).map_err(StoreError::Corrupt)?);
        }
        packed.sort_unstable_by_key(|p| (p.at_ms, p.seq));
        packed
            .into_iter()
            .map(|p| {
                let context = contexts.get(&p.context_id).cloned().ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "usage record ({}, {}) has no context {}",
                        p.at_ms, p.seq, p.context_id
                    ))
                })?;
                Ok(UsageRecord {
                    at_ms: p.at_ms,
                    seq: p.seq,
                    context,
                    status: p.status,
                    cancelled: p.cancelled,
                    estimated: p.estimated,
                    input_tokens: p.input_tokens,
                    output_tokens: p.output_tokens,
                    ttft_ms: p.ttft_ms,
                    duration_ms: p.duration_ms,
                })
            })
            .collect()
    }

    /// Deletes the records of requests that arrived before `before_ms` (Unix milliseconds); returns
    /// how many went. A batch whose records are all older goes whole; one holding records from
    /// both sides of `before_ms` is written again with the newer ones. Contexts stay (one row per
    /// combination of caller, key, model, instance and route ever seen), except those carried
    /// over from the storage shape before contexts, one per old record (negative ids), which go
    /// with their record. The day sums of the days before go, and the day `before_ms` falls in
    /// loses the records of folded batches that go.
    pub fn prune_usage(&self, before_ms: i64) -> Result<usize, StoreError> {
        /// Folded batches of the day the cut falls in read at once.
        const PAGE: i64 = 64;
        let backend = self.backend;
        let mut conn = self.conn()?;
        write_tx(&mut conn, |c| {
            days::lock(c, days::Wait::AsLongAsItTakes)?;
            // The day sums: days before the cut go; the day it cuts through loses the records
            // of folded batches that go.
            if before_ms > 0 {
                let cut_day = days::day_of(before_ms);
                let day_start = cut_day * days::DAY_MS;
                if day_start < before_ms {
                    let mut gone = days::DaySums::new();
                    let mut unreadable = 0usize;
                    let mut after: Option<(i64, i64)> = None;
                    loop {
                        let folded = usage_batches::table
                            .filter(usage_batches::last_ms.ge(day_start))
                            .filter(usage_batches::last_ms.lt(before_ms.saturating_add(batch::SPAN_MS)))
                            .filter(usage_batches::first_ms.lt(before_ms))
                            .filter(usage_batches::rolled_up.eq(true))
                            .order((usage_batches::last_ms.asc(), usage_batches::batch_id.asc()))
                            .select((usage_batches::last_ms, usage_batches::batch_id, usage_batches::records))
                            .limit(PAGE);
                        let page: Vec<(i64, i64, Vec<u8>)> = match after {
                            None => folded.load(c)?,
                            Some((l, b)) => folded.filter(after_key!(l, b)).load(c)?,
                        };
                        let Some(&(l, b, _)) = page.last() else { break };
                        after = Some((l, b));
                        for (_, _, bytes) in &page {
                            let Ok(records) = batch::decode(bytes) else {
                                unreadable += 1;
                                continue;
                            };
                            for p in records {
                                if p.at_ms >= day_start && p.at_ms < before_ms {
                                    gone.entry((cut_day, p.context_id)).or_default().add(&p, -1);
                                }
                            }
                        }
                        if page.len() < PAGE as usize {
                            break;
                        }
                    }
                    if unreadable > 0 {
                        // Folded by a release that could unpack them and rewritten since by a
                        // newer one: what they held before the cut stays counted in that day.
                        tracing::warn!(
                            unreadable,
                            "folded usage batches that cannot be unpacked were pruned; the day's sums still count their records"
                        );
                    }
                    days::add(c, backend, &gone)?;
                }
                diesel::delete(usage_days::table.filter(usage_days::day.lt(cut_day))).execute(c)?;
            }
            // Each carried context belongs to one record: found by the records' time range
            // (the primary key's prefix), not by scanning every record for each context.
            let carried: Vec<i64> = usage_records::table
                .filter(usage_records::at_ms.lt(before_ms))
                .filter(usage_records::context_id.lt(0))
                .select(usage_records::context_id)
                .load(c)?;
            let mut n = diesel::delete(usage_records::table.filter(usage_records::at_ms.lt(before_ms))).execute(c)?;
            for ids in carried.chunks(1000) {
                diesel::delete(usage_context_groups::table.filter(usage_context_groups::context_id.eq_any(ids)))
                    .execute(c)?;
                diesel::delete(usage_contexts::table.filter(usage_contexts::id.eq_any(ids))).execute(c)?;
            }
            let sizes: Vec<i64> = usage_batches::table
                .filter(usage_batches::last_ms.lt(before_ms))
                .select(diesel::dsl::sql::<BigInt>("CAST(length(records) AS BIGINT)"))
                .load(c)?;
            n += sizes.into_iter().map(batch::count).sum::<usize>();
            diesel::delete(usage_batches::table.filter(usage_batches::last_ms.lt(before_ms))).execute(c)?;
            let straddling: Vec<(i64, i64, Vec<u8>)> = usage_batches::table
                .filter(usage_batches::last_ms.ge(before_ms))
                .filter(usage_batches::last_ms.lt(before_ms.saturating_add(batch::SPAN_MS)))
                .filter(usage_batches::first_ms.lt(before_ms))
                .select((usage_batches::last_ms, usage_batches::batch_id, usage_batches::records))
                .load(c)?;
            for (last_ms, batch_id, bytes) in straddling {
                // One that cannot be unpacked stays whole (a newer release may read it).
                let Ok(all) = batch::decode(&bytes).map(Iterator::collect::<Vec<_>>) else {
                    tracing::warn!(
                        last_ms,
                        batch_id,
                        "a usage batch that cannot be unpacked was left unpruned"
                    );
                    continue;
                };
                let kept: Vec<batch::Packed> = all.iter().copied().filter(|p| p.at_ms >= before_ms).collect();
                n += all.len() - kept.len();
                let first_ms = kept.iter().map(|p| p.at_ms).min().unwrap_or(last_ms);
                diesel::update(
                    usage_batches::table
                        .filter(usage_batches::last_ms.eq(last_ms))
                        .filter(usage_batches::batch_id.eq(batch_id)),
                )
                .set((
                    usage_batches::first_ms.eq(first_ms),
                    usage_batches::records.eq(batch::encode(kept.into_iter())),
                ))
                .execute(c)?;
            }
            Ok(n)
        })
    }
}

/// Every usage context stored, with its groups, by id.
fn load_contexts(c: &mut crate::conn::AnyConnection) -> Result<foldhash::HashMap<i64, Arc<UsageContext>>, StoreError> {
    type Context = (
        i64,
        Option<String>,
        Option<String>,
        String,
        String,
        Option<i32>,
        String,
        bool,
    );
    let contexts: Vec<Context> = usage_contexts::table.load(c)?;
    let groups: Vec<(i64, String)> = usage_context_groups::table
        .order((usage_context_groups::context_id, usage_context_groups::group_id))
        .load(c)?;
    let mut groups_of: foldhash::HashMap<i64, Vec<String>> = foldhash::HashMap::default();
    for (context, group) in groups {
        groups_of.entry(context).or_default().push(group);
    }
    Ok(contexts
        .into_iter()
        .map(
            |(id, user_id, key_id, model_asked, model_run, instance, route, streamed)| {
                let context = UsageContext {
                    id,
                    user_id,
                    key_id,
                    groups: groups_of.remove(&id).unwrap_or_default(),
                    model_asked,
                    model_run,
                    instance,
                    route,
                    streamed,
                };
                (id, Arc::new(context))
            },
        )
        .collect())
}

/// The report's SQL. Only fixed column names from [`UsageDimension::columns`] are spliced in; every
/// value is a bound parameter (numbered, so each is bound once, in the order `usage_report` binds them).
fn report_sql(query: &UsageQuery, backend: Backend) -> String {
    let p = |n: usize| param(backend, n);
    // Rows are ordered by the dimensions in the order asked for.
    let mut dims: Vec<UsageDimension> = Vec::new();
    for dim in &query.group_by {
        if !dims.contains(dim) {
            dims.push(*dim);
        }
    }
    let grouped: Vec<&str> = dims
        .iter()
        .flat_map(|d| d.columns().iter().map(|(expr, _)| *expr))
        .collect();
    let mut select = Vec::new();
    for dim in UsageDimension::ALL {
        for (expr, alias) in dim.columns() {
            if dims.contains(&dim) {
                select.push(format!("{expr} AS {alias}"));
            } else {
                let ty = match *alias {
                    "instance" => "INTEGER",
                    "day" => "BIGINT",
                    _ => "TEXT",
                };
                select.push(format!("CAST(NULL AS {ty}) AS {alias}"));
            }
        }
    }
    let sum = |expr: &str, alias: &str| format!("CAST(COALESCE(SUM({expr}), 0) AS BIGINT) AS {alias}");
    select.extend([
        "COUNT(*) AS requests".to_owned(),
        sum("u.input_tokens", "input_tokens"),
        sum("u.output_tokens", "output_tokens"),
        sum("CASE WHEN u.cancelled THEN 1 ELSE 0 END", "cancelled"),
        sum(
            "CASE WHEN u.status >= 400 AND NOT u.cancelled THEN 1 ELSE 0 END",
            "failed",
        ),
        sum("CASE WHEN u.estimated THEN 1 ELSE 0 END", "estimated"),
        sum("CASE WHEN c.streamed THEN 1 ELSE 0 END", "streamed"),
        sum("u.ttft_ms", "ttft_ms_sum"),
        "COUNT(u.ttft_ms) AS ttft_count".to_owned(),
        sum("u.duration_ms", "duration_ms_sum"),
    ]);
    let join = if dims.contains(&UsageDimension::Group) {
        " LEFT JOIN usage_context_groups g ON g.context_id = u.context_id"
    } else {
        ""
    };
    let mut sql = format!(
        "SELECT {} FROM usage_records u LEFT JOIN usage_contexts c ON c.id = u.context_id{join} \
         WHERE u.at_ms >= {} AND u.at_ms < {} \
         AND ({u} IS NULL OR c.user_id = {u}) AND ({k} IS NULL OR c.key_id = {k}) \
         AND ({m} IS NULL OR c.model_run = {m} OR c.model_asked = {m}) \
         AND ({i} IS NULL OR c.instance = {i}) \
         AND ({g} IS NULL OR EXISTS (SELECT 1 FROM usage_context_groups g2 \
         WHERE g2.context_id = u.context_id AND g2.group_id = {g}))",
        select.join(", "),
        p(1),
        p(2),
        u = p(3),
        k = p(4),
        m = p(5),
        i = p(6),
        g = p(7),
    );
    if !grouped.is_empty() {
        let list = grouped.join(", ");
        sql.push_str(&format!(" GROUP BY {list} ORDER BY {list}"));
    }
    sql
}

/// Rows as one JSON text, for the database to unpack (the usage contexts on PostgreSQL, the
/// limit counters on both).
pub(crate) fn to_json(rows: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Writes `records` in one `BEGIN IMMEDIATE` transaction (rolled back when dropped unfinished):
/// their contexts first (each once), then their batches.
fn write_records_sqlite(conn: &mut rusqlite::Connection, records: &[UsageRecord]) -> rusqlite::Result<usize> {
    let distinct = distinct_contexts(records);
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut inserted = 0;
    {
        let mut context = tx.prepare_cached(INSERT_CONTEXT_SQLITE)?;
        let mut group = tx.prepare_cached(INSERT_CONTEXT_GROUP_SQLITE)?;
        for x in distinct {
            let new = context.execute(rusqlite::params![
                x.id,
                x.user_id,
                x.key_id,
                x.model_asked,
                x.model_run,
                x.instance,
                x.route,
                x.streamed
            ])?;
            if new > 0 {
                for g in &x.groups {
                    group.execute(rusqlite::params![x.id, g])?;
                }
            }
        }
        let mut insert = tx.prepare_cached(INSERT_BATCH_SQLITE)?;
        for b in batch::batches(records) {
            if insert.execute(rusqlite::params![b.last_ms, b.batch_id, b.first_ms, b.records])? > 0 {
                inserted += b.len;
            }
        }
    }
    tx.commit()?;
    Ok(inserted)
}

/// A SQLite failure of the usage writer: a busy or locked database, or one that cannot be
/// opened, passes with time; anything else is a query error.
fn sqlite_error(name: &str, err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen) => {
            StoreError::Unavailable(format!("the database {name} does not take usage records now: {err}"))
        }
        _ => StoreError::Query(err.to_string()),
    }
}
