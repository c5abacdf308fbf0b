//! Creating, recognising and migrating the database file.

use crate::config::{DlqConfig, Durability};
use bus_core::DlqError;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

mod versions;

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
pub(crate) const SCHEMA_VERSION: i32 = 6;

pub(super) use versions::MIGRATIONS;
#[cfg(test)]
pub(super) use versions::V1;

/// Lets a read-only connection read a store of an older schema as this
/// version's. Version 5 lacks only `letter_groups`, which readers do
/// without (they group the letters themselves, see [`super::groups`]).
/// Version 4 lacks `replay_json` too (and the state `replay_failed`, which
/// it never holds), so temporary views named `letters` and `inbox` add it
/// as NULL. SQLite looks names up in the `temp` schema first, and `temp`
/// lives in memory: the store's files are not touched. The views name the
/// rowid, which `verify` reads rows in the order of. `Err(None)`: a version
/// this cannot bridge.
pub(crate) fn read_older_as_current(
    conn: &Connection,
    version: i32,
) -> Result<(), Option<rusqlite::Error>> {
    if version == 5 {
        return Ok(());
    }
    if version != 4 {
        return Err(None);
    }
    conn.execute_batch(
        "PRAGMA temp_store = MEMORY;
         CREATE TEMP VIEW letters AS
             SELECT *, NULL AS replay_json, rowid AS rowid FROM main.letters;
         CREATE TEMP VIEW inbox AS
             SELECT *, NULL AS replay_json, rowid AS rowid FROM main.inbox;",
    )
    .map_err(Some)
}

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
    super::summary::add_last(conn, moved)?;
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
    create_db_file(&config.db_path())
}

/// Creates the database file (0600) if missing.
pub(crate) fn create_db_file(path: &Path) -> Result<(), DlqError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
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

/// Recognises the file as a bus DLQ (or an empty database, `fresh`) and
/// returns its schema version; a foreign or newer file is
/// [`DlqError::NotAStore`]. Reads only.
pub(crate) fn recognise(conn: &Connection, path: &Path) -> Result<i32, DlqError> {
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
    let not_a_store = |reason: String| DlqError::NotAStore {
        path: path.to_owned(),
        reason,
    };
    if !fresh && app_id != APPLICATION_ID {
        return Err(not_a_store(format!(
            "a SQLite database of another application \
             (application_id {app_id:#x}, {objects} schema objects)"
        )));
    }
    if version > SCHEMA_VERSION {
        return Err(not_a_store(format!(
            "DLQ schema version {version}, newer than this build's {SCHEMA_VERSION}; \
             use a newer busctl"
        )));
    }
    Ok(version)
}

/// Recognises the file, creates or migrates the schema, switches to WAL and
/// restricts the WAL and shared-memory files to 0600.
pub(crate) fn prepare(conn: &mut Connection, path: &Path) -> Result<(), DlqError> {
    let version = recognise(conn, path)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(db_err)?;
    let fresh = version == 0 && objects == 0;
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
    check_shape(conn)?;
    resummarize(conn)
}

/// Builds `letter_groups` again when its counts disagree with `totals`: a
/// build older than schema version 6 wrote the store after it was
/// migrated (it changes letters without the summary). Readers meanwhile
/// group the letters themselves.
fn resummarize(conn: &mut Connection) -> Result<(), DlqError> {
    // Read first: the write lock only when there is something to mend.
    if super::summary::in_step(conn).map_err(db_err)? {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db_err)?;
    if !super::summary::in_step(&tx).map_err(db_err)? {
        tracing::warn!("rebuilding the dead-letter group counts: they disagree with the letters");
        super::summary::rebuild(&tx).map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
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
pub(crate) fn check_shape(conn: &Connection) -> Result<(), DlqError> {
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
            "a bus DLQ whose tables do not match its schema ({e})"
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
