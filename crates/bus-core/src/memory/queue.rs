//! One consumer group's queue: four priority lanes with one shared bound.
//!
//! The lanes, the bound's count and who is waiting live under one mutex: a
//! publish or a take is one short critical section (a `VecDeque` push or
//! pop), and the all-or-nothing, eviction and bound rules are plain code on
//! plain integers. Lanes reuse their buffers, so a steady stream allocates
//! nothing. A consumer that finds the queue empty just after taking a
//! message checks an atomic hint between yields of its core before it
//! sleeps, so a publisher of a steady stream rarely has to wake it with a
//! syscall; an idle consumer sleeps until a message or a wake-up comes. Blocked
//! publishers are woken when the queue has drained to half.

use super::timer::TimerHandle;
use crate::{Envelope, OverflowPolicy, Priority, Settle, Topic};
use bus_sync::line::LineMutex;
use crossbeam_utils::CachePadded;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Condvar, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How many times a consumer whose stream has paused yields its core
/// before it sleeps.
const IDLE_YIELDS: u32 = 50;

/// The longest a blocked publisher sleeps before re-checking for room.
const WAIT_SLICE: Duration = Duration::from_millis(1);

pub(super) struct GroupQueue {
    pub(super) topic: Topic,
    pub(super) name: Arc<str>,
    pub(super) capacity: usize,
    pub(super) overflow: OverflowPolicy,
    /// Starts a line whatever the field order, and the condvars after it
    /// stay off that line (see [`Lanes`]).
    state: LineMutex<Lanes>,
    /// Consumers wait here for a message.
    ready: Condvar,
    /// Publishers wait here for room.
    space: Condvar,
    /// Whether the lanes hold a message, mirrored outside the lock for
    /// waiting consumers: set by the push that makes them non-empty (just
    /// after it unlocks, see `unlock_and_flag`), cleared under the lock by
    /// the take that empties them and by `drain`. Only those two edges
    /// write it: a count stored by every push and take moved this line
    /// between the publisher's core and the consumer's twice per message
    /// while the queue was backed up, and nobody reads more than "any?". A
    /// hint, never trusted: a consumer that sees it set takes under the
    /// lock, and one that sleeps registers under the lock, so it is stored
    /// relaxed (a `SeqCst` store is a locked `xchg` on x86). On a line of its
    /// own, so a waiting consumer's reads of it do not pull the lock's line from the
    /// publisher.
    nonempty: CachePadded<AtomicBool>,
    /// Whether the queue is at or past its bound, mirrored outside the lock
    /// for fan-out publishes (see [`has_room`](Self::has_room)). Written
    /// under the lock, only when the depth crosses the bound
    /// ([`grow`](Self::grow), [`shrink`](Self::shrink)), so while a queue has room its line
    /// stays shared in every publisher's cache.
    full: CachePadded<AtomicBool>,
    /// Deliveries settled (acked, naked or termed): what [`Lanes::taken`]
    /// counts out, this counts back in. On a line of its own, written by
    /// whoever settles, so a take's lock line does not move for it.
    settled: CachePadded<AtomicUsize>,
    parked: AtomicUsize,
    closed: AtomicBool,
}

/// A slot [`GroupQueue::reserve`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reserved {
    /// Within the bound: fill it with [`GroupQueue::push_reserved`].
    Free,
    /// Past the bound, to be paid back by evicting a lower-priority message:
    /// fill it with [`GroupQueue::push_evicting`].
    Evicting,
}

/// One slot reserved in a [`GroupQueue`], with its lock held (see
/// [`GroupQueue::room`]). Dropped unfilled, it gives the slot back.
pub(super) struct Room<'a> {
    queue: &'a GroupQueue,
    st: Option<MutexGuard<'a, Lanes>>,
}

impl Room<'_> {
    /// Fills the slot and releases the lock. Always inlined: called out of
    /// line, the envelope (184 bytes) is copied once more on the way in.
    #[inline(always)]
    pub(super) fn push(mut self, env: Envelope) {
        let Some(st) = self.st.as_mut() else { return };
        // Enqueued through the guard still in place: a push that panics
        // (allocation) leaves the slot for `drop` to give back.
        let first = self.queue.enqueue(st, env);
        if let Some(st) = self.st.take() {
            self.queue.unlock_and_flag(st, first);
        }
    }
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        if let Some(st) = &mut self.st {
            self.queue.shrink(st, 1);
            self.queue.wake_publishers(st);
        }
    }
}

