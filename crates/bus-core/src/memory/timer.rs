//! The delayed-redelivery timer: one thread holding a heap of parked
//! messages, so no worker ever sleeps to wait for a retry.

use super::queue::GroupQueue;
use crate::Envelope;
use crate::time::SharedClock;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// With a manual clock, time moves without waking us: bound every wait so a
// test's `advance` is noticed promptly. With the system clock the computed
// wait is exact and this cap only matters for long delays.
const MAX_WAIT: Duration = Duration::from_millis(10);

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

enum Cmd {
    /// Due at this instant: computed by the caller when it naks, not when
    /// this thread gets to the command (a manual clock advanced in between
    /// would otherwise push the due time past the advance).
    Schedule(Instant, Arc<GroupQueue>, Envelope),
    Close(Sender<Vec<(Arc<str>, Envelope)>>),
}

#[derive(Clone)]
pub(super) struct TimerHandle {
    tx: Sender<Cmd>,
    clock: SharedClock,
}

impl TimerHandle {
    pub(super) fn schedule(
        &self,
        delay: Duration,
        group: Arc<GroupQueue>,
        envelope: Envelope,
    ) -> Result<(), Envelope> {
        let now = self.clock.now();
        // A delay past what an Instant can hold waits 136 years instead (and
        // is due at once only if even that overflows).
        let due = now
            .checked_add(delay)
            .or_else(|| now.checked_add(Duration::from_secs(u64::from(u32::MAX))))
            .unwrap_or(now);
        self.tx
            .send(Cmd::Schedule(due, group, envelope))
            .map_err(|e| match e.into_inner() {
                Cmd::Schedule(_, _, env) => env,
                Cmd::Close(_) => unreachable!("only Schedule is sent here"),
            })
    }

    /// Stops the timer and returns what it still held.
    pub(super) fn close(&self) -> Vec<(Arc<str>, Envelope)> {
        let (tx, rx) = bounded(1);
        if self.tx.send(Cmd::Close(tx)).is_err() {
            return Vec::new();
        }
        rx.recv().unwrap_or_default()
    }
}

pub(super) fn spawn(clock: SharedClock) -> std::io::Result<(TimerHandle, JoinHandle<()>)> {
    let (tx, rx) = unbounded();
    let handle = TimerHandle {
        tx,
        clock: Arc::clone(&clock),
    };
    let join = std::thread::Builder::new()
        .name("bus-timer".into())
        .spawn(move || run(&rx, &clock))?;
    Ok((handle, join))
}

fn run(rx: &Receiver<Cmd>, clock: &SharedClock) {
    let mut heap: BinaryHeap<Parked> = BinaryHeap::new();
    let mut seq = 0_u64;
    loop {
        let wait = match heap.peek() {
            Some(p) => p.due.saturating_duration_since(clock.now()).min(MAX_WAIT),
            None => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(Cmd::Schedule(due, group, envelope)) => {
                seq += 1;
                heap.push(Parked {
                    due,
                    seq,
                    group,
                    envelope,
                });
            }
            Ok(Cmd::Close(reply)) => {
                // Schedules sent before this close are handed back too, not
                // dropped with the channel (later sends fail at the sender,
                // which keeps the message).
                let late = rx.try_iter().filter_map(|cmd| match cmd {
                    Cmd::Schedule(due, group, envelope) => Some(Parked {
                        due,
                        seq: 0,
                        group,
                        envelope,
                    }),
                    Cmd::Close(_) => None,
                });
                let left = heap
                    .into_vec()
                    .into_iter()
                    .chain(late)
                    .map(|p| {
                        p.group.unpark();
                        (Arc::clone(&p.group.name), p.envelope)
                    })
                    .collect();
                let _ = reply.send(left);
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // Every handle is gone: nobody can close us, so release what we hold.
                for p in heap.drain() {
                    p.group.unpark();
                    p.group.push_forced(p.envelope);
                }
                return;
            }
        }
        let now = clock.now();
        while heap.peek().is_some_and(|p| p.due <= now) {
            if let Some(p) = heap.pop() {
                // Push before unpark so the group's depth never dips to zero
                // while the message is in transit.
                p.group.push_forced(p.envelope);
                p.group.unpark();
            }
        }
    }
}
