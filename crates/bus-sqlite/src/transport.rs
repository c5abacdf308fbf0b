//! [`SqliteTransport`]: the [`Transport`] over the queue file.

use crate::clock::{SharedWallClock, SystemWallClock};
use crate::config::SqliteConfig;
use crate::error::SqliteError;
use crate::owner::{self, Owner};
use crate::row::extra_of;
use crate::schema;
use crate::shared::{Counters, Op, Publish, Routes, Shared};
use crate::subscription::SqliteSubscription;
use crate::writer;
use bus_core::{
    Confirm, Envelope, PublishError, QueueDepth, Receipt, Route, SubscribeOptions, Subscription,
    Topic, Transport, TransportError,
};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// A durable, embedded [`Transport`] on a SQLite file (WAL mode) at
/// `<data-dir>/queue.sqlite`.
///
/// A publish is confirmed once its transaction is committed, fsynced under
/// [`Durability::Full`](crate::Durability::Full) (the default); concurrent
/// publishes, and the many a [`Publisher`](bus_core::Publisher) keeps in
/// flight, share one commit. Each consumer group of a topic has its queue
/// in the file, with priority lanes, a bound and an overflow policy like
/// the memory transport's, and it outlives its members and the process.
/// Deliveries are leased to this open of the file until a deadline: a
/// process that dies leaves its leases to the next open, which hands them
/// out again at once (delivery is at least once). Delayed redeliveries are
/// stored with their due time and fire after a restart. Other processes
/// may open the same file and join the same groups.
///
/// ```
/// use bus_core::{Envelope, SubscribeOptions, Topic, Transport};
/// use bus_sqlite::{SqliteConfig, SqliteTransport};
/// use std::time::Duration;
///
/// let dir = tempfile::tempdir().unwrap();
/// let topic = Topic::new("orders").unwrap();
/// {
///     let transport = SqliteTransport::open(SqliteConfig::new(dir.path())).unwrap();
///     let _sub = transport.subscribe(&topic, &SubscribeOptions::group("billing")).unwrap();
///     // Confirmed: committed and fsynced.
///     transport.publish(Envelope::new(topic.clone(), &b"hi"[..]), Duration::from_secs(5)).unwrap();
/// } // the process could die here
/// let transport = SqliteTransport::open(SqliteConfig::new(dir.path())).unwrap();
/// let mut sub = transport.subscribe(&topic, &SubscribeOptions::group("billing")).unwrap();
/// let delivery = sub.next(Duration::from_secs(5)).unwrap().unwrap();
/// assert_eq!(&delivery.envelope().payload[..], b"hi");
/// delivery.ack();
/// ```
pub struct SqliteTransport {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    recovered: u64,
    /// Held (and its lock file locked) until the transport closes.
    owner: Mutex<Option<Owner>>,
}

impl std::fmt::Debug for SqliteTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTransport")
            .field("path", &self.shared.config.db_path())
            .field("owner", &self.shared.owner)
            .field("closed", &self.shared.is_closed())
            .finish()
    }
}

impl SqliteTransport {
    /// Opens (creating if missing) the queue in `config.data_dir`, returns
    /// the leases of owners that died to their queues, and starts the writer.
    pub fn open(config: SqliteConfig) -> Result<Self, SqliteError> {
        Self::open_with_clock(config, Arc::new(SystemWallClock))
    }