/// The state under the queue's lock. Laid out so that what a steady stream
/// writes on every push and take (the lock word just before this struct,
/// the normal lane's head and length, `depth`) shares one cache line with
/// the counts both sides read: a message then moves that one line between
/// the publisher's core and the consumer's, not three. The other lanes and
/// the signalled flags are only read while the stream is steady, so their
/// line stays shared in both caches. (This counts on [`LineMutex`] putting
/// the data right after the lock word.)
#[derive(Default)]
#[repr(C)]
struct Lanes {
    /// Slots taken: messages in the lanes plus reservations not yet filled.
    /// Forced pushes (redeliveries) may take it past the capacity.
    depth: usize,
    /// Threads asleep waiting: 32 bits each, so that both counts, `depth`,
    /// `taken` and the normal lane fit the lock's line.
    consumers_waiting: u32,
    publishers_waiting: u32,
    /// Messages ever handed to a consumer (see [`GroupQueue::in_flight`]);
    /// counted under the lock a take holds anyway.
    taken: usize,
    /// By [`SLOT`]: the normal lane first, next to the counts above.
    lanes: [VecDeque<Envelope>; 4],
    /// Wake-ups sent to waiting consumers that none of them has used yet.
    /// A push signals only while waiters outnumber them: a consumer that
    /// was woken but has not run yet (its core is busy, common on a loaded
    /// machine) would otherwise cost every push in between a futex call.
    consumers_signalled: u32,
    /// Whether the publishers waiting now were all woken already (reset by
    /// each publisher that starts waiting): the takes that drain the queue
    /// further before a woken publisher runs need not wake it again.
    publishers_signalled: bool,
    /// Notifies sent to consumers and to publishers, for tests of the above.
    #[cfg(test)]
    notified: (usize, usize),
    /// Tasks awaiting room ([`GroupQueue::poll_room`]), counted in
    /// `publishers_waiting` too, so a take looks for them only behind the
    /// check it makes anyway. Last: the hot line above keeps its layout.
    room_wakers: Vec<Waker>,
}

/// Where each priority's lane sits in [`Lanes::lanes`], by
/// [`Priority::index`]: normal first (see [`Lanes`]).
const SLOT: [usize; 4] = [1, 0, 2, 3];

/// Lane slots from the highest priority to the lowest: the order of takes,
/// and of the leftovers `drain` hands back at close.
const TAKE_ORDER: [usize; 4] = [SLOT[3], SLOT[2], SLOT[1], SLOT[0]];

