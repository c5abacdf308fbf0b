//! [`SqliteDlq`]: the crash-safe store.

mod checkpoint;
mod file;
mod filter_sql;
mod groups;
mod row;
mod schema;
mod summary;
mod syncer;
mod verify;
mod wal;
mod writer;

pub use file::DlqFile;
pub use verify::{BadRow, TotalsMismatch, VerifyReport};
pub use wal::WalDamage;

use crate::config::{DlqConfig, Durability};
use crate::query::{DlqQuery, Filter};
use crate::record::{LetterState, LetterSummary, ReplayRefusal, StoredLetter};
use bus_core::{DeadLetter, DeadLetterStore, DlqError, LetterId, PushDone, Topic};
use crossbeam_channel::Sender;
use row::EncodedRow;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;
use writer::{Bounds, Job, Reply, Shared};

/// Opens the write-ahead log of the SQLite database at `db` (WAL mode on,
/// `conn` a connection to it) for a writer that runs its commits with
/// `synchronous = NORMAL` and makes them durable itself, with one
/// `fdatasync` of the WAL after the commit, as this crate's store does under
/// `Durability::Full` (see `syncer.rs` for why that is as durable as
/// `synchronous = FULL`). The WAL is extended with zeros to about the most
/// it holds between checkpoints, so commits overwrite blocks it has and a
/// sync commits no file-system metadata; it and its directory entry are
/// synced once here. Keep the file open as long as any connection of this
/// process to the database is. The SQLite transport (`bus-sqlite`) shares
/// it.
pub fn open_synced_wal(
    db: &std::path::Path,
    conn: &rusqlite::Connection,
) -> Result<std::fs::File, DlqError> {
    let len = checkpoint::wal_bytes(conn)?;
    syncer::open_wal(db, conn, len)
}

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
    /// The reader's connection: queries, purges, replay marks, imports.
    file: DlqFile,
    /// The syncer's handle on the WAL file (`Durability::Full`), closed only
    /// after every connection (declared after `file`): see [`syncer`].
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

    /// Opens an existing store: a missing file gives [`DlqError::NoStore`]
    /// and an empty one [`DlqError::NotAStore`], and neither is created (a
    /// mistyped `--data-dir` must not make an empty DLQ).
    pub fn open_existing(config: DlqConfig) -> Result<Self, DlqError> {
        // Recognised (and migrated) the way a changing `busctl` command
        // opens it, then closed: the store opens on its own connections.
        drop(DlqFile::open_read_write(&config.data_dir)?);
        Self::open_file(config)
    }

    fn open_file(config: DlqConfig) -> Result<Self, DlqError> {
        let path = config.db_path();
        let file = DlqFile::open_writable(path.clone())?;
        let admin = file.conn();
        if config.durability == Durability::Normal {
            admin
                .execute_batch("PRAGMA synchronous = NORMAL;")
                .map_err(schema::db_err)?;
        }
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
        drop(admin);
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
            file,
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
        if let Some(w) = self.writer.take()
            && w.join().is_err()
        {
            tracing::error!("dead-letter writer thread panicked");
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

    /// Runs SQLite's integrity check, decodes every row and reads the
    /// write-ahead log for damage (see [`DlqFile::verify`]).
    pub fn verify(&self) -> Result<VerifyReport, DlqError> {
        self.file.verify()
    }

    #[cfg(test)]
    fn conn(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.file.conn()
    }

    #[cfg(test)]
    fn write_folded<T>(
        &self,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, DlqError> {
        self.file.write_folded(write)
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
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(writer::SyncGate { reached, go });
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

impl DlqQuery for SqliteDlq {
    fn scan(
        &self,
        filter: &Filter,
        after: Option<LetterId>,
        max: usize,
    ) -> Result<Vec<LetterSummary>, DlqError> {
        self.file.scan(filter, after, max)
    }

    fn scan_letters(
        &self,
        filter: &Filter,
        after: Option<LetterId>,
        max: usize,
    ) -> Result<Vec<StoredLetter>, DlqError> {
        self.file.scan_letters(filter, after, max)
    }

    fn get(&self, id: LetterId) -> Result<Option<StoredLetter>, DlqError> {
        self.file.get(id)
    }

    fn count(&self, filter: &Filter) -> Result<u64, DlqError> {
        self.file.count(filter)
    }

    fn groups(&self, filter: &Filter) -> Result<Vec<crate::FailureGroup>, DlqError> {
        self.file.groups(filter)
    }

    fn set_state(
        &self,
        ids: &[LetterId],
        from: &[LetterState],
        to: LetterState,
        replayed_at: Option<SystemTime>,
        replay_topic: Option<&Topic>,
    ) -> Result<usize, DlqError> {
        self.file
            .set_state(ids, from, to, replayed_at, replay_topic)
    }

    fn request_replay(&self, filter: &Filter, target: Option<&Topic>) -> Result<u64, DlqError> {
        self.file.request_replay(filter, target)
    }

    fn refuse_replay(
        &self,
        id: LetterId,
        refusal: &ReplayRefusal,
        to: LetterState,
    ) -> Result<bool, DlqError> {
        self.file.refuse_replay(id, refusal, to)
    }

    fn delete(&self, ids: &[LetterId]) -> Result<usize, DlqError> {
        self.file.delete(ids)
    }

    fn insert(&self, letters: &[StoredLetter]) -> Result<usize, DlqError> {
        self.file.insert(letters)
    }
}

#[cfg(test)]
mod summary_tests;
#[cfg(test)]
mod tests;
