//! [`SqliteDlq`]: the crash-safe store.

mod checkpoint;
mod filter_sql;
mod row;
mod schema;
mod syncer;
mod verify;
mod writer;

pub use verify::{BadRow, TotalsMismatch, VerifyReport};

use crate::config::{DlqConfig, Durability};
use crate::query::{DlqQuery, Filter};
use crate::record::{LetterState, LetterSummary, StoredLetter, to_nanos};
use bus_core::{DeadLetter, DeadLetterStore, DlqError, LetterId, PushDone, Topic};
use crossbeam_channel::Sender;
use row::EncodedRow;
use rusqlite::Connection;
use rusqlite::types::Value;
use schema::db_err;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::SystemTime;
use writer::{Bounds, Job, Reply, Shared};

/// A dead-letter queue in a SQLite database (WAL mode) at
/// `<data-dir>/dlq.sqlite`.
///
/// [`push`](DeadLetterStore::push) returns `Ok` only once the letter is
/// committed with the configured [`Durability`](crate::Durability).
/// Concurrent pushes share one transaction and one fsync (group commit); under
/// `Durability::Full` a syncer thread runs that fsync while the writer
/// inserts the next batch, and a batch of a few letters is staged in a
/// small unindexed table and moved into the indexed one many at a time
/// later (see `docs/formats.md`, table `inbox`), so a lone push syncs one
/// WAL page instead of ten. After a failed commit or a failed fsync the store
/// is poisoned and refuses every later push with [`DlqError::Poisoned`]. Other processes (`busctl dlq`) can read and work
/// the same file while it is open here.
///
/// Queries, purges and replays ([`DlqQuery`]) run on a second connection
/// beside the writer.
#[derive(Debug)]
pub struct SqliteDlq {
    path: PathBuf,
    tx: Option<Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    syncer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    reader: Mutex<Connection>,
    /// The syncer's handle on the WAL file (`Durability::Full`), closed only
    /// after every connection (declared after `reader`): see [`syncer`].
    _wal: Option<Arc<std::fs::File>>,
}

impl SqliteDlq {
    /// Opens the store, creating the directory and database if missing.
    /// A file that is not a bus DLQ, or is damaged, gives
    /// [`DlqError::Corrupt`].
    pub fn open(config: DlqConfig) -> Result<Self, DlqError> {
        schema::create_files(&config)?;
        Self::open_file(config)
    }