impl Lanes {
    fn queued(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    fn lane(&mut self, priority: Priority) -> &mut VecDeque<Envelope> {
        &mut self.lanes[SLOT[priority.index()]]
    }
}

impl GroupQueue {
    pub(super) fn new(topic: Topic, name: &str, capacity: usize, overflow: OverflowPolicy) -> Self {
        Self {
            topic,
            name: Arc::from(name),
            capacity: capacity.max(1),
            overflow,
            state: LineMutex::new(Lanes::default()),
            ready: Condvar::new(),
            space: Condvar::new(),
            nonempty: CachePadded::new(AtomicBool::new(false)),
            full: CachePadded::new(AtomicBool::new(false)),
            settled: CachePadded::new(AtomicUsize::new(0)),
            parked: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lanes> {
        // The critical sections cannot panic half-way through an update.
        self.state.lock()
    }

    /// Messages queued plus those waiting for a delayed redelivery.
    pub(super) fn depth(&self) -> usize {
        self.lock().depth + self.parked.load(SeqCst)
    }

    /// Messages handed to consumers and not settled yet.
    pub(super) fn in_flight(&self) -> usize {
        // Settled is read after taken: a settle counted in between can
        // only make the answer smaller, never wrap it.
        let taken = self.lock().taken;
        taken.saturating_sub(self.settled.load(SeqCst))
    }

    /// Counts a delivery settled (see [`in_flight`](Self::in_flight)).
    pub(super) fn settled_one(&self) {
        self.settled.fetch_add(1, Relaxed);
    }

    /// Takes one more slot, setting the [`full`](Self::full) hint when
    /// that reaches the bound. Every change of `depth` goes through here or
    /// [`shrink`](Self::shrink).
    #[inline]
    fn grow(&self, st: &mut Lanes) {
        st.depth += 1;
        if st.depth == self.capacity {
            self.full.store(true, Relaxed);
        }
    }

    /// Gives back `n` slots, clearing the [`full`](Self::full) hint when
    /// that leaves room.
    #[inline]
    fn shrink(&self, st: &mut Lanes, n: usize) {
        let was_full = st.depth >= self.capacity;
        st.depth -= n;
        if was_full && st.depth < self.capacity {
            self.full.store(false, Relaxed);
        }
    }

    fn try_reserve(&self, st: &mut Lanes) -> bool {
        // `closed` is set under the lock by `drain`: a publisher that finds
        // room after the queue was drained must not fill it (nobody would
        // ever take the message); it is refused and keeps its envelope.
        if st.depth >= self.capacity || self.closed.load(SeqCst) {
            return false;
        }
        self.grow(st);
        true
    }

    /// Whether the queue had room when last told (a hint read without the
    /// lock, for a fan-out, which then places its copy with
    /// [`requeue`](Self::requeue) past any bound); `false` once it is closed.
    #[inline]
    pub(super) fn has_room(&self) -> bool {
        !self.full.load(Relaxed) && !self.closed.load(SeqCst)
    }

    /// Reserves room for one message per the overflow policy; `Err(())`
    /// means no room.
    pub(super) fn reserve(&self, priority: Priority, timeout: Duration) -> Result<Reserved, ()> {
        let mut st = self.lock();
        if self.try_reserve(&mut st) {
            return Ok(Reserved::Free);
        }
        match self.overflow {
            OverflowPolicy::Block { timeout: wait } => {
                let deadline = Instant::now() + wait.min(timeout);
                st.publishers_waiting += 1;
                let ok = loop {
                    if self.try_reserve(&mut st) {
                        break true;
                    }
                    let now = Instant::now();
                    if now >= deadline || self.closed.load(SeqCst) {
                        break false;
                    }
                    st.publishers_signalled = false;
                    st = self
                        .space
                        .wait_timeout(st, (deadline - now).min(WAIT_SLICE))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                };
                st.publishers_waiting -= 1;
                if ok { Ok(Reserved::Free) } else { Err(()) }
            }
            OverflowPolicy::DiscardLowest => {
                // The slot is taken past the bound now and given back by the
                // eviction at the push: until then the victim stays queued,
                // so a publish refused by another group, or a close in
                // between, finds it where it was instead of in the hands of
                // a publisher that can no longer put it back.
                if SLOT[..priority.index()]
                    .iter()
                    .any(|&l| !st.lanes[l].is_empty())
                {
                    self.grow(&mut st);
                    Ok(Reserved::Evicting)
                } else {
                    Err(())
                }
            }
            _ => Err(()),
        }
    }

    /// Reserves a slot if there is room now, keeping the lock until the
    /// [`Room`] is filled: a publish to a topic with one group reserves and
    /// pushes in one critical section. No room, or a closed queue: `None`,
    /// and the publisher still holds its message. The envelope then moves
    /// once, from the publisher into its lane; a `try_push` that handed the
    /// envelope back on refusal copied it twice more (184 bytes each).
    #[inline]
    pub(super) fn room(&self) -> Option<Room<'_>> {
        let mut st = self.lock();
        self.try_reserve(&mut st).then(|| Room {
            queue: self,
            st: Some(st),
        })
    }

    /// Gives back a slot reserved by [`reserve`](Self::reserve) but not used.
    pub(super) fn unreserve(&self) {
        let mut st = self.lock();
        self.shrink(&mut st, 1);
        self.wake_publishers(&mut st);
    }

    /// Enqueues into a reserved slot. If the queue was drained since the
    /// slot was reserved, the message is handed back.
    #[inline]
    pub(super) fn push_reserved(&self, env: Envelope) -> Result<(), Envelope> {
        let mut st = self.lock();
        if self.closed.load(SeqCst) {
            self.shrink(&mut st, 1);
            return Err(env);
        }
        self.push(st, env);
        Ok(())
    }

    /// Enqueues into a slot [`reserve`](Self::reserve) took as
    /// [`Reserved::Evicting`], evicting the oldest message of the lowest
    /// priority below `env`'s if the queue is still past its bound (a
    /// consumer may have made room since). Hands back the evicted message,
    /// or `env` if the queue was drained since the reservation.
    pub(super) fn push_evicting(&self, env: Envelope) -> Result<Option<Envelope>, Envelope> {
        let mut st = self.lock();
        if self.closed.load(SeqCst) {
            self.shrink(&mut st, 1);
            return Err(env);
        }
        let mut victim = None;
        if st.depth > self.capacity {
            let lanes = &mut st.lanes;
            victim = SLOT[..env.priority.index()]
                .iter()
                .find_map(|&l| lanes[l].pop_front());
            if victim.is_some() {
                self.shrink(&mut st, 1);
            }
        }
        self.push(st, env);
        Ok(victim)
    }

    /// Enqueues regardless of the bound (redeliveries: the message already
    /// held a slot once, and refusing it would lose it). A redelivery that
    /// arrives after close drained the queue (a handler that outlived the
    /// shutdown) has nowhere to go: it is logged, and the bus's ledger keeps
    /// it in flight.
    pub(super) fn push_forced(&self, env: Envelope) {
        if let Err(env) = self.requeue(env, usize::MAX) {
            tracing::error!(message_id = %env.id, group = %self.name, "a redelivery reached a queue drained at close; the message is dropped and stays counted in flight");
        }
    }

    /// Enqueues past the bound while fewer than `limit` slots are taken,
    /// unless the queue was drained (nobody would take the message). Hands
    /// the message back otherwise. With no limit it also places a fan-out's
    /// copy (see `memory::fan_out`).
    #[inline]
    pub(super) fn requeue(&self, env: Envelope, limit: usize) -> Result<(), Envelope> {
        let mut st = self.lock();
        if self.closed.load(SeqCst) || st.depth >= limit {
            return Err(env);
        }
        self.grow(&mut st);
        self.push(st, env);
        Ok(())
    }

    /// Enqueues, unlocks, then sets the hint (see `unlock_and_flag`).
    #[inline]
    fn push(&self, mut st: MutexGuard<'_, Lanes>, env: Envelope) {
        let first = self.enqueue(&mut st, env);
        self.unlock_and_flag(st, first);
    }

    /// Releases the lock, then, if this push made the lanes non-empty
    /// (`first`, from [`enqueue`](Self::enqueue)), sets the hint for
    /// waiting consumers: a consumer that sees it then finds the lock
    /// free. Set under the lock, it showed the message to the consumer
    /// before the publisher let go, and the two collided on the lock on
    /// every message (the consumer of an idle-ish queue is there first).
    ///
    /// The hint may lag: it reads clear until the store lands, and a late
    /// store may set it after a take emptied the lanes (the next empty take
    /// clears it). It is never *left* clear while a message waits: the
    /// last clear was made under the lock by a take or `drain` that found
    /// the lanes empty, so the first push after it (ordered after it by
    /// the mutex) saw them empty and sets the hint after its message is in;
    /// pushes after that one find it set. A consumer that misses a message
    /// in the gap finds it under the lock before it sleeps (`pop`).
    #[inline]
    fn unlock_and_flag(&self, st: MutexGuard<'_, Lanes>, first: bool) {
        drop(st);
        if first {
            self.nonempty.store(true, Relaxed);
        }
    }

    /// Enqueues and says whether the lanes were empty before, for
    /// [`unlock_and_flag`](Self::unlock_and_flag). Always inlined, as
    /// [`Room::push`] is: called out of line, an envelope the caller already
    /// holds is copied once more into the argument.
    #[inline(always)]
    #[must_use]
    fn enqueue(&self, st: &mut MutexGuard<'_, Lanes>, env: Envelope) -> bool {
        st.lane(env.priority).push_back(env);
        let first = st.queued() == 1;
        if st.consumers_waiting > st.consumers_signalled {
            st.consumers_signalled += 1;
            #[cfg(test)]
            {
                st.notified.0 += 1;
            }
            self.ready.notify_one();
        }
        first
    }

    /// Takes the highest-priority message, waiting up to `timeout`
    /// (`Duration::MAX`: no limit) or until `woken` is set (cleared here,
    /// then `None` unless a message is ready).
    ///
    /// `flowing` says the caller's last take found a message: the next one
    /// of a stream is usually a few hundred nanoseconds away, and waking a
    /// sleeping consumer costs its publisher a futex call, so a flowing
    /// consumer yields its core, checking the hint after each yield, on the
    /// count before it sleeps (some tens of microseconds). It yields rather
    /// than spins: a spinning consumer holds a core that the publisher or
    /// another group's consumer could use, and where threads outnumber
    /// cores that was a tenth of the CPU (2 cores, 1 publisher and 4
    /// groups: 1to4 on/raw 0.804 -> 0.871, 1to1 +6.6 %, 4to1 +2.2 %). Where
    /// a core is free, a yield returns at once and costs a syscall more
    /// than a spin. A consumer whose last wait ended empty sleeps at once:
    /// waiting on every wake-up of an idle queue made each idle subscriber
    /// cost CPU.
    #[inline]
    pub(super) fn pop(
        &self,
        timeout: Duration,
        flowing: bool,
        woken: &AtomicBool,
    ) -> Option<Envelope> {
        if timeout.is_zero() {
            return self.try_pop(); // a poll: no waiting
        }
        if flowing {
            let mut yields = 0;
            loop {
                if self.nonempty.load(Relaxed) {
                    if let Some(env) = self.try_pop() {
                        return Some(env);
                    }
                } else if self.closed.load(SeqCst) {
                    return None;
                }
                if yields < IDLE_YIELDS {
                    yields += 1;
                    std::thread::yield_now();
                } else {
                    break;
                }
            }
        }
        // No deadline when it would overflow an Instant (`Duration::MAX`).
        let deadline = Instant::now().checked_add(timeout);
        let mut st = self.lock();
        loop {
            if let Some(env) = self.take(&mut st) {
                return Some(env);
            }
            // Read under the lock, and `wake_consumers` notifies under it
            // after setting the flag: a wake-up lands before this check or
            // finds this consumer waiting, never in between.
            if woken.swap(false, SeqCst) || self.closed.load(SeqCst) {
                return None;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return None;
            }
            st.consumers_waiting += 1;
            st = match deadline {
                Some(d) => {
                    self.ready
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self.ready.wait(st).unwrap_or_else(PoisonError::into_inner),
            };
            st.consumers_waiting -= 1;
            // Whether this consumer was woken or timed out, one wake-up fewer
            // is owed: undercounting only costs a spare notify.
            st.consumers_signalled = st.consumers_signalled.saturating_sub(1);
        }
    }

    /// Wakes every consumer asleep in [`pop`](Self::pop), so that the one
    /// whose `woken` flag the caller has just set returns (the others find
    /// their flags clear and sleep again).
    pub(super) fn wake_consumers(&self) {
        let _st = self.lock();
        self.ready.notify_all();
    }

    #[inline(always)]
    fn try_pop(&self) -> Option<Envelope> {
        let mut st = self.lock();
        self.take(&mut st)
    }

    #[inline(always)]
    fn take(&self, st: &mut MutexGuard<'_, Lanes>) -> Option<Envelope> {
        // Highest priority first (by TAKE_ORDER). The slot is found first and
        // popped last, so the envelope moves once: a `find_map` returning it
        // copied it once more on its way out.
        let Some(lane) = TAKE_ORDER.into_iter().find(|&l| !st.lanes[l].is_empty()) else {
            // Clears a hint a publisher set late (see `unlock_and_flag`),
            // so waiting consumers stop taking the lock for nothing.
            if self.nonempty.load(Relaxed) {
                self.nonempty.store(false, Relaxed);
            }
            return None;
        };
        // The bookkeeping first, so that the message moves once, from its
        // lane into the caller's slot (each move of an envelope is a
        // 184-byte memcpy).
        if st.queued() == 1 {
            self.nonempty.store(false, Relaxed);
        }
        self.shrink(st, 1);
        st.taken += 1;
        self.wake_publishers(st);
        st.lanes[lane].pop_front()
    }

    // Blocked publishers are woken when the queue has drained to half (or
    // emptied), not on every take: one wake-up then refills many slots
    // instead of one futex call per message. They also re-check every
    // WAIT_SLICE, so a consumer that stalls just below the bound delays them
    // by at most that long.
    //
    // Waiting tasks are woken by every take while they wait: a wake-up
    // costs no futex call of this thread's, and a task that finds no room
    // registers again.
    fn wake_publishers(&self, st: &mut Lanes) {
        if st.publishers_waiting > 0 {
            if !st.room_wakers.is_empty() {
                wake_tasks(st);
            }
            if st.publishers_waiting > 0
                && !st.publishers_signalled
                && st.depth <= self.capacity / 2
            {
                st.publishers_signalled = true;
                #[cfg(test)]
                {
                    st.notified.1 += 1;
                }
                self.space.notify_all();
            }
        }
    }

    /// Ready when the queue has room (or is closed); else registers `cx`
    /// to be woken by the next take.
    pub(super) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.lock();
        if st.depth < self.capacity || self.is_closed() {
            return Poll::Ready(());
        }
        if !st.room_wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.room_wakers.push(cx.waker().clone());
            st.publishers_waiting += 1;
        }
        Poll::Pending
    }

