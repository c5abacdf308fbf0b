//! Corrupt and foreign files give a clear error, never a panic.
// Test helpers live outside #[test] fns; PublishError (bus-core) is large by design.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use bus_dlq::{DeadLetterStore, DlqConfig, DlqError, DlqQuery, Filter, SqliteDlq};
use std::path::Path;

fn open(dir: &Path) -> Result<SqliteDlq, DlqError> {
    SqliteDlq::open(DlqConfig::new(dir))
}

#[test]
fn a_text_file_is_not_a_dlq() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dlq.sqlite"),
        "hello, this is a text file\n".repeat(200),
    )
    .unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(err, DlqError::NotAStore { ref reason, .. } if reason.contains("not a SQLite database")),
        "{err}"
    );
}

#[test]
fn another_applications_database_is_not_a_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dlq.sqlite");
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'a');").unwrap();
    drop(other);
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(err, DlqError::NotAStore { ref reason, .. } if reason.contains("another application")),
        "{err}"
    );
    // And it was left untouched.
    let other = rusqlite::Connection::open(&path).unwrap();
    let n: i64 = other
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).unwrap().close();
    let c = rusqlite::Connection::open(dir.path().join("dlq.sqlite")).unwrap();
    c.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(c);
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(err, DlqError::NotAStore { ref reason, .. } if reason.contains("newer")),
        "{err}"
    );
}

#[test]
fn a_dlq_with_a_missing_table_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).unwrap().close();
    let c = rusqlite::Connection::open(dir.path().join("dlq.sqlite")).unwrap();
    c.execute_batch("DROP TABLE letters").unwrap();
    drop(c);
    let err = open(dir.path()).unwrap_err();
    assert!(
        matches!(err, DlqError::Corrupt(ref m) if m.contains("schema")),
        "{err}"
    );
}

#[test]
fn a_row_tampered_with_is_reported_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = open(dir.path()).unwrap();
    let good = common::rich_letter(1);
    let bad = common::rich_letter(2);
    dlq.push(&good).unwrap();
    dlq.push(&bad).unwrap();
    let c = rusqlite::Connection::open(dir.path().join("dlq.sqlite")).unwrap();
    // Wherever the row is: a lone push may still be staged in `inbox`.
    for table in ["letters", "inbox"] {
        c.execute(
            &format!("UPDATE {table} SET detail_json = '{{broken' WHERE id = ?"),
            [bad.id.to_string()],
        )
        .unwrap();
    }
    drop(c);
    let report = dlq.verify().unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.rows_checked, 2);
    assert_eq!(report.bad_rows.len(), 1);
    assert_eq!(report.bad_rows[0].id, bad.id.to_string());
    assert!(
        report.bad_rows[0].error.contains("detail_json"),
        "{:?}",
        report.bad_rows
    );
    assert!(matches!(dlq.get(bad.id), Err(DlqError::Corrupt(_))));
    assert!(dlq.get(good.id).unwrap().is_some());
}

/// A real database, closed cleanly, as bytes.
fn pristine() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let dlq = open(dir.path()).unwrap();
    for seed in 0..40 {
        dlq.push(&common::rich_letter(seed)).unwrap();
    }
    dlq.close();
    std::fs::read(dir.path().join("dlq.sqlite")).unwrap()
}

/// Opens and exercises a damaged file; every step may fail, none may panic.
fn exercise(dir: &Path) -> &'static str {
    let dlq = match open(dir) {
        Ok(d) => d,
        Err(DlqError::Corrupt(_)) => return "refused at open (corrupt)",
        Err(_) => return "refused at open (other)",
    };
    let verified = matches!(dlq.verify(), Ok(r) if r.is_ok());
    let _ = dlq.list(&Filter::all());
    let _ = dlq.stats();
    let _ = dlq.groups(&Filter::all());
    let _ = dlq.push(&common::rich_letter(1000));
    if verified {
        "opened, verified"
    } else {
        "opened, problems found"
    }
}

#[test]
fn truncated_files_never_panic() {
    let bytes = pristine();
    let mut outcomes = std::collections::BTreeMap::new();
    for cut in [
        0,
        1,
        50,
        99,
        100,
        101,
        512,
        4096,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dlq.sqlite"), &bytes[..cut]).unwrap();
        *outcomes.entry(exercise(dir.path())).or_insert(0) += 1;
    }
    // A file cut inside its header cannot be mistaken for a sound DLQ.
    assert!(
        outcomes
            .keys()
            .any(|k| k.starts_with("refused") || k.ends_with("problems found")),
        "{outcomes:?}"
    );
}

#[test]
fn random_damage_never_panics_seeded_fuzz() {
    let bytes = pristine();
    let mut outcomes = std::collections::BTreeMap::new();
    for seed in 0..150_u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut damaged = bytes.clone();
        for _ in 0..rng.usize(1..8) {
            let at = rng.usize(..damaged.len());
            let len = rng.usize(1..64).min(damaged.len() - at);
            for b in &mut damaged[at..at + len] {
                *b = rng.u8(..);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dlq.sqlite"), &damaged).unwrap();
        *outcomes.entry(exercise(dir.path())).or_insert(0) += 1;
    }
    // The damage must actually be seen in some runs.
    assert!(
        outcomes.keys().any(|k| *k != "opened, verified"),
        "{outcomes:?}"
    );
}
