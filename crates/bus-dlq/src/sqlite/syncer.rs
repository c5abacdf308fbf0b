//! `Durability::Full` without the writer waiting for the disk.
//!
//! Under `Full` the writer's connection runs `synchronous=NORMAL`: in WAL
//! mode a commit then writes its frames to `dlq.sqlite-wal` and returns
//! without an fsync. The writer hands the batch's replies to this thread and
//! goes on with the next batch; this thread answers them only after an
//! `fdatasync` of the WAL that *started after* their commit returned has
//! completed. One sync covers every batch handed over before it started, so
//! inserting the next batch and syncing the last one overlap, and the sync
//! is shared by all of them. When no push is waiting and this thread has
//! nothing in hand, the writer syncs the batch itself
//! ([`sync_and_answer`]): there is nothing to overlap with, and a lone
//! pusher then waits for one thread fewer to wake up.
//!
//! Why that is as durable as `synchronous=FULL` (which does the same fsync
//! of the WAL inside each commit), following SQLite's documentation of
//! `PRAGMA synchronous` and `wal.html`:
//!
//! - A commit is the WAL frames it appended, the last one marked as a
//!   commit, checksummed and salted. Recovery after a power loss replays the
//!   WAL up to the last valid commit frame. Once our `fdatasync` of the WAL
//!   file returns, every frame written before it started is on the disk, so
//!   the commits answered by it survive, exactly as if SQLite had issued the
//!   sync itself (SQLite's authors say the same on its forum: syncing the
//!   WAL file makes every earlier commit durable, whichever connection or
//!   process made it).
//! - Consistency never rests on us: under `NORMAL`, SQLite syncs the WAL
//!   before every checkpoint copies frames into the database, syncs the
//!   database after the copy (and only then records the frames as copied),
//!   and syncs the new WAL header when the WAL starts over. A power loss
//!   before our sync loses at most commits that were never answered `Ok`.
//! - A checkpoint or a WAL restart between a commit and our sync is safe:
//!   a checkpoint syncs the WAL first (so those frames are durable anyway),
//!   and the WAL only starts over once every frame is copied into the
//!   database and the database is synced. Our later sync then covers frames
//!   of newer commits in the same file.
//! - The file: SQLite keeps the same `-wal` file (same inode) while any
//!   connection to the database is open: it deletes it only when the last
//!   connection closes, and the store's reader connection is open until
//!   after this thread has ended. The handle is opened once, after WAL mode
//!   is on, and never closed while a connection is open: closing a
//!   descriptor drops the process's POSIX locks on that file. When the store
//!   opens, the WAL and the data directory are synced once, so the WAL's
//!   directory entry is durable before any commit relies on it.
//!
//! A failed `fdatasync` poisons the store (after fsyncgate, a retry can
//! succeed with the data gone): the batches it covered and every later one
//! are answered with `DlqError::Poisoned`, never with `Ok`.

use super::schema::db_err;
use super::writer::{Job, Outcome, Shared};
use bus_core::DlqError;
use crossbeam_channel::Receiver;
use std::fs::File;
use std::sync::atomic::Ordering;

/// One committed batch waiting for a sync: its jobs, and the answer each
/// gets once the sync succeeded.
pub(crate) type Committed = (Vec<Job>, Vec<Outcome>);

