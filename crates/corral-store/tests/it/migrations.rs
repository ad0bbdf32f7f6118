//! Migrations apply from empty, revert cleanly and apply again.

use corral_store::test_support::TestDb;
use corral_store::{Revisions, Store};

use crate::support::{user, NOW};

/// How many migration directories there are (both backends share them by name).
fn migrations() -> usize {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count()
}

fn apply_revert_and_reapply(store: &Store) {
    assert_eq!(store.migrate().unwrap(), 0, "open already migrated");
    assert_eq!(store.revisions().unwrap(), Revisions::default());
    user(store, "before@example.com");

    assert_eq!(store.revert_all().unwrap(), migrations());
    assert!(store.revisions().is_err(), "state_revisions is gone after down");
    assert!(store.count_users().is_err(), "users is gone after down");
    assert!(
        store.load_ollama_config(&crate::support::sealer()).is_err(),
        "settings are gone after down"
    );

    // `up` creates every table and index without IF NOT EXISTS, so re-applying also proves that `down`
    // left nothing behind.
    assert_eq!(store.migrate().unwrap(), migrations());
    assert_eq!(store.count_users().unwrap(), 0, "down deleted the data");
    assert_eq!(store.revisions().unwrap(), Revisions::default());
    user(store, "after@example.com");
    assert_eq!(store.migrate().unwrap(), 0);
}

on_both!(apply_revert_and_reapply);

fn check_connect_runs_no_migration(db: &TestDb) {
    let store = Store::connect(&db.url, 2).unwrap();
    assert!(store.count_users().is_err(), "connect does not migrate");
    assert_eq!(store.migrate().unwrap(), migrations());
    // A second store on the same database finds nothing left to do.
    let again = Store::open(&db.url, 2).unwrap();
    assert_eq!(again.migrate().unwrap(), 0);
    assert_eq!(again.count_users().unwrap(), 0);
    again
        .create_user(&crate::support::new_user("x@example.com"), NOW)
        .unwrap();
    assert_eq!(store.count_users().unwrap(), 1, "both stores see one database");
}

#[test]
fn connect_runs_no_migration_sqlite() {
    check_connect_runs_no_migration(&TestDb::sqlite());
}

#[test]
fn connect_runs_no_migration_postgres() {
    let Some(db) = TestDb::postgres() else { return };
    check_connect_runs_no_migration(&db);
}

#[test]
fn a_sqlite_path_gets_its_directory_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/corral.db");
    let store = Store::open(&format!("sqlite://{}", path.display()), 0).unwrap();
    assert_eq!(store.backend(), corral_store::Backend::Sqlite);
    assert!(path.exists());
    // A plain path works too, and finds the same data.
    user(&store, "a@example.com");
    let plain = Store::open(path.to_str().unwrap(), 1).unwrap();
    assert_eq!(plain.count_users().unwrap(), 1);
}
