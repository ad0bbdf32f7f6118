//! Throwaway databases for tests (behind the `test-support` feature): a fresh SQLite file, or a fresh
//! PostgreSQL database on the test server, dropped afterwards. Tests using them run in parallel safely.

use diesel::{Connection, PgConnection, RunQueryDsl};

use crate::{Backend, Store};

/// The server used when `TEST_DATABASE_URL` is unset: the development machine's local PostgreSQL.
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database that exists for one test and is deleted when dropped.
pub struct TestDb {
    /// The URL to open it with.
    pub url: String,
    backend: Backend,
    cleanup: Cleanup,
}

enum Cleanup {
    /// The temporary directory holding the SQLite file (and its `-wal` and `-shm` files).
    Dir { _dir: tempfile::TempDir },
    /// A database to drop on the server `admin_url` points at.
    Database { admin_url: String, name: String },
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("url", &crate::redact(&self.url))
            .finish_non_exhaustive()
    }
}

/// The PostgreSQL server tests create their databases on: `TEST_DATABASE_URL`, else the local one.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_owned())
}

impl TestDb {
    /// A fresh SQLite file in a new temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("corral-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory for a test database: {e}"));
        let path = dir.path().join("corral.db");
        TestDb {
            url: format!("sqlite://{}", path.display()),
            backend: Backend::Sqlite,
            cleanup: Cleanup::Dir { _dir: dir },
        }
    }

    /// A fresh, empty PostgreSQL database named `corral_test_<random>` on the [`admin_url`] server.
    ///
    /// When the server is unreachable this prints `skipping: PostgreSQL unreachable …` and returns `None`,
    /// so the calling test returns early; with `CI=true` it fails the test instead, because CI never skips.
    pub fn postgres() -> Option<TestDb> {
        let admin_url = admin_url();
        let shown = crate::redact(&admin_url);
        let mut admin = match PgConnection::establish(&crate::url::parse(&admin_url).target) {
            Ok(c) => c,
            Err(e) => {
                unreachable_postgres(&format!(
                    "PostgreSQL unreachable at {shown} (set TEST_DATABASE_URL): {e}"
                ));
                return None;
            }
        };
        let name = format!("corral_test_{}", uuid::Uuid::new_v4().simple());
        if let Err(e) = diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin) {
            // The server answers but refuses: that is a broken setup, not a missing server.
            panic!("cannot create the test database {name} on {shown}: {e}");
        }
        Some(TestDb {
            url: with_database(&admin_url, &name),
            backend: Backend::Postgres,
            cleanup: Cleanup::Database { admin_url, name },
        })
    }

    /// Which backend the database uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Opens the database with a small pool and migrates it, failing the test on error.
    pub fn store(&self) -> Store {
        Store::open(&self.url, 4).unwrap_or_else(|e| panic!("cannot open the test database: {e}"))
    }
}

impl Store {
    /// Every row of `ollama_connections` as stored: `(idx, url, config)`, for tests that check what is
    /// at rest.
    pub fn raw_connection_rows(&self) -> Vec<(i32, String, String)> {
        use crate::schema::ollama_connections;
        use diesel::{ExpressionMethods, QueryDsl};
        let mut conn = self.conn().unwrap_or_else(|e| panic!("{e}"));
        ollama_connections::table
            .order(ollama_connections::idx.asc())
            .select((
                ollama_connections::idx,
                ollama_connections::url,
                ollama_connections::config,
            ))
            .load(&mut *conn)
            .unwrap_or_else(|e| panic!("cannot read ollama_connections: {e}"))
    }

    /// Replaces the saved Ollama configuration with these raw rows and the enable switch, as a release
    /// from before keys were sealed wrote them (`config` is stored as given).
    pub fn put_raw_connection_rows(&self, enable: bool, rows: &[(&str, serde_json::Value)]) {
        use crate::schema::ollama_connections;
        use diesel::ExpressionMethods;
        let mut conn = self.conn().unwrap_or_else(|e| panic!("{e}"));
        let written = crate::conn::write_tx(&mut conn, |c| {
            crate::settings::upsert(c, crate::ollama::ENABLE_KEY, &enable.to_string(), 0)?;
            diesel::delete(ollama_connections::table).execute(c)?;
            for (i, (url, config)) in rows.iter().enumerate() {
                let idx = i32::try_from(i).unwrap_or(i32::MAX);
                diesel::insert_into(ollama_connections::table)
                    .values((
                        ollama_connections::idx.eq(idx),
                        ollama_connections::url.eq(*url),
                        ollama_connections::config.eq(config.to_string()),
                    ))
                    .execute(c)?;
            }
            crate::revisions::bump(c, crate::revisions::Area::Config)?;
            Ok::<_, diesel::result::Error>(())
        });
        written.unwrap_or_else(|e| panic!("cannot write ollama_connections: {e}"));
    }
}

/// Fails the test under `CI=true`; otherwise says the PostgreSQL part is skipped.
fn unreachable_postgres(message: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message} (CI=true: PostgreSQL tests must run, not skip)");
    }
    eprintln!("skipping: {message}");
}

/// `url` with its database name replaced by `name`, keeping any query string.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let server = match base.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, _)) => format!("{scheme}://{authority}"),
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // The temporary directory removes itself; only a PostgreSQL database needs dropping.
        if let Cleanup::Database { admin_url, name } = &self.cleanup {
            if let Ok(mut admin) = PgConnection::establish(&crate::url::parse(admin_url).target) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin);
            }
        }
    }
}

impl Store {
    /// Reverts the newest applied migration, for tests that put rows in an older shape.
    pub fn revert_last_migration(&self) {
        use diesel_migrations::MigrationHarness;
        let mut conn = self.conn().unwrap_or_else(|e| panic!("{e}"));
        let reverted = match &mut *conn {
            crate::conn::AnyConnection::Postgresql(c) => c
                .revert_last_migration(crate::POSTGRES_MIGRATIONS)
                .map(|v| v.to_string()),
            crate::conn::AnyConnection::Sqlite(c) => {
                c.revert_last_migration(crate::SQLITE_MIGRATIONS).map(|v| v.to_string())
            }
        };
        reverted.unwrap_or_else(|e| panic!("cannot revert the last migration: {e}"));
    }

    /// The number of rows in `table` (a name written in a test), for tests.
    pub fn count_rows(&self, table: &str) -> usize {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.conn().unwrap_or_else(|e| panic!("{e}"));
        let query = diesel::sql_query(format!("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM {table}"));
        let counted: Count = crate::conn::on_backend!(&mut *conn, c => query.get_result(c))
            .unwrap_or_else(|e| panic!("cannot count the rows of {table}: {e}"));
        usize::try_from(counted.n).unwrap_or_default()
    }

    /// Runs `sql` (statements separated by semicolons) as it is, for tests.
    pub fn execute_sql(&self, sql: &str) {
        use diesel::connection::SimpleConnection;
        let mut conn = self.conn().unwrap_or_else(|e| panic!("{e}"));
        let done = match &mut *conn {
            crate::conn::AnyConnection::Postgresql(c) => c.batch_execute(sql),
            crate::conn::AnyConnection::Sqlite(c) => c.batch_execute(sql),
        };
        done.unwrap_or_else(|e| panic!("cannot run {sql}: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn test_database_urls_keep_server_and_options() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
