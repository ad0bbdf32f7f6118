//! Usage records: one row per model-running request, written in batches, summed per user, key,
//! group, model, instance or day, and pruned after the retention period.

mod report;

use std::sync::Arc;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};

use crate::conn::{on_backend, snapshot_tx, write_tx};
use crate::schema::{usage_context_groups, usage_contexts, usage_records};
use crate::{Backend, Store, StoreError};

pub use report::{usage_columns, usage_csv, usage_table, UsageParamError};

/// Records per PostgreSQL insert statement (one JSON text each).
const BATCH: usize = 1000;

/// Records per SQLite insert statement: one execution of a prepared statement takes this many
/// rows (SQLite's per-statement work, paid once for all of them); the rest of a batch goes one
/// by one.
const ROWS_PER_INSERT: usize = 32;

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

/// SQLite: the columns of one record, `?`-numbered from 1 per statement.
const RECORD_COLUMNS: &str =
    "at_ms, seq, context_id, status, cancelled, estimated, input_tokens, output_tokens, ttft_ms, duration_ms";

/// How many values a record binds.
const RECORD_VALUES: usize = 10;

/// SQLite: `rows` records in one statement.
fn insert_records_sqlite(rows: usize) -> String {
    let one = format!("({})", ["?"; RECORD_VALUES].join(", "));
    format!(
        "INSERT OR IGNORE INTO usage_records ({RECORD_COLUMNS}) VALUES {}",
        vec![one; rows].join(", ")
    )
}

/// Binds record `r` to `stmt` from parameter `first` on.
fn bind_record(stmt: &mut rusqlite::Statement<'_>, first: usize, r: &UsageRecord) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(first, r.at_ms)?;
    stmt.raw_bind_parameter(first + 1, r.seq)?;
    stmt.raw_bind_parameter(first + 2, r.context.id)?;
    stmt.raw_bind_parameter(first + 3, r.status)?;
    stmt.raw_bind_parameter(first + 4, r.cancelled)?;
    stmt.raw_bind_parameter(first + 5, r.estimated)?;
    stmt.raw_bind_parameter(first + 6, r.input_tokens)?;
    stmt.raw_bind_parameter(first + 7, r.output_tokens)?;
    stmt.raw_bind_parameter(first + 8, r.ttft_ms)?;
    stmt.raw_bind_parameter(first + 9, r.duration_ms)
}

const INSERT_CONTEXTS_PG: &str = "INSERT INTO usage_contexts (id, user_id, key_id, model_asked, model_run, \
instance, route, streamed) SELECT (v->>0)::bigint, v->>1, v->>2, v->>3, v->>4, (v->>5)::integer, v->>6, \
(v->>7)::boolean FROM json_array_elements($1::json) AS v ORDER BY 1 ON CONFLICT DO NOTHING";

const INSERT_CONTEXT_GROUPS_PG: &str = "INSERT INTO usage_context_groups (context_id, group_id) \
SELECT (v->>0)::bigint, v->>1 FROM json_array_elements($1::json) AS v ORDER BY 1, 2 ON CONFLICT DO NOTHING";

