//! The background writer: owns the log file, rotates it, writes the metrics
//! snapshot and emits the `tracing` events. Nothing here may panic.

use crate::emit::{TRACING_TARGET, emit};
use crate::stats::{AtomicCounters, State, Statistics};
use bus_core::time::SharedClock;
use bus_errors::ErrorReport;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

mod files;

pub(crate) use files::{Appended, append_whole_lines, replace_file};
use files::{ignore_missing, is_file};

/// The current log file's name.
pub const LOG_FILE: &str = "errors.jsonl";
/// The metrics snapshot file's name.
pub const METRICS_FILE: &str = "error_metrics.json";
/// At most one `tracing` complaint about the log itself per this interval.
const COMPLAINT_INTERVAL: Duration = Duration::from_secs(10);
/// Reports handled between two writes to the file.
const BATCH: usize = 1024;

/// The name of rotated file `n` (0 is the current file).
pub(crate) fn log_file_name(n: usize) -> String {
    if n == 0 {
        LOG_FILE.to_owned()
    } else {
        format!("errors.{n}.jsonl")
    }
}

/// A message to the writer thread.
#[derive(Debug)]
pub(crate) enum Msg {
    Report(Arc<ErrorReport>),
    /// Write out everything received so far, then answer.
    Flush(Sender<()>),
    /// Test hook: say so on the first channel, then block until the second
    /// one's sender is dropped.
    #[cfg(test)]
    Pause(Sender<()>, Receiver<()>),
}

/// What the caller side and the writer share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) counters: AtomicCounters,
    pub(crate) clock: SharedClock,
}

impl Shared {
    pub(crate) fn statistics(&self) -> Statistics {
        let now = self.clock.now();
        let log = self.counters.load();
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.statistics(now, log)
    }
}

#[derive(Debug)]
pub(crate) struct Writer {
    dir: PathBuf,
    file: Option<File>,
    size: u64,
    /// A write failed part-way: the file may end with a partial line.
    torn: bool,
    pending: Vec<u8>,
    pending_lines: u64,
    max_bytes: u64,
    keep: usize,
    metrics_interval: Duration,
    last_snapshot: Option<Instant>,
    dirty: bool,
    last_complaint: Option<Instant>,
    last_drop_warning: Option<Instant>,
    drops_warned: u64,
    shared: Arc<Shared>,
}

impl Writer {
    /// Opens (creating) the current log file; the open-time check.
    pub(crate) fn open(
        dir: PathBuf,
        max_bytes: u64,
        keep: usize,
        metrics_interval: Duration,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        let mut w = Self {
            dir,
            file: None,
            size: 0,
            torn: false,
            pending: Vec::with_capacity(64 * 1024),
            pending_lines: 0,
            max_bytes,
            keep,
            metrics_interval,
            last_snapshot: None,
            dirty: false,
            last_complaint: None,
            last_drop_warning: None,
            drops_warned: 0,
            shared,
        };
        w.reopen()?;
        w.remove_beyond_keep();
        Ok(w)
    }

