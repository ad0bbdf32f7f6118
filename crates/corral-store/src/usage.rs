//! Usage records: one row per model-running request, written in batches, summed per user, key,
//! group, model, instance or day, and pruned after the retention period.

mod report;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};

use crate::conn::{on_backend, write_tx};
use crate::schema::{usage_groups, usage_records};
use crate::{Backend, Store, StoreError};

pub use report::{usage_columns, usage_csv, usage_table, UsageParamError};

/// Records per PostgreSQL insert statement (one JSON text each).
const BATCH: usize = 1000;

/// One model-running request, as metered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// A uuid made when the request finished: writing a record twice keeps one row.
    pub id: String,
    /// Unix milliseconds when the request arrived.
    pub at_ms: i64,
    /// The caller's user id (none in open access).
    pub user_id: Option<String>,
    /// The API key's id, when the credential was an API key (never the key).
    pub key_id: Option<String>,
    /// The ids of the groups the caller belonged to (read back sorted).
    pub groups: Vec<String>,
    /// The model as the client named it.
    pub model_asked: String,
    /// The catalogue id the request ran on.
    pub model_run: String,
    /// The index of the instance that answered, if one did.
    pub instance: Option<i32>,
    /// The route (`chat`, `generate`, `openai_chat`, …).
    pub route: String,
    /// The status the client got.
    pub status: i32,
    /// Whether the answer was streamed.
    pub streamed: bool,
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

/// A record's columns in order: SQLite's statement binds them, PostgreSQL's unpacks them as a
/// JSON array.
type RecordTuple<'a> = (
    &'a str,
    i64,
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
    &'a str,
    Option<i32>,
    &'a str,
    i32,
    bool,
    bool,
    bool,
    i64,
    i64,
    Option<i64>,
    i64,
);

fn record_tuple(r: &UsageRecord) -> RecordTuple<'_> {
    (
        &r.id,
        r.at_ms,
        r.user_id.as_deref(),
        r.key_id.as_deref(),
        &r.model_asked,
        &r.model_run,
        r.instance,
        &r.route,
        r.status,
        r.streamed,
        r.cancelled,
        r.estimated,
        r.input_tokens,
        r.output_tokens,
        r.ttft_ms,
        r.duration_ms,
    )
}

/// SQLite: one record, through a statement prepared once per writer connection.
const INSERT_RECORD_SQLITE: &str = "INSERT OR IGNORE INTO usage_records (id, at_ms, user_id, key_id, \
model_asked, model_run, instance, route, status, streamed, cancelled, estimated, input_tokens, output_tokens, \
ttft_ms, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";

const INSERT_GROUP_SQLITE: &str = "INSERT OR IGNORE INTO usage_groups (record_id, group_id, at_ms) VALUES (?1, ?2, ?3)";

const INSERT_RECORDS_PG: &str = "INSERT INTO usage_records (id, at_ms, user_id, key_id, model_asked, \
model_run, instance, route, status, streamed, cancelled, estimated, input_tokens, output_tokens, ttft_ms, \
duration_ms) SELECT v->>0, (v->>1)::bigint, v->>2, v->>3, v->>4, v->>5, (v->>6)::integer, v->>7, \
(v->>8)::integer, (v->>9)::boolean, (v->>10)::boolean, (v->>11)::boolean, (v->>12)::bigint, \
(v->>13)::bigint, (v->>14)::bigint, (v->>15)::bigint FROM json_array_elements($1::json) AS v \
ON CONFLICT DO NOTHING";