const INSERT_RECORDS_PG: &str = "INSERT INTO usage_records (at_ms, seq, context_id, status, cancelled, \
estimated, input_tokens, output_tokens, ttft_ms, duration_ms) SELECT (v->>0)::bigint, (v->>1)::bigint, \
(v->>2)::bigint, (v->>3)::integer, (v->>4)::boolean, (v->>5)::boolean, (v->>6)::bigint, (v->>7)::bigint, \
(v->>8)::bigint, (v->>9)::bigint FROM json_array_elements($1::json) AS v ON CONFLICT DO NOTHING";

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
    /// Writes `records` in one transaction; returns how many were new. A record already stored
    /// (same time and seq: a batch retried after its acknowledgement was lost) is skipped, so
    /// retrying a batch never counts a request twice.
    ///
    /// A record is one narrow row of numbers keyed by `(at_ms, seq)`, with no other index (in
    /// SQLite a table without rowid, kept in time order; every report reads a time range), and
    /// points at its context (caller, key, groups, models, instance, route, streaming), written
    /// once per batch that has it and stored once (`usage_contexts`, `usage_context_groups`).
    ///
    /// SQLite does the work on the gateway's own cores, so its writer takes the cheapest way in:
    /// a connection of its own (`rusqlite`) with prepared statements, thirty-two records per
    /// execution. Through diesel each execution cost about five times SQLite's insert (the
    /// statement and its binds built anew), and a batch bound as one JSON text that SQLite
    /// unpacks itself (`json_each`) twice a prepared statement's cost
    /// (`cargo bench -p corral-store --bench usage`). PostgreSQL does the work in its own
    /// process: each chunk goes as one JSON text bound to one statement it unpacks itself
    /// (`json_array_elements`), one round trip per thousand records.
    pub fn insert_usage(&self, records: &[UsageRecord]) -> Result<usize, StoreError> {
        if records.is_empty() {
            return Ok(0);
        }
        if self.backend == Backend::Sqlite {
            return self.insert_usage_sqlite(records);
        }
        let distinct = distinct_contexts(records);
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
            for chunk in records.chunks(BATCH) {
                let rows: Vec<_> = chunk
                    .iter()
                    .map(|r| {
                        (
                            r.at_ms,
                            r.seq,
                            r.context.id,
                            r.status,
                            r.cancelled,
                            r.estimated,
                            r.input_tokens,
                            r.output_tokens,
                            r.ttft_ms,
                            r.duration_ms,
                        )
                    })
                    .collect();
                inserted += diesel::sql_query(INSERT_RECORDS_PG)
                    .bind::<Text, _>(to_json(&rows)?)
                    .execute(c)?;
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
    /// records (ordered by them), or one total row when it groups by nothing.
    pub fn usage_report(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let sql = report_sql(query, self.backend);
        let mut conn = self.conn()?;
        let q = diesel::sql_query(sql)
            .bind::<BigInt, _>(query.from_ms)
            .bind::<BigInt, _>(query.to_ms)
            .bind::<Nullable<Text>, _>(query.user.as_deref())
            .bind::<Nullable<Text>, _>(query.key.as_deref())
            .bind::<Nullable<Text>, _>(query.model.as_deref())
            .bind::<Nullable<Integer>, _>(query.instance)
            .bind::<Nullable<Text>, _>(query.group.as_deref());
        Ok(on_backend!(&mut *conn, c => q.load::<UsageRow>(c))?)
    }

    /// Every record stored (oldest first), for tests and exports.
    pub fn usage_records(&self) -> Result<Vec<UsageRecord>, StoreError> {
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
        type Row = (i64, i64, i64, i32, bool, bool, i64, i64, Option<i64>, i64);
        let mut conn = self.conn()?;
        // One snapshot: a prune between the reads would leave records without their context.
        let (rows, contexts, groups) = snapshot_tx(&mut conn, |c| {
            let rows: Vec<Row> = usage_records::table
                .order((usage_records::at_ms.asc(), usage_records::seq.asc()))
                .load(c)?;
            let contexts: Vec<Context> = usage_contexts::table.load(c)?;
            let groups: Vec<(i64, String)> = usage_context_groups::table
                .order((usage_context_groups::context_id, usage_context_groups::group_id))
                .load(c)?;
            Ok::<_, StoreError>((rows, contexts, groups))
        })?;
        let mut groups_of: std::collections::HashMap<i64, Vec<String>> = std::collections::HashMap::new();
        for (context, group) in groups {
            groups_of.entry(context).or_default().push(group);
        }
        let contexts: std::collections::HashMap<i64, Arc<UsageContext>> = contexts
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
            .collect();
        rows.into_iter()
            .map(|r| {
                let (
                    at_ms,
                    seq,
                    context_id,
                    status,
                    cancelled,
                    estimated,
                    input_tokens,
                    output_tokens,
                    ttft_ms,
                    duration_ms,
                ) = r;
                let context = contexts.get(&context_id).cloned().ok_or_else(|| {
                    StoreError::Corrupt(format!("usage record ({at_ms}, {seq}) has no context {context_id}"))
                })?;
                Ok(UsageRecord {
                    at_ms,
                    seq,
                    context,
                    status,
                    cancelled,
                    estimated,
                    input_tokens,
                    output_tokens,
                    ttft_ms,
                    duration_ms,
                })
            })
            .collect()
    }

    /// Deletes the records of requests that arrived before `before_ms` (Unix milliseconds); returns
    /// how many went. Contexts stay (one row per combination of caller, key, model, instance and
    /// route ever seen), except those carried over from the previous storage shape, one per old
    /// record (negative ids), which go with their record.
    pub fn prune_usage(&self, before_ms: i64) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |c| {
            // Each carried context belongs to one record: found by the records' time range
            // (the primary key's prefix), not by scanning every record for each context.
            let carried: Vec<i64> = usage_records::table
                .filter(usage_records::at_ms.lt(before_ms))
                .filter(usage_records::context_id.lt(0))
                .select(usage_records::context_id)
                .load(c)?;
            let n = diesel::delete(usage_records::table.filter(usage_records::at_ms.lt(before_ms))).execute(c)?;
            for ids in carried.chunks(1000) {
                diesel::delete(usage_context_groups::table.filter(usage_context_groups::context_id.eq_any(ids)))
                    .execute(c)?;
                diesel::delete(usage_contexts::table.filter(usage_contexts::id.eq_any(ids))).execute(c)?;
            }
            Ok(n)
        })
    }
}

/// The report's SQL. Only fixed column names from [`UsageDimension::columns`] are spliced in; every
/// value is a bound parameter (numbered, so each is bound once, in the order `usage_report` binds them).
fn report_sql(query: &UsageQuery, backend: Backend) -> String {
    let p = |n: usize| match backend {
        Backend::Postgres => format!("${n}"),
        Backend::Sqlite => format!("?{n}"),
    };
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

/// Rows as one JSON text, for PostgreSQL to unpack.
fn to_json(rows: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Writes `records` in one `BEGIN IMMEDIATE` transaction (rolled back when dropped unfinished):
/// their contexts first (each once), then the records, thirty-two per statement.
fn write_records_sqlite(conn: &mut rusqlite::Connection, records: &[UsageRecord]) -> rusqlite::Result<usize> {
    static MANY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert_records_sqlite(ROWS_PER_INSERT));
    static ONE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| insert_records_sqlite(1));
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
        let mut many = tx.prepare_cached(&MANY)?;
        let mut chunks = records.chunks_exact(ROWS_PER_INSERT);
        for chunk in chunks.by_ref() {
            for (i, r) in chunk.iter().enumerate() {
                bind_record(&mut many, 1 + i * RECORD_VALUES, r)?;
            }
            inserted += many.raw_execute()?;
        }
        let mut one = tx.prepare_cached(&ONE)?;
        for r in chunks.remainder() {
            bind_record(&mut one, 1, r)?;
            inserted += one.raw_execute()?;
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
