//! Creating and recognising the queue database (see `docs/formats.md`).

use crate::config::SqliteConfig;
use crate::error::SqliteError;
use bus_dlq::Durability;
use rusqlite::{Connection, OpenFlags};
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// `PRAGMA application_id` of a bus queue: "BUSQ".
pub(crate) const APPLICATION_ID: i32 = 0x4255_5351;

/// The schema version this build writes and reads.
pub(crate) const SCHEMA_VERSION: i32 = 1;

/// How long a writer waits for another process's write lock.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Version 1. One row per group's copy of a message in `messages`: ready
/// when `owner IS NULL AND due = 0`, waiting for a delayed redelivery when
/// `owner IS NULL AND due > 0` (wall-clock ms), leased when `owner` is set
/// (until `lease_until`, wall-clock ms). `leases` counts the times it was
/// handed out: a settle names the lease it settles, so a late ack of an
/// expired lease cannot settle the next one. `groups` holds each consumer
/// group with its bound and its ledger, changed in the same transaction as
/// the rows it counts: `published = acked + terminated + evicted + rows`,
/// across every process that ever opened the file. `seq` is
/// `AUTOINCREMENT`: a number is never used twice, so a settle naming an
/// acked row cannot match a newer one, and rows newer than an open are
/// told from older ones by number.
const V1: &str = "
CREATE TABLE groups (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    name TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    overflow TEXT NOT NULL,
    depth INTEGER NOT NULL DEFAULT 0,
    published INTEGER NOT NULL DEFAULT 0,
    acked INTEGER NOT NULL DEFAULT 0,
    terminated INTEGER NOT NULL DEFAULT 0,
    evicted INTEGER NOT NULL DEFAULT 0,
    UNIQUE (topic, name)
);
CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    grp INTEGER NOT NULL,
    prio INTEGER NOT NULL,
    due INTEGER NOT NULL DEFAULT 0,
    owner INTEGER,
    lease_until INTEGER,
    leases INTEGER NOT NULL DEFAULT 0,
    id BLOB NOT NULL,
    created_ns INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    extra TEXT,
    payload BLOB NOT NULL
);
CREATE INDEX messages_ready ON messages (grp, prio DESC, seq) WHERE owner IS NULL AND due = 0;
CREATE INDEX messages_delayed ON messages (due) WHERE owner IS NULL AND due > 0;
CREATE INDEX messages_leased ON messages (lease_until) WHERE owner IS NOT NULL;
";

/// Creates the data directory (0700) and the database file (0600) if
/// missing, then opens and prepares the database.
pub(crate) fn open(config: &SqliteConfig) -> Result<Connection, SqliteError> {
    if !config.data_dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .map_err(io_err)?;
    }
    let path = config.db_path();
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err)?;
    // Under `Full` the writer syncs the WAL itself after the commits that
    // need it (see `writer::run`): the connection never syncs in a commit.
    let mut conn = connect(&path, Durability::Normal)?;
    prepare(&mut conn, &path)?;
    Ok(conn)
}

/// Maps an I/O error on the files to the typed errors a caller can act on.
pub(crate) fn io_err(e: std::io::Error) -> SqliteError {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            SqliteError::ReadOnly(e.to_string())
        }
        std::io::ErrorKind::StorageFull => SqliteError::DiskFull(e.to_string()),
        _ => SqliteError::Io(e),
    }
}

/// One read-write connection with the durability pragma and a busy timeout.
pub(crate) fn connect(path: &Path, durability: Durability) -> Result<Connection, SqliteError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(sync_pragma(durability))?;
    Ok(conn)
}

/// A read-only connection (busctl on a data dir), which never creates anything.
pub(crate) fn connect_read_only(path: &Path) -> Result<Connection, SqliteError> {
    if !path.exists() {
        return Err(SqliteError::Io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no queue at {}", path.display()),
        )));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let version = recognise(&conn, path)?;
    if version != SCHEMA_VERSION {
        return Err(SqliteError::Foreign {
            path: path.to_owned(),
            reason: "an empty database".into(),
        });
    }
    Ok(conn)
}

pub(crate) fn sync_pragma(durability: Durability) -> &'static str {
    match durability {
        Durability::Normal => "PRAGMA synchronous = NORMAL;",
        _ => "PRAGMA synchronous = FULL;",
    }
}

/// The file's schema version (0: a new, empty database); a foreign or
/// newer file is refused. Reads only.
pub(crate) fn recognise(conn: &Connection, path: &Path) -> Result<i32, SqliteError> {
    let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    let fresh = app_id == 0 && version == 0 && objects == 0;
    if !fresh && app_id != APPLICATION_ID {
        return Err(SqliteError::Foreign {
            path: path.to_owned(),
            reason: format!(
                "a SQLite database of another application \
                 (application_id {app_id:#x}, {objects} schema objects)"
            ),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(SqliteError::NewerSchema {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(version)
}

fn prepare(conn: &mut Connection, path: &Path) -> Result<(), SqliteError> {
    let version = recognise(conn, path)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(SqliteError::Corrupt(format!(
            "could not switch {} to WAL mode (got {mode})",
            path.display()
        )));
    }
    restrict_side_files(path)?;
    if version == 0 {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have created it meanwhile: re-check in the lock.
        let now: i32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now == 0 {
            tx.execute_batch(V1)?;
            tx.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
            ))?;
        }
        tx.commit()?;
    }
    check_shape(conn)
}

/// Refuses a file whose tables lack the columns this build reads.
fn check_shape(conn: &Connection) -> Result<(), SqliteError> {
    conn.prepare(
        "SELECT seq, grp, prio, due, owner, lease_until, leases, id, created_ns, attempt, \
         extra, payload FROM messages LIMIT 0",
    )
    .and_then(|_| {
        conn.prepare(
            "SELECT id, topic, name, capacity, overflow, depth, published, acked, terminated, \
             evicted FROM groups LIMIT 0",
        )
        .map(drop)
    })
    .map_err(|e| SqliteError::Corrupt(format!("tables do not match the schema ({e})")))
}

/// Sets the `-wal` and `-shm` files, when present, to 0600.
fn restrict_side_files(path: &Path) -> Result<(), SqliteError> {
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = std::path::PathBuf::from(p);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        }
    }
    Ok(())
}
