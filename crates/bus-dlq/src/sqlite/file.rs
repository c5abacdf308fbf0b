//! [`DlqFile`]: one connection on a store's file, without the writer.

use super::schema::{self, db_err};
use super::{WalDamage, filter_sql, row, summary, verify};
use crate::config::{DB_FILE_NAME, Durability};
use crate::query::{DlqQuery, Filter};
use crate::record::{LetterState, LetterSummary, ReplayRefusal, StoredLetter, to_nanos};
use bus_core::{DlqError, LetterId, Topic};
use row::EncodedRow;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

/// A dead-letter store's file opened on one connection, without the
/// writer, syncer and checkpoint threads of a [`SqliteDlq`](crate::SqliteDlq):
/// what `busctl dlq` works on, beside a running bus or without one.
///
/// - [`open_read_only`](Self::open_read_only) never writes: no schema is
///   created or migrated, nothing is folded or checkpointed, and no `-wal`
///   or `-shm` file is created where there was none, so it works on a
///   read-only directory and leaves every byte as it was.
/// - [`open_read_write`](Self::open_read_write) changes letters (replay
///   requests, purge, import) with every commit synced, and never
///   preallocates the write-ahead log as the bus's writer does.
///
/// ```
/// use bus_core::{DeadLetter, DeadLetterReason, DeadLetterStore, Envelope, Topic};
/// use bus_dlq::{DlqConfig, DlqError, DlqFile, DlqQuery, Filter, SqliteDlq};
/// use bus_errors::{Classification, ErrorCategory, ErrorReport};
///
/// let dir = tempfile::tempdir().unwrap();
/// assert!(matches!(DlqFile::open_read_only(dir.path()), Err(DlqError::NoStore(_))));
///
/// let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
/// let env = Envelope::new(Topic::new("orders").unwrap(), &b"{}"[..]);
/// let report = ErrorReport::new(Classification::of(ErrorCategory::Timeout), "svc", "slow");
/// dlq.push(&DeadLetter::new(env, report, DeadLetterReason::RetriesExhausted, "svc", "svc"))
///     .unwrap();
///
/// // Beside the running store: reads see every committed letter.
/// let file = DlqFile::open_read_only(dir.path()).unwrap();
/// assert_eq!(file.count(&Filter::all()).unwrap(), 1);
/// assert!(matches!(file.purge(&Filter::all()), Err(DlqError::ReadOnly)));
/// ```
#[derive(Debug)]
pub struct DlqFile {
    path: PathBuf,
    conn: Mutex<Connection>,
    read_only: bool,
}

