//! The health snapshot file: `<dir>/health.json`, replaced atomically (temp
//! file, fsync, rename) so a reader never sees half a report.

use crate::monitor::HealthMonitor;
use crate::report::HealthReport;
use crossbeam_channel::{RecvTimeoutError, Sender};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

/// The snapshot's file name inside the data directory.
pub const SNAPSHOT_FILE: &str = "health.json";

/// Reading or writing the snapshot failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// File system error, with the path.
    #[error("health snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a health report.
    #[error("health snapshot {path} is not a valid report: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `report` to `<dir>/health.json` atomically; returns the path.
/// The file is created readable by its owner only (0600 on Unix): reasons
/// name topics, groups and the dead-letter queue's errors.
pub fn write_report(dir: &Path, report: &HealthReport) -> Result<PathBuf, SnapshotError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(SNAPSHOT_FILE);
    let tmp = dir.join(format!(".{SNAPSHOT_FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut open = fs::OpenOptions::new();
        open.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
        let mut f = open.open(&tmp)?;
        f.write_all(report.to_json().as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    fs::rename(&tmp, &path).map_err(io(&path))?;
    // Make the rename durable; not every platform lets a directory be opened.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// Reads `<dir>/health.json`.
pub fn read_snapshot(dir: &Path) -> Result<HealthReport, SnapshotError> {
    let path = dir.join(SNAPSHOT_FILE);
    let text = fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|source| SnapshotError::Parse { path, source })
}

impl HealthMonitor {
    /// Writes the current report to `<dir>/health.json` atomically.
    pub fn write_snapshot(&self, dir: impl AsRef<Path>) -> Result<PathBuf, SnapshotError> {
        write_report(dir.as_ref(), &self.report())
    }
}

/// Writes the snapshot every `interval` on its own thread, and once more when
/// stopped or dropped. A crash loses at most one interval of health history,
/// never the previous file.
#[derive(Debug)]
#[must_use = "the writer stops when dropped"]
pub struct SnapshotWriter {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SnapshotWriter {
    /// Starts writing `monitor`'s report to `dir` every `interval`.
    pub fn start(
        monitor: HealthMonitor,
        dir: impl Into<PathBuf>,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let dir = dir.into();
        let (stop, rx) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("bus-health-snapshot".into())
            .spawn(move || {
                let write = || {
                    if let Err(e) = monitor.write_snapshot(&dir) {
                        tracing::warn!(error = %e, "bus-health: snapshot write failed");
                    }
                };
                loop {
                    write();
                    match rx.recv_timeout(interval) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                            write();
                            return;
                        }
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread after a final write.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}
