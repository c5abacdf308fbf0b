//! The writer thread: group commit of concurrent pushes.
//!
//! Each pusher encodes its row on its own thread, sends it here with a reply
//! channel, and waits (`push`), or with a callback, and goes on (`push_then`:
//! the bus settles the message in the callback, so a few workers can fill a
//! large batch). The writer takes every row waiting (up to
//! `max_batch`), inserts them in one transaction and commits once. Under
//! `Durability::Normal` it then answers each pusher; under `Durability::Full`
//! it hands the batch to the syncer thread, which answers once an fsync of
//! the WAL covers the commit (see [`super::syncer`]), and goes on with the
//! next batch while the disk works. While it inserts and commits, new rows
//! queue up for the next batch. Under `Full` a batch of a few letters is
//! staged in the unindexed `inbox` table and folded into `letters` many at a
//! time later (see [`STAGE_MAX`] and schema version 4), so that a lone push
//! syncs one WAL frame instead of ten.

use super::row::{EncodedRow, insert_sql, stage_sql};
use super::schema::{add_to_totals, bytes_of_last, db_err, fold_inbox, inbox_totals};
use super::syncer::{self, Committed};
use bus_core::{DeadLetter, DlqError};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rusqlite::Connection;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

mod insert;

use insert::{insert_all, stage_all};

/// The answer to one push, cheap to clone across a batch.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Stored,
    Full(String),
    Failed(String),
    Poisoned(String),
    Closed,
}

impl Outcome {
    pub(crate) fn into_result(self) -> Result<(), DlqError> {
        match self {
            Outcome::Stored => Ok(()),
            Outcome::Full(m) => Err(DlqError::Full(m)),
            Outcome::Failed(m) => Err(DlqError::Other(m.into())),
            Outcome::Poisoned(m) => Err(DlqError::Poisoned(m)),
            Outcome::Closed => Err(DlqError::Closed),
        }
    }
}

/// How a push hears its outcome.
pub(crate) enum Reply {
    /// A pusher blocked on this channel.
    Wait(Sender<Outcome>),
    /// Call this once committed (`push_then`): nobody waits.
    Then(bus_core::PushDone, Box<DeadLetter>),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Wait(_) => f.write_str("Reply::Wait"),
            Reply::Then(_, letter) => write!(f, "Reply::Then({})", letter.id),
        }
    }
}

impl Reply {
    /// Delivers the outcome. A callback that panics must not kill the writer.
    pub(crate) fn send(self, outcome: Outcome) {
        match self {
            // A pusher that stopped waiting is not an error here.
            Reply::Wait(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::Then(done, letter) => {
                let id = letter.id;
                let result = outcome.into_result().map(|()| id);
                let call = std::panic::AssertUnwindSafe(move || done(result, *letter));
                if std::panic::catch_unwind(call).is_err() {
                    tracing::error!(letter = %id, "a push_then callback panicked");
                }
            }
        }
    }
}

/// One push waiting for its batch.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) row: EncodedRow,
    pub(crate) reply: Reply,
}

/// State shared by the store handle and its writer.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Why the store refuses writes, once a commit failed.
    pub(crate) poisoned: Mutex<Option<String>>,
    /// Test hook: make the next commit fail.
    pub(crate) fail_next_commit: AtomicBool,
    /// Batches handed to the syncer thread and not answered yet.
    pub(crate) handed_to_syncer: AtomicUsize,
    /// Test hook: hold (or fail) the next WAL sync.
    #[cfg(test)]
    pub(crate) sync_gate: Mutex<Option<SyncGate>>,
    /// Test hook: always hand batches to the syncer thread.
    #[cfg(test)]
    pub(crate) never_sync_inline: AtomicBool,
    /// Test hook: the idle writer keeps letters staged (it still folds
    /// before a larger batch, past `FOLD_AT` and at close).
    #[cfg(test)]
    pub(crate) hold_idle_fold: AtomicBool,
}

/// Test hook: the thread about to sync sends its name on `reached`, then
/// waits on `go`: `Ok` runs the real sync, `Err` fails it.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct SyncGate {
    pub(crate) reached: Sender<String>,
    pub(crate) go: Receiver<std::io::Result<()>>,
}

