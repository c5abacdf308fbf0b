//! Creating, recognising and migrating the database file.

use crate::config::{DlqConfig, Durability};
use bus_core::DlqError;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// `PRAGMA application_id` of a bus DLQ: "BUSD".
pub(crate) const APPLICATION_ID: i32 = 0x4255_5344;

/// The page size of a new store. 8 KiB instead of SQLite's 4 KiB: a 1 KiB
/// letter's row (~1.8 KiB) fills pages in fours instead of pairs, so the
/// writer allocates half as many pages, splits index pages half as often,
/// and writes (and the checkpoint copies) half as many WAL frames, each a
/// syscall or two, for the same bytes. Measured when it was chosen (commit
/// 3a0375f, this project's 2-core machine, `examples/dlq_profile.rs` under
/// `strace -c` and callgrind, and `examples/dlq_rounds.rs`), with 4
/// pipelined pushers: a third fewer read/write syscalls per letter, 5 %
/// fewer writer instructions, and about 40 % -> 46-54 % of the `write` +
/// `fdatasync` per 256 baseline. A lone push writes about as many frames
/// either way, each twice as large, so its fsync moves more bytes: the
/// single pusher went from about 2.3-3.0x to 3.0-3.7x the baseline.
/// A store keeps the page size it was created with (SQLite cannot change
/// it in WAL mode without a `VACUUM`).
pub(crate) const PAGE_SIZE: u32 = 8192;

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i32 = 4;

/// Forward migrations: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

pub(super) const V1: &str = r#"
CREATE TABLE letters (
    id               TEXT PRIMARY KEY NOT NULL,
    message_id       TEXT NOT NULL,
    topic            TEXT NOT NULL,
    category         TEXT NOT NULL,
    severity         TEXT NOT NULL,
    reason           TEXT NOT NULL,
    component        TEXT NOT NULL,
    "group"          TEXT NOT NULL,
    error_type       TEXT NOT NULL,
    error_message    TEXT NOT NULL,
    signature        TEXT NOT NULL,
    first_failure_at INTEGER NOT NULL,
    last_failure_at  INTEGER NOT NULL,
    dead_lettered_at INTEGER NOT NULL,
    attempts         INTEGER NOT NULL,
    payload          BLOB NOT NULL,
    envelope_json    TEXT NOT NULL,
    report_json      TEXT NOT NULL,
    history_json     TEXT NOT NULL,
    reason_json      TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'dead'
                     CHECK (state IN ('dead', 'replay_requested', 'replayed')),
    replayed_at      INTEGER,
    replay_topic     TEXT,
    row_bytes        INTEGER NOT NULL
);
CREATE INDEX letters_topic ON letters(topic);
CREATE INDEX letters_category ON letters(category);
CREATE INDEX letters_last_failure ON letters(last_failure_at);
CREATE INDEX letters_dead_lettered ON letters(dead_lettered_at);
CREATE INDEX letters_signature ON letters(signature);
CREATE INDEX letters_state ON letters(state);
CREATE TABLE totals (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    letters INTEGER NOT NULL,
    bytes   INTEGER NOT NULL
);
INSERT INTO totals VALUES (1, 0, 0);
CREATE TRIGGER letters_count_insert AFTER INSERT ON letters BEGIN
    UPDATE totals SET letters = letters + 1, bytes = bytes + NEW.row_bytes WHERE id = 1;
END;
CREATE TRIGGER letters_count_delete AFTER DELETE ON letters BEGIN
    UPDATE totals SET letters = letters - 1, bytes = bytes - OLD.row_bytes WHERE id = 1;
END;
"#;

/// Version 2, for the writer's cost per letter:
///
/// - Inserts no longer fire a trigger per row. Whoever inserts adds to
///   `totals` once per transaction ([`add_to_totals`]): the per-row trigger
///   cost the writer a sub-program per letter, and it made SQLite stage a
///   multi-row `INSERT` in a temporary table. Deletes keep their trigger.
/// - The state index leaves out `dead`, the state every push writes: a push
///   no longer touches it (one page fewer in a one-letter commit), and the
///   queries it serves (letters to replay, replayed letters to purge) find
///   the few letters in other states through it. A filter on `dead` (most
///   letters) now reads the table instead of the index; counting dead
///   letters is slower on a large store, finding them hardly.
const V2: &str = "DROP TRIGGER letters_count_insert;
DROP INDEX letters_state;
CREATE INDEX letters_state_active ON letters(state) WHERE state <> 'dead';";