/// Opens the WAL file of the database at `db` for syncing, extends it with
/// zeros to `len` bytes (see [`preallocate`]) and makes it and its directory
/// entry durable. Call after WAL mode is on, with `conn` a connection to the
/// database (the WAL exists then).
pub(crate) fn open_wal(
    db: &std::path::Path,
    conn: &rusqlite::Connection,
    len: u64,
) -> Result<File, DlqError> {
    let mut path = db.as_os_str().to_owned();
    path.push("-wal");
    // Written only by `preallocate`, past every frame.
    let wal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    preallocate(&wal, conn, len)?;
    wal.sync_data()?;
    if let Some(dir) = db.parent() {
        let dir = if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(wal)
}

/// Writes zeros past the end of the WAL up to `len` bytes, so that commits
/// overwrite blocks the file already has instead of appending to it. An
/// `fdatasync` after an append must also commit the file system's journal
/// (the file's size and new blocks), one more device round trip: on this
/// project's machine a lone commit of ten 8 KiB frames took about 800 µs to
/// write and sync when appended, 500 µs when overwriting (`fallocate` would
/// not help: writing into its unwritten extents changes metadata too).
/// SQLite reuses its WAL from the start once a checkpoint has copied
/// everything, and truncates it only if `journal_size_limit` is set (it is
/// not), on a `TRUNCATE` checkpoint (which this crate never runs; a hand-run
/// one costs speed, not safety) or when the last connection closes (the
/// next open preallocates again), so `len` is about the most the WAL grows
/// to between restarts.
///
/// Safe for SQLite: the bytes written are past every frame, and a WAL is
/// read only up to its last valid commit frame (recovery stops at the first
/// frame whose salt or checksum does not match, as it does over the stale
/// frames of a reused WAL). The write lock is held throughout, so no other
/// connection (another process) appends frames where the zeros go.
///
/// Best effort: it only makes commits cheaper. If the disk has no room for
/// it (or any write fails), the file is cut back to where it was, still
/// under the lock, and the store opens anyway: a store on a full disk must
/// still open, so that an operator can purge or export.
pub(super) fn preallocate(
    wal: &File,
    conn: &rusqlite::Connection,
    len: u64,
) -> Result<(), DlqError> {
    use std::os::unix::fs::FileExt;
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
    let extended = wal.metadata().and_then(|m| {
        let start = m.len();
        let zeros = vec![0_u8; 1 << 20];
        let mut at = start;
        let written = (|| {
            while at < len {
                let n = usize::try_from(len - at).map_or(zeros.len(), |n| n.min(zeros.len()));
                wal.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            wal.sync_data()
        })();
        // Nothing past `start` is a frame: cutting it off loses nothing.
        written.or_else(|e| wal.set_len(start).and(Err(e)))
    });
    if let Err(e) = extended {
        tracing::warn!(error = %e, "dead-letter WAL not preallocated; commits will append to it");
    }
    conn.execute_batch("ROLLBACK").map_err(db_err)?;
    Ok(())
}

/// Runs until the writer drops its sender.
pub(crate) fn run(wal: &File, rx: &Receiver<Committed>, shared: &Shared) {
    let mut waiting: Vec<Committed> = Vec::new();
    while let Ok(first) = rx.recv() {
        // Everything handed over so far was committed before this sync starts.
        waiting.push(first);
        waiting.extend(rx.try_iter());
        let handed = waiting.len();
        sync_and_answer(wal, shared, waiting.drain(..));
        shared.handed_to_syncer.fetch_sub(handed, Ordering::AcqRel);
    }
}

/// Syncs the WAL, then answers every batch in `committed`, all of which
/// were committed before this call: with their outcomes if the sync
/// succeeded, `Poisoned` if it failed (the failure poisons the store) or the
/// store was poisoned already. Runs on the syncer thread, or on the writer
/// when nothing else is waiting (see [`super::writer::run`]).
pub(crate) fn sync_and_answer(
    wal: &File,
    shared: &Shared,
    committed: impl IntoIterator<Item = Committed>,
) {
    let synced = match shared.poison_reason() {
        Some(why) => Err(why),
        None => sync(wal, shared).map_err(|e| {
            let why = format!("syncing the WAL failed: {e}");
            shared.poison(why.clone());
            why
        }),
    };
    for (jobs, outcomes) in committed {
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            job.reply.send(match &synced {
                Ok(()) => outcome,
                // Committed, but whether it is on the disk is unknown.
                Err(why) => Outcome::Poisoned(why.clone()),
            });
        }
    }
}

#[cfg_attr(not(test), allow(unused_variables))]
fn sync(wal: &File, shared: &Shared) -> std::io::Result<()> {
    #[cfg(test)]
    if let Some(gate) = shared.take_sync_gate() {
        // Tests: say which thread is about to sync, then wait to be let go (or
        // be handed a failure instead of the real sync).
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        gate.reached.send(thread).ok();
        gate.go.recv().unwrap_or(Ok(()))?;
    }
    wal.sync_data()
}