impl Shared {
    pub(crate) fn poison_reason(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the writer may sync a batch itself: the syncer has none in
    /// hand (nothing to overlap with).
    fn may_sync_inline(&self) -> bool {
        #[cfg(test)]
        if self.never_sync_inline.load(Ordering::SeqCst) {
            return false;
        }
        self.handed_to_syncer.load(Ordering::Acquire) == 0
    }

    #[cfg(test)]
    pub(crate) fn take_sync_gate(&self) -> Option<SyncGate> {
        self.sync_gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub(crate) fn poison(&self, why: String) {
        let mut p = self.poisoned.lock().unwrap_or_else(PoisonError::into_inner);
        if p.is_none() {
            tracing::error!(reason = %why, "dead-letter store poisoned: refusing further writes");
            *p = Some(why);
        }
    }
}

/// Bounds checked at each batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) max_letters: Option<u64>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) max_batch: usize,
}

/// Where a committed batch goes under `Durability::Full`: the syncer thread,
/// and the WAL the writer syncs itself when nothing else waits.
pub(crate) struct SyncTo {
    pub(crate) syncer: Sender<Committed>,
    pub(crate) wal: Arc<File>,
}

/// Runs until every sender is gone. With `sync_to` (`Durability::Full`), a
/// committed batch is answered once a WAL sync covers it: by the syncer
/// thread, so this thread goes on with the next batch, or here, when no
/// push is waiting and the syncer has nothing in hand (a lone pusher then
/// waits for no second thread to wake up).
pub(crate) fn run(
    conn: Connection,
    rx: Receiver<Job>,
    shared: Arc<Shared>,
    bounds: Bounds,
    sync_to: Option<SyncTo>,
) {
    let sql = Sql::new();
    // Letters in `inbox` as far as this thread knows: it alone stages them,
    // though another connection may fold them meanwhile (then this is too
    // high, and a fold finds nothing to move). Unknown: fold at once.
    let mut staged = inbox_totals(&conn).map_or(FOLD_AT, |(n, _)| n.unsigned_abs() as usize);
    // How long to stay idle before folding: doubles while folds fail (a
    // full disk, another process holding the lock), so a failing fold is
    // retried and logged a few times a minute, not twenty times a second.
    let mut fold_wait = FOLD_IDLE;
    loop {
        let next = if staged > 0 {
            rx.recv_timeout(fold_wait)
        } else {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        let first = match next {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                #[cfg(test)]
                if shared.hold_idle_fold.load(Ordering::SeqCst) {
                    continue;
                }
                fold_wait = if fold_alone(&conn, &shared, &mut staged) {
                    FOLD_IDLE
                } else {
                    (fold_wait * 2).min(FOLD_BACKOFF_MAX)
                };
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = Vec::with_capacity(bounds.max_batch.min(rx.len() + 1));
        batch.push(first);
        while batch.len() < bounds.max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Staging pays off for a commit of a few letters only: a larger
        // batch shares the pages of `letters` it writes between many.
        let stage =
            sync_to.is_some() && batch.len() <= STAGE_MAX && staged + batch.len() <= FOLD_AT;
        let (outcomes, committed) = match shared.poison_reason() {
            Some(why) => (vec![Outcome::Poisoned(why); batch.len()], false),
            None => commit_batch(&conn, &batch, &shared, bounds, &sql, stage),
        };
        if committed {
            staged = if stage { staged + batch.len() } else { 0 };
        }
        match sync_to.as_ref().filter(|_| committed) {
            Some(to) if rx.is_empty() && shared.may_sync_inline() => {
                syncer::sync_and_answer(&to.wal, &shared, [(batch, outcomes)]);
            }
            Some(to) => {
                shared.handed_to_syncer.fetch_add(1, Ordering::AcqRel);
                // The syncer only ends after this thread dropped its sender.
                to.syncer
                    .send((batch, outcomes))
                    .expect("the syncer outlives the writer");
            }
            None => {
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    job.reply.send(outcome);
                }
            }
        }
    }
    fold_alone(&conn, &shared, &mut staged);
}

/// Folds `inbox` into `letters` in a transaction of its own, if anything is
/// staged and the store is not poisoned. Its commit needs no sync: the
/// letters it moves were durable in `inbox`, and whether the move survives
/// a power loss or not, each is in exactly one of the tables (a later
/// push's sync covers it anyway). A failure before the commit leaves them
/// staged; a failed commit poisons the store, as a batch's does (what
/// reached the disk is unknown). False if the fold failed.
fn fold_alone(conn: &Connection, shared: &Shared, staged: &mut usize) -> bool {
    if *staged == 0 || shared.poison_reason().is_some() {
        return true;
    }
    let moved = run_cached(conn, "BEGIN IMMEDIATE").and_then(|()| fold_inbox(conn));
    if let Err(e) = moved {
        rollback(conn);
        tracing::warn!(error = %e, "dead-letter inbox not folded; it stays staged");
        return false;
    }
    match run_cached(conn, "COMMIT") {
        Ok(()) => {
            *staged = 0;
            true
        }
        Err(e) => {
            rollback(conn);
            shared.poison(format!("inbox fold commit failed: {e}"));
            false
        }
    }
}

fn commit_batch(
    conn: &Connection,
    batch: &[Job],
    shared: &Shared,
    bounds: Bounds,
    sql: &Sql,
    stage: bool,
) -> (Vec<Outcome>, bool) {
    let inserted = if stage {
        stage_all(conn, batch, bounds, sql)
    } else {
        insert_all(conn, batch, bounds, sql)
    };
    match inserted {
        Err(e) => {
            // Nothing was committed: the pushers keep their messages and the
            // store stays usable (a busy lock or a full disk may pass).
            rollback(conn);
            let why = format!("dead-letter batch not stored: {}", db_err(e));
            (vec![Outcome::Failed(why); batch.len()], false)
        }
        Ok(tx_outcomes) => {
            let commit = if shared.fail_next_commit.swap(false, Ordering::SeqCst) {
                rollback(conn);
                Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
                    Some("injected commit failure".into()),
                ))
            } else {
                run_cached(conn, "COMMIT")
            };
            match commit {
                Ok(()) => (tx_outcomes, true),
                Err(e) => {
                    rollback(conn);
                    // Whether the data reached the disk is unknown: refuse
                    // every write from now on rather than pretend.
                    let why = format!("commit failed: {e}");
                    shared.poison(why.clone());
                    (vec![Outcome::Poisoned(why); batch.len()], false)
                }
            }
        }
    }
}

