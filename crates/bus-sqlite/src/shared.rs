//! State shared by the transport, its subscriptions, their deliveries and
//! the writer thread, and the operations they hand the writer.

use crate::clock::SharedWallClock;
use crate::config::SqliteConfig;
use crate::error::SqliteError;
use crate::group::GroupState;
use bus_core::{Confirm, Envelope, OverflowPolicy, Topic, TransportError};
use crossbeam_channel::Sender;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

/// Every group of the file, by topic and by id.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(crate) by_topic: HashMap<Topic, Vec<Arc<GroupState>>>,
    pub(crate) by_id: HashMap<i64, Arc<GroupState>>,
}

impl Routes {
    /// Routes of groups as `groups` stores them, reusing the state of those
    /// already known (their members wait on it) from `known`.
    pub(crate) fn from_rows(rows: Vec<crate::writer::GroupRow>) -> Self {
        Self::reload(rows, &Self::default())
    }

    pub(crate) fn reload(rows: Vec<crate::writer::GroupRow>, known: &Self) -> Self {
        let mut fresh = Self::default();
        for g in rows {
            let state = match known.by_id.get(&g.id) {
                Some(existing) => {
                    existing.set_depth(g.depth);
                    Arc::clone(existing)
                }
                None => Arc::new(GroupState::new(
                    g.id, g.topic, &g.name, g.capacity, g.overflow, g.depth,
                )),
            };
            fresh
                .by_topic
                .entry(state.topic.clone())
                .or_default()
                .push(Arc::clone(&state));
            fresh.by_id.insert(state.id, state);
        }
        fresh
    }

    pub(crate) fn find(&self, topic: &Topic, name: &str) -> Option<&Arc<GroupState>> {
        self.by_topic
            .get(topic)
            .and_then(|gs| gs.iter().find(|g| *g.name == *name))
    }
}

/// One delivery handed to a consumer: what settles it names this lease.
#[derive(Debug)]
pub(crate) struct Leased {
    pub(crate) seq: i64,
    pub(crate) leases: i64,
    pub(crate) lease_until: i64,
    pub(crate) envelope: Envelope,
}

/// Identifies a lease to its settle: the row, and which of its leases
/// (low 16 bits of the count; a row is not leased 65 536 times while one
/// delivery of it is out).
pub(crate) fn token(seq: i64, leases: i64) -> u64 {
    (seq.unsigned_abs() << 16) | (leases.unsigned_abs() & 0xFFFF)
}

/// The row and lease number of a token.
pub(crate) fn untoken(token: u64) -> (i64, i64) {
    (
        i64::try_from(token >> 16).unwrap_or(i64::MAX),
        i64::try_from(token & 0xFFFF).unwrap_or(0),
    )
}

/// How a delivery is settled.
#[derive(Debug)]
pub(crate) enum How {
    Ack,
    Term,
    /// Back to the queue after `delay_ms`, with the envelope's new attempt
    /// count and history.
    Nak {
        delay_ms: i64,
        attempt: u32,
        extra: Option<String>,
    },
    /// Back to the queue unchanged and at once (a subscription dropped
    /// with deliveries it had leased ahead).
    Release,
    /// The consumer is still working: push the deadline out.
    Extend,
}

/// A publish waiting for its commit.
pub(crate) struct Publish {
    pub(crate) envelope: Envelope,
    pub(crate) extra: Option<String>,
    /// The one group of a publish to a group; every group of the topic if `None`.
    pub(crate) group: Option<String>,
    /// Groups a slot was reserved in (by [`GroupState::reserve`]).
    pub(crate) reserved: smallvec::SmallVec<[i64; 4]>,
    pub(crate) confirm: Confirm,
}

/// What the writer is asked to do.
pub(crate) enum Op {
    Publish(Publish),
    Lease {
        group: i64,
        max: usize,
        reply: Sender<Result<Vec<Leased>, TransportError>>,
    },
    Settle {
        token: u64,
        how: How,
    },
    Requeue {
        group: i64,
        envelope: Envelope,
        extra: Option<String>,
        reply: Sender<Result<(), Envelope>>,
    },
    Subscribe {
        topic: Topic,
        name: String,
        capacity: usize,
        overflow: OverflowPolicy,
        reply: Sender<Result<Arc<GroupState>, SqliteError>>,
    },
    /// Reads the groups' depths again (another process may have taken
    /// messages), then answers.
    Refresh(Sender<()>),
    /// Releases this open's leases and stops the writer.
    Close,
}

/// Counters of what the transport did, for tests and reports.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) expired: AtomicU64,
    pub(crate) commits: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SqliteConfig,
    pub(crate) clock: SharedWallClock,
    pub(crate) owner: i64,
    pub(crate) routes: RwLock<Routes>,
    pub(crate) closed: AtomicBool,
    /// Read-held by every submit, write-held by the close that sets
    /// `closed`: nothing is queued for the writer after its `Close`, so
    /// every operation handed over is answered.
    pub(crate) gate: RwLock<()>,
    pub(crate) tx: Sender<Op>,
    pub(crate) counters: Counters,
    /// Why the writer refuses writes, once a commit failed.
    pub(crate) poisoned: std::sync::Mutex<Option<String>>,
    /// Rows stored before this open (an earlier process's work) start
    /// below this; those handed out here, each once.
    pub(crate) fresh_from: i64,
    pub(crate) resumed: std::sync::Mutex<crate::resumed::SeqSet>,
    /// Test hook: the next batch fails before its commit (as on a full disk).
    #[cfg(test)]
    pub(crate) fail_next_batch: AtomicBool,
    /// Test hook: the next commit fails.
    #[cfg(test)]
    pub(crate) fail_next_commit: AtomicBool,
}

impl Shared {
    pub(crate) fn routes(&self) -> RwLockReadGuard<'_, Routes> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The test hooks' flags (none outside tests).
    pub(crate) fn fail_next_batch_flag(&self) -> Option<&AtomicBool> {
        #[cfg(test)]
        return Some(&self.fail_next_batch);
        #[cfg(not(test))]
        None
    }

    pub(crate) fn fail_next_commit_flag(&self) -> Option<&AtomicBool> {
        #[cfg(test)]
        return Some(&self.fail_next_commit);
        #[cfg(not(test))]
        None
    }

    pub(crate) fn poison_reason(&self) -> Option<String> {
        self.poisoned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn poison(&self, why: String) {
        let mut p = self.poisoned.lock().unwrap_or_else(PoisonError::into_inner);
        if p.is_none() {
            tracing::error!(reason = %why, "sqlite queue poisoned: refusing further writes");
            *p = Some(why);
        }
    }

    /// Hands `op` to the writer; gives it back if the writer is gone.
    pub(crate) fn submit(&self, op: Op) -> Result<(), Op> {
        let _open = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        if self.is_closed() {
            return Err(op);
        }
        self.tx.send(op).map_err(|e| e.into_inner())
    }

    /// Closes the gate and queues the writer's last operation; false if
    /// it was closed already.
    pub(crate) fn close(&self) -> bool {
        let _shut = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        if self.closed.swap(true, Ordering::AcqRel) {
            return false;
        }
        let _ = self.tx.send(Op::Close);
        true
    }
}