impl DlqFile {
    /// Opens the store in `data_dir` for reading only. A missing file gives
    /// [`DlqError::NoStore`]; an empty or foreign one, or one of a schema
    /// older than the previous version (which only a migration makes
    /// readable), [`DlqError::NotAStore`]. Either way nothing is created. A
    /// store of the previous schema version, as a running older bus keeps
    /// it, is read as it is, unmigrated.
    ///
    /// SQLite reads a WAL-mode database through its `-wal` and `-shm` files,
    /// and a plain read-only connection creates both when they are missing
    /// (and leaves them behind). They are missing only when no connection
    /// is open (SQLite creates the WAL at a connection's first read and
    /// deletes it when the last one closes after a full checkpoint), and the
    /// database file then holds every commit: it is read with `immutable=1`,
    /// which takes no lock and opens no side file. A bus that opens the store
    /// during such a read writes only to a new WAL until its first
    /// checkpoint, so the read still sees the file as it was. When the WAL
    /// exists (a live bus, or one that crashed), it is read as usual, with
    /// the live bus's commits.
    pub fn open_read_only(data_dir: impl AsRef<Path>) -> Result<Self, DlqError> {
        let path = data_dir.as_ref().join(DB_FILE_NAME);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DlqError::NoStore(path));
            }
            Err(e) => return Err(e.into()),
        };
        if !meta.is_file() {
            return Err(not_a_store(&path, "not a regular file"));
        }
        if meta.len() == 0 {
            return Err(not_a_store(&path, "the file is empty"));
        }
        let immutable = !side_file(&path, "-wal").exists();
        let uri = format!(
            "file:{}?mode=ro{}",
            uri_path(&path),
            if immutable { "&immutable=1" } else { "" }
        );
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&uri, flags).map_err(|e| open_err(&path, e))?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
        let version = schema::recognise(&conn, &path).map_err(|e| reword_open(&path, e))?;
        if version == 0 {
            return Err(not_a_store(
                &path,
                "a SQLite database without the dead-letter schema",
            ));
        }
        if version < schema::SCHEMA_VERSION {
            // A store a running older bus still writes: read it as it is.
            schema::read_older_as_current(&conn, version).map_err(|e| match e {
                Some(e) => db_err(e),
                None => not_a_store(
                    &path,
                    &format!(
                        "schema version {version} is older than this build reads without \
                         migrating it ({}); open it read-write once (any changing command, \
                         or the bus)",
                        schema::SCHEMA_VERSION
                    ),
                ),
            })?;
        }
        conn.execute_batch("PRAGMA query_only = ON;")
            .map_err(db_err)?;
        schema::check_shape(&conn)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            read_only: true,
        })
    }

    /// Opens the existing store in `data_dir` to change it (migrating its
    /// schema if older); a missing file gives [`DlqError::NoStore`], an empty
    /// or foreign one [`DlqError::NotAStore`]. Every commit is synced
    /// (`synchronous=FULL`).
    pub fn open_read_write(data_dir: impl AsRef<Path>) -> Result<Self, DlqError> {
        let path = data_dir.as_ref().join(DB_FILE_NAME);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.len() > 0 => {}
            Ok(m) if m.is_file() => return Err(not_a_store(&path, "the file is empty")),
            Ok(_) => return Err(not_a_store(&path, "not a regular file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DlqError::NoStore(path));
            }
            Err(e) => return Err(e.into()),
        }
        Self::open_writable(path)
    }

    /// Opens the store in `data_dir` to change it, creating the directory
    /// (0700), the file (0600) and the schema if missing (what `import`
    /// needs: it may fill a new store).
    pub fn create_or_open(data_dir: impl AsRef<Path>) -> Result<Self, DlqError> {
        let config = crate::DlqConfig::new(data_dir.as_ref());
        schema::create_files(&config)?;
        Self::open_writable(config.db_path())
    }

    /// A read-write connection on `path`, which exists; creates the schema
    /// if the file is empty.
    pub(super) fn open_writable(path: PathBuf) -> Result<Self, DlqError> {
        let mut conn =
            schema::connect(&path, Durability::Full).map_err(|e| reword_open(&path, e))?;
        schema::prepare(&mut conn, &path).map_err(|e| reword_open(&path, e))?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            read_only: false,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs SQLite's integrity check, decodes every row, compares the
    /// running totals, and reads the write-ahead log for frames SQLite would
    /// drop when it next recovers it (see [`WalDamage`](crate::WalDamage)).
    /// Changes nothing: on a read-only open, nothing is checkpointed.
    pub fn verify(&self) -> Result<verify::VerifyReport, DlqError> {
        let mut report = verify::verify(&self.conn())?;
        report.wal_damage = super::wal::inspect(&side_file(&self.path, "-wal"))?;
        Ok(report)
    }

    /// Reads the write-ahead log of the store in `data_dir` for damage
    /// (see [`verify`](Self::verify)) without opening the database: what
    /// `verify` still reports when damage in the log keeps the store from
    /// opening at all.
    pub fn inspect_wal(data_dir: impl AsRef<Path>) -> Result<Option<WalDamage>, DlqError> {
        super::wal::inspect(&side_file(&data_dir.as_ref().join(DB_FILE_NAME), "-wal"))
    }

    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `write` in a transaction that first folds the writer's staged
    /// letters into `letters` (see [`schema::fold_inbox`]), so it has only
    /// that table to change. `IMMEDIATE`: the fold reads before it writes,
    /// and a deferred transaction could not always take the write lock
    /// after its read.
    pub(super) fn write_folded<T>(
        &self,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, DlqError> {
        if self.read_only {
            return Err(DlqError::ReadOnly);
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        schema::fold_inbox(&tx).map_err(db_err)?;
        let done = write(&tx).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(done)
    }
}

fn not_a_store(path: &Path, reason: &str) -> DlqError {
    DlqError::NotAStore {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// An open that fails because the file is not a database says so.
fn open_err(path: &Path, e: rusqlite::Error) -> DlqError {
    reword_open(path, db_err(e))
}

/// A store's opening error in the words an operator needs: a file that is
/// not a SQLite database is not a store (rather than a corrupt one).
fn reword_open(path: &Path, e: DlqError) -> DlqError {
    match e {
        DlqError::Corrupt(m) if m.starts_with("not a bus DLQ") => not_a_store(path, &m),
        other => other,
    }
}

/// `<db><suffix>`: the `-wal` or `-shm` file beside the database.
pub(super) fn side_file(db: &Path, suffix: &str) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// `path` for a SQLite URI: every byte but unreserved ones and `/`
/// percent-encoded (a `?` or `#` in a directory name would end the path).
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn id_values(ids: &[LetterId]) -> (String, Vec<Value>) {
    let marks = vec!["?"; ids.len()].join(", ");
    (
        marks,
        ids.iter().map(|i| Value::Text(i.to_string())).collect(),
    )
}

/// The parameters of a clause used once per table (`letters`, then `inbox`).
pub(super) fn both_tables(params: Vec<Value>) -> Vec<Value> {
    let mut both = params.clone();
    both.extend(params);
    both
}

impl DlqFile {
    /// Up to `max` rows matching `filter` after `after`, in id order, over
    /// the letters and the staged inbox alike, with `cols` read by `decode`.
    fn page<T>(
        &self,
        filter: &Filter,
        after: Option<LetterId>,
        max: usize,
        cols: &str,
        decode: fn(&rusqlite::Row<'_>) -> Result<T, DlqError>,
    ) -> Result<Vec<T>, DlqError> {
        let (mut clause, mut params) = filter_sql::compile(filter);
        if let Some(a) = after {
            clause.push_str(" AND id > ?");
            params.push(Value::Text(a.to_string()));
        }
        let mut params = both_tables(params);
        params.push(Value::Integer(i64::try_from(max).unwrap_or(i64::MAX)));
        // SQLite merges the two arms, each in id order (the id index of
        // `letters`, a sort of the few staged letters).
        let sql = format!(
            "SELECT {cols} FROM letters WHERE {clause} UNION ALL \
             SELECT {cols} FROM inbox WHERE {clause} ORDER BY id LIMIT ?"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(db_err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(db_err)? {
            out.push(decode(r)?);
        }
        Ok(out)
    }
}

impl DlqQuery for DlqFile {
    fn scan(
        &self,
        filter: &Filter,
        after: Option<LetterId>,
        max: usize,
    ) -> Result<Vec<LetterSummary>, DlqError> {
        self.page(
            filter,
            after,
            max,
            row::SUMMARY_COLUMNS,
            row::summary_from_row,
        )
    }

    fn scan_letters(
        &self,
        filter: &Filter,
        after: Option<LetterId>,
        max: usize,
    ) -> Result<Vec<StoredLetter>, DlqError> {
        self.page(filter, after, max, row::FULL_COLUMNS, row::decode)
    }

    fn get(&self, id: LetterId) -> Result<Option<StoredLetter>, DlqError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {cols} FROM letters WHERE id = ?1 UNION ALL \
             SELECT {cols} FROM inbox WHERE id = ?1",
            cols = row::FULL_COLUMNS
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
        let mut rows = stmt.query([id.to_string()]).map_err(db_err)?;
        match rows.next().map_err(db_err)? {
            Some(r) => row::decode(r).map(Some),
            None => Ok(None),
        }
    }

    fn count(&self, filter: &Filter) -> Result<u64, DlqError> {
        self.bounded_count(filter)
    }

    /// Read from `letter_groups` where it answers the filter, else grouped
    /// by SQLite over the letters (see `groups.rs`), unless the filter
    /// pages letters, which only the provided walk applies.
    fn groups(&self, filter: &Filter) -> Result<Vec<crate::FailureGroup>, DlqError> {
        if filter.limit.is_some() || filter.offset > 0 {
            return crate::query::walk_groups(self, filter);
        }
        match self.summary_groups(filter)? {
            Some(groups) => Ok(groups),
            None => self.sql_groups(filter),
        }
    }

    fn set_state(
        &self,
        ids: &[LetterId],
        from: &[LetterState],
        to: LetterState,
        replayed_at: Option<SystemTime>,
        replay_topic: Option<&Topic>,
    ) -> Result<usize, DlqError> {
        if ids.is_empty() || from.is_empty() {
            return Ok(0);
        }
        let (marks, mut params) = id_values(ids);
        let states = vec!["?"; from.len()].join(", ");
        let selection = format!("id IN ({marks}) AND state IN ({states})");
        params.extend(from.iter().map(|s| Value::Text(s.as_str().into())));
        let sql = format!(
            "UPDATE letters SET state = ?, replayed_at = ?, replay_topic = ?, replay_json = NULL \
             WHERE {selection}"
        );
        let mut all = vec![
            Value::Text(to.as_str().into()),
            replayed_at.map_or(Value::Null, |t| Value::Integer(to_nanos(t))),
            replay_topic.map_or(Value::Null, |t| Value::Text(t.as_str().into())),
        ];
        all.extend(params.iter().cloned());
        self.change_folded(&selection, &params, Some(to.as_str()), |tx| {
            tx.execute(&sql, rusqlite::params_from_iter(all))
        })
    }

    /// One `UPDATE` for the whole selection (a page at a time took one
    /// synced transaction per 256 letters: seconds for 100 000).
    fn request_replay(&self, filter: &Filter, target: Option<&Topic>) -> Result<u64, DlqError> {
        let (clause, mut params) = filter_sql::compile(filter);
        // Within the writer's transaction `inbox` is folded into `letters`
        // first, so `letters` holds every letter the filter can select.
        let selection = if filter.limit.is_some() || filter.offset > 0 {
            params.push(Value::Integer(
                filter
                    .limit
                    .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)),
            ));
            params.push(Value::Integer(
                i64::try_from(filter.offset).unwrap_or(i64::MAX),
            ));
            format!("id IN (SELECT id FROM letters WHERE {clause} ORDER BY id LIMIT ? OFFSET ?)")
        } else {
            clause
        };
        let from = vec!["?"; LetterState::REPLAYABLE.len()].join(", ");
        let selection = format!("state IN ({from}) AND {selection}");
        let mut selected: Vec<Value> = LetterState::REPLAYABLE
            .iter()
            .map(|s| Value::Text(s.as_str().into()))
            .collect();
        selected.append(&mut params);
        let sql = format!(
            "UPDATE letters SET state = ?, replayed_at = NULL, replay_topic = ?, \
             replay_json = NULL WHERE {selection}"
        );
        let mut all = vec![
            Value::Text(LetterState::ReplayRequested.as_str().into()),
            target.map_or(Value::Null, |t| Value::Text(t.as_str().into())),
        ];
        all.extend(selected.iter().cloned());
        let to = LetterState::ReplayRequested.as_str();
        let n = self.change_folded(&selection, &selected, Some(to), |tx| {
            tx.execute(&sql, rusqlite::params_from_iter(all))
        })?;
        Ok(n as u64)
    }

    fn refuse_replay(
        &self,
        id: LetterId,
        refusal: &ReplayRefusal,
        to: LetterState,
    ) -> Result<bool, DlqError> {
        let json = row::refusal_json(refusal)?;
        let selection = "id = ? AND state = 'replay_requested'";
        let params = [Value::Text(id.to_string())];
        self.change_folded(selection, &params, Some(to.as_str()), |tx| {
            tx.execute(
                "UPDATE letters SET state = ?1, replay_json = ?2 \
                 WHERE id = ?3 AND state = 'replay_requested'",
                rusqlite::params![to.as_str(), json, id.to_string()],
            )
        })
        .map(|n| n == 1)
    }

    fn delete(&self, ids: &[LetterId]) -> Result<usize, DlqError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let (marks, params) = id_values(ids);
        let selection = format!("id IN ({marks})");
        self.change_folded(&selection, &params, None, |tx| {
            tx.execute(
                &format!("DELETE FROM letters WHERE {selection}"),
                rusqlite::params_from_iter(params.iter()),
            )
        })
    }

    fn insert(&self, letters: &[StoredLetter]) -> Result<usize, DlqError> {
        let rows = letters
            .iter()
            .map(EncodedRow::from_stored)
            .collect::<Result<Vec<_>, _>>()?;
        self.write_folded(|tx| {
            let (mut n, mut bytes) = (0, 0_i64);
            {
                let mut stmt = tx.prepare_cached(&row::import_sql())?;
                for r in &rows {
                    if r.insert(&mut stmt)? {
                        n += 1;
                        bytes = bytes.saturating_add(r.row_bytes);
                    }
                }
            }
            summary::add_last(tx, n)?;
            schema::add_to_totals(tx, i64::try_from(n).unwrap_or(i64::MAX), bytes)?;
            Ok(n)
        })
    }
}
