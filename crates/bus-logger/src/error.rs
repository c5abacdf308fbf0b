//! Errors returned when opening a logger and when reading its files.

use std::path::PathBuf;

/// Why an [`ErrorLogger`](crate::ErrorLogger) could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggerError {
    /// The log directory could not be created (its parent is a file, a
    /// permission is missing, the disk is full, ...).
    #[error("cannot create the error log directory {path}: {source}")]
    CreateDir {
        /// The directory that was asked for.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The log file could not be opened for appending.
    #[error("cannot open the error log file {path} for appending: {source}")]
    OpenFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid logger configuration: {0}")]
    InvalidConfig(&'static str),
    /// The background writer thread could not be started.
    #[error("cannot start the error log writer thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Why [`ErrorLogger::flush`](crate::ErrorLogger::flush) could not confirm
/// that every accepted line reached the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlushError {
    /// The writer thread is gone (it panicked, which is a bug, or the logger
    /// is shutting down).
    #[error("the error log writer thread is not running")]
    WriterGone,
    /// Some lines could not be written since the previous flush (the total
    /// since open is [`LogCounters::write_failures`](crate::LogCounters::write_failures)).
    #[error("{0} error log lines could not be written")]
    WriteFailures(u64),
}

/// A problem met while reading the log files back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A file or the directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid report (for example a line cut short by a crash).
    #[error("{path}:{line}: not a valid error report: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}
