//! Throwaway databases for tests: a fresh SQLite file, or a fresh PostgreSQL database on the
//! machine's server, dropped afterwards.

use std::path::PathBuf;

use diesel::{Connection, PgConnection, RunQueryDsl};
use rand::Rng;

/// A database that exists for one test.
pub struct TestDb {
    /// The URL to open it with.
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    File(PathBuf),
    Database { admin_url: String, name: String },
}

/// The server tests create their databases on: `TEST_DATABASE_URL`, else the machine's.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

impl TestDb {
    /// A fresh SQLite file in the system's temporary directory.
    pub fn sqlite() -> TestDb {
        let n: u64 = rand::thread_rng().gen();
        let path = std::env::temp_dir().join(format!("corral-test-{n:016x}.db"));
        TestDb {
            url: format!("sqlite://{}", path.display()),
            cleanup: Cleanup::File(path),
        }
    }

    /// A fresh PostgreSQL database, or `None` (with a note) when PostgreSQL is unreachable.
    /// With `CI=true` an unreachable PostgreSQL fails the test instead: CI never skips.
    pub fn postgres() -> Option<TestDb> {
        let admin_url = admin_url();
        let mut admin = match PgConnection::establish(&admin_url) {
            Ok(c) => c,
            Err(e) => {
                let message = format!("PostgreSQL unreachable at {}: {e}", crate::redact(&admin_url));
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{message} (CI=true: PostgreSQL tests must run)");
                }
                eprintln!("skipping: {message}");
                return None;
            }
        };
        let n: u64 = rand::thread_rng().gen();
        let name = format!("corral_test_{n:016x}");
        if let Err(e) = diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin) {
            let message = format!("cannot create a test database: {e}");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{message} (CI=true: PostgreSQL tests must run)");
            }
            eprintln!("skipping: {message}");
            return None;
        }
        let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(b, _)| b);
        Some(TestDb {
            url: format!("{base}/{name}"),
            cleanup: Cleanup::Database { admin_url, name },
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Cleanup::Database { admin_url, name } => {
                if let Ok(mut admin) = PgConnection::establish(admin_url) {
                    let _ =
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin);
                }
            }
        }
    }
}
