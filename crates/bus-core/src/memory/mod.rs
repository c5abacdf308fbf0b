//! The embedded transport: in-process, bounded, with priority lanes,
//! consumer groups and a timer for delayed redeliveries.

mod queue;
mod timer;

use crate::time::{SharedClock, system_clock};
use crate::{
    Delivery, Envelope, PublishError, QueueDepth, Receipt, SubscribeOptions, Subscription, Topic,
    Transport, TransportError, Wake,
};
use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard};
use queue::{GroupQueue, GroupSettler, Reserved};
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
/// (then the publisher gets the message back in the error). A publish to
/// several groups may put a group a message past its bound when publishers
/// race for its last slots (see `fan_out`); the overflow policy applies once
/// a group is full. Delayed naks wait
/// on one timer thread, started by the first subscribe. Subscriptions can be
/// woken ([`Subscription::waker`]): an idle member sleeps until a message or
/// a wake-up comes, and costs no CPU.
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
    // `ArcSwap` load (a debt slot, a `SeqCst` swap, paying the debt back).
    routes: ShardedLock<Routes>,
    clock: SharedClock,
    /// Started by the first subscribe, which can report the OS refusing
    /// the thread (a constructor could only panic); only groups need it.
    timer: Mutex<Option<Timer>>,
    closed: AtomicBool,
}

struct Timer {
    handle: TimerHandle,
    thread: JoinHandle<()>,
}

impl Timer {
    /// Stops the thread and returns what it still held.
    fn stop(self) -> Vec<(Arc<str>, Envelope)> {
        let left = self.handle.close();
        let _ = self.thread.join();
        left
    }
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
    /// A transport on the system clock. It starts no thread until the
    /// first subscribe (see [`Transport::subscribe`]).
    pub fn new() -> Self {
        Self::with_clock(system_clock())
    }

    /// A transport whose delayed redeliveries follow `clock` (use a
    /// [`ManualClock`](crate::time::ManualClock) in tests).
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            routes: ShardedLock::new(Routes::default()),
            clock,
            timer: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    /// The timer's handle, starting its thread on first use.
    fn timer(&self) -> Result<TimerHandle, TransportError> {
        let mut timer = self.timer.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock that `close` takes the timer under: a
        // subscribe racing a close cannot start a second timer.
        if self.closed.load(Ordering::Acquire) {
            return Err(TransportError::Closed);
        }
        if let Some(t) = &*timer {
            return Ok(t.handle.clone());
        }
        let (handle, thread) =
            timer::spawn(Arc::clone(&self.clock)).map_err(TransportError::Spawn)?;
        *timer = Some(Timer {
            handle: handle.clone(),
            thread,
        });
        Ok(handle)
    }

    fn take_timer(&self) -> Option<Timer> {
        self.timer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
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
        let timer = self.timer()?;
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
            timer,
        });
        let group = Arc::new(Group { queue, settler });
        // Copied if a waiting publish still holds the old list.
        Arc::make_mut(routes.entry(topic.clone()).or_default()).push(Arc::clone(&group));
        Ok(group)
    }
}

/// Puts a copy of `envelope` in each of `groups` when none of them is full,
/// one short critical section per group and never two queue locks at once;
/// hands the envelope back, every queue as it was, when one is full or
/// closed ([`deliver`] then applies the overflow policies). A copy a group
/// closed mid-publish hands back is reported in the receipt.
///
/// "Full" is read from each group's hint, without its lock
/// ([`GroupQueue::has_room`]): a group that fills between that read and its
/// copy takes the copy past its bound ([`GroupQueue::requeue`] with no
/// limit), by at most
/// one message per publisher racing for its last slots, rather than break
/// the all-or-nothing. Holding every group's lock until all had room kept
/// the bound exact, but each consumer then waited on its lock while the
/// publisher took the others': 1to4 ran about 8 % slower (`ratios`, A/B).
///
/// Out of line: inlined, it made `publish` spill the one-group path's
/// envelope to the stack once more (about 55 instructions a message).
#[inline(never)]
fn fan_out(groups: &[Arc<Group>], envelope: Envelope) -> Result<Receipt, Envelope> {
    let Some((last, rest)) = groups.split_last() else {
        return Err(envelope);
    };
    if !groups.iter().all(|g| g.queue.has_room()) {
        return Err(envelope);
    }
    let mut receipt = Receipt::copies(u32::try_from(groups.len()).unwrap_or(u32::MAX));
    for g in rest {
        if let Err(copy) = g.queue.requeue(envelope.clone(), usize::MAX) {
            handed_back(&mut receipt, g, copy);
        }
    }
    // The last group gets the original: it moves once, into its lane.
    if let Err(copy) = last.queue.requeue(envelope, usize::MAX) {
        handed_back(&mut receipt, last, copy);
    }
    Ok(receipt)
}

/// Reports the copy `g` (closed mid-publish) handed back; only then is
/// its name's refcount, a line other threads touch, written.
#[cold]
fn handed_back(receipt: &mut Receipt, g: &Group, copy: Envelope) {
    let closed = &mut receipt.leftovers_mut().closed;
    closed.push((Arc::clone(&g.queue.name), copy));
}