    /// Empties every lane (at close).
    pub(super) fn drain(&self) -> Vec<Envelope> {
        let mut st = self.lock();
        self.closed.store(true, SeqCst);
        let mut out = Vec::with_capacity(st.queued());
        for slot in TAKE_ORDER {
            out.extend(st.lanes[slot].drain(..));
        }
        let n = out.len().min(st.depth);
        self.shrink(&mut st, n);
        self.nonempty.store(false, Relaxed);
        // Wake blocked publishers and sleeping consumers so they see `closed`.
        wake_tasks(&mut st);
        self.space.notify_all();
        self.ready.notify_all();
        out
    }

    /// Publishers waiting for room (tests wait on it instead of on time).
    #[cfg(test)]
    pub(super) fn waiting_publishers(&self) -> usize {
        self.lock().publishers_waiting as usize
    }

    /// Consumers asleep waiting for a message (tests wait on it).
    #[cfg(test)]
    pub(super) fn waiting_consumers(&self) -> usize {
        self.lock().consumers_waiting as usize
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    pub(super) fn park(&self) {
        self.parked.fetch_add(1, SeqCst);
    }

    pub(super) fn unpark(&self) {
        self.parked.fetch_sub(1, SeqCst);
    }
}

/// Wakes the tasks awaiting room; they no longer count as waiting.
#[cold]
fn wake_tasks(st: &mut Lanes) {
    st.publishers_waiting -= u32::try_from(st.room_wakers.len()).unwrap_or(u32::MAX);
    st.room_wakers.drain(..).for_each(Waker::wake);
}

/// Settles deliveries of one group: ack forgets, nak re-enqueues (now or via
/// the timer), term forgets.
pub(super) struct GroupSettler {
    pub(super) group: Arc<GroupQueue>,
    pub(super) timer: TimerHandle,
}

impl Settle for GroupSettler {
    fn ack(&self, _token: u64, _envelope: &Envelope) {
        self.group.settled_one();
    }

