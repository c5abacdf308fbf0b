//! The ledger's six terms, each where only one end puts a delivery:
//! `published = acked + dead_lettered + rejected_at_publish +
//! discarded_by_policy + returned_at_shutdown + pending`.

use bus_core::memory::MemoryTransport;
use bus_core::{
    Bus, BusLetters, DeadLetter, DeadLetterReason, DeadLetterStore, DlqError, Envelope, LetterId,
    MemoryDeadLetters, Message, OverflowPolicy, PublishError, Receipt, SimpleRetry,
    SubscribeOptions, Subscription, Topic, Transport, TransportError,
};
use bus_errors::{Classification, ErrorCategory, ErrorReport, HandlerError, Severity};
use bus_test::{RecordingObserver, assert_invariant, wait_until};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

/// A handler that blocks until released.
fn gate() -> (Arc<AtomicBool>, impl bus_core::Handler) {
    let open = Arc::new(AtomicBool::new(false));
    let o = Arc::clone(&open);
    let h = move |_: &Message<'_>| -> Result<(), HandlerError> {
        while !o.load(SeqCst) {
            std::thread::park_timeout(Duration::from_millis(1));
        }
        Ok(())
    };
    (open, h)
}

/// A store whose first push waits until released and is then refused;
/// every other push is refused at once.
#[derive(Default)]
struct HeldThenRefused {
    entered: AtomicBool,
    release: AtomicBool,
}

impl DeadLetterStore for HeldThenRefused {
    fn push(&self, _letter: &DeadLetter) -> Result<LetterId, DlqError> {
        if !self.entered.swap(true, SeqCst) {
            while !self.release.load(SeqCst) {
                std::thread::park_timeout(Duration::from_millis(1));
            }
        }
        Err(DlqError::Closed)
    }
}

/// A copy a full queue refused (DeadLetter policy), which the store then
/// refuses after the shutdown closed the transport, can go nowhere: it is
/// dropped by the policy, logged and counted as `discarded_by_policy`.
/// `returned_at_shutdown` holds only what the shutdown handed back.
#[test]
fn an_overflow_copy_dropped_while_its_publish_runs_is_discarded_not_returned() {
    let store = Arc::new(HeldThenRefused::default());
    let bus = Arc::new(Bus::builder().dead_letters(store.clone()).build());
    let (open, gated) = gate();
    bus.subscriber("small")
        .topic("t")
        .capacity(1)
        .overflow(OverflowPolicy::DeadLetter)
        .start(gated)
        .unwrap();
    bus.publish("t", &b"in-handler"[..]).unwrap();
    assert!(wait_until(LONG, || bus.queue_depths()[0].depth == 0));
    bus.publish("t", &b"queued"[..]).unwrap();
    let b = Arc::clone(&bus);
    let publisher = std::thread::spawn(move || b.publish("t", &b"overflows"[..]));
    // The overflow copy is with the store, which holds it.
    assert!(wait_until(LONG, || store.entered.load(SeqCst)));
    let report = bus.shutdown(Duration::from_millis(20));
    assert_eq!(report.unsaved.len(), 1, "the queued copy is handed back");
    store.release.store(true, SeqCst);
    assert!(
        publisher.join().unwrap().is_ok(),
        "the publish was accepted"
    );
    open.store(true, SeqCst);
    assert!(wait_until(LONG, || bus.stats().invariant_holds()));
    let s = bus.stats();
    assert_invariant(&s);
    assert_eq!(
        (s.acked, s.returned_at_shutdown, s.discarded_by_policy),
        (1, 1, 1),
        "{s:?}"
    );
}

/// The memory transport around a shared core that records what the bus
/// lends it, and can play a durable one.
struct Lending {
    inner: MemoryTransport,
    letters: Mutex<Option<BusLetters>>,
    durable: bool,
}

impl Lending {
    fn new(durable: bool) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryTransport::new(),
            letters: Mutex::new(None),
            durable,
        })
    }
}

impl Transport for Lending {
    fn publish(&self, envelope: Envelope, timeout: Duration) -> Result<Receipt, PublishError> {
        self.inner.publish(envelope, timeout)
    }
    fn publish_to_group(
        &self,
        group: &str,
        envelope: Envelope,
        timeout: Duration,
    ) -> Result<Receipt, PublishError> {
        self.inner.publish_to_group(group, envelope, timeout)
    }
    fn subscribe(
        &self,
        topic: &Topic,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        self.inner.subscribe(topic, options)
    }
    fn durable(&self) -> bool {
        self.durable
    }
    fn attach(&self, letters: BusLetters) {
        *self.letters.lock().expect("not poisoned") = Some(letters);
    }
    fn close(&self) -> Vec<(Arc<str>, Envelope)> {
        let left = self.inner.close();
        if self.durable {
            // A broker keeps them for the next run.
            return Vec::new();
        }
        left
    }
}

fn letter(group: &str) -> DeadLetter {
    let env = Envelope::new(Topic::new("t").expect("valid"), &b"x"[..]);
    let class = Classification::new(ErrorCategory::MessageProcessing, Severity::High);
    let report = ErrorReport::new(class, group, "the broker stopped redelivering");
    DeadLetter::new(
        env,
        report,
        DeadLetterReason::RetriesExhausted,
        group,
        group,
    )
}

/// A letter a transport writes on its own (a broker's redelivery limit)
/// goes to the bus's store and into its ledger and events, like the bus's
/// own; once the bus is gone the transport is refused and keeps it.
#[test]
fn a_transport_dead_letters_through_the_bus_into_its_ledger() {
    let transport = Lending::new(false);
    let dlq = MemoryDeadLetters::new();
    let seen = RecordingObserver::new();
    let bus = Bus::builder()
        .transport(transport.clone())
        .dead_letters(Arc::new(dlq.clone()))
        .observer(seen.clone())
        .build();
    let letters = transport
        .letters
        .lock()
        .unwrap()
        .clone()
        .expect("the bus attached");
    letters.push(&letter("g")).unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(bus.stats().dead_lettered, 1);
    assert_eq!(seen.count("dead_lettered"), 1);
    drop(bus);
    assert!(matches!(letters.push(&letter("g")), Err(DlqError::Closed)));
}

/// On a durable transport, what is unsettled at shutdown stays with the
/// broker: counted as `pending`, and the invariant holds with it.
#[test]
fn what_a_durable_transport_keeps_at_shutdown_is_pending() {
    let transport = Lending::new(true);
    let bus = Bus::builder()
        .transport(transport)
        .recovery(Arc::new(SimpleRetry {
            max_retries: 3,
            delay: Duration::from_secs(3600),
        }))
        .build();
    bus.subscriber("s")
        .topic("t")
        .start(|_: &Message<'_>| -> Result<(), std::io::Error> {
            Err(std::io::Error::other("down"))
        })
        .unwrap();
    bus.publish("t", &b"waits to retry"[..]).unwrap();
    assert!(wait_until(LONG, || bus.stats().retried == 1));
    let report = bus.shutdown(Duration::from_millis(20));
    let s = report.stats;
    assert_invariant(&s);
    assert_eq!((s.published, s.pending, s.returned_at_shutdown), (1, 1, 0));
    assert_eq!(s.in_flight(), 0);
}
