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

impl Drop for Owner {
    fn drop(&mut self) {
        // Closed with the lock still held: a later open finds no file, which
        // means the same as an unlocked one.
        let _ = std::fs::remove_file(&self.path);
    }
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