/// Version 3, for the writer's cost per letter and the first-failure index:
///
/// - The columns no query filters or indexes are packed into two JSON
///   columns: `summary_json` (message id, severity, reason, group, error
///   type, attempts: what a listing shows) and `detail_json` (envelope
///   without payload and history, last report, history, reason: what
///   rebuilding the letter needs). A push binds 13 values instead of 24;
///   binding each (SQLite copies it) was over a quarter of the writer's
///   instructions under callgrind before this version (43.3k -> 30.5k per
///   letter with 4 pipelined pushers, `examples/dlq_profile.rs`).
///   `state`, `replayed_at` and `replay_topic` are not bound by a push: they
///   keep their defaults.
/// - The `state` CHECK compares with `=` instead of `IN (...)`: SQLite built
///   a temporary b-tree of the three values for every insert statement.
/// - `first_failure_at` is indexed (the issue asks for first and last
///   failure time).
///
/// The table is rebuilt (SQLite cannot change a CHECK in place): rows keep
/// their rowid, state and `row_bytes` (so `totals` stays exact); the JSON
/// columns are re-nested with SQLite's `json()`, which keeps the text of
/// every value. `DROP TABLE` drops the old indexes and delete trigger
/// without firing it.
const V3: &str = r#"
CREATE TABLE letters_v3 (
    id               TEXT PRIMARY KEY NOT NULL,
    topic            TEXT NOT NULL,
    category         TEXT NOT NULL,
    component        TEXT NOT NULL,
    error_message    TEXT NOT NULL,
    signature        TEXT NOT NULL,
    first_failure_at INTEGER NOT NULL,
    last_failure_at  INTEGER NOT NULL,
    dead_lettered_at INTEGER NOT NULL,
    payload          BLOB NOT NULL,
    summary_json     TEXT NOT NULL,
    detail_json      TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'dead'
                     CHECK (state = 'dead' OR state = 'replay_requested' OR state = 'replayed'),
    replayed_at      INTEGER,
    replay_topic     TEXT,
    row_bytes        INTEGER NOT NULL
);
INSERT INTO letters_v3 (rowid, id, topic, category, component, error_message, signature,
    first_failure_at, last_failure_at, dead_lettered_at, payload, summary_json, detail_json,
    state, replayed_at, replay_topic, row_bytes)
SELECT rowid, id, topic, category, component, error_message, signature,
    first_failure_at, last_failure_at, dead_lettered_at, payload,
    json_object('message_id', message_id, 'severity', severity, 'reason', reason,
                'group', "group", 'error_type', error_type, 'attempts', attempts),
    json_object('envelope', json(envelope_json), 'report', json(report_json),
                'history', json(history_json), 'reason', json(reason_json)),
    state, replayed_at, replay_topic, row_bytes
FROM letters;
DROP TABLE letters;
ALTER TABLE letters_v3 RENAME TO letters;
CREATE INDEX letters_topic ON letters(topic);
CREATE INDEX letters_category ON letters(category);
CREATE INDEX letters_signature ON letters(signature);
CREATE INDEX letters_first_failure ON letters(first_failure_at);
CREATE INDEX letters_last_failure ON letters(last_failure_at);
CREATE INDEX letters_dead_lettered ON letters(dead_lettered_at);
CREATE INDEX letters_state_active ON letters(state) WHERE state <> 'dead';
CREATE TRIGGER letters_count_delete AFTER DELETE ON letters BEGIN
    UPDATE totals SET letters = letters - 1, bytes = bytes - OLD.row_bytes WHERE id = 1;
END;
"#;