/// Runs a parameterless statement kept in the connection's statement cache
/// (`BEGIN`, `COMMIT`: re-preparing them for every batch shows in profiles).
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Ends a failed transaction, if one is open: nothing of it is kept.
fn rollback(conn: &Connection) {
    if !conn.is_autocommit()
        && let Err(e) = run_cached(conn, "ROLLBACK")
    {
        tracing::warn!(error = %e, "dead-letter batch rollback failed");
    }
}

/// Rows per multi-row `INSERT`: one statement per chunk instead of per row
/// (see [`insert_sql`]); the rest of a batch goes row by row.
const CHUNK: usize = 32;

/// Batches of at most this many letters are staged in `inbox` under
/// `Durability::Full` (see [`super::schema`], version 4). A lone commit into
/// `letters` writes about ten pages, into `inbox` one or two; folding moves
/// the staged letters many at a time, sharing the pages of `letters` it
/// writes (about a page per letter in all, staging and folding, against ten
/// per commit). Past a few letters a commit into `letters` shares its pages
/// too, and staging would only add the fold. Measured with 500 lone pushes
/// under `strace -f` (`examples/dlq_profile.rs`): 19.9 -> 5.0 `pwrite` calls
/// and 82 -> 21 KiB per letter, folds included; a single pusher went from
/// about 2.0x to 1.3x the `write` + `fdatasync` baseline
/// (`examples/dlq_rounds.rs`).
const STAGE_MAX: usize = 4;

/// Letters staged in `inbox` past which the writer folds it (in the commit
/// of the next batch: a lone push then pays for moving them all).
pub(crate) const FOLD_AT: usize = 64;

/// How long the writer, idle with letters staged, waits for another push
/// before it folds them: readers (other processes) see `inbox` too, so this
/// only bounds how long a letter stays outside the indexes.
const FOLD_IDLE: Duration = Duration::from_millis(50);

/// The longest the writer waits between attempts at a fold that keeps failing.
const FOLD_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The writer's SQL, built once.
struct Sql {
    one: String,
    chunk: String,
    stage: String,
}

impl Sql {
    fn new() -> Self {
        Self {
            one: insert_sql(1),
            chunk: insert_sql(CHUNK),
            stage: stage_sql(),
        }
    }
}
