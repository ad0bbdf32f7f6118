//! The store against both real backends: every check runs on a fresh SQLite file and on a fresh
//! PostgreSQL database (skipped with a note when PostgreSQL is unreachable, never under `CI=true`).

// Helpers fail the test on any error, which is what `unwrap` says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use corral_store::test_support::TestDb;
use corral_store::Store;

/// Declares, for each check `fn name(store: &Store)` in the invoking module, a module `name` with the
/// tests `sqlite` and `postgres`, so both backends run (in parallel) and report separately.
macro_rules! on_both {
    ($($check:ident),* $(,)?) => {
        $(
            mod $check {
                #[test]
                fn sqlite() {
                    crate::run_sqlite(super::$check);
                }

                #[test]
                fn postgres() {
                    crate::run_postgres(super::$check);
                }
            }
        )*
    };
}

mod api_keys;
mod groups;
mod limits;
mod migrations;
mod models;
mod notify;
mod ollama;
mod settings;
mod support;
mod tokens;
mod unavailable;
mod usage;
mod users;

/// Runs `check` on a freshly opened (and so migrated) SQLite database.
fn run_sqlite(check: fn(&Store)) {
    let db = TestDb::sqlite();
    let store = db.store();
    check(&store);
}

/// Runs `check` on a freshly opened PostgreSQL database, unless PostgreSQL is unreachable outside CI.
fn run_postgres(check: fn(&Store)) {
    let Some(db) = TestDb::postgres() else { return };
    let store = db.store();
    check(&store);
}