/// Version 4: `inbox`, where the writer stages letters pushed alone under
/// `Durability::Full` (see [`super::writer`]). A commit into `letters` writes
/// a page of the table, a page of each of its seven indexes and `totals`:
/// ten WAL frames, about 80 KiB to sync for a 1 KiB letter. A commit into
/// `inbox` writes one or two: it has the same columns but no index at all
/// (ids stay unique because staging checks both tables first; `verify`
/// reports an id found twice), and is not counted in `totals` (whoever
/// needs its size sums it: it holds at most `FOLD_AT` rows per writer).
/// The writer folds it into `letters` ([`fold_inbox`]) once it holds
/// [`super::writer::FOLD_AT`] letters, before a larger batch, when it has
/// been idle a moment, and at close; so does every other write (purge,
/// replay marks, import), and every read looks in both tables. The view
/// `every_letter` is both, for whoever reads the file with SQL.
const V4: &str = r#"
CREATE TABLE inbox (
    id               TEXT NOT NULL,
    topic            TEXT NOT NULL,
    category         TEXT NOT NULL,
    component        TEXT NOT NULL,
    error_message    TEXT NOT NULL,
    signature        TEXT NOT NULL,
    first_failure_at INTEGER NOT NULL,
    last_failure_at  INTEGER NOT NULL,
    dead_lettered_at INTEGER NOT NULL,
    payload          BLOB NOT NULL,
    summary_json     TEXT NOT NULL,
    detail_json      TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'dead'
                     CHECK (state = 'dead' OR state = 'replay_requested' OR state = 'replayed'),
    replayed_at      INTEGER,
    replay_topic     TEXT,
    row_bytes        INTEGER NOT NULL
);
CREATE VIEW every_letter AS
    SELECT id, topic, category, component, error_message, signature, first_failure_at,
        last_failure_at, dead_lettered_at, payload, summary_json, detail_json, state,
        replayed_at, replay_topic, row_bytes FROM letters
    UNION ALL
    SELECT id, topic, category, component, error_message, signature, first_failure_at,
        last_failure_at, dead_lettered_at, payload, summary_json, detail_json, state,
        replayed_at, replay_topic, row_bytes FROM inbox;
"#;

/// Moves every letter staged in `inbox` into `letters` and adds them to
/// `totals`, in the caller's transaction (every write but the writer's
/// staging calls it first, so it only has `letters` to change). An id
/// already in `letters` is not moved twice (nothing stages one: the writer
/// checks `letters` when it stages, and folds before inserting there).
pub(crate) fn fold_inbox(conn: &Connection) -> rusqlite::Result<()> {
    // Even an empty table's `DELETE` rewrites its root page: a WAL frame.
    let staged: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM inbox)")?
        .query_row([], |r| r.get(0))?;
    if !staged {
        return Ok(());
    }
    let cols = super::row::STORED_COLUMNS;
    let moved = conn
        .prepare_cached(&format!(
            "INSERT OR IGNORE INTO letters ({cols}) SELECT {cols} FROM inbox"
        ))?
        .execute([])?;
    let bytes = bytes_of_last(conn, moved)?;
    conn.prepare_cached("DELETE FROM inbox")?.execute([])?;
    add_to_totals(conn, i64::try_from(moved).unwrap_or(i64::MAX), bytes)
}

/// Letters and bytes staged in `inbox`.
pub(crate) fn inbox_totals(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.prepare_cached("SELECT count(*), coalesce(sum(row_bytes), 0) FROM inbox")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// Bytes of the `n` rows inserted into `letters` last. Exact because the
/// table has no `AUTOINCREMENT` and SQLite gives a new row the largest rowid
/// plus one (it picks unused rowids at random only once the largest is
/// `i64::MAX`, which no store reaches: nothing sets rowids), so the rows a
/// statement just added are the `n` largest.
pub(crate) fn bytes_of_last(conn: &Connection, n: usize) -> rusqlite::Result<i64> {
    if n == 0 {
        return Ok(0);
    }
    conn.prepare_cached(
        "SELECT coalesce(sum(row_bytes), 0) FROM \
         (SELECT row_bytes FROM letters ORDER BY rowid DESC LIMIT ?1)",
    )?
    .query_row([i64::try_from(n).unwrap_or(i64::MAX)], |r| r.get(0))
}

/// Adds `letters` new rows of `bytes` in all to `totals`, in the caller's
/// transaction (every insert into `letters` must, since schema version 2).
pub(crate) fn add_to_totals(conn: &Connection, letters: i64, bytes: i64) -> rusqlite::Result<()> {
    if letters != 0 {
        conn.prepare_cached(
            "UPDATE totals SET letters = letters + ?1, bytes = bytes + ?2 WHERE id = 1",
        )?
        .execute([letters, bytes])?;
    }
    Ok(())
}

/// Maps a SQLite error to the DLQ's vocabulary: unreadable files are
/// `Corrupt`, a full disk is `Io`, the rest `Other`.
pub(crate) fn db_err(e: rusqlite::Error) -> DlqError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            DlqError::Corrupt(format!("not a bus DLQ: not a SQLite database ({e})"))
        }
        Some(ErrorCode::DatabaseCorrupt) => DlqError::Corrupt(format!("database is damaged: {e}")),
        Some(ErrorCode::DiskFull) => DlqError::Io(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            e.to_string(),
        )),
        _ => DlqError::Other(Box::new(e)),
    }
}