const INSERT_GROUPS_PG: &str = "INSERT INTO usage_groups (record_id, group_id, at_ms) \
SELECT v->>0, v->>1, (v->>2)::bigint FROM json_array_elements($1::json) AS v ON CONFLICT DO NOTHING";

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
            UsageDimension::User => &[("u.user_id", "user_id")],
            UsageDimension::Key => &[("u.key_id", "key_id")],
            UsageDimension::Group => &[("g.group_id", "group_id")],
            UsageDimension::Model => &[("u.model_run", "model")],
            UsageDimension::Instance => &[("u.instance", "instance")],
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
    /// (same id and time: a batch retried after its acknowledgement was lost) is skipped, so
    /// retrying a batch never counts a request twice.
    ///
    /// Records are keyed by `(at_ms, id)`, with no other index (in SQLite a table without rowid,
    /// kept in time order): one B-tree insert per record. Every report reads a time range.
    ///
    /// SQLite does the work on the gateway's own cores, so its writer takes the cheapest way in:
    /// a connection of its own (`rusqlite`) with one prepared statement, its sixteen values bound
    /// per record. Through diesel each execution cost about five times SQLite's insert (the
    /// statement and its binds built anew), and a batch bound as one JSON text that SQLite
    /// unpacks itself (`json_each`, the previous way) twice what this costs
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
        let mut conn = self.conn()?;
        write_tx(&mut conn, |c| {
            let mut inserted = 0;
            for chunk in records.chunks(BATCH) {
                let rows: Vec<_> = chunk.iter().map(record_tuple).collect();
                let json = serde_json::to_string(&rows).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                inserted += diesel::sql_query(INSERT_RECORDS_PG).bind::<Text, _>(json).execute(c)?;
                let groups: Vec<(&str, &str, i64)> = chunk
                    .iter()
                    .flat_map(|r| r.groups.iter().map(|g| (r.id.as_str(), g.as_str(), r.at_ms)))
                    .collect();
                if !groups.is_empty() {
                    let json = serde_json::to_string(&groups).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    diesel::sql_query(INSERT_GROUPS_PG).bind::<Text, _>(json).execute(c)?;
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
        #[derive(Queryable)]
        struct Row {
            id: String,
            at_ms: i64,
            user_id: Option<String>,
            key_id: Option<String>,
            model_asked: String,
            model_run: String,
            instance: Option<i32>,
            route: String,
            status: i32,
            streamed: bool,
            cancelled: bool,
            estimated: bool,
            input_tokens: i64,
            output_tokens: i64,
            ttft_ms: Option<i64>,
            duration_ms: i64,
        }
        let mut conn = self.conn()?;
        let rows: Vec<Row> = usage_records::table
            .order((usage_records::at_ms.asc(), usage_records::id.asc()))
            .load(&mut *conn)?;
        let groups: Vec<(String, String)> = usage_groups::table
            .order((usage_groups::record_id, usage_groups::group_id))
            .select((usage_groups::record_id, usage_groups::group_id))
            .load(&mut *conn)?;
        let mut by_record: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
        for (record, group) in groups {
            by_record.entry(record).or_default().push(group);
        }
        Ok(rows
            .into_iter()
            .map(|r| UsageRecord {
                groups: by_record.remove(&r.id).unwrap_or_default(),
                id: r.id,
                at_ms: r.at_ms,
                user_id: r.user_id,
                key_id: r.key_id,
                model_asked: r.model_asked,
                model_run: r.model_run,
                instance: r.instance,
                route: r.route,
                status: r.status,
                streamed: r.streamed,
                cancelled: r.cancelled,
                estimated: r.estimated,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                ttft_ms: r.ttft_ms,
                duration_ms: r.duration_ms,
            })
            .collect())
    }

    /// Deletes the records of requests that arrived before `before_ms` (Unix milliseconds); returns
    /// how many went.
    pub fn prune_usage(&self, before_ms: i64) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        write_tx(&mut conn, |c| {
            diesel::delete(usage_groups::table.filter(usage_groups::at_ms.lt(before_ms))).execute(c)?;
            Ok(diesel::delete(usage_records::table.filter(usage_records::at_ms.lt(before_ms))).execute(c)?)
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
        sum("CASE WHEN u.streamed THEN 1 ELSE 0 END", "streamed"),
        sum("u.ttft_ms", "ttft_ms_sum"),
        "COUNT(u.ttft_ms) AS ttft_count".to_owned(),
        sum("u.duration_ms", "duration_ms_sum"),
    ]);
    let join = if dims.contains(&UsageDimension::Group) {
        " LEFT JOIN usage_groups g ON g.record_id = u.id"
    } else {
        ""
    };
    let mut sql = format!(
        "SELECT {} FROM usage_records u{join} WHERE u.at_ms >= {} AND u.at_ms < {} \
         AND ({u} IS NULL OR u.user_id = {u}) AND ({k} IS NULL OR u.key_id = {k}) \
         AND ({m} IS NULL OR u.model_run = {m} OR u.model_asked = {m}) \
         AND ({i} IS NULL OR u.instance = {i}) \
         AND ({g} IS NULL OR EXISTS (SELECT 1 FROM usage_groups g2 WHERE g2.record_id = u.id AND g2.group_id = {g}))",
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

/// Writes `records` in one `BEGIN IMMEDIATE` transaction (rolled back when dropped unfinished).
fn write_records_sqlite(conn: &mut rusqlite::Connection, records: &[UsageRecord]) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut inserted = 0;
    {
        let mut insert = tx.prepare_cached(INSERT_RECORD_SQLITE)?;
        let mut group = tx.prepare_cached(INSERT_GROUP_SQLITE)?;
        for r in records {
            inserted += insert.execute(record_tuple(r))?;
            for g in &r.groups {
                group.execute(rusqlite::params![r.id, g, r.at_ms])?;
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