    /// [`open`](Self::open) with the wall clock that lease deadlines and
    /// retry due times are read from (tests move a
    /// [`ManualWallClock`](crate::ManualWallClock) by hand).
    pub fn open_with_clock(
        config: SqliteConfig,
        clock: SharedWallClock,
    ) -> Result<Self, SqliteError> {
        let mut conn = schema::open(&config)?;
        let wal = match config.durability {
            bus_dlq::Durability::Normal => None,
            _ => Some(
                bus_dlq::open_synced_wal(&config.db_path(), &conn).map_err(|e| match e {
                    bus_core::DlqError::Io(e) => schema::io_err(e),
                    other => SqliteError::Failed(other.to_string()),
                })?,
            ),
        };
        let owner = Owner::claim(&config.owners_dir())?;
        let recovered = recover_dead_owners(&mut conn, &config, owner.id)?;
        if recovered > 0 {
            tracing::info!(
                recovered,
                "sqlite queue: deliveries leased by a process that died are queued again"
            );
        }
        let fresh_from: i64 = conn.query_row(
            "SELECT coalesce(max(seq), 0) + 1 FROM sqlite_sequence WHERE name = 'messages'",
            [],
            |r| r.get(0),
        )?;
        let (tx, rx) = crossbeam_channel::unbounded();
        // Every group in the file, so that depths are reported from the start.
        let routes = Routes::from_rows(writer::load_groups(&conn)?);
        let shared = Arc::new(Shared {
            config,
            clock,
            owner: owner.id,
            routes: RwLock::new(routes),
            closed: Default::default(),
            gate: RwLock::new(()),
            tx,
            counters: Counters::default(),
            poisoned: Mutex::new(None),
            fresh_from,
            resumed: Mutex::default(),
            #[cfg(test)]
            fail_next_batch: Default::default(),
            #[cfg(test)]
            fail_next_commit: Default::default(),
        });
        let writer = std::thread::Builder::new()
            .name("bus-sqlite-writer".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || writer::run(conn, wal, rx, shared)
            })?;
        Ok(Self {
            shared,
            writer: Mutex::new(Some(writer)),
            recovered,
            owner: Mutex::new(Some(owner)),
        })
    }

    /// Deliveries that owners which had died still held when this open
    /// started, returned to their queues.
    pub fn recovered_at_open(&self) -> u64 {
        self.recovered
    }

    /// Deliveries of messages stored before this open (an earlier
    /// process's work, resumed here) handed to a consumer, each counted
    /// once however often it is redelivered. A bus on this transport
    /// counts them in its ledger without a publish of its own: for one
    /// process running on the file, `published + resumed` is what its
    /// ledger settles or leaves pending.
    pub fn resumed(&self) -> u64 {
        self.shared
            .resumed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Leases that ran past their deadline and were returned to their
    /// queues since the open.
    pub fn expired_leases(&self) -> u64 {
        self.shared.counters.expired.load(Ordering::Relaxed)
    }

    /// Transactions committed since the open.
    pub fn commits(&self) -> u64 {
        self.shared.counters.commits.load(Ordering::Relaxed)
    }

    /// Why the transport refuses writes, if a commit failed.
    pub fn poisoned(&self) -> Option<String> {
        self.shared.poison_reason()
    }

    /// The queue database's path.
    pub fn path(&self) -> std::path::PathBuf {
        self.shared.config.db_path()
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    fn wait(
        &self,
        envelope: Envelope,
        route: Route<'_>,
        timeout: Duration,
    ) -> Result<Receipt, PublishError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = envelope.id;
        self.send(
            envelope,
            route,
            timeout,
            Confirm::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        // The writer answers every publish it was handed, even when closing.
        rx.recv().unwrap_or(Err(PublishError::Unanswered { id }))
    }

    /// Has the writer read every group's depth from the file again.
    fn refresh_depths(&self) {
        let (reply, done) = crossbeam_channel::bounded(1);
        if self.shared.submit(Op::Refresh(reply)).is_ok() {
            let _ = done.recv();
        }
    }

    fn stop(&self) {
        if !self.shared.close() {
            return;
        }
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = writer
            && w.join().is_err()
        {
            tracing::error!("sqlite queue writer thread panicked");
        }
        // Its leases are back in their queues: it owns nothing any more.
        drop(
            self.owner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        for g in self.shared.routes().by_id.values() {
            g.wake_all();
        }
    }
}

/// Returns to their queues the leases of every owner whose lock file shows
/// it dead, in one transaction.
fn recover_dead_owners(
    conn: &mut rusqlite::Connection,
    config: &SqliteConfig,
    me: i64,
) -> Result<u64, SqliteError> {
    let owners: Vec<i64> = conn
        .prepare("SELECT DISTINCT owner FROM messages WHERE owner IS NOT NULL")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let dir = config.owners_dir();
    let dead: Vec<i64> = owners
        .into_iter()
        .filter(|o| *o != me && !owner::is_alive(&dir, *o))
        .collect();
    if dead.is_empty() {
        return Ok(0);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut recovered = 0_u64;
    for o in dead {
        let groups: Vec<(i64, i64)> = tx
            .prepare("SELECT grp, count(*) FROM messages WHERE owner = ?1 GROUP BY grp")?
            .query_map([o], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        tx.execute(
            "UPDATE messages SET owner = NULL, lease_until = NULL WHERE owner = ?1",
            [o],
        )?;
        for (g, n) in groups {
            tx.execute("UPDATE groups SET depth = depth + ?2 WHERE id = ?1", [g, n])?;
            recovered += n.unsigned_abs();
        }
    }
    tx.commit()?;
    Ok(recovered)
}

impl Drop for SqliteTransport {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

impl Transport for SqliteTransport {
    fn publish(&self, envelope: Envelope, timeout: Duration) -> Result<Receipt, PublishError> {
        self.wait(envelope, Route::Topic, timeout)
    }

    fn publish_to_group(
        &self,
        group: &str,
        envelope: Envelope,
        timeout: Duration,
    ) -> Result<Receipt, PublishError> {
        self.wait(envelope, Route::Group(group), timeout)
    }

    fn send(&self, envelope: Envelope, route: Route<'_>, timeout: Duration, confirm: Confirm) {
        if self.shared.is_closed() {
            return confirm.resolve(Err(PublishError::Closed { envelope }));
        }
        // Room is taken here, on the publisher's thread, in every group
        // whose policy waits or refuses: all or nothing, as in memory.
        let mut reserved: smallvec::SmallVec<[i64; 4]> = smallvec::SmallVec::new();
        let groups: Vec<_> = {
            let routes = self.shared.routes();
            match route {
                Route::Topic => routes
                    .by_topic
                    .get(&envelope.topic)
                    .cloned()
                    .unwrap_or_default(),
                Route::Group(name) => routes
                    .find(&envelope.topic, name)
                    .cloned()
                    .into_iter()
                    .collect(),
            }
        };
        let mut refreshed = false;
        for g in groups.iter().filter(|g| g.refuses_when_full()) {
            if g.try_reserve() {
                reserved.push(g.id);
                continue;
            }
            // Full as this process last knew: another process may have
            // taken messages since. Read the depths again, once.
            if !refreshed {
                refreshed = true;
                self.refresh_depths();
            }
            if g.reserve(timeout, &self.shared.closed) {
                reserved.push(g.id);
            } else {
                for taken in groups.iter().filter(|g| reserved.contains(&g.id)) {
                    taken.unreserve(1);
                }
                return confirm.resolve(Err(PublishError::QueueFull {
                    envelope,
                    group: g.name.to_string(),
                }));
            }
        }
        let extra = extra_of(&envelope);
        let op = Op::Publish(Publish {
            envelope,
            extra,
            group: match route {
                Route::Topic => None,
                Route::Group(name) => Some(name.to_owned()),
            },
            reserved,
            confirm,
        });
        if let Err(op) = self.shared.submit(op) {
            writer::refuse(&self.shared, op, "closed", true);
        }
    }

    fn subscribe(
        &self,
        topic: &Topic,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        if options.group.is_empty() {
            return Err(TransportError::InvalidOptions("group name is empty".into()));
        }
        if options.capacity == 0 {
            return Err(TransportError::InvalidOptions(
                "capacity must be at least 1".into(),
            ));
        }
        if self.shared.is_closed() {
            return Err(TransportError::Closed);
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        let op = Op::Subscribe {
            topic: topic.clone(),
            name: options.group.clone(),
            capacity: options.capacity,
            overflow: options.overflow,
            reply,
        };
        self.shared.submit(op).map_err(|_| TransportError::Closed)?;
        let group = answer
            .recv()
            .map_err(|_| TransportError::Closed)?
            .map_err(TransportError::from)?;
        if let Some(owner) = &*self.owner.lock().unwrap_or_else(PoisonError::into_inner) {
            owner.note_member(topic.as_str(), &options.group);
        }
        Ok(Box::new(SqliteSubscription::new(
            Arc::clone(&self.shared),
            group,
        )))
    }

    fn queue_depths(&self) -> Vec<QueueDepth> {
        let mut out: Vec<QueueDepth> = self
            .shared
            .routes()
            .by_id
            .values()
            .map(|g| QueueDepth {
                topic: g.topic.to_string(),
                group: g.name.to_string(),
                depth: g.depth(),
                capacity: g.capacity,
                in_flight: g.in_flight(),
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, &a.group).cmp(&(&b.topic, &b.group)));
        out
    }

    fn requeue(&self, group: &str, envelope: Envelope) -> Result<(), Envelope> {
        if self.shared.is_closed() {
            return Err(envelope);
        }
        let Some(id) = self
            .shared
            .routes()
            .find(&envelope.topic, group)
            .map(|g| g.id)
        else {
            return Err(envelope);
        };
        let (reply, answer) = crossbeam_channel::bounded(1);
        let extra = extra_of(&envelope);
        let op = Op::Requeue {
            group: id,
            envelope,
            extra,
            reply,
        };
        match self.shared.submit(op) {
            // The writer answers every requeue it was handed.
            Ok(()) => answer
                .recv()
                .unwrap_or_else(|_| unreachable!("the writer ended without answering a requeue")),
            Err(Op::Requeue { envelope, .. }) => Err(envelope),
            Err(_) => unreachable!("submit hands back the op it was given"),
        }
    }

    fn messaging_system(&self) -> &'static str {
        "sqlite"
    }

    fn durable(&self) -> bool {
        true
    }

    fn close(&self) -> Vec<(Arc<str>, Envelope)> {
        self.stop();
        Vec::new()
    }
}