/// Creates the data directory (0700) and the database file (0600) if missing.
pub(crate) fn create_files(config: &DlqConfig) -> Result<(), DlqError> {
    if !config.data_dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(config.db_path())?;
    Ok(())
}

/// Opens one connection on an existing file, with the durability pragmas.
pub(crate) fn connect(path: &Path, durability: Durability) -> Result<Connection, DlqError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(db_err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!("PRAGMA synchronous = {sync};"))
        .map_err(db_err)?;
    Ok(conn)
}

/// Recognises the file, creates or migrates the schema, switches to WAL and
/// restricts the WAL and shared-memory files to 0600.
pub(crate) fn prepare(conn: &mut Connection, path: &Path) -> Result<(), DlqError> {
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(db_err)?;
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(db_err)?;
    let fresh = app_id == 0 && version == 0 && objects == 0;
    if !fresh && app_id != APPLICATION_ID {
        return Err(DlqError::Corrupt(format!(
            "not a bus DLQ: {} is a SQLite database of another application \
             (application_id {app_id:#x}, {objects} schema objects)",
            path.display()
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(DlqError::Corrupt(format!(
            "{} has DLQ schema version {version}, newer than this build's {SCHEMA_VERSION}; \
             use a newer busctl",
            path.display()
        )));
    }
    if fresh {
        // Only takes effect before the first page is written, and before WAL.
        conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE};"))
            .map_err(db_err)?;
    }
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DlqError::Other(
            format!(
                "could not switch {} to WAL mode (got {mode})",
                path.display()
            )
            .into(),
        ));
    }
    restrict_side_files(path)?;
    migrate(conn, version)?;
    check_shape(conn)
}

fn migrate(conn: &mut Connection, from: i32) -> Result<(), DlqError> {
    for (v, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(from).unwrap_or(0))
    {
        let to = v + 1;
        let tx = conn.transaction().map_err(db_err)?;
        // Another process may have migrated meanwhile: re-check inside the lock.
        let now: i32 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db_err)?;
        if usize::try_from(now).unwrap_or(0) >= to {
            continue;
        }
        tx.execute_batch(sql).map_err(db_err)?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {to};"
        ))
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
    }
    Ok(())
}

/// Refuses a file whose tables do not have the columns this build reads.
fn check_shape(conn: &Connection) -> Result<(), DlqError> {
    conn.prepare(&format!(
        "SELECT {} FROM letters LIMIT 0",
        super::row::FULL_COLUMNS
    ))
    .and_then(|_| {
        conn.prepare(&format!(
            "SELECT {} FROM inbox LIMIT 0",
            super::row::FULL_COLUMNS
        ))
    })
    .and_then(|_| {
        conn.prepare("SELECT letters, bytes FROM totals LIMIT 0")
            .map(|_| ())
    })
    .map_err(|e| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => db_err(e),
        _ => DlqError::Corrupt(format!(
            "not a bus DLQ: tables do not match the schema ({e})"
        )),
    })
}

/// Sets the `-wal` and `-shm` files, when present, to 0600.
pub(crate) fn restrict_side_files(path: &Path) -> Result<(), DlqError> {
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = std::path::PathBuf::from(p);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}