    /// Opens an existing store; a missing database is an error (the CLI uses
    /// this so a mistyped `--data-dir` does not create an empty DLQ).
    pub fn open_existing(config: DlqConfig) -> Result<Self, DlqError> {
        let path = config.db_path();
        if !path.is_file() {
            return Err(DlqError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no dead-letter queue at {}", path.display()),
            )));
        }
        Self::open_file(config)
    }

    fn open_file(config: DlqConfig) -> Result<Self, DlqError> {
        let path = config.db_path();
        let mut admin = schema::connect(&path, config.durability)?;
        schema::prepare(&mut admin, &path)?;
        // Under `Full` the syncer thread, not the commit, syncs the WAL: the
        // writer's commits only write it (`synchronous=NORMAL`). Every other
        // connection (purges, replays, imports, checkpoints) keeps `FULL`.
        let full = config.durability == Durability::Full;
        let wal = full
            .then(|| {
                let len = checkpoint::wal_bytes(&admin)?;
                syncer::open_wal(&path, &admin, len).map(Arc::new)
            })
            .transpose()?;
        let mut writer_conn = schema::connect(&path, Durability::Normal)?;
        let checkpoint_conn = schema::connect(&path, config.durability)?;
        let checkpointer = checkpoint::start(&mut writer_conn, checkpoint_conn)?;
        schema::restrict_side_files(&path)?;
        let shared = Arc::new(Shared::default());
        let (sync_to, syncer) = match &wal {
            Some(wal) => {
                // A few batches may wait for one sync; past that the writer
                // waits for the disk (and pushers for the writer).
                let (tx, rx) = crossbeam_channel::bounded(4);
                let handle = std::thread::Builder::new()
                    .name("bus-dlq-syncer".into())
                    .spawn({
                        let (wal, shared) = (Arc::clone(wal), Arc::clone(&shared));
                        move || syncer::run(&wal, &rx, &shared)
                    })?;
                let sync_to = writer::SyncTo {
                    syncer: tx,
                    wal: Arc::clone(wal),
                };
                (Some(sync_to), Some(handle))
            }
            None => (None, None),
        };
        // Bounded: `push_then` callers run ahead of the disk by at most a few
        // batches, then wait (backpressure instead of unbounded memory).
        let (tx, rx) = crossbeam_channel::bounded(config.max_batch.max(1) * 4);
        let bounds = Bounds {
            max_letters: config.max_letters,
            max_bytes: config.max_bytes,
            max_batch: config.max_batch.max(1),
        };
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("bus-dlq-writer".into())
            .spawn(move || writer::run(writer_conn, rx, writer_shared, bounds, sync_to))?;
        Ok(Self {
            path,
            tx: Some(tx),
            writer: Some(writer),
            checkpointer: Some(checkpointer),
            syncer,
            shared,
            reader: Mutex::new(admin),
            _wal: wal,
        })
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Why the store refuses writes, if an earlier commit failed.
    pub fn poisoned(&self) -> Option<String> {
        self.shared.poison_reason()
    }

    /// Waits for pending pushes, stops the writer and closes the database.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                tracing::error!("dead-letter writer thread panicked");
            }
        }
        // The writer's connection is closed: the checkpointer's channel too,
        // and the syncer's, once it answered the last batches.
        for (thread, name) in [
            (self.syncer.take(), "syncer"),
            (self.checkpointer.take(), "checkpoint"),
        ] {
            if thread.is_some_and(|t| t.join().is_err()) {
                tracing::error!("dead-letter {name} thread panicked");
            }
        }
    }

    /// Pushes several letters at once: they join the same group commit, so a
    /// single caller can fill a batch. One result per letter, in order; each
    /// `Ok` means that letter is committed (a bound may refuse some).
    pub fn push_many(&self, letters: &[DeadLetter]) -> Vec<Result<LetterId, DlqError>> {
        if let Some(why) = self.shared.poison_reason() {
            return letters
                .iter()
                .map(|_| Err(DlqError::Poisoned(why.clone())))
                .collect();
        }
        type Waiting = Result<(LetterId, crossbeam_channel::Receiver<writer::Outcome>), DlqError>;
        let waiting: Vec<Waiting> = letters
            .iter()
            .map(|letter| Ok((letter.id, self.enqueue(letter)?)))
            .collect();
        waiting
            .into_iter()
            .map(|w| {
                let (id, answer) = w?;
                answer.recv().map_err(|_| DlqError::Closed)?.into_result()?;
                Ok(id)
            })
            .collect()
    }

    /// Encodes `letter` on this thread and queues it for the next group
    /// commit; the receiver answers once that commit ends.
    fn enqueue(
        &self,
        letter: &DeadLetter,
    ) -> Result<crossbeam_channel::Receiver<writer::Outcome>, DlqError> {
        let row = EncodedRow::from_letter(letter)?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.submit(row, Reply::Wait(reply))
            .map_err(|_| DlqError::Closed)?;
        Ok(answer)
    }

    /// Queues an encoded row for the writer; hands the reply back if the
    /// writer is gone.
    fn submit(&self, row: EncodedRow, reply: Reply) -> Result<(), Reply> {
        match self.tx.as_ref() {
            Some(tx) => tx
                .send(Job { row, reply })
                .map_err(|unsent| unsent.into_inner().reply),
            None => Err(reply),
        }
    }

    /// Runs SQLite's integrity check and decodes every row.
    pub fn verify(&self) -> Result<VerifyReport, DlqError> {
        verify::verify(&self.conn())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `write` on the reader's connection in a transaction that first
    /// folds the writer's staged letters into `letters` (see
    /// [`schema::fold_inbox`]), so it has only that table to change.
    /// `IMMEDIATE`: the fold reads before it writes, and a deferred
    /// transaction could not always take the write lock after its read.
    fn write_folded<T>(
        &self,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, DlqError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        schema::fold_inbox(&tx).map_err(db_err)?;
        let done = write(&tx).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(done)
    }

    /// Test hook: hold the next WAL sync until the test answers on the
    /// returned sender (`Err` fails it); the receiver hears when it starts,
    /// and on which thread.
    #[cfg(test)]
    pub(crate) fn gate_next_sync(
        &self,
    ) -> (
        crossbeam_channel::Sender<std::io::Result<()>>,
        crossbeam_channel::Receiver<String>,
    ) {
        let (go_tx, go) = crossbeam_channel::bounded(1);
        let (reached, reached_rx) = crossbeam_channel::bounded(1);
        *self
            .shared
            .sync_gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(writer::SyncGate { reached, go });
        (go_tx, reached_rx)
    }

    /// Test hook: every committed batch goes to the syncer thread, none is
    /// synced on the writer.
    #[cfg(test)]
    pub(crate) fn never_sync_inline(&self) {
        self.shared
            .never_sync_inline
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Test hook: the idle writer does not fold `inbox`.
    #[cfg(test)]
    pub(crate) fn hold_idle_fold(&self) {
        self.shared
            .hold_idle_fold
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    #[cfg(test)]
    pub(crate) fn fail_next_commit(&self) {
        self.shared
            .fail_next_commit
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for SqliteDlq {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl DeadLetterStore for SqliteDlq {
    fn push(&self, letter: &DeadLetter) -> Result<LetterId, DlqError> {
        if let Some(why) = self.shared.poison_reason() {
            return Err(DlqError::Poisoned(why));
        }
        self.enqueue(letter)?
            .recv()
            .map_err(|_| DlqError::Closed)?
            .into_result()?;
        Ok(letter.id)
    }

    fn push_then(&self, letter: DeadLetter, done: PushDone) {
        if let Some(why) = self.shared.poison_reason() {
            return done(Err(DlqError::Poisoned(why)), letter);
        }
        let row = match EncodedRow::from_letter(&letter) {
            Ok(row) => row,
            Err(e) => return done(Err(e), letter),
        };
        if let Err(reply) = self.submit(row, Reply::Then(done, Box::new(letter))) {
            reply.send(writer::Outcome::Closed);
        }
    }
}

fn id_values(ids: &[LetterId]) -> (String, Vec<Value>) {
    let marks = vec!["?"; ids.len()].join(", ");
    (
        marks,
        ids.iter().map(|i| Value::Text(i.to_string())).collect(),
    )
}

impl DlqQuery for SqliteDlq {
    fn scan(
        &self,
        filter: &Filter,
        after: Option<LetterId>,
        max: usize,
    ) -> Result<Vec<LetterSummary>, DlqError> {
        let (mut clause, mut params) = filter_sql::compile(filter);
        if let Some(a) = after {
            clause.push_str(" AND id > ?");
            params.push(Value::Text(a.to_string()));
        }
        let mut params = both_tables(params);
        params.push(Value::Integer(i64::try_from(max).unwrap_or(i64::MAX)));
        // SQLite merges the two arms, each in id order (the id index of
        // `letters`, a sort of the few staged letters).
        let sql = format!(
            "SELECT {cols} FROM letters WHERE {clause} UNION ALL \
             SELECT {cols} FROM inbox WHERE {clause} ORDER BY id LIMIT ?",
            cols = row::SUMMARY_COLUMNS
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(db_err)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(db_err)? {
            out.push(row::summary_from_row(r)?);
        }
        Ok(out)
    }

    fn get(&self, id: LetterId) -> Result<Option<StoredLetter>, DlqError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {cols} FROM letters WHERE id = ?1 UNION ALL \
             SELECT {cols} FROM inbox WHERE id = ?1",
            cols = row::FULL_COLUMNS
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
        let mut rows = stmt.query([id.to_string()]).map_err(db_err)?;
        match rows.next().map_err(db_err)? {
            Some(r) => row::decode(r).map(Some),
            None => Ok(None),
        }
    }

    fn count(&self, filter: &Filter) -> Result<u64, DlqError> {
        let (clause, params) = filter_sql::compile(filter);
        let sql = format!(
            "SELECT (SELECT count(*) FROM letters WHERE {clause}) + \
             (SELECT count(*) FROM inbox WHERE {clause})"
        );
        let total: i64 = self
            .conn()
            .query_row(&sql, rusqlite::params_from_iter(both_tables(params)), |r| {
                r.get(0)
            })
            .map_err(db_err)?;
        let after_offset = total.unsigned_abs().saturating_sub(filter.offset as u64);
        Ok(filter
            .limit
            .map_or(after_offset, |l| after_offset.min(l as u64)))
    }

    fn set_state(
        &self,
        ids: &[LetterId],
        from: &[LetterState],
        to: LetterState,
        replayed_at: Option<SystemTime>,
        replay_topic: Option<&Topic>,
    ) -> Result<usize, DlqError> {
        if ids.is_empty() || from.is_empty() {
            return Ok(0);
        }
        let (marks, mut params) = id_values(ids);
        let states = vec!["?"; from.len()].join(", ");
        let sql = format!(
            "UPDATE letters SET state = ?, replayed_at = ?, replay_topic = ? \
             WHERE id IN ({marks}) AND state IN ({states})"
        );
        let mut all = vec![
            Value::Text(to.as_str().into()),
            replayed_at.map_or(Value::Null, |t| Value::Integer(to_nanos(t))),
            replay_topic.map_or(Value::Null, |t| Value::Text(t.as_str().into())),
        ];
        all.append(&mut params);
        all.extend(from.iter().map(|s| Value::Text(s.as_str().into())));
        self.write_folded(|tx| tx.execute(&sql, rusqlite::params_from_iter(all)))
    }

    fn delete(&self, ids: &[LetterId]) -> Result<usize, DlqError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let (marks, params) = id_values(ids);
        self.write_folded(|tx| {
            tx.execute(
                &format!("DELETE FROM letters WHERE id IN ({marks})"),
                rusqlite::params_from_iter(params),
            )
        })
    }

    fn insert(&self, letters: &[StoredLetter]) -> Result<usize, DlqError> {
        let rows = letters
            .iter()
            .map(EncodedRow::from_stored)
            .collect::<Result<Vec<_>, _>>()?;
        self.write_folded(|tx| {
            let (mut n, mut bytes) = (0, 0_i64);
            {
                let mut stmt = tx.prepare_cached(&row::import_sql())?;
                for r in &rows {
                    if r.insert(&mut stmt)? {
                        n += 1;
                        bytes = bytes.saturating_add(r.row_bytes);
                    }
                }
            }
            schema::add_to_totals(tx, i64::try_from(n).unwrap_or(i64::MAX), bytes)?;
            Ok(n)
        })
    }
}

/// The parameters of a clause used once per table (`letters`, then `inbox`).
fn both_tables(params: Vec<Value>) -> Vec<Value> {
    let mut both = params.clone();
    both.extend(params);
    both
}

#[cfg(test)]
mod tests;
