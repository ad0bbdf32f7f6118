//! Pushed changes: on PostgreSQL a listener hears each committed write's area, hears nothing of a write
//! that rolled back, and says so when its connection was lost and is back; SQLite has no listener.

use std::sync::mpsc;
use std::time::Duration;

use corral_store::test_support::{admin_url, TestDb};
use corral_store::{Change, Store};
use diesel::{Connection, PgConnection, RunQueryDsl};

use crate::support::{user, NOW};

/// Waits for the next change other than a loss, failing the test after 10 seconds.
fn next(rx: &mpsc::Receiver<Change>) -> Change {
    loop {
        match rx.recv_timeout(Duration::from_secs(10)).expect("a change is reported") {
            Change::Lost(_) => {}
            change => return change,
        }
    }
}

#[test]
fn sqlite_has_no_listener() {
    let db = TestDb::sqlite();
    assert!(db.store().listen(|_| {}).unwrap().is_none());
}

#[test]
fn postgres_listeners_hear_committed_writes_and_reconnect() {
    let Some(db) = TestDb::postgres() else { return };
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let store = db.store();
    // Another replica: its own pool on the same database.
    let other = Store::connect(&db.url, 2).unwrap();
    let (tx, rx) = mpsc::channel();
    let _listener = store
        .listen(move |c| {
            let _ = tx.send(c);
        })
        .unwrap()
        .expect("PostgreSQL has a listener");

    let ada = user(&other, "ada@example.com");
    assert_eq!(next(&rx), Change::Area("auth".into()));
    other.put_setting("x", &serde_json::json!(1), NOW).unwrap();
    assert_eq!(next(&rx), Change::Area("config".into()));

    // A write that fails (the user exists) rolls back and notifies nobody; the next one is heard.
    assert!(other
        .create_user(&crate::support::new_user("ada@example.com"), NOW)
        .is_err());
    other.revoke_token("jti", NOW + 60).unwrap();
    assert_eq!(next(&rx), Change::Area("auth".into()));
    let _ = ada;

    // Every connection is killed, as when the server restarts: the listener comes back and says so.
    let mut admin = PgConnection::establish(&admin_url()).unwrap();
    diesel::sql_query(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .execute(&mut admin)
    .unwrap();
    assert_eq!(next(&rx), Change::Reconnected);
    other.put_setting("y", &serde_json::json!(2), NOW).unwrap();
    assert_eq!(next(&rx), Change::Area("config".into()));
}
