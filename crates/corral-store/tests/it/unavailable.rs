//! An unreachable database fails fast as `Unavailable`, naming the database but never its password.

use std::time::{Duration, Instant};

use corral_store::test_support::{admin_url, TestDb};
use corral_store::{Store, StoreError};
use diesel::{Connection, PgConnection, RunQueryDsl};

use crate::support::user;

#[test]
fn an_unreachable_postgres_fails_fast() {
    let start = Instant::now();
    let err = Store::open("postgres://nobody:secret@127.0.0.1:1/none", 1).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert_eq!(err.kind(), "unavailable");
    assert!(err.is_unavailable());
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    let text = err.to_string();
    assert!(!text.contains("secret"), "the password is never printed: {text}");
    assert!(text.contains("127.0.0.1:1/none"), "the database is named: {text}");
}

#[test]
fn an_unusable_sqlite_path_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = Store::open(&file.join("corral.db").display().to_string(), 1).unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[test]
fn a_file_that_is_not_a_database_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("garbage.db");
    std::fs::write(&file, vec![0x42u8; 8192]).unwrap();
    let start = Instant::now();
    let err = Store::open(&file.display().to_string(), 1).unwrap_err();
    assert!(err.to_string().contains("not a database"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
}

#[test]
fn postgres_connections_are_replaced_and_a_lost_database_is_unavailable() {
    let Some(db) = TestDb::postgres() else { return };
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let store = db.store();
    user(&store, "ada@example.com");
    let mut admin = PgConnection::establish(&admin_url()).unwrap();

    // Every pooled connection dies (as when the server restarts): the pool notices and reconnects.
    diesel::sql_query(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .execute(&mut admin)
    .unwrap();
    assert_eq!(store.count_users().unwrap(), 1);

    // The database disappears: calls fail as unavailable once the pool timeout passes.
    diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .unwrap();
    let start = Instant::now();
    let err = store.count_users().unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    assert!(err.to_string().contains(&name), "the database is named: {err}");
}