    /// Removes rotated files numbered above `keep` (left by a run configured
    /// to keep more), so exactly `keep` rotated files can exist.
    fn remove_beyond_keep(&mut self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let n = name
                .to_str()
                .and_then(|s| s.strip_prefix("errors."))
                .and_then(|s| s.strip_suffix(".jsonl"))
                .and_then(|s| s.parse::<usize>().ok());
            if n.is_some_and(|n| n > self.keep) {
                if let Err(e) = fs::remove_file(entry.path()) {
                    self.complain(&e, "cannot remove an old rotated error log");
                }
            }
        }
    }

    fn path(&self, n: usize) -> PathBuf {
        self.dir.join(log_file_name(n))
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        fs::create_dir_all(&self.dir)?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(0))?;
        let mut size = file.metadata()?.len();
        if self.torn && size > 0 {
            // End the partial line so the next one starts clean.
            file.write_all(b"\n")?;
            size += 1;
        }
        self.torn = false;
        self.size = size;
        self.file = Some(file);
        Ok(())
    }

    /// The receive loop; returns when every sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        let tick = self.metrics_interval.min(Duration::from_secs(1));
        loop {
            match rx.recv_timeout(tick) {
                Ok(msg) => {
                    self.handle(msg);
                    for _ in 0..BATCH {
                        match rx.try_recv() {
                            Ok(msg) => self.handle(msg),
                            Err(_) => break,
                        }
                    }
                    self.commit();
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.warn_drops();
            self.maybe_snapshot(false);
        }
        self.commit();
        if let Some(f) = &self.file {
            // Best effort; a failure here has nowhere left to go but tracing.
            if let Err(e) = f.sync_all() {
                self.complain(&e, "cannot sync the error log at shutdown");
            }
        }
        self.warn_drops();
        self.maybe_snapshot(true);
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Report(r) => self.add(&r),
            Msg::Flush(done) => {
                self.commit();
                self.warn_drops();
                self.maybe_snapshot(false);
                // The flusher may have given up waiting; nothing to do then.
                let _ = done.send(());
            }
            #[cfg(test)]
            Msg::Pause(entered, until) => {
                let _ = entered.send(());
                let _ = until.recv();
            }
        }
    }

    fn add(&mut self, report: &ErrorReport) {
        emit(report);
        self.dirty = true;
        let start = self.pending.len();
        if let Err(e) = serde_json::to_writer(&mut self.pending, report) {
            self.pending.truncate(start);
            self.fail(1, &io::Error::other(e), "cannot serialize an error report");
            return;
        }
        self.pending.push(b'\n');
        let len = (self.pending.len() - start) as u64;
        let before = start as u64;
        if self.size + before > 0 && self.size + before + len > self.max_bytes {
            // The new line would cross the limit: write what came before it to
            // the current file, rotate, and start the new file with it.
            let line = self.pending.split_off(start);
            self.commit();
            if self.size > 0 {
                self.rotate();
            }
            self.pending = line;
        }
        self.pending_lines += 1;
    }

    /// Writes the pending lines to the current file.
    fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.pending_lines);
        if self.file.is_some() && !is_file(&self.path(0)) {
            // Removed or replaced behind our back: reopen rather than write
            // into an unlinked file nobody will read.
            self.file = None;
        }
        if self.file.is_none() {
            if let Err(e) = self.reopen() {
                self.pending.clear();
                self.fail(lines, &e, "cannot reopen the error log");
                return;
            }
        }
        let appended = match &mut self.file {
            Some(f) => append_whole_lines(f, self.size, &self.pending),
            None => Appended {
                bytes: 0,
                lines: 0,
                error: Some(io::Error::other("no log file")),
                torn: false,
            },
        };
        self.size += appended.bytes;
        AtomicCounters::add(&self.shared.counters.lines_written, appended.lines);
        if let Some(e) = appended.error {
            self.file = None;
            self.torn = appended.torn;
            self.fail(
                lines.saturating_sub(appended.lines),
                &e,
                "cannot write the error log",
            );
        }
        self.pending.clear();
    }

    fn rotate(&mut self) {
        self.file = None;
        if let Err(e) = self.shift_files() {
            // The old file stays current and keeps growing; try again next line.
            self.complain(&e, "cannot rotate the error log");
            return;
        }
        AtomicCounters::add(&self.shared.counters.rotations, 1);
        self.size = 0;
        if let Err(e) = self.reopen() {
            self.complain(&e, "cannot open a new error log after rotating");
        }
    }

    fn shift_files(&self) -> io::Result<()> {
        if self.keep == 0 {
            return ignore_missing(fs::remove_file(self.path(0)));
        }
        ignore_missing(fs::remove_file(self.path(self.keep)))?;
        for n in (1..self.keep).rev() {
            ignore_missing(fs::rename(self.path(n), self.path(n + 1)))?;
        }
        fs::rename(self.path(0), self.path(1))
    }

    fn fail(&mut self, lines: u64, err: &io::Error, what: &str) {
        AtomicCounters::add(&self.shared.counters.write_failures, lines);
        self.dirty = true;
        self.complain(err, what);
    }

    /// A rate-limited `tracing` error about the log itself.
    fn complain(&mut self, err: &io::Error, what: &str) {
        let now = self.shared.clock.now();
        if self
            .last_complaint
            .is_some_and(|t| now.saturating_duration_since(t) < COMPLAINT_INTERVAL)
        {
            return;
        }
        self.last_complaint = Some(now);
        let failures = self.shared.counters.load().write_failures;
        tracing::error!(
            target: TRACING_TARGET,
            dir = %self.dir.display(),
            error = %err,
            write_failures = failures,
            "{what}"
        );
    }

    fn warn_drops(&mut self) {
        let dropped = self.shared.counters.load().log_dropped;
        if dropped == self.drops_warned {
            return;
        }
        self.dirty = true;
        let now = self.shared.clock.now();
        if self
            .last_drop_warning
            .is_some_and(|t| now.saturating_duration_since(t) < COMPLAINT_INTERVAL)
        {
            return;
        }
        self.last_drop_warning = Some(now);
        tracing::warn!(
            target: TRACING_TARGET,
            newly_dropped = dropped - self.drops_warned,
            log_dropped = dropped,
            "error log lines shed: the writer's channel was full (the reports are still counted)"
        );
        self.drops_warned = dropped;
    }

    fn maybe_snapshot(&mut self, force: bool) {
        if !self.dirty {
            return;
        }
        let now = self.shared.clock.now();
        let due = self
            .last_snapshot
            .is_none_or(|t| now.saturating_duration_since(t) >= self.metrics_interval);
        if !(due || force) {
            return;
        }
        self.last_snapshot = Some(now);
        self.dirty = false;
        match self.write_snapshot() {
            Ok(()) => AtomicCounters::add(&self.shared.counters.snapshots_written, 1),
            Err(e) => {
                AtomicCounters::add(&self.shared.counters.snapshot_failures, 1);
                self.complain(&e, "cannot write the error metrics snapshot");
            }
        }
    }

    fn write_snapshot(&self) -> io::Result<()> {
        let mut stats = self.shared.statistics();
        // Count this snapshot in itself.
        stats.log.snapshots_written += 1;
        let json = serde_json::to_vec_pretty(&stats).map_err(io::Error::other)?;
        fs::create_dir_all(&self.dir)?;
        replace_file(&self.dir, METRICS_FILE, &json, |f, bytes| {
            f.write_all(bytes)
        })
    }
}

#[cfg(test)]
mod tests;