    fn nak(&self, _token: u64, envelope: Envelope, delay: Duration) {
        self.group.settled_one();
        if delay.is_zero() {
            self.group.push_forced(envelope);
        } else {
            self.group.park();
            if let Err(envelope) = self
                .timer
                .schedule(delay, Arc::clone(&self.group), envelope)
            {
                // Timer gone (transport closed): put it back now rather than lose it.
                self.group.unpark();
                self.group.push_forced(envelope);
            }
        }
    }

    fn term(&self, _token: u64, _envelope: &Envelope) {
        self.group.settled_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(capacity: usize) -> GroupQueue {
        let topic = Topic::new("t").unwrap_or_else(|e| unreachable!("{e}"));
        let block = OverflowPolicy::Block {
            timeout: Duration::from_secs(30),
        };
        GroupQueue::new(topic.clone(), "g", capacity, block)
    }

    fn env(n: u8) -> Envelope {
        let topic = Topic::new("t").unwrap_or_else(|e| unreachable!("{e}"));
        Envelope::new(topic, vec![n])
    }

    /// Two consumers asleep and ten pushes before either runs: two
    /// notifies, one per sleeper, not one per push (each a futex call).
    #[test]
    fn sleeping_consumers_are_signalled_once_each() {
        let q = queue(64);
        q.lock().consumers_waiting = 2;
        for n in 0..10 {
            q.room().expect("room").push(env(n));
        }
        assert_eq!(q.lock().notified.0, 2);
        // One of them runs (woken): the other still has its wake-up coming.
        {
            let mut st = q.lock();
            st.consumers_waiting -= 1;
            st.consumers_signalled -= 1;
        }
        q.room().expect("room").push(env(10));
        assert_eq!(q.lock().notified.0, 2);
        // A third goes to sleep: the next push wakes it.
        q.lock().consumers_waiting += 1;
        q.room().expect("room").push(env(11));
        assert_eq!(q.lock().notified.0, 3);
    }

    /// A publish that reserves a slot and then does not fill it (it never
    /// happens today, but a `Room` is a guard) must not shrink the queue.
    #[test]
    fn an_unfilled_room_gives_its_slot_back() {
        let q = queue(1);
        drop(q.room().expect("room"));
        assert_eq!(q.depth(), 0);
        q.room().expect("the slot was given back").push(env(1));
        assert!(q.room().is_none(), "full at one");
    }

    /// The slot an unfilled room gives back may be the room a blocked
    /// publisher waits for.
    #[test]
    fn an_unfilled_room_wakes_a_blocked_publisher() {
        let q = queue(2);
        q.room().expect("room").push(env(1));
        q.lock().publishers_waiting = 1;
        drop(q.room().expect("room"));
        assert_eq!(q.lock().notified.1, 1);
    }

    /// A consumer that waits while a publisher's hint has not landed yet
    /// still gets the message, from under the lock, before it would sleep.
    #[test]
    fn a_message_whose_hint_has_not_landed_is_still_taken() {
        let q = queue(4);
        {
            let mut st = q.lock();
            st.depth += 1;
            let _hint_not_stored = q.enqueue(&mut st, env(7));
        }
        assert!(!q.nonempty.load(Relaxed));
        let got = q.pop(Duration::from_secs(10), true, &AtomicBool::new(false));
        assert_eq!(got.map(|e| e.payload[0]), Some(7));
    }

    /// Publishers set the hint after unlocking, so it can arrive after a
    /// consumer took the message: the next take that finds the lanes empty
    /// clears it, or waiting consumers would keep locking an empty queue.
    #[test]
    fn a_hint_set_late_is_cleared_by_an_empty_take() {
        let q = queue(4);
        q.room().expect("room").push(env(1));
        assert!(q.nonempty.load(Relaxed));
        assert!(q.try_pop().is_some());
        assert!(!q.nonempty.load(Relaxed), "the take that empties clears it");
        q.nonempty.store(true, Relaxed); // the publisher's late store
        assert!(q.try_pop().is_none());
        assert!(!q.nonempty.load(Relaxed));
    }

    /// The hint is written only on the edges: the push that makes the lanes
    /// non-empty sets it and the take that empties them clears it; pushes
    /// and takes in between leave it (and its cache line) alone. Whatever
    /// the order of pushes and takes, it is set whenever a message waits.
    #[test]
    fn the_hint_is_set_whenever_a_message_waits() {
        let q = queue(8);
        let mut held = 0;
        // Pushes and takes in a pattern that crosses empty many times.
        for step in 0..200u32 {
            if step % 3 == 2 || held == 8 {
                if q.try_pop().is_some() {
                    held -= 1;
                }
            } else {
                q.room().expect("room").push(env(step as u8));
                held += 1;
            }
            assert_eq!(q.nonempty.load(Relaxed), held > 0, "step {step}");
        }
        while q.try_pop().is_some() {}
        assert!(!q.nonempty.load(Relaxed));
        // A critical push after the lanes emptied sets it again, and a
        // drain clears it.
        q.room()
            .expect("room")
            .push(env(1).with_priority(Priority::Critical));
        assert!(q.nonempty.load(Relaxed));
        assert!(!q.drain().is_empty());
        assert!(!q.nonempty.load(Relaxed));
    }

    /// A blocked publisher is woken once when the queue has drained to
    /// half, not again by every take before it runs.
    #[test]
    fn a_blocked_publisher_is_signalled_once_per_wait() {
        let q = queue(4);
        for n in 0..4 {
            q.room().expect("room").push(env(n));
        }
        q.lock().publishers_waiting = 1;
        for _ in 0..4 {
            assert!(q.try_pop().is_some());
        }
        assert_eq!(q.lock().notified.1, 1, "woken at half, then left alone");
        // It found no room after all and waits again: the next take at
        // half or below wakes it again.
        q.lock().publishers_signalled = false;
        q.room().expect("room").push(env(9));
        assert!(q.try_pop().is_some());
        assert_eq!(q.lock().notified.1, 2);
    }

    /// Ping-pong with consumers that are asleep before every push: a
    /// wake-up the bookkeeping wrongly thought was on its way would leave a
    /// message waiting out the consumers' 30 s timeout.
    #[test]
    fn no_wake_up_is_lost_by_sleeping_consumers() {
        let q = Arc::new(queue(64));
        let (tx, rx) = crossbeam_channel::unbounded();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let (q, tx) = (Arc::clone(&q), tx.clone());
                std::thread::spawn(move || {
                    let woken = AtomicBool::new(false);
                    while let Some(env) = q.pop(Duration::from_secs(30), true, &woken) {
                        let _ = tx.send(env.payload[0]);
                    }
                })
            })
            .collect();
        for round in 0..300u32 {
            // Both asleep (past their yields) before the push.
            while q.waiting_consumers() < 2 {
                std::thread::yield_now();
            }
            let n = (round % 256) as u8;
            q.room().expect("room").push(env(n));
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(10)),
                Ok(n),
                "round {round}: the message waited for a consumer's timeout"
            );
        }
        assert_eq!(q.drain().len(), 0);
        for c in consumers {
            c.join()
                .unwrap_or_else(|_| unreachable!("consumer panicked"));
        }
    }

    // Where `LineMutex` puts the data 8 bytes into the lock's line (see
    // bus_sync::line); elsewhere the layout is a best effort.
    #[cfg(all(
        any(target_os = "linux", target_os = "android"),
        target_pointer_width = "64"
    ))]
    #[test]
    fn a_steady_stream_writes_one_line_of_the_queue_state() {
        let q = queue(4);
        let lock = q.state.line_addr();
        assert_eq!(lock % 64, 0, "the lock starts a cache line");
        let st = q.lock();
        let normal = SLOT[Priority::Normal.index()];
        let ends = [
            (&raw const st.depth).addr() + size_of::<usize>(),
            (&raw const st.consumers_waiting).addr() + size_of::<u32>(),
            (&raw const st.publishers_waiting).addr() + size_of::<u32>(),
            (&raw const st.taken).addr() + size_of::<usize>(),
            (&raw const st.lanes[normal]).addr() + size_of::<VecDeque<Envelope>>(),
        ];
        for end in ends {
            assert!(end - lock <= 64, "a hot field ends at byte {}", end - lock);
        }
    }

    /// Pushes `env(n)` at priority `p` for each pair, in order.
    fn fill(q: &GroupQueue, messages: impl IntoIterator<Item = (u8, Priority)>) {
        for (n, p) in messages {
            q.room().expect("room").push(env(n).with_priority(p));
        }
    }

    #[test]
    fn lanes_are_taken_highest_priority_first_and_evicted_lowest_first() {
        let q = GroupQueue::new(
            Topic::new("t").unwrap_or_else(|e| unreachable!("{e}")),
            "g",
            4,
            OverflowPolicy::DiscardLowest,
        );
        fill(
            &q,
            [
                (0, Priority::Normal),
                (1, Priority::Low),
                (2, Priority::Critical),
                (5, Priority::Low),
            ],
        );
        // Full: a high-priority publish evicts the oldest of the lowest lane.
        assert_eq!(
            q.reserve(Priority::High, Duration::ZERO),
            Ok(Reserved::Evicting)
        );
        let victim = q.push_evicting(env(4).with_priority(Priority::High));
        assert_eq!(victim.ok().flatten().map(|e| e.payload[0]), Some(1));
        let order: Vec<u8> = std::iter::from_fn(|| q.try_pop())
            .map(|e| e.payload[0])
            .collect();
        assert_eq!(order, [2, 4, 0, 5]);
    }

    /// The "full" hint a fan-out reads without the lock follows the bound
    /// through every way the depth changes: reservations, unfilled rooms,
    /// takes, redeliveries past the bound, evictions and the drain.
    #[test]
    fn the_full_hint_follows_the_bound() {
        let q = queue(2);
        let full = |q: &GroupQueue| !q.has_room();
        q.room().expect("room").push(env(0));
        assert!(!full(&q));
        drop(q.room().expect("room"));
        assert!(!full(&q), "an unfilled room gave its slot back");
        q.room().expect("room").push(env(1));
        assert!(full(&q), "at the bound");
        assert!(q.try_pop().is_some());
        assert!(!full(&q), "a take made room");
        q.push_forced(env(2));
        assert!(full(&q));
        q.push_forced(env(3));
        assert!(full(&q), "past the bound");
        assert!(q.try_pop().is_some());
        assert!(full(&q), "still at the bound");
        assert!(q.try_pop().is_some());
        assert!(!full(&q));
        assert_eq!(
            q.reserve(Priority::Normal, Duration::ZERO),
            Ok(Reserved::Free)
        );
        assert!(full(&q), "a reservation takes the last slot");
        q.unreserve();
        assert!(!full(&q), "and gives it back");
        q.room().expect("room").push(env(4));
        assert!(full(&q));
        assert_eq!(q.drain().len(), 2);
        assert!(full(&q), "a drained queue takes nothing");
        assert!(!q.full.load(Relaxed), "the bound's hint is clear");

        // Evictions: the slot taken past the bound is paid back by the victim.
        let q = GroupQueue::new(
            Topic::new("t").unwrap_or_else(|e| unreachable!("{e}")),
            "g",
            1,
            OverflowPolicy::DiscardLowest,
        );
        q.room()
            .expect("room")
            .push(env(5).with_priority(Priority::Low));
        assert!(full(&q));
        assert_eq!(
            q.reserve(Priority::High, Duration::ZERO),
            Ok(Reserved::Evicting)
        );
        let victim = q.push_evicting(env(6).with_priority(Priority::High));
        assert_eq!(victim.ok().flatten().map(|e| e.payload[0]), Some(5));
        assert!(full(&q), "at the bound again");
        assert!(q.try_pop().is_some());
        assert!(!full(&q));
    }

    /// A fan-out's copy placed after its queue filled (another publisher
    /// took the last slot between the hint and the lock) goes past the
    /// bound: delivered, counted in the depth, and the queue reads full.
    #[test]
    fn a_copy_placed_after_the_queue_filled_goes_past_the_bound() {
        let q = queue(1);
        assert!(q.has_room());
        q.room().expect("room").push(env(1)); // the racing publisher
        assert!(q.requeue(env(2), usize::MAX).is_ok());
        assert_eq!(q.depth(), 2);
        assert!(!q.has_room());
        let order: Vec<u8> = std::iter::from_fn(|| q.try_pop())
            .map(|e| e.payload[0])
            .collect();
        assert_eq!(order, [1, 2]);
        assert!(q.has_room());
        // Drained: the copy is handed back, nothing counted.
        let _ = q.drain();
        assert_eq!(
            q.requeue(env(3), usize::MAX).map_err(|e| e.payload[0]),
            Err(3)
        );
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn drain_hands_back_the_highest_priority_first() {
        let q = queue(4);
        fill(
            &q,
            [
                (0, Priority::Low),
                (1, Priority::Normal),
                (2, Priority::Critical),
                (3, Priority::High),
            ],
        );
        let order: Vec<u8> = q.drain().iter().map(|e| e.payload[0]).collect();
        assert_eq!(order, [2, 3, 1, 0]);
    }
}
