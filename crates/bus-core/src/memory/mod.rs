//! The embedded transport: in-process, bounded, with priority lanes,
//! consumer groups and a timer for delayed redeliveries.

mod queue;
mod timer;

use crate::time::{SharedClock, system_clock};
use crate::{
    Delivery, Envelope, PublishError, QueueDepth, Receipt, SubscribeOptions, Subscription, Topic,
    Transport, TransportError,
};
use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard};
use queue::{GroupQueue, GroupSettler};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;
use timer::TimerHandle;

struct Group {
    queue: Arc<GroupQueue>,
    settler: Arc<GroupSettler>,
}

/// Topic to groups. Hashed with foldhash: every publish looks its topic up,
/// and SipHash was a visible share of a publish. The group lists are shared
/// so that a publish that has to wait for room can take its list along
/// without holding the table's lock.
type Routes = HashMap<Topic, Arc<Vec<Arc<Group>>>, foldhash::fast::RandomState>;

/// The group named `name` of `topic`, if it exists.
fn find<'a>(routes: &'a Routes, topic: &Topic, name: &str) -> Option<&'a Arc<Group>> {
    routes
        .get(topic)
        .and_then(|gs| gs.iter().find(|g| *g.queue.name == *name))
}

/// The in-process [`Transport`]: the embedded default.
///
/// Each consumer group of a topic has its own bounded queue with four
/// priority lanes; members of a group compete for its messages, and every
/// group gets a copy of every message. A group's queue outlives its members,
/// so a subscriber that closes and comes back finds what was published
/// meanwhile. A publish either reaches every group of the topic or none
/// (then the publisher gets the message back in the error). Delayed naks wait
/// on one timer thread.
///
/// ```
/// use bus_core::memory::MemoryTransport;
/// use bus_core::{Envelope, SubscribeOptions, Topic, Transport};
/// use std::time::Duration;
///
/// let transport = MemoryTransport::new();
/// let topic = Topic::new("orders").unwrap();
/// let mut sub = transport.subscribe(&topic, &SubscribeOptions::group("billing")).unwrap();
/// transport.publish(Envelope::new(topic, &b"hi"[..]), Duration::from_secs(1)).unwrap();
/// let delivery = sub.next(Duration::from_secs(1)).unwrap().unwrap();
/// assert_eq!(&delivery.envelope().payload[..], b"hi");
/// delivery.ack();
/// ```
pub struct MemoryTransport {
    // Read on every publish, written by subscribe (rare). A sharded lock:
    // each thread read-locks a shard of its own, so publishers on several
    // threads touch no common line, and the read costs a fraction of an
    // `ArcSwap` load (a debt slot, a `SeqCst` swap, paying the debt back:
    // about 110 instructions of a publish).
    routes: ShardedLock<Routes>,
    timer: TimerHandle,
    timer_thread: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("topics", &self.routes().len())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTransport {
    /// A transport on the system clock.
    ///
    /// # Panics
    /// If the timer thread cannot be spawned (the OS is out of threads).
    pub fn new() -> Self {
        Self::with_clock(system_clock())
    }

    /// A transport whose delayed redeliveries follow `clock` (use a
    /// [`ManualClock`](crate::time::ManualClock) in tests).
    ///
    /// # Panics
    /// If the timer thread cannot be spawned.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self::try_with_clock(clock)
            .unwrap_or_else(|e| panic!("cannot spawn the bus timer thread: {e}"))
    }

    /// Like [`with_clock`](Self::with_clock), returning an error instead of panicking.
    pub fn try_with_clock(clock: SharedClock) -> std::io::Result<Self> {
        let (timer, join) = timer::spawn(clock)?;
        Ok(Self {
            routes: ShardedLock::new(Routes::default()),
            timer,
            timer_thread: Mutex::new(Some(join)),
            closed: AtomicBool::new(false),
        })
    }

