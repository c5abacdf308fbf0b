//! The delayed-redelivery timer: one thread releasing a heap of parked
//! messages when they are due, so no worker ever sleeps to wait for a
//! retry. It sleeps until the earliest due time (on the transport's
//! clock), and not at all while nothing is parked.

use super::queue::GroupQueue;
use crate::Envelope;
use crate::time::SharedClock;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

struct Parked {
    due: Instant,
    seq: u64,
    group: Arc<GroupQueue>,
    envelope: Envelope,
}

impl PartialEq for Parked {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Parked {}
impl PartialOrd for Parked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Parked {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// The parked messages and the timer thread's state, shared by the thread
/// and every handle.
struct State {
    heap: BinaryHeap<Parked>,
    seq: u64,
    /// Set by `close`: schedules are refused, the thread exits.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    clock: SharedClock,
    /// Passes of the thread's loop (tests: it must not poll).
    #[cfg(test)]
    passes: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the state is locked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Clone)]
pub(super) struct TimerHandle {
    shared: Arc<Shared>,
    /// The timer thread, unparked when the earliest due time moves closer
    /// or the timer closes.
    thread: Thread,
}

impl TimerHandle {
    pub(super) fn schedule(
        &self,
        delay: Duration,
        group: Arc<GroupQueue>,
        envelope: Envelope,
    ) -> Result<(), Envelope> {
        // Due from the nak, not from when the thread gets to it (a manual
        // clock advanced in between would otherwise push it past the advance).
        let now = self.shared.clock.now();
        // A delay past what an Instant can hold waits 136 years instead (and
        // is due at once only if even that overflows).
        let due = now
            .checked_add(delay)
            .or_else(|| now.checked_add(Duration::from_secs(u64::from(u32::MAX))))
            .unwrap_or(now);
        let mut st = self.shared.lock();
        if st.closed {
            return Err(envelope);
        }
        let earliest = st.heap.peek().is_none_or(|p| due < p.due);
        st.seq += 1;
        let seq = st.seq;
        st.heap.push(Parked {
            due,
            seq,
            group,
            envelope,
        });
        drop(st);
        if earliest {
            self.thread.unpark();
        }
        Ok(())
    }

    /// Stops the timer and returns what it still held.
    pub(super) fn close(&self) -> Vec<(Arc<str>, Envelope)> {
        let mut st = self.shared.lock();
        if st.closed {
            return Vec::new();
        }
        st.closed = true;
        let left = std::mem::take(&mut st.heap)
            .into_vec()
            .into_iter()
            .map(|p| {
                p.group.unpark();
                (Arc::clone(&p.group.name), p.envelope)
            })
            .collect();
        drop(st);
        self.thread.unpark();
        left
    }

    /// How many times the thread has woken and looked at the heap.
    #[cfg(test)]
    pub(super) fn passes(&self) -> usize {
        self.shared.passes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Messages parked now.
    #[cfg(test)]
    pub(super) fn parked(&self) -> usize {
        self.shared.lock().heap.len()
    }
}

pub(super) fn spawn(clock: SharedClock) -> std::io::Result<(TimerHandle, JoinHandle<()>)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            heap: BinaryHeap::new(),
            seq: 0,
            closed: false,
        }),
        clock,
        #[cfg(test)]
        passes: std::sync::atomic::AtomicUsize::new(0),
    });
    let run_shared = Arc::clone(&shared);
    let join = std::thread::Builder::new()
        .name("bus-timer".into())
        .spawn(move || run(&run_shared))?;
    let handle = TimerHandle {
        shared,
        thread: join.thread().clone(),
    };
    Ok((handle, join))
}

/// Releases what is due, then sleeps until the next due time on the clock
/// (a manual clock wakes it when advanced), until a schedule brings an
/// earlier one, or, with nothing parked, until a schedule or a close.
fn run(shared: &Shared) {
    let mut due = Vec::new();
    loop {
        #[cfg(test)]
        shared
            .passes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let next = {
            let mut st = shared.lock();
            if st.closed {
                return;
            }
            let now = shared.clock.now();
            while st.heap.peek().is_some_and(|p| p.due <= now) {
                due.extend(st.heap.pop());
            }
            st.heap.peek().map(|p| p.due)
        };
        for p in due.drain(..) {
            // Push before unpark so the group's depth never dips to zero
            // while the message is in transit.
            p.group.push_forced(p.envelope);
            p.group.unpark();
        }
        match next {
            Some(at) => shared.clock.park_until(at),
            None => std::thread::park(),
        }
    }
}
