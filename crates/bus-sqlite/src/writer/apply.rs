//! One group-commit transaction: the SQL of each operation, and the
//! answers held back until the commit is known.

mod delivery;

use super::refuse;
use crate::group::GroupState;
use crate::row::{ENVELOPE_COLUMNS, decode, nanos_of, prio_of};
use crate::shared::{Leased, Op, Publish, Shared};
use bus_core::{Confirm, Envelope, OverflowPolicy, PublishError, Receipt, TransportError};
use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// How a batch changed one group, applied to its [`GroupState`] and its
/// row of `groups` in the same commit.
#[derive(Debug, Default)]
struct Delta {
    depth: i64,
    published: i64,
    acked: i64,
    terminated: i64,
    evicted: i64,
    /// Reserved slots filled.
    used: usize,
    /// Copies placed without a reservation.
    unreserved: i64,
    /// Messages became ready: wake the group's members.
    woke: bool,
}

enum Placed {
    Stored(Receipt),
    NoSubscribers,
    NoSuchGroup(String),
}

/// An answer waiting for the commit.
enum Answer {
    Confirm {
        confirm: Confirm,
        envelope: Envelope,
        reserved: smallvec::SmallVec<[i64; 4]>,
        placed: Option<Placed>,
    },
    Lease {
        reply: crossbeam_channel::Sender<Result<Vec<Leased>, TransportError>>,
        rows: Vec<Leased>,
    },
    Requeue {
        reply: crossbeam_channel::Sender<Result<(), Envelope>>,
        envelope: Envelope,
        stored: bool,
    },
    Subscribe {
        reply: crossbeam_channel::Sender<Result<Arc<GroupState>, crate::SqliteError>>,
        id: i64,
    },
    /// Someone waits for the transaction to end, whatever it did.
    Done(crossbeam_channel::Sender<()>),
}

pub(super) struct Batch<'a> {
    shared: &'a Shared,
    now: i64,
    deltas: HashMap<i64, Delta>,
    answers: Vec<Answer>,
    /// Operations not run because an earlier one failed.
    unapplied: Vec<Op>,
    groups_changed: bool,
}

impl<'a> Batch<'a> {
    pub(super) fn new(shared: &'a Shared, now: i64) -> Self {
        Self {
            shared,
            now,
            deltas: HashMap::new(),
            answers: Vec::new(),
            unapplied: Vec::new(),
            groups_changed: false,
        }
    }

    pub(super) fn groups_changed(&self) -> bool {
        self.groups_changed
    }

    fn delta(&mut self, group: i64) -> &mut Delta {
        self.deltas.entry(group).or_default()
    }

    /// Returns due redeliveries and expired leases to their queues, then
    /// runs every operation; stops at the first SQL error (the caller
    /// rolls back and fails the whole batch).
    pub(super) fn apply(&mut self, conn: &Connection, ops: Vec<Op>) -> rusqlite::Result<()> {
        self.housekeep(conn)?;
        let mut ops = ops.into_iter();
        while let Some(op) = ops.next() {
            if let Err(e) = self.one(conn, op) {
                self.unapplied.extend(ops);
                return Err(e);
            }
        }
        Ok(())
    }

