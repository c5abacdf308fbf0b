//! The writer thread: every change to the file goes through it, in group
//! commits.
//!
//! Publishes (from every publisher, and every message of a publisher's
//! confirm window), leases, acks, naks and group changes queue on one
//! channel; the writer takes all that is waiting (up to `max_batch`), runs
//! it in one `BEGIN IMMEDIATE` transaction, commits once and only then
//! answers: a publish is confirmed after the commit (fsynced under
//! `Durability::Full`), a lease handed out after it, so a consumer never
//! holds a delivery the file does not record as leased. A batch of only
//! leases and settles commits without an fsync even under `Full`: losing
//! one to a power loss only redelivers. Each transaction also returns
//! delayed redeliveries that fell due and leases that expired.
//!
//! A transaction that fails (a full disk, the lock held past the busy
//! timeout) is rolled back: its publishers get their messages back, its
//! consumers an error, and the settles in it are dropped (their messages
//! stay leased until their deadline, then are delivered again). A failed
//! `COMMIT` poisons the writer: what reached the disk is unknown, so it
//! refuses every later write.

mod apply;

use crate::error::SqliteError;
use crate::shared::{Op, Shared};
use apply::Batch;
use bus_core::{PublishError, TransportError};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use rusqlite::Connection;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

/// The longest the writer sleeps with nothing to do and nothing due: it
/// then looks for redeliveries other processes scheduled and left.
const IDLE: Duration = Duration::from_secs(1);

