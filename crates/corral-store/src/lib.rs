//! Corral's database: the one crate that knows diesel.
#![doc = include_str!("../README.md")]

mod accounts;
mod api_keys;
mod conn;
mod error;
mod groups;
mod limits;
mod models;
mod notify;
mod ollama;
mod revisions;
mod schema;
mod sealing;
mod settings;
#[cfg(feature = "test-support")]
pub mod test_support;
mod tokens;
mod url;
mod usage;
mod users;

use std::time::Duration;

use diesel::r2d2::{CustomizeConnection, ManageConnection, Pool, PooledConnection};
use diesel::RunQueryDsl;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::conn::{AnyConnection, Manager, SqlitePragmas};

pub use crate::accounts::{check_account, AccountError};
pub use crate::api_keys::{ActiveKey, ApiKey, NewApiKey};
pub use crate::error::StoreError;
pub use crate::groups::Group;
pub use crate::limits::StoredLimits;
pub use crate::models::{Model, NewModel};
pub use crate::notify::{Change, Listener};
pub use crate::ollama::StoredOllama;
pub use crate::revisions::Revisions;
pub use crate::sealing::{is_sealed, OpenError, Sealer, SEALED_PREFIX};
pub use crate::tokens::RevokedToken;
pub use crate::url::redact;
pub use crate::usage::{
    usage_columns, usage_csv, usage_table, UsageContext, UsageDimension, UsageParamError, UsageQuery, UsageRecord,
    UsageRow,
};
pub use crate::users::{NewUser, User, UserChanges, ROLE_SETTING, SIGNUP_CLOSED, SIGNUP_SETTING};

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// How long `open` and every query wait for a connection before reporting the database unavailable.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

/// A PostgreSQL advisory-lock key held while migrating, so replicas starting together migrate one at a time.
const MIGRATION_LOCK: i64 = 0x636f_7272_616c; // "corral"

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL, for several replicas sharing one state.
    Postgres,
    /// SQLite, a single file: the default for one instance.
    Sqlite,
}

/// A pool of connections to Corral's database, cheap to clone.
///
/// Every method is synchronous and takes a pooled connection: call it off the async executor
/// (`web::block`). Writes run in one transaction each and bump the revision of the area they change.
#[derive(Clone)]
pub struct Store {
    pool: Pool<Manager>,
    backend: Backend,
    name: String,
    /// What the driver is given (may hold a password: never shown); the change listener opens its own
    /// connection with it.
    target: String,
    /// SQLite: the usage writer's own connection, opened at its first batch (`usage.rs`).
    usage_writer: std::sync::Arc<std::sync::Mutex<Option<rusqlite::Connection>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("name", &self.name)
            .finish()
    }
}

impl Store {
    /// Opens the database at `url`, checks that it answers, and runs every pending migration.
    ///
    /// `postgres://` and `postgresql://` select PostgreSQL; `sqlite://PATH`, `sqlite:PATH` or a plain
    /// path select SQLite, creating the file and its parent directory if needed. A `pool_size` of 0 picks
    /// a default (8 for PostgreSQL, 4 for SQLite). An unreachable database fails within about five
    /// seconds with [`StoreError::Unavailable`], naming the database without its password.
    pub fn open(url: &str, pool_size: u32) -> Result<Store, StoreError> {
        let store = Store::connect(url, pool_size)?;
        store.migrate()?;
        Ok(store)
    }

    /// Like [`Store::open`] but runs no migration, for tools that migrate explicitly (`corral migrate`
    /// reports how many ran) or revert.
    pub fn connect(url: &str, pool_size: u32) -> Result<Store, StoreError> {
        let target = url::parse(url);
        let name = redact(url.trim());
        if target.backend == Backend::Sqlite {
            if let Some(parent) = url::sqlite_parent(&target.target) {
                std::fs::create_dir_all(parent).map_err(|e| {
                    StoreError::Unavailable(format!("cannot create the directory of the database {name}: {e}"))
                })?;
            }
        }
        let size = match (pool_size, target.backend) {
            (0, Backend::Postgres) => 8,
            (0, Backend::Sqlite) => 4,
            (n, _) => n,
        };
        let backend = target.backend;
        let manager = Manager {
            backend,
            target: target.target.clone(),
        };
        // One direct attempt first: a refused connection or a bad password fails at once with the driver's
        // own message, instead of after the pool's retries until its timeout.
        manager
            .connect()
            .and_then(|mut probe| SqlitePragmas.on_acquire(&mut probe))
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to the database {name}: {e}")))?;
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            .connection_timeout(POOL_TIMEOUT)
            .connection_customizer(Box::new(SqlitePragmas))
            .build(manager)
            .map_err(|e| StoreError::Unavailable(format!("cannot open the database {name}: {e}")))?;
        Ok(Store {
            pool,
            backend,
            name,
            target: target.target,
            usage_writer: std::sync::Arc::default(),
        })
    }

    /// Which backend this store uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database's URL without its password, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs every pending migration and returns how many ran.
    ///
    /// On PostgreSQL an advisory lock makes replicas that start together take turns.
    pub fn migrate(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let ran = match &mut *conn {
            AnyConnection::Postgresql(c) => {
                diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).execute(c)?;
                let ran = c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|v| v.len());
                diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(c)?;
                ran
            }
            AnyConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
        };
        ran.map_err(|e| StoreError::Migration(format!("{}: {e}", self.name)))
    }

    /// The migrations not yet applied, by name, oldest first (empty when the database is current).
    pub fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        let pending = match &mut *conn {
            AnyConnection::Postgresql(c) => c
                .pending_migrations(POSTGRES_MIGRATIONS)
                .map(|v| v.iter().map(|m| m.name().to_string()).collect()),
            AnyConnection::Sqlite(c) => c
                .pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.iter().map(|m| m.name().to_string()).collect()),
        };
        pending.map_err(|e| StoreError::Migration(format!("{}: {e}", self.name)))
    }

    /// The database server's clock in seconds since the Unix epoch, on PostgreSQL (replicas on other
    /// machines compare theirs with it); `None` on SQLite, whose clock is this machine's.
    pub fn database_clock(&self) -> Result<Option<f64>, StoreError> {
        #[derive(diesel::QueryableByName)]
        struct Now {
            #[diesel(sql_type = diesel::sql_types::Double)]
            now: f64,
        }
        let mut conn = self.conn()?;
        match &mut *conn {
            AnyConnection::Postgresql(c) => {
                let row: Now =
                    diesel::sql_query("SELECT extract(epoch FROM clock_timestamp())::float8 AS now").get_result(c)?;
                Ok(Some(row.now))
            }
            AnyConnection::Sqlite(_) => Ok(None),
        }
    }

    /// Reverts every applied migration, newest first, and returns how many were reverted.
    ///
    /// This deletes all data; tests use it to check that every `down.sql` undoes its `up.sql`.
    pub fn revert_all(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let reverted = match &mut *conn {
            AnyConnection::Postgresql(c) => c.revert_all_migrations(POSTGRES_MIGRATIONS).map(|v| v.len()),
            AnyConnection::Sqlite(c) => c.revert_all_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
        };
        reverted.map_err(|e| StoreError::Migration(format!("{}: {e}", self.name)))
    }

    /// A pooled connection, or [`StoreError::Unavailable`] once the pool timeout passes.
    fn conn(&self) -> Result<PooledConnection<Manager>, StoreError> {
        self.pool
            .get()
            .map_err(|e| StoreError::Unavailable(format!("the database {} does not answer: {e}", self.name)))
    }
}
