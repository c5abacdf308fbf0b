//! A member of a consumer group: leases deliveries a few at a time and
//! settles each through the writer.

use crate::group::GroupState;
use crate::row::extra_of;
use crate::shared::{How, Leased, Op, Shared, token};
use bus_core::{Delivery, Envelope, Settle, Subscription, TransportError, Wake};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct SqliteSubscription {
    shared: Arc<Shared>,
    group: Arc<GroupState>,
    settler: Arc<dyn Settle>,
    /// Leased ahead of the consumer, in queue order.
    buffer: VecDeque<Leased>,
    woken: Arc<AtomicBool>,
    /// The group's signal when a lease last came back empty: no need to
    /// ask again until it moves (or the poll interval passes).
    empty_at: Option<u64>,
    last_lease: Option<Instant>,
}

impl SqliteSubscription {
    pub(crate) fn new(shared: Arc<Shared>, group: Arc<GroupState>) -> Self {
        let settler: Arc<dyn Settle> = Arc::new(Settler(Arc::clone(&shared), Arc::clone(&group)));
        Self {
            shared,
            group,
            settler,
            buffer: VecDeque::new(),
            woken: Arc::default(),
            empty_at: None,
            last_lease: None,
        }
    }

    fn lease(&mut self) -> Result<(), TransportError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let op = Op::Lease {
            group: self.group.id,
            max: self.shared.config.prefetch,
            reply,
        };
        self.shared.submit(op).map_err(|_| TransportError::Closed)?;
        let rows = answer.recv().map_err(|_| TransportError::Closed)??;
        self.group.leased(rows.len());
        self.buffer.extend(rows);
        Ok(())
    }
}

impl Subscription for SqliteSubscription {
    fn next(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            while let Some(l) = self.buffer.pop_front() {
                // A lease that ran out while it waited here may be another
                // consumer's now: the writer returned it to the queue.
                if l.lease_until > self.shared.clock.now_ms() {
                    if l.seq < self.shared.fresh_from {
                        self.shared
                            .resumed
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(l.seq);
                    }
                    let token = token(l.seq, l.leases);
                    return Ok(Some(Delivery::new(
                        l.envelope,
                        token,
                        Arc::clone(&self.settler),
                    )));
                }
                self.group.let_go();
            }
            if self.shared.is_closed() {
                return Err(TransportError::Closed);
            }
            if self.woken.swap(false, Ordering::SeqCst) {
                return Ok(None);
            }
            let seen = self.group.generation();
            let poll = self.shared.config.poll_interval;
            let polled_long_ago = self.last_lease.is_none_or(|t| t.elapsed() >= poll);
            if self.empty_at != Some(seen) || polled_long_ago {
                self.last_lease = Some(Instant::now());
                self.lease()?;
                if !self.buffer.is_empty() {
                    self.empty_at = None;
                    continue;
                }
                self.empty_at = Some(seen);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            let next_poll = self.last_lease.map_or(now, |t| t + poll);
            let until = deadline.map_or(next_poll, |d| d.min(next_poll));
            self.group.wait_change(seen, until, &self.woken);
        }
    }

    fn waker(&self) -> Option<Wake> {
        let group = Arc::clone(&self.group);
        let woken = Arc::clone(&self.woken);
        Some(Wake::new(move || {
            woken.store(true, Ordering::SeqCst);
            group.wake_all();
        }))
    }
}

impl Drop for SqliteSubscription {
    fn drop(&mut self) {
        // Leased ahead and never handed out: back to the queue now, not at
        // their deadline.
        for l in self.buffer.drain(..) {
            self.group.let_go();
            let op = Op::Settle {
                token: token(l.seq, l.leases),
                how: How::Release,
            };
            let _ = self.shared.submit(op);
        }
    }
}

/// Settles deliveries by handing the writer an operation; nothing waits
/// for its commit (a settle lost to a crash only redelivers).
struct Settler(Arc<Shared>, Arc<GroupState>);

impl Settler {
    fn send(&self, token: u64, how: How) {
        if !matches!(how, How::Extend) {
            self.1.let_go();
        }
        // Closed: the close returned this open's leases to their queues.
        let _ = self.0.submit(Op::Settle { token, how });
    }
}

impl Settle for Settler {
    fn ack(&self, token: u64, _envelope: &Envelope) {
        self.send(token, How::Ack);
    }

    fn nak(&self, token: u64, envelope: Envelope, delay: Duration) {
        let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        // A delay under a millisecond still waits: due 0 means ready now.
        let delay_ms = if delay.is_zero() { 0 } else { delay_ms.max(1) };
        self.send(
            token,
            How::Nak {
                delay_ms,
                attempt: envelope.attempt,
                extra: extra_of(&envelope),
            },
        );
    }

    fn term(&self, token: u64, _envelope: &Envelope) {
        self.send(token, How::Term);
    }

    fn in_progress(&self, token: u64) {
        self.send(token, How::Extend);
    }
}