/// Runs until the transport closes. With `wal` (`Durability::Full`) the
/// connection commits with `synchronous = NORMAL` and a commit that
/// confirms publishes is made durable by one `fdatasync` of the WAL after
/// it (the dead-letter store's way, see `bus_dlq::open_synced_wal`); a
/// batch of leases and settles only is not synced.
pub(crate) fn run(conn: Connection, wal: Option<File>, rx: Receiver<Op>, shared: Arc<Shared>) {
    let mut w = Writer {
        conn,
        wal,
        shared,
        groups_seen: (-1, -1),
        data_version: None,
    };
    let mut next_event: Option<i64> = None;
    loop {
        let wait = match next_event {
            Some(at) => {
                let ms = at.saturating_sub(w.shared.clock.now_ms()).max(0);
                Duration::from_millis(ms.unsigned_abs()).min(IDLE)
            }
            None => IDLE,
        };
        let first = match rx.recv_timeout(wait) {
            Ok(op) => Some(op),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut ops = Vec::with_capacity(rx.len().min(w.shared.config.max_batch) + 1);
        ops.extend(first);
        while ops.len() < w.shared.config.max_batch {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let closing = ops.iter().any(|op| matches!(op, Op::Close));
        next_event = w.batch(ops);
        if closing {
            break;
        }
    }
    // Whatever arrived after the close is refused.
    for op in rx.try_iter() {
        refuse(&w.shared, op, &TransportError::Closed.to_string(), true);
    }
}

struct Writer {
    conn: Connection,
    /// The WAL, synced by hand under `Durability::Full`; dropped after the
    /// connection (field order), never while it is open.
    wal: Option<File>,
    shared: Arc<Shared>,
    /// `(count, max id)` of `groups` when routes were last loaded.
    groups_seen: (i64, i64),
    /// `PRAGMA data_version` when the depths were last read: it moves when
    /// another connection (another process) commits.
    data_version: Option<i64>,
}

impl Writer {
    /// Runs `ops` in one transaction and answers them. Returns when the
    /// next delayed redelivery or lease deadline falls due, if any.
    fn batch(&mut self, ops: Vec<Op>) -> Option<i64> {
        if let Some(why) = self.shared.poison_reason() {
            for op in ops {
                refuse(&self.shared, op, &why, false);
            }
            return None;
        }
        let needs_sync = ops.iter().any(|op| {
            matches!(
                op,
                Op::Publish(_) | Op::Requeue { .. } | Op::Subscribe { .. }
            )
        });
        let now = self.shared.clock.now_ms();
        let shared = Arc::clone(&self.shared);
        let mut batch = Batch::new(&shared, now);
        let done = self
            .run_cached("BEGIN IMMEDIATE")
            .and_then(|()| self.refresh_routes(false))
            .and_then(|()| batch.apply(&self.conn, ops))
            .and_then(|()| batch.write_counts(&self.conn))
            .and_then(|()| injected(&self.shared.fail_next_batch_flag()));
        match done {
            Err(e) => {
                self.rollback();
                let why = SqliteError::from(e).to_string();
                tracing::warn!(error = %why, "sqlite queue batch rolled back");
                batch.fail(&why);
                None
            }
            Ok(()) => match injected(&self.shared.fail_next_commit_flag())
                .and_then(|()| self.run_cached("COMMIT"))
                .map_err(|e| format!("commit failed: {}", SqliteError::from(e)))
                .and_then(|()| match &self.wal {
                    Some(wal) if needs_sync => wal
                        .sync_data()
                        .map_err(|e| format!("syncing the WAL failed: {e}")),
                    _ => Ok(()),
                }) {
                Ok(()) => {
                    self.shared
                        .counters
                        .commits
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Subscribe's group must be routable before it answers.
                    if batch.groups_changed()
                        && let Err(e) = self.refresh_routes(true)
                    {
                        tracing::warn!(error = %e, "sqlite queue routes not reloaded");
                    }
                    batch.succeed(&shared);
                    self.next_event()
                }
                Err(why) => {
                    // Whether the commit reached the disk is unknown: no
                    // write is trusted from now on (a retried fsync can
                    // succeed with the data gone).
                    self.rollback();
                    self.shared.poison(why.clone());
                    batch.fail(&why);
                    None
                }
            },
        }
    }

    fn run_cached(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([]).map(drop)
    }

    fn rollback(&self) {
        if !self.conn.is_autocommit()
            && let Err(e) = self.run_cached("ROLLBACK")
        {
            tracing::warn!(error = %e, "sqlite queue rollback failed");
        }
    }

    /// Reloads the groups when another process (or a subscribe) added or
    /// dropped one, and every group's depth with them.
    fn refresh_routes(&mut self, force: bool) -> rusqlite::Result<()> {
        let seen: (i64, i64) = self
            .conn
            .prepare_cached("SELECT count(*), coalesce(max(id), 0) FROM groups")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let version: i64 = self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        let others_wrote = self.data_version.is_some_and(|v| v != version);
        self.data_version = Some(version);
        if !force && seen == self.groups_seen {
            if others_wrote {
                // Another process published or leased: the depths that
                // bound this one's publishes are read again.
                let routes = self.shared.routes();
                for g in load_groups(&self.conn)? {
                    if let Some(state) = routes.by_id.get(&g.id) {
                        state.set_depth(g.depth);
                    }
                }
            }
            return Ok(());
        }
        let rows = load_groups(&self.conn)?;
        let mut routes = self
            .shared
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = crate::shared::Routes::reload(rows, &routes);
        *routes = fresh;
        self.groups_seen = seen;
        Ok(())
    }

    /// The earliest delayed redelivery or lease deadline in the file.
    fn next_event(&self) -> Option<i64> {
        let q = |sql: &str| -> Option<i64> {
            self.conn
                .prepare_cached(sql)
                .and_then(|mut s| s.query_row([], |r| r.get::<_, Option<i64>>(0)))
                .ok()
                .flatten()
        };
        let due = q("SELECT min(due) FROM messages WHERE owner IS NULL AND due > 0");
        let lease = q("SELECT min(lease_until) FROM messages WHERE owner IS NOT NULL");
        match (due, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A test's injected failure (a full disk), if it asked for one.
fn injected(flag: &Option<&std::sync::atomic::AtomicBool>) -> rusqlite::Result<()> {
    match flag {
        Some(f) if f.swap(false, std::sync::atomic::Ordering::SeqCst) => {
            Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                Some("injected failure".into()),
            ))
        }
        _ => Ok(()),
    }
}

/// A group as `groups` stores it.
pub(crate) struct GroupRow {
    pub(crate) id: i64,
    pub(crate) topic: bus_core::Topic,
    pub(crate) name: String,
    pub(crate) capacity: usize,
    pub(crate) overflow: bus_core::OverflowPolicy,
    pub(crate) depth: usize,
}

pub(crate) fn load_groups(conn: &Connection) -> rusqlite::Result<Vec<GroupRow>> {
    let mut stmt =
        conn.prepare_cached("SELECT id, topic, name, capacity, overflow, depth FROM groups")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, topic, name, capacity, overflow, depth) = row?;
        // A group whose topic or policy no longer parses is skipped, not fatal.
        let Ok(topic) = bus_core::Topic::new(&topic) else {
            tracing::warn!(group = %name, topic, "sqlite queue group with an invalid topic skipped");
            continue;
        };
        let overflow = serde_json::from_str(&overflow).unwrap_or_default();
        out.push(GroupRow {
            id,
            topic,
            name,
            capacity: usize::try_from(capacity).unwrap_or(1),
            overflow,
            depth: usize::try_from(depth).unwrap_or(0),
        });
    }
    Ok(out)
}

/// Answers `op` with a refusal (`why`); a publish gets its message back.
pub(crate) fn refuse(shared: &Shared, op: Op, why: &str, closed: bool) {
    let source = || {
        if closed {
            TransportError::Closed
        } else {
            TransportError::Other(why.to_owned().into())
        }
    };
    match op {
        Op::Publish(p) => {
            apply::unreserve(shared, &p.reserved);
            let envelope = p.envelope;
            p.confirm.resolve(Err(if closed {
                PublishError::Closed { envelope }
            } else {
                PublishError::Transport {
                    envelope,
                    source: source(),
                }
            }));
        }
        Op::Lease { reply, .. } => {
            let _ = reply.send(Err(source()));
        }
        Op::Requeue {
            envelope, reply, ..
        } => {
            let _ = reply.send(Err(envelope));
        }
        Op::Subscribe { reply, .. } => {
            let _ = reply.send(Err(if closed {
                SqliteError::Failed(why.to_owned())
            } else {
                SqliteError::Poisoned(why.to_owned())
            }));
        }
        Op::Refresh(reply) => {
            let _ = reply.send(());
        }
        Op::Settle { token, .. } => {
            tracing::warn!(
                token,
                reason = why,
                "sqlite queue settle dropped; the lease will expire"
            );
        }
        Op::Close => {}
    }
}