    fn housekeep(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut due = conn.prepare_cached(
            "UPDATE messages SET due = 0 WHERE owner IS NULL AND due > 0 AND due <= ?1 \
             RETURNING grp",
        )?;
        let groups: Vec<i64> = due
            .query_map([self.now], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for g in groups {
            self.delta(g).woke = true;
        }
        let mut expired = conn.prepare_cached(
            "UPDATE messages SET owner = NULL, lease_until = NULL \
             WHERE owner IS NOT NULL AND lease_until <= ?1 RETURNING grp",
        )?;
        let groups: Vec<i64> = expired
            .query_map([self.now], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        self.shared
            .counters
            .expired
            .fetch_add(groups.len() as u64, Ordering::Relaxed);
        for g in groups {
            let d = self.delta(g);
            d.depth += 1;
            d.woke = true;
        }
        Ok(())
    }

    fn one(&mut self, conn: &Connection, op: Op) -> rusqlite::Result<()> {
        match op {
            Op::Publish(p) => {
                let (result, placed) = split(self.publish(conn, &p));
                let Publish {
                    envelope,
                    confirm,
                    reserved,
                    ..
                } = p;
                self.answers.push(Answer::Confirm {
                    confirm,
                    envelope,
                    reserved,
                    placed,
                });
                result
            }
            Op::Lease { group, max, reply } => {
                let (result, rows) = split(self.lease(conn, group, max));
                self.answers.push(Answer::Lease {
                    reply,
                    rows: rows.unwrap_or_default(),
                });
                result
            }
            Op::Settle { token, how } => self.settle(conn, token, how),
            Op::Requeue {
                group,
                envelope,
                extra,
                reply,
            } => {
                let (result, stored) =
                    split(self.requeue(conn, group, &envelope, extra.as_deref()));
                self.answers.push(Answer::Requeue {
                    reply,
                    envelope,
                    stored: stored.unwrap_or(false),
                });
                result
            }
            Op::Subscribe {
                topic,
                name,
                capacity,
                overflow,
                reply,
            } => {
                let (result, id) = split(subscribe(conn, &topic, &name, capacity, overflow));
                self.answers.push(Answer::Subscribe {
                    reply,
                    id: id.unwrap_or(0),
                });
                // The new group must be routable before the subscribe is answered.
                self.groups_changed = true;
                result
            }
            Op::Refresh(reply) => {
                // The transaction's start read the depths again.
                self.answers.push(Answer::Done(reply));
                Ok(())
            }
            Op::Close => {
                let mut stmt = conn.prepare_cached(
                    "UPDATE messages SET owner = NULL, lease_until = NULL \
                     WHERE owner = ?1 RETURNING grp",
                )?;
                let groups: Vec<i64> = stmt
                    .query_map([self.shared.owner], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                for g in groups {
                    let d = self.delta(g);
                    d.depth += 1;
                    d.woke = true;
                }
                Ok(())
            }
        }
    }

    fn insert(
        &mut self,
        conn: &Connection,
        group: i64,
        env: &Envelope,
        extra: Option<&str>,
    ) -> rusqlite::Result<()> {
        conn.prepare_cached(
            "INSERT INTO messages (grp, prio, id, created_ns, attempt, extra, payload) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            group,
            prio_of(env.priority),
            env.id.as_bytes().as_slice(),
            nanos_of(env.created_at),
            i64::from(env.attempt),
            extra,
            &env.payload[..]
        ])?;
        let d = self.delta(group);
        d.depth += 1;
        d.published += 1;
        d.woke = true;
        Ok(())
    }

    fn publish(&mut self, conn: &Connection, p: &Publish) -> rusqlite::Result<Placed> {
        let routes = self.shared.routes();
        let groups: Vec<Arc<GroupState>> = match &p.group {
            None => routes
                .by_topic
                .get(&p.envelope.topic)
                .cloned()
                .unwrap_or_default(),
            Some(name) => routes
                .find(&p.envelope.topic, name)
                .cloned()
                .into_iter()
                .collect(),
        };
        drop(routes);
        if groups.is_empty() {
            return Ok(match &p.group {
                None => Placed::NoSubscribers,
                Some(name) => Placed::NoSuchGroup(name.clone()),
            });
        }
        let env = &p.envelope;
        let extra = p.extra.as_deref();
        let mut receipt = Receipt::copies(u32::try_from(groups.len()).unwrap_or(u32::MAX));
        for g in &groups {
            let reserved = p.reserved.contains(&g.id);
            let pending = self.delta(g.id).unreserved;
            // A group that refuses when full but reserved nothing appeared
            // after the publish looked (another process's): placed past
            // its bound rather than refuse half a published message.
            if reserved || g.refuses_when_full() || g.has_room(pending) {
                self.insert(conn, g.id, env, extra)?;
                let d = self.delta(g.id);
                if reserved {
                    d.used += 1;
                } else {
                    d.unreserved += 1;
                }
                continue;
            }
            let evicted = match g.overflow {
                OverflowPolicy::DiscardLowest => self.evict(conn, g, env)?,
                _ => None,
            };
            match evicted {
                Some(victim) => {
                    self.insert(conn, g.id, env, extra)?;
                    let d = self.delta(g.id);
                    d.depth -= 1;
                    d.evicted += 1;
                    receipt
                        .leftovers_mut()
                        .evicted
                        .push((Arc::clone(&g.name), victim));
                }
                None => receipt
                    .leftovers_mut()
                    .full
                    .push((Arc::clone(&g.name), env.clone())),
            }
        }
        Ok(Placed::Stored(receipt))
    }

    /// Deletes the oldest message of the lowest lane below `env`'s
    /// priority that nobody holds, and returns it.
    fn evict(
        &mut self,
        conn: &Connection,
        g: &GroupState,
        env: &Envelope,
    ) -> rusqlite::Result<Option<Envelope>> {
        let mut stmt = conn.prepare_cached(&format!(
            "DELETE FROM messages WHERE seq = (SELECT seq FROM messages \
             WHERE grp = ?1 AND owner IS NULL AND prio < ?2 ORDER BY prio, seq LIMIT 1) \
             RETURNING {ENVELOPE_COLUMNS}"
        ))?;
        let mut rows = stmt.query(params![g.id, prio_of(env.priority)])?;
        match rows.next()? {
            Some(row) => Ok(Some(decode(&g.topic, row, 0)?)),
            None => Ok(None),
        }
    }

    /// Writes each group's counters, in the batch's transaction.
    pub(super) fn write_counts(&self, conn: &Connection) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(
            "UPDATE groups SET depth = max(depth + ?2, 0), published = published + ?3, \
             acked = acked + ?4, terminated = terminated + ?5, evicted = evicted + ?6 \
             WHERE id = ?1",
        )?;
        for (id, d) in &self.deltas {
            if d.depth != 0 || d.published != 0 || d.acked != 0 || d.terminated != 0 {
                stmt.execute(params![
                    id,
                    d.depth,
                    d.published,
                    d.acked,
                    d.terminated,
                    d.evicted
                ])?;
            }
        }
        Ok(())
    }

    /// The commit succeeded: updates the groups and answers everyone.
    pub(super) fn succeed(self, shared: &Shared) {
        let routes = shared.routes();
        let mut woke = Vec::new();
        for (id, d) in &self.deltas {
            if let Some(g) = routes.by_id.get(id) {
                g.committed(d.used, d.depth);
                if d.woke {
                    woke.push(Arc::clone(g));
                }
            }
        }
        let subscribed: Vec<_> = self
            .answers
            .iter()
            .filter_map(|a| match a {
                Answer::Subscribe { id, .. } => Some((*id, routes.by_id.get(id).cloned())),
                _ => None,
            })
            .collect();
        drop(routes);
        let mut subscribed = subscribed.into_iter();
        for answer in self.answers {
            match answer {
                Answer::Confirm {
                    confirm,
                    envelope,
                    reserved,
                    placed,
                } => confirm.resolve(match placed {
                    Some(Placed::Stored(receipt)) => Ok(receipt),
                    Some(Placed::NoSuchGroup(group)) => {
                        unreserve(shared, &reserved);
                        Err(PublishError::NoSuchGroup { envelope, group })
                    }
                    _ => {
                        unreserve(shared, &reserved);
                        Err(PublishError::NoSubscribers { envelope })
                    }
                }),
                Answer::Lease { reply, rows } => {
                    let _ = reply.send(Ok(rows));
                }
                Answer::Requeue {
                    reply,
                    envelope,
                    stored,
                } => {
                    let _ = reply.send(if stored { Ok(()) } else { Err(envelope) });
                }
                Answer::Done(reply) => {
                    let _ = reply.send(());
                }
                Answer::Subscribe { reply, id } => {
                    let group = subscribed.next().and_then(|(_, g)| g);
                    let _ = reply.send(group.ok_or_else(|| {
                        crate::SqliteError::Corrupt(format!(
                            "group {id} vanished after its subscribe"
                        ))
                    }));
                }
            }
        }
        for g in woke {
            g.bump();
        }
    }

    /// The transaction was rolled back: nothing of it happened.
    pub(super) fn fail(self, why: &str) {
        let shared = self.shared;
        for answer in self.answers {
            match answer {
                Answer::Confirm {
                    confirm,
                    envelope,
                    reserved,
                    ..
                } => {
                    unreserve(shared, &reserved);
                    confirm.resolve(Err(PublishError::Transport {
                        envelope,
                        source: TransportError::Other(why.to_owned().into()),
                    }));
                }
                Answer::Lease { reply, .. } => {
                    let _ = reply.send(Err(TransportError::Other(why.to_owned().into())));
                }
                Answer::Requeue {
                    reply, envelope, ..
                } => {
                    let _ = reply.send(Err(envelope));
                }
                Answer::Subscribe { reply, .. } => {
                    let _ = reply.send(Err(crate::SqliteError::Failed(why.to_owned())));
                }
                Answer::Done(reply) => {
                    let _ = reply.send(());
                }
            }
        }
        for op in self.unapplied {
            refuse(shared, op, why, false);
        }
    }
}

/// Gives back the slots a publish reserved.
pub(super) fn unreserve(shared: &Shared, groups: &[i64]) {
    let routes = shared.routes();
    for id in groups {
        if let Some(g) = routes.by_id.get(id) {
            g.unreserve(1);
        }
    }
}

/// An operation's outcome as the error that stops the batch and the
/// value its answer carries.
fn split<T>(r: rusqlite::Result<T>) -> (rusqlite::Result<()>, Option<T>) {
    match r {
        Ok(v) => (Ok(()), Some(v)),
        Err(e) => (Err(e), None),
    }
}

/// Creates the group if it is new (a group keeps the bound it was created
/// with) and returns its id.
fn subscribe(
    conn: &Connection,
    topic: &bus_core::Topic,
    name: &str,
    capacity: usize,
    overflow: OverflowPolicy,
) -> rusqlite::Result<i64> {
    let overflow = serde_json::to_string(&overflow).unwrap_or_default();
    conn.prepare_cached(
        "INSERT OR IGNORE INTO groups (topic, name, capacity, overflow) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        topic.as_str(),
        name,
        i64::try_from(capacity).unwrap_or(i64::MAX),
        overflow
    ])?;
    conn.prepare_cached("SELECT id FROM groups WHERE topic = ?1 AND name = ?2")?
        .query_row(params![topic.as_str(), name], |r| r.get(0))
}
