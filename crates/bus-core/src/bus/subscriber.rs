//! A running subscriber's shared state: what its runners (worker threads,
//! an async runner's threads) read to stop, pause and be woken, and how a
//! stop is carried out and waited for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
#[cfg(feature = "tokio")]
use std::sync::{Arc, Condvar};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Wake;

/// How long shutdown waits, past its deadline, for woken idle workers to
/// exit before it counts them stuck: they stop at once, but a loaded
/// machine may take a while to schedule them.
const WAKE_GRACE: Duration = Duration::from_millis(100);

// Shared by the bus and the handle, so whichever stops it joins the workers.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(super) stop: AtomicBool,
    pub(super) workers: Mutex<Vec<Worker>>,
    /// The wake-ups of the workers' subscriptions that have one: a stop
    /// fires them, so those workers wait for messages without a timeout.
    pub(super) wakers: Mutex<Vec<Wake>>,
    /// Whether some worker's subscription cannot be woken (it polls).
    pub(super) polls: AtomicBool,
    // Nanoseconds after `epoch` until which the workers take no message
    // (the DLQ refused a write); 0 when not paused. One relaxed load per
    // message on the hot path.
    paused_until: AtomicU64,
    epoch: Instant,
    /// What else a stop must tell (an async runner's tasks): called with
    /// `false` to stop taking messages, with `true` to cancel the calls in
    /// flight.
    pub(super) hooks: Mutex<Vec<StopHook>>,
}

/// One runner of a subscriber: a thread, or a task on a runtime (an
/// async runner over a transport that can be polled).
#[derive(Debug)]
pub(crate) enum Worker {
    Thread(JoinHandle<()>),
    #[cfg(feature = "tokio")]
    Task(Arc<Finished>),
}

impl Worker {
    fn is_finished(&self) -> bool {
        match self {
            Worker::Thread(t) => t.is_finished(),
            #[cfg(feature = "tokio")]
            Worker::Task(f) => *lock(&f.done),
        }
    }

    fn join(self) {
        match self {
            Worker::Thread(t) => {
                let _ = t.join();
            }
            #[cfg(feature = "tokio")]
            Worker::Task(f) => {
                let mut done = lock(&f.done);
                while !*done {
                    done = f.ended.wait(done).unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    /// Wakes a thread from a pause; a task is woken by its stop hook.
    fn unpark(&self) {
        match self {
            Worker::Thread(t) => t.thread().unpark(),
            #[cfg(feature = "tokio")]
            Worker::Task(_) => {}
        }
    }
}

#[cfg(feature = "tokio")]
/// Set when a runner task ends, however it ends (returned, aborted, or
/// dropped with its runtime): its [`Finishing`] guard sets it when dropped.
#[derive(Debug, Default)]
pub(crate) struct Finished {
    done: Mutex<bool>,
    ended: Condvar,
}

#[cfg(feature = "tokio")]
/// Held by a runner task; dropped, it marks the task finished.
#[derive(Debug)]
pub(crate) struct Finishing(pub(crate) Arc<Finished>);

#[cfg(feature = "tokio")]
impl Drop for Finishing {
    fn drop(&mut self) {
        *lock(&self.0.done) = true;
        self.0.ended.notify_all();
    }
}

#[cfg(feature = "tokio")]
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A runner's answer to a stop (`false`) or a cancel (`true`).
pub(super) struct StopHook(pub(super) Box<dyn Fn(bool) + Send + Sync>);

impl std::fmt::Debug for StopHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopHook")
    }
}

impl Default for Subscriber {
    fn default() -> Self {
        Self {
            stop: AtomicBool::new(false),
            workers: Mutex::new(Vec::new()),
            wakers: Mutex::new(Vec::new()),
            polls: AtomicBool::new(false),
            paused_until: AtomicU64::new(0),
            epoch: Instant::now(),
            hooks: Mutex::new(Vec::new()),
        }
    }
}

impl Subscriber {
    pub(crate) fn pause_for(&self, d: Duration) {
        let until = self.epoch.elapsed() + d;
        let nanos = crate::time::saturating_nanos(until).max(1);
        self.paused_until.fetch_max(nanos, Ordering::AcqRel);
    }

    /// How much longer the pause lasts, if one is in force.
    pub(crate) fn paused_for(&self) -> Option<Duration> {
        let until = self.paused_until.load(Ordering::Relaxed);
        if until == 0 {
            return None;
        }
        let now = crate::time::saturating_nanos(self.epoch.elapsed());
        if now >= until {
            let _ =
                self.paused_until
                    .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed);
            return None;
        }
        Some(Duration::from_nanos(until - now))
    }

    /// Tells the workers to stop and wakes them: those asleep in a wakeable
    /// subscription or in a pause stop at once, the others when their
    /// current handler returns or their poll ends.
    pub(super) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.run_hooks(false);
        for w in self
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            w.wake();
        }
        for w in self
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            w.unpark();
        }
    }

    /// Runs the stop hooks: `cancel` asks async runners to cancel their
    /// calls in flight (their deliveries are settled as never started).
    pub(super) fn run_hooks(&self, cancel: bool) {
        for h in self
            .hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            (h.0)(cancel);
        }
    }

    /// Whether some runner cancels its calls when told to (an async one).
    pub(super) fn cancels(&self) -> bool {
        !self
            .hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// How long after a stop the workers may take to notice it when none is
    /// inside a handler: a scheduling delay for woken ones, two polls for
    /// those that cannot be woken.
    pub(super) fn stop_grace(&self, poll: Duration) -> Duration {
        if self.polls.load(Ordering::Relaxed) {
            2 * poll
        } else {
            WAKE_GRACE
        }
    }

    /// Stops the workers and waits for all of them.
    pub(super) fn stop_and_join(&self) {
        self.stop_and_join_until(None);
    }

    /// Stops the workers and joins those that finish by `until` (all, with
    /// `None`); the others (a handler that does not return) are left
    /// running and kept on the list, so that a later shutdown still waits
    /// for them and counts them. Returns how many were left. An async
    /// runner still busy at `until` has its calls cancelled then, and a
    /// grace to settle them.
    pub(super) fn stop_and_join_until(&self, until: Option<Instant>) -> usize {
        self.request_stop();
        let mut cancelled = !self.cancels();
        let mut workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        let Some(mut until) = until else {
            workers.into_iter().for_each(Worker::join);
            return 0;
        };
        loop {
            let (done, running): (Vec<_>, Vec<_>) =
                workers.into_iter().partition(Worker::is_finished);
            done.into_iter().for_each(Worker::join);
            workers = running;
            let now = Instant::now();
            if !workers.is_empty() && now >= until && !cancelled {
                cancelled = true;
                self.run_hooks(true);
                until = now + WAKE_GRACE;
                continue;
            }
            if workers.is_empty() || now >= until {
                let left = workers.len();
                self.workers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(workers);
                return left;
            }
            std::thread::park_timeout((until - now).min(Duration::from_millis(1)));
        }
    }
}
