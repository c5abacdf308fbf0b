//! The observation plugs: [`ErrorSink`] receives every error report (the
//! logger), [`Observer`] every lifecycle event (the health monitor). Both have
//! no-op defaults for every method, so an implementation overrides only what
//! it needs, and both run on the delivery thread: they must not block.

use crate::time::Stamp;
use crate::{CircuitState, Ledger, Topic, dlq::DeadLetterReason, dlq::DlqError};
use bus_errors::{ErrorCategory, ErrorReport};
use std::sync::Arc;
use std::time::Duration;

/// Receives every error report (sanitized). Must not block the caller.
pub trait ErrorSink: Send + Sync {
    /// Records one report.
    fn record(&self, _report: &ErrorReport) {}

    /// A delivery that failed before succeeded on attempt `attempt` (above
    /// 1): a recovery that worked. Its failures were reported when they
    /// happened; this is the outcome they could not know. Called only on
    /// that path, so an ordinary ack costs a sink nothing.
    fn recovered(&self, _component: &str, _topic: &Topic, _attempt: u32) {}
}

impl<T: ErrorSink + ?Sized> ErrorSink for Arc<T> {
    fn record(&self, report: &ErrorReport) {
        (**self).record(report)
    }

    fn recovered(&self, component: &str, topic: &Topic, attempt: u32) {
        (**self).recovered(component, topic, attempt)
    }
}

/// A sink that records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSink;

impl ErrorSink for NoSink {}

/// One thing that happened to a message or a component.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum BusEvent<'a> {
    /// A publish (or one group's copy) was refused; the publisher keeps it.
    Rejected {
        /// The topic as given.
        topic: &'a str,
        /// The [`PublishError::kind`](crate::PublishError::kind).
        reason: &'static str,
    },
    /// A delivery succeeded.
    Acked {
        /// The topic.
        topic: &'a Topic,
        /// The subscriber.
        component: &'a str,
        /// When the message was created: an observer that wants end-to-end
        /// latency reads its own clock (the pipeline does not pay for a
        /// wall-clock read per message on everyone's behalf).
        created_at: std::time::SystemTime,
        /// The handler's own run time.
        handler_time: Duration,
        /// Which attempt succeeded (above 1 means a retry recovered it).
        attempt: u32,
    },
    /// A delivery failed (the report is also sent to the [`ErrorSink`]).
    Failed {
        /// The report.
        report: &'a ErrorReport,
    },
    /// A retry was scheduled.
    Retried {
        /// The topic.
        topic: &'a Topic,
        /// The subscriber.
        component: &'a str,
        /// The attempt that failed.
        attempt: u32,
        /// The delay before the next one.
        delay: Duration,
    },
    /// A message was stored in the dead-letter queue.
    DeadLettered {
        /// The topic.
        topic: &'a Topic,
        /// The subscriber.
        component: &'a str,
        /// The last failure's category.
        category: ErrorCategory,
        /// Why.
        reason: &'a DeadLetterReason,
    },
    /// A failure was escalated to an operator (also dead-lettered).
    Escalated {
        /// The report.
        report: &'a ErrorReport,
    },
    /// A message was discarded by a configured policy (counted).
    Discarded {
        /// The topic.
        topic: &'a Topic,
        /// The subscriber, or the group whose queue overflowed.
        component: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// A guard (an open breaker) refused: the subscriber pauses `retry_after`
    /// before fetching again, and its messages wait in the transport.
    Parked {
        /// The subscriber.
        component: &'a str,
        /// The guard's state.
        state: CircuitState,
        /// The wait.
        retry_after: Duration,
    },
    /// A circuit changed state.
    CircuitTransition {
        /// The component.
        component: &'a str,
        /// The old state.
        from: CircuitState,
        /// The new state.
        to: CircuitState,
    },
    /// Writing to the dead-letter queue failed; the subscriber pauses and the
    /// message stays queued.
    DlqWriteFailed {
        /// The subscriber.
        component: &'a str,
        /// The error.
        error: &'a DlqError,
    },
    /// The dead-letter queue accepts writes again.
    DlqRecovered {
        /// The subscriber.
        component: &'a str,
    },
}

/// Sees every [`BusEvent`], and reads publishes from the bus's [`Ledger`].
/// Must be cheap and must not block.
///
/// Each event comes stamped with `at`, when it happened on the bus's
/// [`Clock`](crate::time::Clock): the bus has already read the clock for its
/// own bookkeeping, so an observer that keeps time windows need not read it
/// again (a clock read costs more than counting the event).
pub trait Observer: Send + Sync {
    /// Called for each event.
    fn on_event(&self, _at: Stamp, _event: &BusEvent<'_>) {}

    /// Called once by each bus built with this observer, before it runs,
    /// with that bus's [`Ledger`]. Publishes are not events: the ledger
    /// counts them ([`Ledger::accepted`], and refusals in
    /// `rejected_at_publish`), and an observer that reports them reads it
    /// when it reports: a call per publish, even unstamped, would cost the
    /// publish path more than the rest of its error handling
    /// (docs/architecture.md, "Time").
    fn attach(&self, _ledger: &Ledger) {}

    /// Whether this observer wants events at all. [`NoObserver`] does not, so
    /// a bus without observers reads no clock to stamp them.
    fn listening(&self) -> bool {
        true
    }
}

impl<T: Observer + ?Sized> Observer for Arc<T> {
    fn on_event(&self, at: Stamp, event: &BusEvent<'_>) {
        (**self).on_event(at, event)
    }

    fn attach(&self, ledger: &Ledger) {
        (**self).attach(ledger)
    }

    fn listening(&self) -> bool {
        (**self).listening()
    }
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn listening(&self) -> bool {
        false
    }
}

/// Sends each event to several observers, in order.
#[derive(Clone, Default)]
pub struct Observers(Vec<Arc<dyn Observer>>);

impl Observers {
    /// An empty fan-out.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an observer.
    pub fn push(&mut self, observer: Arc<dyn Observer>) {
        self.0.push(observer);
    }

    /// How many observers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers")
            .field("len", &self.0.len())
            .finish()
    }
}

impl Observer for Observers {
    fn on_event(&self, at: Stamp, event: &BusEvent<'_>) {
        for o in &self.0 {
            o.on_event(at, event);
        }
    }

    fn attach(&self, ledger: &Ledger) {
        for o in &self.0 {
            o.attach(ledger);
        }
    }

    fn listening(&self) -> bool {
        self.0.iter().any(|o| o.listening())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn _obj_safe(_: Box<dyn Observer>, _: Box<dyn ErrorSink>) {}

    struct Counting(std::sync::atomic::AtomicU32);
    impl Observer for Counting {
        fn on_event(&self, _: Stamp, _: &BusEvent<'_>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn a_fan_out_listens_when_any_member_does() {
        let mut all = Observers::new();
        all.push(Arc::new(NoObserver));
        assert!(!all.listening(), "only NoObserver: nothing to stamp");
        let counting = Arc::new(Counting(std::sync::atomic::AtomicU32::new(0)));
        all.push(Arc::clone(&counting) as Arc<dyn Observer>);
        assert!(all.listening());
        let wrapped: Arc<dyn Observer> = Arc::new(all);
        assert!(
            Arc::clone(&wrapped).listening(),
            "Arc<T> forwards listening()"
        );
        wrapped.on_event(Stamp::default(), &BusEvent::DlqRecovered { component: "c" });
        assert_eq!(counting.0.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
