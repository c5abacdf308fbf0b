//! The writer thread: group commit of concurrent pushes.
//!
//! Each pusher encodes its row on its own thread, sends it here with a reply
//! channel, and waits (`push`), or with a callback, and goes on (`push_then`:
//! the bus settles the message in the callback, so a few workers can fill a
//! large batch). The writer takes every row waiting (up to
//! `max_batch`), inserts them in one transaction, commits once (one fsync
//! under `Durability::Full`), and only then answers each pusher. While it
//! commits, new rows queue up for the next batch.

use super::row::{EncodedRow, INSERT};
use super::schema::db_err;
use bus_core::{DeadLetter, DlqError};
use crossbeam_channel::{Receiver, Sender};
use rusqlite::Connection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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
}

impl Shared {
    pub(crate) fn poison_reason(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn poison(&self, why: String) {
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

/// Runs until every sender is gone.
pub(crate) fn run(mut conn: Connection, rx: Receiver<Job>, shared: Arc<Shared>, bounds: Bounds) {
    let mut batch = Vec::with_capacity(bounds.max_batch);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < bounds.max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcomes = match shared.poison_reason() {
            Some(why) => vec![Outcome::Poisoned(why); batch.len()],
            None => commit_batch(&mut conn, &batch, &shared, bounds),
        };
        for (job, outcome) in batch.drain(..).zip(outcomes) {
            job.reply.send(outcome);
        }
    }
}

fn commit_batch(
    conn: &mut Connection,
    batch: &[Job],
    shared: &Shared,
    bounds: Bounds,
) -> Vec<Outcome> {
    match insert_all(conn, batch, bounds) {
        Err(e) => {
            // Nothing was committed: the pushers keep their messages and the
            // store stays usable (a busy lock or a full disk may pass).
            let why = format!("dead-letter batch not stored: {}", db_err(e));
            vec![Outcome::Failed(why); batch.len()]
        }
        Ok((tx_outcomes, tx)) => {
            let commit = if shared.fail_next_commit.swap(false, Ordering::SeqCst) {
                drop(tx);
                Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
                    Some("injected commit failure".into()),
                ))
            } else {
                tx.commit()
            };
            match commit {
                Ok(()) => tx_outcomes,
                Err(e) => {
                    // Whether the data reached the disk is unknown: refuse
                    // every write from now on rather than pretend.
                    let why = format!("commit failed: {e}");
                    shared.poison(why.clone());
                    vec![Outcome::Poisoned(why); batch.len()]
                }
            }
        }
    }
}

type Inserted<'c> = (Vec<Outcome>, rusqlite::Transaction<'c>);

fn insert_all<'c>(
    conn: &'c mut Connection,
    batch: &[Job],
    bounds: Bounds,
) -> rusqlite::Result<Inserted<'c>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let (mut letters, mut bytes): (i64, i64) =
        tx.query_row("SELECT letters, bytes FROM totals WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut stmt = tx.prepare_cached(INSERT)?;
        for job in batch {
            let row_bytes = i64::try_from(job.row.bytes).unwrap_or(i64::MAX);
            if let Some(full) = over_bound(bounds, letters, bytes, row_bytes) {
                outcomes.push(Outcome::Full(full));
                continue;
            }
            if job.row.insert(&mut stmt)? {
                letters += 1;
                bytes = bytes.saturating_add(row_bytes);
            }
            outcomes.push(Outcome::Stored);
        }
    }
    Ok((outcomes, tx))
}

fn over_bound(bounds: Bounds, letters: i64, bytes: i64, row_bytes: i64) -> Option<String> {
    let letters = letters.unsigned_abs();
    if let Some(max) = bounds.max_letters.filter(|m| letters >= *m) {
        return Some(format!("{letters} letters stored, the limit is {max}"));
    }
    let after = bytes.saturating_add(row_bytes).unsigned_abs();
    if let Some(max) = bounds.max_bytes.filter(|m| after > *m) {
        return Some(format!(
            "{bytes} bytes stored, adding {row_bytes} would pass the limit of {max}"
        ));
    }
    None
}