/// Puts a copy of `envelope` in each of `groups`, all or nothing: room is
/// reserved in every group (waiting at most `timeout`) before any copy is
/// placed. A full queue whose policy accepts the publish anyway hands its
/// copy back in the receipt, as does an eviction: the bus settles them.
fn deliver(
    groups: &[Arc<Group>],
    envelope: Envelope,
    timeout: Duration,
) -> Result<Receipt, PublishError> {
    // Phase 1: reserve room in every group, so the publish is all or nothing.
    enum Slot {
        Reserved,
        Evicting,
        Full,
    }
    // Inline for up to eight groups (16 bytes a slot): a fan-out publish
    // allocates nothing here.
    let mut slots: smallvec::SmallVec<[Slot; 8]> = smallvec::SmallVec::new();
    for g in groups.iter() {
        let slot = match g.queue.reserve(envelope.priority, timeout) {
            Ok(Reserved::Free) => Slot::Reserved,
            Ok(Reserved::Evicting) => Slot::Evicting,
            Err(()) => match g.queue.overflow {
                crate::OverflowPolicy::DeadLetter | crate::OverflowPolicy::DiscardLowest => {
                    Slot::Full
                }
                _ => {
                    // Refused: give back what was reserved and hand the message back.
                    for (prev, s) in groups.iter().zip(slots) {
                        match s {
                            // Nothing was evicted yet: giving the slot
                            // back leaves every queued message in place.
                            Slot::Reserved | Slot::Evicting => prev.queue.unreserve(),
                            Slot::Full => {}
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
            Slot::Evicting => match g.queue.push_evicting(copy) {
                Ok(Some(victim)) => receipt.leftovers_mut().evicted.push((name(), victim)),
                Ok(None) => {}
                Err(copy) => receipt.leftovers_mut().closed.push((name(), copy)),
            },
            Slot::Full => receipt.leftovers_mut().full.push((name(), copy)),
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

impl Transport for MemoryTransport {
    fn publish(&self, envelope: Envelope, timeout: Duration) -> Result<Receipt, PublishError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::Closed { envelope });
        }
        let routes = self.routes();
        let Some(groups) = routes.get(&envelope.topic).filter(|g| !g.is_empty()) else {
            return Err(PublishError::NoSubscribers { envelope });
        };

        // The common case, every group has room: one lock round trip per
        // group, and for a single group the envelope moves once, into its
        // queue. Anything else (full, closed) takes the general path below,
        // which applies the overflow policy (a fan-out reads "full" from
        // a hint, see `fan_out`).
        if let [only] = groups.as_slice()
            && let Some(room) = only.queue.room()
        {
            room.push(envelope);
            return Ok(Receipt::copies(1));
        }
        let envelope = if groups.len() > 1 {
            match fan_out(groups, envelope) {
                Ok(receipt) => return Ok(receipt),
                Err(envelope) => envelope,
            }
        } else {
            envelope
        };

        // What follows may wait for room: not with the table locked (a
        // subscribe would wait, and new publishes queue behind a waiting writer).
        let groups = Arc::clone(groups);
        drop(routes);
        deliver(&groups, envelope, timeout)
    }

    fn publish_to_group(
        &self,
        group: &str,
        envelope: Envelope,
        timeout: Duration,
    ) -> Result<Receipt, PublishError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::Closed { envelope });
        }
        let routes = self.routes();
        let Some(target) = find(&routes, &envelope.topic, group) else {
            return Err(PublishError::NoSuchGroup {
                envelope,
                group: group.to_owned(),
            });
        };
        let target = Arc::clone(target);
        drop(routes);
        // One group is a fan-out of one: the same reservation, overflow
        // policy and leftovers as any publish.
        deliver(std::slice::from_ref(&target), envelope, timeout)
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
        Ok(Box::new(MemorySubscription {
            group,
            woken: Arc::default(),
            flowing: false,
        }))
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
                in_flight: g.queue.in_flight(),
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
            // One capacity's worth past the bound: a store that refuses
            // for long must not let the queue grow without limit.
            Some(g) => g
                .queue
                .requeue(envelope, g.queue.capacity.saturating_mul(2)),
            None => Err(envelope),
        }
    }

    fn waits_only_for_room(&self) -> bool {
        true
    }

    /// Woken by the group's next take (or its close), not by a timer.
    fn poll_room(
        &self,
        topic: &Topic,
        group: &str,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), TransportError>> {
        match find(&self.routes(), topic, group) {
            Some(g) => g.queue.poll_room(cx).map(Ok),
            None => std::task::Poll::Ready(Ok(())),
        }
    }

    fn close(&self) -> Vec<(Arc<str>, Envelope)> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Vec::new();
        }
        let mut left = self.take_timer().map(Timer::stop).unwrap_or_default();
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
        if let Some(timer) = self.take_timer() {
            let _ = timer.stop();
        }
    }
}

struct MemorySubscription {
    group: Arc<Group>,
    /// Set by this subscription's [`Wake`], cleared by the wait it ends.
    woken: Arc<AtomicBool>,
    /// Whether the last `next` found a message (see [`GroupQueue::pop`]).
    flowing: bool,
}

impl Subscription for MemorySubscription {
    fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        let got = self.group.queue.pop(timeout, self.flowing, &self.woken);
        self.flowing = got.is_some();
        match got {
            Some(env) => {
                let settler: Arc<dyn crate::Settle> = self.group.settler.clone();
                Ok(Some(Delivery::new(env, 0, settler)))
            }
            None if self.group.queue.is_closed() => Err(TransportError::Closed),
            None => Ok(None),
        }
    }

    fn waker(&self) -> Option<Wake> {
        let queue = Arc::clone(&self.group.queue);
        let woken = Arc::clone(&self.woken);
        Some(Wake::new(move || {
            woken.store(true, Ordering::SeqCst);
            queue.wake_consumers();
        }))
    }
}

#[cfg(test)]
mod tests;