    fn routes(&self) -> ShardedLockReadGuard<'_, Routes> {
        // Nothing panics while the table is write-locked.
        self.routes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn group(
        &self,
        topic: &Topic,
        options: &SubscribeOptions,
    ) -> Result<Arc<Group>, TransportError> {
        if options.group.is_empty() {
            return Err(TransportError::InvalidOptions("group name is empty".into()));
        }
        if options.capacity == 0 {
            return Err(TransportError::InvalidOptions(
                "capacity must be at least 1".into(),
            ));
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = find(&routes, topic, &options.group) {
            return Ok(Arc::clone(existing));
        }
        let queue = Arc::new(GroupQueue::new(
            topic.clone(),
            &options.group,
            options.capacity,
            options.overflow,
        ));
        let settler = Arc::new(GroupSettler {
            group: Arc::clone(&queue),
            timer: self.timer.clone(),
        });
        let group = Arc::new(Group { queue, settler });
        // Copied if a waiting publish still holds the old list.
        Arc::make_mut(routes.entry(topic.clone()).or_default()).push(Arc::clone(&group));
        Ok(group)
    }
}

impl Transport for MemoryTransport {
    fn publish(&self, envelope: Envelope, timeout: Duration) -> Result<Receipt, PublishError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::Closed { envelope });
        }
        let routes = self.routes();
        let Some(groups) = routes.get(&envelope.topic).filter(|g| !g.is_empty()) else {
            return Err(PublishError::NoSubscribers { envelope });
        };

        // The common case, a topic with one group that has room: one lock
        // round trip, and the envelope moves once, into the queue. Anything
        // else (full, closed) takes the general path below, which applies
        // the overflow policy.
        if let [only] = groups.as_slice()
            && let Some(room) = only.queue.room()
        {
            room.push(envelope);
            return Ok(Receipt::copies(1));
        }

        // What follows may wait for room: not with the table locked (a
        // subscribe would wait, and new publishes queue behind a waiting writer).
        let groups = Arc::clone(groups);
        drop(routes);

        // Phase 1: reserve room in every group, so the publish is all or nothing.
        enum Slot {
            Reserved,
            // Boxed: evictions are rare, and a slot the size of an envelope
            // would be copied on every push and iteration.
            Evicted(Box<Envelope>),
            Spill,
            Discard,
        }
        // Inline for up to eight groups (16 bytes a slot): a fan-out publish
        // allocates nothing here. With two inline, every publish to four
        // groups allocated and freed the list (about 190 instructions).
        let mut slots: smallvec::SmallVec<[Slot; 8]> = smallvec::SmallVec::new();
        for g in groups.iter() {
            let slot = match g.queue.reserve(envelope.priority, timeout) {
                Ok(None) => Slot::Reserved,
                Ok(Some(victim)) => Slot::Evicted(Box::new(victim)),
                Err(()) => match g.queue.overflow {
                    crate::OverflowPolicy::DeadLetter => Slot::Spill,
                    crate::OverflowPolicy::DiscardLowest => Slot::Discard,
                    _ => {
                        // Refused: give back what was reserved and hand the message back.
                        for (prev, s) in groups.iter().zip(slots) {
                            match s {
                                Slot::Reserved => prev.queue.unreserve(),
                                // The evicted message cannot be un-evicted into its
                                // old place; re-enqueue it (it keeps its slot).
                                Slot::Evicted(victim) => {
                                    if let Err(victim) = prev.queue.push_reserved(*victim) {
                                        tracing::error!(message_id = %victim.id, group = %prev.queue.name, "a message evicted for a refused publish found its queue closed and is dropped");
                                    }
                                }
                                Slot::Spill | Slot::Discard => {}
                            }
                        }
                        return Err(PublishError::QueueFull {
                            envelope,
                            group: g.queue.name.to_string(),
                        });
                    }
                },
            };
            slots.push(slot);
        }

        // Phase 2: hand out copies (the last group gets the original, so a
        // single group moves the message straight into its queue).
        let mut receipt = Receipt::copies(u32::try_from(groups.len()).unwrap_or(u32::MAX));
        let place = |g: &Group, slot: Slot, copy: Envelope, receipt: &mut Receipt| {
            // The group's name is cloned only for the receipt: its refcount is
            // a line other threads touch, and the common case needs no name.
            let name = || Arc::clone(&g.queue.name);
            match slot {
                Slot::Reserved => {
                    if let Err(copy) = g.queue.push_reserved(copy) {
                        receipt.leftovers_mut().closed.push((name(), copy));
                    }
                }
                Slot::Evicted(victim) => {
                    if let Err(copy) = g.queue.push_reserved(copy) {
                        receipt.leftovers_mut().closed.push((name(), copy));
                    }
                    receipt.leftovers_mut().discarded.push((name(), *victim));
                }
                Slot::Spill => receipt.leftovers_mut().spilled.push((name(), copy)),
                Slot::Discard => receipt.leftovers_mut().discarded.push((name(), copy)),
            }
        };
        let mut slots = slots.into_iter();
        let (last, rest) = groups
            .split_last()
            .unwrap_or_else(|| unreachable!("groups is not empty"));
        for (g, slot) in rest.iter().zip(&mut slots) {
            place(g, slot, envelope.clone(), &mut receipt);
        }
        if let Some(slot) = slots.next() {
            place(last, slot, envelope, &mut receipt);
        }
        Ok(receipt)
    }

    fn subscribe(
        &self,
        topic: &Topic,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        let group = self.group(topic, options)?;
        Ok(Box::new(MemorySubscription { group }))
    }

    fn queue_depths(&self) -> Vec<QueueDepth> {
        let routes = self.routes();
        let mut out: Vec<QueueDepth> = routes
            .values()
            .flat_map(|gs| gs.iter())
            .map(|g| QueueDepth {
                topic: g.queue.topic.to_string(),
                group: g.queue.name.to_string(),
                depth: g.queue.depth(),
                capacity: g.queue.capacity,
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, &a.group).cmp(&(&b.topic, &b.group)));
        out
    }

    fn requeue(&self, group: &str, envelope: Envelope) -> Result<(), Envelope> {
        if self.closed.load(Ordering::Acquire) {
            return Err(envelope);
        }
        match find(&self.routes(), &envelope.topic, group) {
            Some(g) => g.queue.requeue(envelope),
            None => Err(envelope),
        }
    }

    fn close(&self) -> Vec<(Arc<str>, Envelope)> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Vec::new();
        }
        let mut left = self.timer.close();
        if let Some(join) = self
            .timer_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = join.join();
        }
        for g in self.routes().values().flat_map(|gs| gs.iter()) {
            let name = &g.queue.name;
            left.extend(g.queue.drain().into_iter().map(|e| (Arc::clone(name), e)));
        }
        left
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        // Stop the timer thread; anything still parked is released into its
        // queue (and dropped with it, as the owner chose not to close).
        if let Some(join) = self
            .timer_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = self.timer.close();
            let _ = join.join();
        }
    }
}

struct MemorySubscription {
    group: Arc<Group>,
}

impl Subscription for MemorySubscription {
    fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        match self.group.queue.pop(timeout) {
            Some(env) => {
                let settler: Arc<dyn crate::Settle> = self.group.settler.clone();
                Ok(Some(Delivery::new(env, 0, settler)))
            }
            None if self.group.queue.is_closed() => Err(TransportError::Closed),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests;
