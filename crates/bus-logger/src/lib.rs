//! A structured error log for the bus, also usable on its own: every
//! [`ErrorReport`](bus_errors::ErrorReport) becomes one JSON line in
//! `<dir>/logs/errors.jsonl`, rotated by size, plus a bounded in-memory
//! history, windowed statistics, an atomically replaced metrics snapshot
//! (`<dir>/logs/error_metrics.json`) and a `tracing` event per report.
//!
//! [`ErrorLogger`] implements bus-core's [`ErrorSink`](bus_core::ErrorSink):
//! `record` never waits on disk (a background thread writes, behind a bounded
//! channel; lines shed on a full channel are counted in
//! [`LogCounters::log_dropped`]). [`read_reports`] reads the files back.
//!
//! A program that does not use the bus can log its own reports:
//!
//! ```
//! use bus_errors::{Classification, ErrorCategory, ErrorReport};
//! use bus_logger::{ErrorLogger, LoggerConfig, read_reports};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let logger = ErrorLogger::open(dir.path(), LoggerConfig::default().with_keep_files(3))?;
//!
//! let report = ErrorReport::new(Classification::of(ErrorCategory::Timeout), "billing", "upstream slow")
//!     .with_correlation_id("order-42");
//! logger.log(&report);
//! logger.flush()?;
//!
//! let stats = logger.statistics();
//! assert_eq!(stats.total, 1);
//! assert_eq!(stats.by_category["TIMEOUT"], 1);
//!
//! let back: Vec<ErrorReport> = read_reports(dir.path())?.collect::<Result<_, _>>()?;
//! assert_eq!(back, vec![report]);
//! # Ok(()) }
//! ```
//!
//! Files: `errors.jsonl` is the current file; when the next line would make
//! it larger than [`LoggerConfig::max_file_bytes`] it becomes
//! `errors.1.jsonl`, the older ones shift up, and the one beyond
//! [`LoggerConfig::keep_files`] is removed. A line is never split.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod emit;
mod error;
mod logger;
mod reader;
mod stats;
mod writer;

pub use config::LoggerConfig;
pub use emit::{REPORT_TARGET, TRACING_TARGET, emit, level_for};
pub use error::{FlushError, LoggerError, ReadError};
pub use logger::ErrorLogger;
pub use reader::{Reports, log_files, read_reports};
pub use stats::{LogCounters, OTHER_COMPONENT, Statistics};
pub use writer::{LOG_FILE, METRICS_FILE};

#[cfg(test)]
mod tests;
