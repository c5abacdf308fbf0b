//! The in-flight places of an async subscriber: its runners (threads or
//! tasks) take one before they fetch, and each call gives its place back
//! when it ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The in-flight places of one subscriber, over all its runner threads: a
/// runner takes one before it fetches, and waits (parked) while none is
/// free; a call gives its place back when it ends and wakes the runners
/// waiting for one.
pub(super) struct Slots {
    used: AtomicUsize,
    pub(super) limit: usize,
    /// Runners about to park or parked: a call that ends takes the lock
    /// below only when one is, so the runtime's threads share no lock with
    /// a runner while places are free.
    sleepers: AtomicUsize,
    waiting: Mutex<Vec<Waiter>>,
}

/// A runner waiting for an in-flight place: a parked thread or a task.
enum Waiter {
    Thread(Thread),
    Task(Waker),
}

impl Slots {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
            sleepers: AtomicUsize::new(0),
            waiting: Mutex::new(Vec::new()),
        }
    }

    /// Takes a place, waiting while none is free; `false` if `stopped`
    /// says so first (a stop unparks the runner).
    pub(super) fn take(&self, stopped: impl Fn() -> bool) -> bool {
        loop {
            let used = self.used.load(Ordering::Acquire);
            if used < self.limit {
                if self
                    .used
                    .compare_exchange_weak(used, used + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if stopped() {
                return false;
            }
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            lock(&self.waiting).push(Waiter::Thread(std::thread::current()));
            // A place freed before the count above was seen found no one
            // to wake: look again before parking.
            if self.used.load(Ordering::SeqCst) >= self.limit {
                std::thread::park();
            }
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn give_back(&self) {
        self.used.fetch_sub(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let waiting = std::mem::take(&mut *lock(&self.waiting));
            for w in waiting {
                match w {
                    Waiter::Thread(t) => t.unpark(),
                    Waiter::Task(w) => w.wake(),
                }
            }
        }
    }

    /// Takes a place from a task: [`take`](Self::take) without parking.
    pub(super) fn take_async(&self) -> Take<'_> {
        Take {
            slots: self,
            registered: false,
        }
    }
}

/// A task's wait for an in-flight place; counted among the sleepers while
/// its waker is registered.
pub(super) struct Take<'a> {
    slots: &'a Slots,
    registered: bool,
}

impl Future for Take<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let slots = self.slots;
        if std::mem::take(&mut self.registered) {
            slots.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        loop {
            let used = slots.used.load(Ordering::Acquire);
            if used < slots.limit {
                if slots
                    .used
                    .compare_exchange_weak(used, used + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Poll::Ready(());
                }
                continue;
            }
            slots.sleepers.fetch_add(1, Ordering::SeqCst);
            self.registered = true;
            lock(&slots.waiting).push(Waiter::Task(cx.waker().clone()));
            // As in `take`: a place freed before the count was seen.
            if slots.used.load(Ordering::SeqCst) >= slots.limit {
                return Poll::Pending;
            }
            slots.sleepers.fetch_sub(1, Ordering::SeqCst);
            self.registered = false;
        }
    }
}

impl Drop for Take<'_> {
    fn drop(&mut self) {
        if self.registered {
            self.slots.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// An in-flight place, given back when dropped.
pub(super) struct Slot(pub(super) Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.give_back();
    }
}
