//! [`ErrorLogger`]: the caller side.

use crate::config::LoggerConfig;
use crate::error::{FlushError, LoggerError};
use crate::stats::{AtomicCounters, LogCounters, State, Statistics};
use crate::writer::{LOG_FILE, METRICS_FILE, Msg, Shared, Writer};
use bus_core::ErrorSink;
use bus_errors::ErrorReport;
use crossbeam_channel::{Sender, TrySendError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long [`ErrorLogger::flush`] waits for the writer before giving up.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Writes every [`ErrorReport`] as one JSON line to `<dir>/logs/errors.jsonl`
/// (rotated by size), keeps a bounded history and windowed statistics, writes
/// `<dir>/logs/error_metrics.json` now and then, and emits each report as a
/// `tracing` event. Implements [`ErrorSink`], so a bus can use it directly
/// (wrap it in an `Arc`).
///
/// # Threads and costs
///
/// [`record`](ErrorSink::record) runs on the caller's thread and never waits
/// on I/O: it clones the report once into an `Arc`, updates the counters and
/// the history under a short mutex, and hands the `Arc` to a background writer
/// over a bounded channel with `try_send`. When the channel is full the line is
/// shed and [`LogCounters::log_dropped`] says so; the report is still in the
/// history and the statistics. Serializing, writing, rotating, the metrics
/// snapshot and the `tracing` event all happen on the writer thread, so a
/// subscriber that writes to a terminal cannot slow the caller either. The
/// event is emitted to the `tracing` dispatcher that was the default on the
/// thread that called [`open`](ErrorLogger::open) (or to the global one),
/// inside no span of the caller: its fields carry the message id, correlation
/// id, category, component and topic instead.
///
/// # When lines can be lost
///
/// This value is the guard of its writer, like `tracing-appender`'s
/// `WorkerGuard`: dropping it drains the channel, writes every line, syncs the
/// file and writes a final metrics snapshot. Reports recorded but not yet
/// written are lost if the process ends without dropping the logger
/// (`std::process::exit`, an abort, a kill): at most the channel's content,
/// about [`channel_capacity`](LoggerConfig::channel_capacity) lines. The writer
/// hands each batch to the operating system as soon as the channel runs empty,
/// but it only fsyncs the log at shutdown, so a power loss can also take the
/// lines the OS had not yet written. [`flush`](ErrorLogger::flush) narrows the
/// first window to zero at a point of your choosing.
///
/// One logger per directory: two loggers rotating the same files would
/// rename each other's files.
#[must_use = "dropping the logger stops its writer; keep it while reports are recorded"]
#[derive(Debug)]
pub struct ErrorLogger {
    tx: Option<Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    dir: PathBuf,
    failures_seen: AtomicU64,
}

impl ErrorLogger {
    /// Opens (creating) `<dir>/logs/` and `errors.jsonl` in it and starts the
    /// writer thread. Fails with the path named if the directory cannot be
    /// created or the file cannot be opened for appending.
    pub fn open(dir: impl AsRef<Path>, config: LoggerConfig) -> Result<Self, LoggerError> {
        config.validate().map_err(LoggerError::InvalidConfig)?;
        let logs = dir.as_ref().join("logs");
        std::fs::create_dir_all(&logs).map_err(|source| LoggerError::CreateDir {
            path: logs.clone(),
            source,
        })?;
        let shared = Arc::new(Shared {
            state: std::sync::Mutex::new(State::new(
                config.clock.now(),
                config.history_len,
                config.max_components,
            )),
            counters: AtomicCounters::default(),
            clock: config.clock.clone(),
        });
        let writer = Writer::open(
            logs.clone(),
            config.max_file_bytes,
            config.keep_files,
            config.metrics_interval,
            shared.clone(),
        )
        .map_err(|source| LoggerError::OpenFile {
            path: logs.join(LOG_FILE),
            source,
        })?;
        let (tx, rx) = crossbeam_channel::bounded(config.channel_capacity);
        let dispatch = tracing::dispatcher::get_default(|d| {
            (!d.is::<tracing::subscriber::NoSubscriber>()).then(|| d.clone())
        });
        let handle = std::thread::Builder::new()
            .name("bus-logger".into())
            .spawn(move || match dispatch {
                Some(d) => tracing::dispatcher::with_default(&d, || writer.run(rx)),
                None => writer.run(rx),
            })
            .map_err(LoggerError::Spawn)?;
        Ok(Self {
            tx: Some(tx),
            writer: Some(handle),
            shared,
            dir: logs,
            failures_seen: AtomicU64::new(0),
        })
    }

    /// The directory holding the log files (`<dir>/logs`).
    pub fn log_dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the current log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// The path of the metrics snapshot file.
    pub fn metrics_path(&self) -> PathBuf {
        self.dir.join(METRICS_FILE)
    }

    /// Records one report; the same as [`ErrorSink::record`].
    pub fn log(&self, report: &ErrorReport) {
        let now = self.shared.clock.now();
        let report = Arc::new(report.clone());
        {
            let mut state = self
                .shared
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state.observe(report.clone(), now);
        }
        let sent = match &self.tx {
            Some(tx) => match tx.try_send(Msg::Report(report)) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if !sent {
            AtomicCounters::add(&self.shared.counters.log_dropped, 1);
        }
    }

    /// Waits until every report recorded before this call is written to the
    /// log file (handed to the OS, not fsynced), and writes the metrics
    /// snapshot if its interval has passed. Returns
    /// [`FlushError::WriteFailures`] with the number of lines that could not
    /// be written since the previous `flush`. May block; do not call it on a delivery thread.
    pub fn flush(&self) -> Result<(), FlushError> {
        let tx = self.tx.as_ref().ok_or(FlushError::WriterGone)?;
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        tx.send_timeout(Msg::Flush(done_tx), FLUSH_TIMEOUT)
            .map_err(|_| FlushError::WriterGone)?;
        done_rx
            .recv_timeout(FLUSH_TIMEOUT)
            .map_err(|_| FlushError::WriterGone)?;
        let failures = self.counters().write_failures;
        let before = self.failures_seen.swap(failures, Ordering::Relaxed);
        match failures.saturating_sub(before) {
            0 => Ok(()),
            n => Err(FlushError::WriteFailures(n)),
        }
    }

    /// The most recent reports, oldest first (at most
    /// [`history_len`](LoggerConfig::history_len)).
    pub fn history(&self) -> Vec<Arc<ErrorReport>> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .history()
    }

    /// Counts and windowed rates, as of now.
    pub fn statistics(&self) -> Statistics {
        self.shared.statistics()
    }

    /// The file side's counters (lines written, dropped, failed, rotations).
    pub fn counters(&self) -> LogCounters {
        self.shared.counters.load()
    }

    /// Test hook: the writer stops until the returned sender is dropped.
    #[cfg(test)]
    pub(crate) fn pause_writer(&self) -> Sender<()> {
        let (release, wait) = crossbeam_channel::bounded(0);
        let (entered_tx, entered) = crossbeam_channel::bounded(1);
        if let Some(tx) = &self.tx {
            tx.send(Msg::Pause(entered_tx, wait)).unwrap();
        }
        entered.recv().unwrap();
        release
    }
}

impl ErrorSink for ErrorLogger {
    fn record(&self, report: &ErrorReport) {
        self.log(report);
    }

    fn recovered(&self, _component: &str, _topic: &bus_core::Topic, _attempt: u32) {
        let now = self.shared.clock.now();
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recovered(now);
    }
}

impl Drop for ErrorLogger {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain it and stop.
        drop(self.tx.take());
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}
