//! Connections: the two-backend connection type, the pool's connection manager, SQLite's per-connection
//! settings, and the transaction helpers every query module uses.

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::{CustomizeConnection, ManageConnection, R2D2Connection};
use diesel::result::Error as DieselError;
use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};

use crate::Backend;

/// A connection to either backend: a query written once against it serves both.
#[derive(diesel::MultiConnection)]
pub(crate) enum AnyConnection {
    /// PostgreSQL.
    Postgresql(PgConnection),
    /// SQLite.
    Sqlite(SqliteConnection),
}

/// Runs the same diesel expression on whichever backend `$conn` holds.
///
/// For the few statements `MultiConnection` cannot express itself, such as `ON CONFLICT` upserts,
/// which both backends spell the same way.
macro_rules! on_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::conn::AnyConnection::Postgresql($c) => $body,
            $crate::conn::AnyConnection::Sqlite($c) => $body,
        }
    };
}
pub(crate) use on_backend;

/// Opens connections of one backend.
///
/// diesel's own `ConnectionManager<MultiConnection>` tries every backend in turn and reports only that none
/// worked; this one opens the backend the URL names and keeps its error (connection refused, bad password).
#[derive(Debug)]
pub(crate) struct Manager {
    pub(crate) backend: Backend,
    /// What the driver is given: a libpq URL with a connect timeout, or a SQLite file path.
    pub(crate) target: String,
}

impl ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, Self::Error> {
        let conn = match self.backend {
            Backend::Postgres => PgConnection::establish(&self.target).map(AnyConnection::Postgresql),
            Backend::Sqlite => SqliteConnection::establish(&self.target).map(AnyConnection::Sqlite),
        };
        conn.map_err(diesel::r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), Self::Error> {
        conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

/// What every SQLite connection sets first (the pool's, and the usage writer's own).
pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;";

/// SQLite's per-connection settings: wait for locks rather than fail, write-ahead logging so readers never
/// block the writer, and foreign keys enforced (SQLite leaves them off by default).
///
/// `synchronous = NORMAL` is the usual WAL pairing: the file cannot be corrupted, though a power cut may
/// lose the last commits.
#[derive(Debug)]
pub(crate) struct SqlitePragmas;

impl CustomizeConnection<AnyConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut AnyConnection) -> Result<(), diesel::r2d2::Error> {
        if let AnyConnection::Sqlite(c) = conn {
            c.batch_execute(SQLITE_PRAGMAS)
                .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// Runs `f` in a write transaction and commits if it succeeds.
///
/// On SQLite the transaction starts with `BEGIN IMMEDIATE`, taking the write lock up front: a deferred
/// transaction that reads and then writes fails at once (without waiting out `busy_timeout`) when another
/// connection wrote in between.
pub(crate) fn write_tx<T, E>(
    conn: &mut AnyConnection,
    f: impl FnOnce(&mut AnyConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DieselError>,
{
    match conn {
        AnyConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?,
        AnyConnection::Postgresql(_) => AnyConnection::begin_transaction(conn)?,
    }
    finish(conn, f)
}

/// Runs `f` in a transaction that sees one consistent snapshot, for reads spanning several statements.
///
/// PostgreSQL's default isolation gives each statement its own snapshot, so the transaction asks for
/// `REPEATABLE READ`; a SQLite transaction keeps the snapshot of its first read.
pub(crate) fn snapshot_tx<T, E>(
    conn: &mut AnyConnection,
    f: impl FnOnce(&mut AnyConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DieselError>,
{
    AnyConnection::begin_transaction(conn)?;
    if let AnyConnection::Postgresql(c) = conn {
        let set = diesel::sql_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(c);
        if let Err(e) = set {
            let _ = AnyConnection::rollback_transaction(conn);
            return Err(e.into());
        }
    }
    finish(conn, f)
}

/// Runs `f` inside the transaction just begun, then commits, or rolls back and returns `f`'s error.
fn finish<T, E>(conn: &mut AnyConnection, f: impl FnOnce(&mut AnyConnection) -> Result<T, E>) -> Result<T, E>
where
    E: From<DieselError>,
{
    match f(conn) {
        Ok(value) => {
            AnyConnection::commit_transaction(conn)?;
            Ok(value)
        }
        Err(err) => match AnyConnection::rollback_transaction(conn) {
            // A failed rollback leaves the transaction manager broken, so the pool discards the connection;
            // the caller still learns the original error.
            Ok(()) | Err(_) => Err(err),
        },
    }
}
