//! One consumer group's queue: four priority lanes with one shared bound.

use super::timer::TimerHandle;
use crate::{Envelope, OverflowPolicy, Priority, Settle, Topic};
use crossbeam_channel::{Receiver, Select, Sender, TryRecvError, unbounded};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The longest a blocked publisher sleeps before re-checking for room.
const WAIT_SLICE: Duration = Duration::from_millis(1);

pub(super) struct GroupQueue {
    pub(super) topic: Topic,
    pub(super) name: Arc<str>,
    pub(super) capacity: usize,
    pub(super) overflow: OverflowPolicy,
    // Lanes are unbounded channels; `depth` enforces the shared bound, so a
    // redelivery can always be put back without blocking or dropping.
    senders: [Sender<Envelope>; 4],
    receivers: [Receiver<Envelope>; 4],
    depth: AtomicUsize,
    parked: AtomicUsize,
    waiters: AtomicUsize,
    space: Mutex<()>,
    space_freed: Condvar,
    closed: AtomicBool,
}

impl GroupQueue {
    pub(super) fn new(topic: Topic, name: &str, capacity: usize, overflow: OverflowPolicy) -> Self {
        let lanes: [(Sender<Envelope>, Receiver<Envelope>); 4] =
            std::array::from_fn(|_| unbounded());
        let senders = std::array::from_fn(|i| lanes[i].0.clone());
        let receivers = std::array::from_fn(|i| lanes[i].1.clone());
        Self {
            topic,
            name: Arc::from(name),
            capacity: capacity.max(1),
            overflow,
            senders,
            receivers,
            depth: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            space: Mutex::new(()),
            space_freed: Condvar::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Messages queued plus those waiting for a delayed redelivery.
    pub(super) fn depth(&self) -> usize {
        self.depth.load(SeqCst) + self.parked.load(SeqCst)
    }

    fn try_reserve(&self) -> bool {
        // A CAS loop, not fetch_add-then-undo: a failed attempt must leave no
        // trace, since it may run while holding `space`.
        let mut cur = self.depth.load(SeqCst);
        loop {
            if cur >= self.capacity {
                return false;
            }
            match self
                .depth
                .compare_exchange_weak(cur, cur + 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    fn release_slot(&self) {
        let before = self.depth.fetch_sub(1, SeqCst);
        // Blocked publishers are woken when the queue has drained to half
        // (or emptied), not on every pop: one wake-up then refills many slots
        // instead of one futex call per message. They also re-check every
        // WAIT_SLICE, so a consumer that stalls just below the bound delays
        // them by at most that long.
        let low_water = self.capacity / 2;
        if before.saturating_sub(1) <= low_water && self.waiters.load(SeqCst) > 0 {
            let _g = self.space.lock().unwrap_or_else(PoisonError::into_inner);
            self.space_freed.notify_all();
        }
    }

    fn reserve_blocking(&self, deadline: Instant) -> bool {
        if self.try_reserve() {
            return true;
        }
        let mut guard = self.space.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiters.fetch_add(1, SeqCst);
        let ok = loop {
            if self.try_reserve() {
                break true;
            }
            let now = Instant::now();
            if now >= deadline || self.closed.load(SeqCst) {
                break false;
            }
            guard = self
                .space_freed
                .wait_timeout(guard, (deadline - now).min(WAIT_SLICE))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        self.waiters.fetch_sub(1, SeqCst);
        ok
    }

    /// Reserves room for one message per the overflow policy. `Ok(None)` means
    /// a slot is reserved; `Ok(Some(victim))` means a slot was taken over from
    /// an evicted lower-priority message; `Err(())` means no room.
    pub(super) fn reserve(
        &self,
        priority: Priority,
        timeout: Duration,
    ) -> Result<Option<Envelope>, ()> {
        match self.overflow {
            OverflowPolicy::Block { timeout: wait } => {
                if self.try_reserve() {
                    return Ok(None); // the common case reads no clock
                }
                let deadline = Instant::now() + wait.min(timeout);
                if self.reserve_blocking(deadline) {
                    Ok(None)
                } else {
                    Err(())
                }
            }
            OverflowPolicy::DiscardLowest => {
                if self.try_reserve() {
                    return Ok(None);
                }
                for lane in &self.receivers[..priority.index()] {
                    if let Ok(victim) = lane.try_recv() {
                        return Ok(Some(victim)); // its slot passes to the newcomer
                    }
                }
                Err(())
            }
            _ => {
                if self.try_reserve() {
                    Ok(None)
                } else {
                    Err(())
                }
            }
        }
    }

    /// Gives back a slot reserved by [`reserve`](Self::reserve) but not used.
    pub(super) fn unreserve(&self) {
        self.release_slot();
    }

    /// Enqueues into a reserved slot.
    pub(super) fn push_reserved(&self, env: Envelope) {
        // The receivers live as long as `self`, so this send cannot fail.
        let _ = self.senders[env.priority.index()].send(env);
    }

    /// Enqueues regardless of the bound (redeliveries: the message already
    /// held a slot once, and refusing it would lose it).
    pub(super) fn push_forced(&self, env: Envelope) {
        self.depth.fetch_add(1, SeqCst);
        let _ = self.senders[env.priority.index()].send(env);
    }

    /// Takes the highest-priority message, waiting up to `timeout`.
    pub(super) fn pop(&self, timeout: Duration) -> Option<Envelope> {
        if let Some(env) = self.try_pop() {
            return Some(env);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let mut sel = Select::new();
            for r in &self.receivers {
                sel.recv(r);
            }
            match sel.ready_deadline(deadline) {
                Ok(_) => {
                    if let Some(env) = self.try_pop() {
                        return Some(env);
                    }
                    // Another member took it; wait again.
                }
                Err(_) => return None,
            }
        }
    }

    fn try_pop(&self) -> Option<Envelope> {
        for lane in self.receivers.iter().rev() {
            match lane.try_recv() {
                Ok(env) => {
                    self.release_slot();
                    return Some(env);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
        }
        None
    }

    /// Empties every lane (at close).
    pub(super) fn drain(&self) -> Vec<Envelope> {
        self.closed.store(true, SeqCst);
        let mut out = Vec::new();
        while let Some(env) = self.try_pop() {
            out.push(env);
        }
        // Wake blocked publishers so they see `closed`.
        let _g = self.space.lock().unwrap_or_else(PoisonError::into_inner);
        self.space_freed.notify_all();
        out
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

/// Settles deliveries of one group: ack forgets, nak re-enqueues (now or via
/// the timer), term forgets.
pub(super) struct GroupSettler {
    pub(super) group: Arc<GroupQueue>,
    pub(super) timer: TimerHandle,
}

impl Settle for GroupSettler {
    fn ack(&self, _token: u64, _envelope: Envelope) {}

    fn nak(&self, _token: u64, envelope: Envelope, delay: Duration) {
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

    fn term(&self, _token: u64, _envelope: Envelope) {}
}
