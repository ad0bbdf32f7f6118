//! Corral's database.
#![doc = include_str!("../README.md")]

mod error;
mod ollama;
mod schema;
#[cfg(feature = "test-support")]
pub mod test_support;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

pub use error::StoreError;
pub use ollama::StoredOllama;

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

/// A connection to either backend; queries written once serve both.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    /// PostgreSQL.
    Postgresql(PgConnection),
    /// SQLite.
    Sqlite(SqliteConnection),
}

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// A pool of connections to Corral's database.
#[derive(Clone)]
pub struct Store {
    pool: Pool<ConnectionManager<AnyConnection>>,
    backend: Backend,
    name: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("name", &self.name)
            .finish()
    }
}

/// SQLite connection settings, applied to every new connection.
#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<AnyConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut AnyConnection) -> Result<(), diesel::r2d2::Error> {
        if let AnyConnection::Sqlite(c) = conn {
            c.batch_execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
                .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

impl Store {
    /// Opens (and for SQLite creates) the database at `url` and checks that it answers.
    ///
    /// `postgres://` and `postgresql://` select PostgreSQL; `sqlite://PATH` or a plain path
    /// select SQLite. An unreachable database fails within a few seconds.
    pub fn open(url: &str, pool_size: u32) -> Result<Store, StoreError> {
        let (backend, target) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, with_connect_timeout(url))
        } else {
            let path = url.strip_prefix("sqlite://").unwrap_or(url);
            if let Some(parent) = std::path::Path::new(path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", parent.display())))?;
            }
            (Backend::Sqlite, path.to_owned())
        };
        let name = redact(url);
        let size = match (pool_size, backend) {
            (0, Backend::Postgres) => 8,
            (0, Backend::Sqlite) => 4,
            (n, _) => n,
        };
        let manager = ConnectionManager::<AnyConnection>::new(target);
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(3))
            .connection_customizer(Box::new(SqlitePragmas))
            .build(manager)
            .map_err(|e| StoreError::Unavailable(format!("cannot open the database {name}: {e}")))?;
        Ok(Store { pool, backend, name })
    }

    /// Which backend this store uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database's URL with any password removed, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs every pending migration; returns how many ran.
    pub fn migrate(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let ran = match &mut *conn {
            AnyConnection::Postgresql(c) => c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|v| v.len()),
            AnyConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
        };
        ran.map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Reverts every applied migration (tests check that `down` undoes `up`).
    pub fn revert_all(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let reverted = match &mut *conn {
            AnyConnection::Postgresql(c) => c.revert_all_migrations(POSTGRES_MIGRATIONS).map(|v| v.len()),
            AnyConnection::Sqlite(c) => c.revert_all_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
        };
        reverted.map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// A pooled connection.
    fn conn(&self) -> Result<PooledConnection<ConnectionManager<AnyConnection>>, StoreError> {
        self.pool
            .get()
            .map_err(|e| StoreError::Unavailable(format!("the database {} does not answer: {e}", self.name)))
    }
}

/// Adds a libpq `connect_timeout` so an unreachable server fails fast.
fn with_connect_timeout(url: &str) -> String {
    if url.contains("connect_timeout=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}connect_timeout=3")
}

/// `url` without the password, if it has one.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((creds, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match creds.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{creds}@{host}"),
    }
}
