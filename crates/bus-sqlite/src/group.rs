//! One consumer group as this process sees it: its bound, the room a
//! publish reserves in it, and the signal its waiting members sleep on.

use bus_core::{OverflowPolicy, Topic};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The longest a blocked publisher sleeps before re-checking for room.
const WAIT_SLICE: Duration = Duration::from_millis(5);

#[derive(Debug, Default)]
struct Room {
    /// Messages of the group not leased (ready or waiting for a delayed
    /// redelivery), as of this process's last commit or refresh.
    depth: usize,
    /// Slots publishes took and the writer has not committed yet.
    reserved: usize,
}

/// A group of a topic, shared by the transport, its subscriptions and the
/// writer.
#[derive(Debug)]
pub(crate) struct GroupState {
    pub(crate) id: i64,
    pub(crate) topic: Topic,
    pub(crate) name: Arc<str>,
    pub(crate) capacity: usize,
    pub(crate) overflow: OverflowPolicy,
    room: Mutex<Room>,
    space: Condvar,
    /// Bumped whenever messages became ready for this group in this
    /// process; members wait for it to change.
    ready: Mutex<u64>,
    ready_cv: Condvar,
    /// Messages this process's members leased and have not settled or
    /// released yet (handed to a handler, or leased ahead of it).
    in_flight: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GroupState {
    pub(crate) fn new(
        id: i64,
        topic: Topic,
        name: &str,
        capacity: usize,
        overflow: OverflowPolicy,
        depth: usize,
    ) -> Self {
        Self {
            id,
            topic,
            name: Arc::from(name),
            capacity: capacity.max(1),
            overflow,
            room: Mutex::new(Room { depth, reserved: 0 }),
            space: Condvar::new(),
            ready: Mutex::new(0),
            ready_cv: Condvar::new(),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Messages this process leased for the group and has not settled.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts `n` messages leased.
    pub(crate) fn leased(&self, n: usize) {
        self.in_flight.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one leased message settled, released or lost to its deadline.
    pub(crate) fn let_go(&self) {
        // Never below zero, whatever the order of a lease and its settle.
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Messages not leased, as this process knows.
    pub(crate) fn depth(&self) -> usize {
        lock(&self.room).depth
    }

    /// Whether the policy makes a publish wait for (or be refused without)
    /// room here, as opposed to accepting it and handing the copy back.
    pub(crate) fn refuses_when_full(&self) -> bool {
        matches!(
            self.overflow,
            OverflowPolicy::Block { .. } | OverflowPolicy::Reject
        )
    }

    /// Takes a slot for one message: at once under `Reject`, waiting up to
    /// the policy's timeout (and at most `timeout`) under `Block`. False if
    /// the queue stayed full or `closed` was set.
    pub(crate) fn reserve(&self, timeout: Duration, closed: &AtomicBool) -> bool {
        let mut room = lock(&self.room);
        let wait = match self.overflow {
            OverflowPolicy::Block { timeout: wait } => wait.min(timeout),
            _ => Duration::ZERO,
        };
        let deadline = Instant::now().checked_add(wait);
        loop {
            if room.depth + room.reserved < self.capacity {
                room.reserved += 1;
                return true;
            }
            let now = Instant::now();
            if closed.load(Ordering::Acquire) || deadline.is_none_or(|d| now >= d) {
                return false;
            }
            let slice = deadline.map_or(WAIT_SLICE, |d| (d - now).min(WAIT_SLICE));
            room = self
                .space
                .wait_timeout(room, slice)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Takes a slot only if one is free now.
    pub(crate) fn try_reserve(&self) -> bool {
        let mut room = lock(&self.room);
        if room.depth + room.reserved < self.capacity {
            room.reserved += 1;
            return true;
        }
        false
    }

    /// Gives back `n` slots that will not be filled.
    pub(crate) fn unreserve(&self, n: usize) {
        if n > 0 {
            let mut room = lock(&self.room);
            room.reserved = room.reserved.saturating_sub(n);
            drop(room);
            self.space.notify_all();
        }
    }

    /// Whether a copy that reserved nothing fits, given `pending` copies
    /// the writer already placed in the transaction it has open.
    pub(crate) fn has_room(&self, pending: i64) -> bool {
        let room = lock(&self.room);
        let taken = i64::try_from(room.depth + room.reserved).unwrap_or(i64::MAX);
        taken.saturating_add(pending) < i64::try_from(self.capacity).unwrap_or(i64::MAX)
    }

    /// A commit changed the group: `used` reserved slots were filled, and
    /// the depth moved by `delta`.
    pub(crate) fn committed(&self, used: usize, delta: i64) {
        let mut room = lock(&self.room);
        room.reserved = room.reserved.saturating_sub(used);
        room.depth =
            usize::try_from(i64::try_from(room.depth).unwrap_or(i64::MAX) + delta).unwrap_or(0);
        drop(room);
        if delta < 0 || used > 0 {
            self.space.notify_all();
        }
    }

    /// Sets the depth read from the file (another process changed it).
    pub(crate) fn set_depth(&self, depth: usize) {
        lock(&self.room).depth = depth;
        self.space.notify_all();
    }

    /// The current ready signal, to wait for a change of.
    pub(crate) fn generation(&self) -> u64 {
        *lock(&self.ready)
    }

    /// Messages became ready: wakes every waiting member.
    pub(crate) fn bump(&self) {
        *lock(&self.ready) += 1;
        self.ready_cv.notify_all();
        self.space.notify_all();
    }

    /// Waits until the signal moves past `seen`, `woken` is set, or `until`.
    pub(crate) fn wait_change(&self, seen: u64, until: Instant, woken: &AtomicBool) {
        let mut signal = lock(&self.ready);
        while *signal == seen && !woken.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= until {
                return;
            }
            signal = self
                .ready_cv
                .wait_timeout(signal, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Ends the wait of every member (a wake-up or the transport closing).
    pub(crate) fn wake_all(&self) {
        let _held = lock(&self.ready);
        self.ready_cv.notify_all();
        self.space.notify_all();
    }
}
