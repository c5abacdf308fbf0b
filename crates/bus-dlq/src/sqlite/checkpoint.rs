//! WAL checkpoints beside the writer instead of inside its commits.
//!
//! SQLite's default copies the WAL back into the database file inside the
//! commit that takes the WAL past 1000 pages, on the committing thread: with
//! group commit that is the writer, and every pusher of the next batch waits
//! for the copy. Here the writer's WAL hook only signals a thread of its own,
//! which runs `PASSIVE` checkpoints on its own connection while the writer
//! goes on. Durability is unchanged either way: a commit is durable once its
//! WAL frames are synced (by the syncer thread under `Durability::Full`,
//! see [`super::syncer`]); a checkpoint syncs the WAL before it copies
//! committed frames and the database file before the WAL is reused.
//!
//! A passive checkpoint never waits for the writer, and SQLite starts the
//! WAL over only when a commit finds every frame already copied, which a
//! checkpoint racing a steady stream of commits never leaves behind: the
//! WAL would grow, and appending to a growing file costs each commit's
//! fsync more than overwriting one already allocated. So the writer
//! checkpoints itself past [`INLINE_FRAMES`]: it is then the only writer, the
//! copy completes, and the next commit starts the WAL over. The thread has
//! copied most frames by then, so that pass is short.

use super::schema::db_err;
use bus_core::DlqError;
use crossbeam_channel::{Receiver, TrySendError};
use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;
use std::thread::JoinHandle;

/// WAL frames after which the checkpoint thread is asked to run again.
/// Half SQLite's own `wal_autocheckpoint` default: what the thread has not
/// copied when the WAL reaches [`INLINE_FRAMES`] the writer copies itself,
/// so the thread keeps closer behind. 4 pipelined pushers were higher in
/// each of 4 interleaved A/B pairs against 1000 (about +4 points of the
/// `write` + `fdatasync` per 256 baseline in 3 of them,
/// `examples/dlq_rounds.rs`, 5 rounds each); a single pusher unchanged.
const BACKGROUND_FRAMES: i32 = 500;

/// WAL frames after which the writer checkpoints itself (32 MiB of 8 KiB
/// pages, the size the WAL is preallocated to): bounds the WAL and lets it
/// start over. Each such pass holds up the writer for the frames the thread
/// has not copied yet and two syncs (WAL and database, the database's with
/// a journal commit as the file grows): with 4 pipelined pushers the writer
/// spent about a quarter of its time in them at 2000 frames. At 4000, 4
/// pipelined pushers went from 48-68 % to 54-84 % of the `write` +
/// `fdatasync` per 256 baseline, higher in each of 7 interleaved A/B pairs
/// (`examples/dlq_rounds.rs`, 5 rounds each, on a shared, noisy machine).
pub(super) const INLINE_FRAMES: i32 = 4000;

/// About the most bytes the WAL of the database behind `conn` holds between
/// two restarts: [`INLINE_FRAMES`] frames of its page size, and the header.
pub(super) fn wal_bytes(conn: &Connection) -> Result<u64, DlqError> {
    let page: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(db_err)?;
    let page = page.unsigned_abs();
    Ok(u64::from(INLINE_FRAMES.unsigned_abs()) * (page + 24) + 32)
}

/// Installs the WAL hook on the writer's connection and starts the thread
/// checkpointing on `conn`. The thread ends once the writer's connection is
/// closed (the hook, holding the only sender, is dropped with it).
pub(super) fn start(writer: &mut Connection, conn: Connection) -> Result<JoinHandle<()>, DlqError> {
    // One pending request is enough: a checkpoint copies everything committed.
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    // Frames in the WAL when the thread was last asked: ask once per
    // `BACKGROUND_FRAMES` new frames, not after every commit.
    let mut asked_at = 0;
    writer
        .wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, frames| {
            if frames < asked_at {
                asked_at = 0; // The WAL started over.
            }
            if frames >= INLINE_FRAMES {
                if let Err(e) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                    tracing::warn!(error = %e, frames, "dead-letter WAL checkpoint failed");
                }
            } else if frames >= asked_at + BACKGROUND_FRAMES {
                asked_at = frames;
                match tx.try_send(()) {
                    Ok(()) | Err(TrySendError::Full(())) => {}
                    Err(TrySendError::Disconnected(())) => {
                        tracing::warn!("dead-letter checkpoint thread is gone");
                    }
                }
            }
            // A checkpoint that could not run is not the commit's failure.
            Ok(())
        }))
        .map_err(db_err)?;
    Ok(std::thread::Builder::new()
        .name("bus-dlq-checkpoint".into())
        .spawn(move || run(&conn, &rx))?)
}

fn run(conn: &Connection, rx: &Receiver<()>) {
    while rx.recv().is_ok() {
        // Busy (another checkpoint running) or failed: the next request, or
        // the writer's own pass, tries again.
        if let Err(e) = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            tracing::debug!(error = %e, "dead-letter WAL checkpoint did not run");
        }
    }
}
