//! The bus's ledger: live counters that account for every message.

use bus_sync::Striped;
use bus_sync::prim::atomic::{AtomicU64, Ordering::Relaxed};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A snapshot of the bus's counters.
///
/// The unit is a *delivery*: one copy of a message for one subscriber group
/// (with one group per topic, a delivery is a message). A publish refused
/// before reaching any group counts once, in `published` and
/// `rejected_at_publish`.
///
/// Once the bus is idle or shut down, six terms account for every delivery:
///
/// ```text
/// published = acked + dead_lettered + rejected_at_publish
///           + discarded_by_policy + returned_at_shutdown + pending
/// ```
///
/// `returned_at_shutdown` is only what was handed back to the application
/// at shutdown: zero unless the dead-letter store refused writes then (those
/// messages are in the [`ShutdownReport`](crate::ShutdownReport); one
/// refused after the report was made, from a handler that outlived the
/// shutdown, can only be logged with its id). `pending` exists only on a
/// durable transport ([`Transport::durable`](crate::Transport::durable)):
/// what the broker still holds for the next run when the bus shuts down.
/// While the bus runs, the difference is [`in_flight`](Self::in_flight).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BusStats {
    /// Every publish call, accepted or not (times the groups reached):
    /// `accepted + rejected_at_publish`.
    pub published: u64,
    /// Deliveries the bus took: one per subscriber group a publish reached,
    /// plus one for each publish that reached no group and was discarded by
    /// [`Unrouted::Discard`](crate::Unrouted::Discard). Only ever grows.
    #[serde(default)]
    pub accepted: u64,
    /// Deliveries a handler completed.
    pub acked: u64,
    /// Deliveries stored in the dead-letter queue.
    pub dead_lettered: u64,
    /// Publishes refused (the publisher kept the message).
    pub rejected_at_publish: u64,
    /// Deliveries discarded by a configured policy (each logged).
    pub discarded_by_policy: u64,
    /// Deliveries handed back at shutdown because the DLQ refused them.
    pub returned_at_shutdown: u64,
    /// Deliveries a durable transport still held, unsettled, when the bus
    /// shut down: owed to the next run. Always 0 in memory.
    #[serde(default)]
    pub pending: u64,
    /// Handler failures (each one classified and reported).
    pub failed: u64,
    /// Of which, caught panics.
    pub panics: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Times a guard (an open breaker) refused and its subscriber paused
    /// fetching; the messages waited in the transport (not failures).
    pub parked: u64,
    /// Dead-letter writes that failed (the message stayed queued).
    pub dlq_write_failures: u64,
}

impl BusStats {
    /// Deliveries that reached an end: acked, dead-lettered, rejected,
    /// discarded or returned.
    pub fn settled(&self) -> u64 {
        self.acked
            + self.dead_lettered
            + self.rejected_at_publish
            + self.discarded_by_policy
            + self.returned_at_shutdown
    }

    /// Deliveries not yet at an end (queued, in a handler, waiting to
    /// retry) and not left pending in a durable transport. Zero once the
    /// bus is idle.
    pub fn in_flight(&self) -> u64 {
        self.published
            .saturating_sub(self.settled())
            .saturating_sub(self.pending)
    }

    /// Whether the no-loss invariant holds exactly, all six terms (only
    /// meaningful once idle).
    pub fn invariant_holds(&self) -> bool {
        self.published == self.settled() + self.pending
    }
}

/// A read-only handle on a bus's ledger, the counters behind
/// [`Bus::stats`](crate::Bus::stats): an [`Observer`](crate::Observer) gets
/// one in [`attach`](crate::Observer::attach) and reads publishes from it
/// rather than being told of each one. Cheap to clone; a read sums every
/// stripe of every counter, so read it when reporting, not per message.
///
/// ```
/// use bus_core::bus_errors::HandlerError;
/// use bus_core::{Bus, Ledger, Message, Observer};
/// use std::sync::{Arc, OnceLock};
///
/// #[derive(Default)]
/// struct Rates(OnceLock<Ledger>);
/// impl Observer for Rates {
///     fn attach(&self, ledger: &Ledger) {
///         let _ = self.0.set(ledger.clone());
///     }
///     // No events wanted: the bus then reads no clock to stamp them.
///     fn listening(&self) -> bool {
///         false
///     }
/// }
///
/// let rates = Arc::new(Rates::default());
/// let bus = Bus::builder().observer(rates.clone()).build();
/// bus.subscriber("billing")
///     .topic("orders")
///     .start(|_: &Message<'_>| Ok::<(), HandlerError>(()))
///     .unwrap();
/// bus.publish("orders", &b"x"[..]).unwrap();
/// assert_eq!(rates.0.get().unwrap().accepted(), 1);
/// ```
#[derive(Clone)]
pub struct Ledger(pub(crate) Arc<Counters>);

impl Ledger {
    /// The counters now (the same snapshot as [`Bus::stats`](crate::Bus::stats)).
    pub fn stats(&self) -> BusStats {
        self.0.snapshot()
    }

    /// [`BusStats::accepted`] alone: one counter, which only grows, so two
    /// reads in a row never go backwards (a sum of two counters could).
    pub fn accepted(&self) -> u64 {
        self.0.sum(Counter::accepted)
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Ledger").field(&self.stats()).finish()
    }
}

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// One live counter of the ledger.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy)]
        pub(crate) enum Counter { $($name,)* }

        const COUNTERS: usize = [$(Counter::$name),*].len();

        impl Counters {
            pub(crate) fn snapshot(&self) -> BusStats {
                let mut s = BusStats { published: 0, $($name: self.sum(Counter::$name),)* };
                // Derived, not counted: a refusal counts once, and a reader
                // summing two counters that both move on it could see one
                // without the other.
                s.published = s.accepted + s.rejected_at_publish;
                s
            }
        }
    };
}

/// Live counters, striped: publishers and workers count at once on every
/// message, and each thread writes only its own stripe (a plain load and
/// store, no locked instruction, no line shared with another counting
/// thread). A snapshot sums the stripes.
#[derive(Debug)]
pub(crate) struct Counters(Striped<[AtomicU64; COUNTERS]>);

impl Default for Counters {
    fn default() -> Self {
        Self(Striped::new(|| std::array::from_fn(|_| AtomicU64::new(0))))
    }
}

impl Counters {
    #[inline]
    pub(crate) fn add(&self, c: Counter, n: u64) {
        let (cells, writer) = self.0.mine();
        writer.add(&cells[c as usize], n);
    }

    #[inline]
    pub(crate) fn inc(&self, c: Counter) {
        self.add(c, 1);
    }

    fn sum(&self, c: Counter) -> u64 {
        self.0
            .iter()
            .map(|cells| cells[c as usize].load(Relaxed))
            .sum()
    }
}

counters!(
    accepted,
    acked,
    dead_lettered,
    rejected_at_publish,
    discarded_by_policy,
    returned_at_shutdown,
    pending,
    failed,
    panics,
    retried,
    parked,
    dlq_write_failures,
);
