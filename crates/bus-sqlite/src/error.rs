//! What opening or running the transport can fail with.

use std::path::PathBuf;

/// A failure of the SQLite transport's file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The file exists but is not a bus queue: a SQLite database of another
    /// application, or a non-database file. It was left as it was.
    #[error("{} is not a bus queue: {reason}", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The file was written by a newer build (a schema this one cannot read).
    #[error("{} has queue schema version {found}, newer than this build's {supported}", path.display())]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i32,
        /// The newest this build reads.
        supported: i32,
    },
    /// The database is damaged.
    #[error("queue database is corrupt: {0}")]
    Corrupt(String),
    /// The file or its directory cannot be written.
    #[error("queue database is read-only: {0}")]
    ReadOnly(String),
    /// The disk is full.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// An earlier commit failed: whether it reached the disk is unknown, so
    /// the transport refuses every later write rather than pretend.
    #[error("queue refuses writes after an earlier failure: {0}")]
    Poisoned(String),
    /// An operation's transaction failed and was rolled back (the reason
    /// says why); nothing of it happened.
    #[error("queue operation failed: {0}")]
    Failed(String),
    /// A group still has a member in a live process: it is not dropped.
    #[error("group {group:?} of topic {topic} has a live subscriber")]
    GroupInUse {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// No such group in the file.
    #[error("no group {group:?} of topic {topic}")]
    NoSuchGroup {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// An I/O error outside SQLite (the directory, a lock file).
    #[error("queue I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Any other SQLite error.
    #[error("queue database error: {0}")]
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for SqliteError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => {
                SqliteError::Corrupt(format!("not a SQLite database ({e})"))
            }
            Some(ErrorCode::DatabaseCorrupt) => SqliteError::Corrupt(e.to_string()),
            Some(ErrorCode::ReadOnly) => SqliteError::ReadOnly(e.to_string()),
            Some(ErrorCode::DiskFull) => SqliteError::DiskFull(e.to_string()),
            _ => SqliteError::Db(e),
        }
    }
}

impl From<SqliteError> for bus_core::TransportError {
    fn from(e: SqliteError) -> Self {
        bus_core::TransportError::Other(Box::new(e))
    }
}
