//! One line per mutation: who (the client's address), what, on what, and
//! how it ended, as JSON appended to the audit file and sent to the
//! `bus_console::audit` tracing target.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

/// Where audit lines go.
#[derive(Debug)]
pub(crate) struct Audit {
    file: Option<PathBuf>,
    lock: Mutex<()>,
}

impl Audit {
    pub(crate) fn new(file: Option<PathBuf>) -> Self {
        Self {
            file,
            lock: Mutex::new(()),
        }
    }

    /// Records one action. A file that cannot be written is logged as an
    /// error; the action already happened and is not undone.
    pub(crate) fn record(
        &self,
        peer: Option<std::net::SocketAddr>,
        action: &str,
        target: &serde_json::Value,
        outcome: &serde_json::Value,
    ) {
        let line = serde_json::json!({
            "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "peer": peer.map(|p| p.to_string()),
            "action": action,
            "target": target,
            "outcome": outcome,
        });
        tracing::info!(target: "bus_console::audit", %line, "console action");
        let Some(path) = &self.file else { return };
        let _held = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            tracing::error!(path = %path.display(), error = %e, "cannot write the console audit line");
        }
    }
}
