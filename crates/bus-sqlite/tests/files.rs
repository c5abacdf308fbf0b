//! Files that are not a queue this build can use give typed errors and
//! are left as they were.

#![allow(clippy::unwrap_used)] // tests may unwrap

use bus_sqlite::{SqliteConfig, SqliteError, SqliteTransport};

#[test]
fn a_database_of_another_application_is_foreign() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY);")
        .unwrap();
    drop(conn);
    let err = SqliteTransport::open(SqliteConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, SqliteError::Foreign { .. }), "{err:?}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "left as it was");
}

#[test]
fn a_file_that_is_not_a_database_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite");
    std::fs::write(&path, vec![0x5a_u8; 8192]).unwrap();
    let err = SqliteTransport::open(SqliteConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, SqliteError::Corrupt(_)), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a_u8; 8192]);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteTransport::open(SqliteConfig::new(dir.path())).unwrap());
    let conn = rusqlite::Connection::open(dir.path().join("queue.sqlite")).unwrap();
    conn.execute_batch("PRAGMA user_version = 99;").unwrap();
    drop(conn);
    match SqliteTransport::open(SqliteConfig::new(dir.path())).unwrap_err() {
        SqliteError::NewerSchema { found, .. } => assert_eq!(found, 99),
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn a_data_dir_that_is_a_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = SqliteTransport::open(SqliteConfig::new(&file)).unwrap_err();
    assert!(
        matches!(err, SqliteError::Io(_) | SqliteError::ReadOnly(_)),
        "{err:?}"
    );
}
