//! Who holds a lease: an id per open of the file, and a lock file per id
//! that tells a live owner from a dead one.
//!
//! Each open picks a random id and holds an exclusive `flock` on
//! `queue.owners/<id>.lock` for as long as it is open. The kernel drops the
//! lock when the process dies, however it dies (SIGKILL included), so a later
//! open that can take the lock knows the owner is gone and its leases can be
//! handed out again at once, without waiting for their deadlines. A lock
//! file that is missing means the same (its owner closed, or never got as
//! far as creating it).

use crate::error::SqliteError;
use crate::schema::io_err;
use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// This open's identity, locked for its lifetime.
#[derive(Debug)]
pub(crate) struct Owner {
    pub(crate) id: i64,
    path: PathBuf,
    _lock: File,
}

fn lock_path(dir: &Path, id: i64) -> PathBuf {
    dir.join(format!("{id}.lock"))
}

impl Owner {
    /// Creates and locks a lock file for a fresh random id.
    pub(crate) fn claim(dir: &Path) -> Result<Self, SqliteError> {
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err)?;
        }
        loop {
            // Positive and never 0, so it reads well in SQL and logs.
            let id = fastrand::i64(1..i64::MAX);
            let path = lock_path(dir, id);
            let file = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(e)),
            };
            match file.try_lock() {
                Ok(()) => {
                    return Ok(Self {
                        id,
                        path,
                        _lock: file,
                    });
                }
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => return Err(io_err(e)),
            }
        }
    }
}

impl Owner {
    /// Notes in the lock file that this open has a member in `group` of
    /// `topic`, so that `busctl` does not drop a group someone subscribes to.
    pub(crate) fn note_member(&self, topic: &str, group: &str) {
        use std::io::Write;
        let line = format!("{}\n", serde_json::json!([topic, group]));
        if let Err(e) = (&self._lock).write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "sqlite queue: membership not noted in the lock file");
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Closed with the lock still held: a later open finds no file, which
        // means the same as an unlocked one.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The groups (topic, name) that live owners noted members of.
pub(crate) fn live_members(dir: &Path) -> std::collections::HashSet<(String, String)> {
    let mut out = std::collections::HashSet::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".lock"))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        if !is_alive(dir, id) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            if let Ok((topic, group)) = serde_json::from_str::<(String, String)>(line) {
                out.insert((topic, group));
            }
        }
    }
    out
}

/// Whether the owner `id` is alive: its lock file exists and is locked by
/// another open (another process, or another open in this one). A dead
/// owner's lock file is removed.
pub(crate) fn is_alive(dir: &Path, id: i64) -> bool {
    let path = lock_path(dir, id);
    let Ok(file) = OpenOptions::new().write(true).open(&path) else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = std::fs::remove_file(&path);
            false
        }
        Err(TryLockError::WouldBlock) => true,
        // Cannot tell: treat it as alive (its leases still expire).
        Err(TryLockError::Error(_)) => true,
    }
}
