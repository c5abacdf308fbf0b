//! The delivery pipeline end to end on the memory transport: every failure
//! path, and the ledger checked exactly.

use bus_core::time::ManualClock;
use bus_core::{
    Bus, BusConfig, DeadLetterReason, Decision, Envelope, Failure, Guard, GuardProvider,
    MemoryDeadLetters, Message, NoRetry, Outcome, OverflowPolicy, Permit, Priority, PublishError,
    RecoveryPolicy, Rejected, Resolution, SimpleRetry, Topic, TopicError, Unrouted,
};
use bus_errors::{ErrorCategory, HandlerError};
use bus_test::{
    FaultInjector, FlakyHandler, FlakyStore, RecordingObserver, Script, assert_invariant,
    wait_until,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(20);

fn retry(delay_ms: u64, max_retries: u32) -> Arc<SimpleRetry> {
    Arc::new(SimpleRetry {
        max_retries,
        delay: Duration::from_millis(delay_ms),
    })
}

#[test]
fn many_publishers_with_failing_and_panicking_handlers_account_for_every_message() {
    let dlq = MemoryDeadLetters::new();
    let bus = Bus::builder()
        .recovery(retry(1, 2))
        .dead_letters(Arc::new(dlq.clone()))
        .build();
    let faults = FaultInjector::new(42)
        .transient(0.2)
        .poison(0.05)
        .panics(0.05);
    for (name, workers) in [("billing", 3), ("audit", 2)] {
        bus.subscriber(name)
            .topic("orders")
            .workers(workers)
            .capacity(256)
            .start(faults.handler())
            .unwrap();
    }
    let publishers: Vec<_> = (0..4)
        .map(|_| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..1_500_u32 {
                    ids.push(bus.publish("orders", i.to_le_bytes().to_vec()).unwrap());
                }
                ids
            })
        })
        .collect();
    let ids: Vec<_> = publishers
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    let report = bus.shutdown(LONG);
    assert!(report.drained, "not drained: {report:?}");
    let s = report.stats;
    assert_invariant(&s);
    assert_eq!(s.published, 2 * 6_000, "two groups, one copy each");
    assert_eq!(s.dead_lettered as usize, dlq.len());

    // Exactly the poison and panicking messages were dead-lettered, in each group;
    // every transient one recovered.
    let expected_dead: usize = ids
        .iter()
        .filter(|id| {
            !matches!(
                faults.fault_for(**id),
                bus_test::Fault::Clean | bus_test::Fault::Transient(_)
            )
        })
        .count();
    assert_eq!(dlq.len(), 2 * expected_dead);
    assert_eq!(s.acked as usize, 2 * (ids.len() - expected_dead));
    let panics = ids
        .iter()
        .filter(|id| faults.fault_for(**id) == bus_test::Fault::Panic)
        .count();
    assert_eq!(
        s.panics as usize,
        2 * panics * 3,
        "each panicking message is tried 3 times per group"
    );
    for letter in dlq.letters() {
        assert_eq!(letter.reason, DeadLetterReason::RetriesExhausted);
        assert_eq!(
            letter.envelope.history.len(),
            3,
            "history of all three attempts"
        );
    }
}

#[test]
fn a_handler_failing_twice_then_succeeding_is_acked_after_exactly_two_retries() {
    let observer = RecordingObserver::new();
    let bus = Bus::builder()
        .recovery(retry(1, 5))
        .observer(observer.clone())
        .build();
    let handler = FlakyHandler::new(Script::fail_then_ok(2, ErrorCategory::Timeout));
    bus.subscriber("s")
        .topic("t")
        .start(handler.clone())
        .unwrap();
    let id = bus.publish("t", &b"x"[..]).unwrap();
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!(
        (s.acked, s.failed, s.retried, s.dead_lettered),
        (1, 2, 2, 0)
    );
    assert_eq!(handler.attempts_of(id), Some(3));
    let reports = observer.reports();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[1].attempt, 2);
    assert_eq!(reports[1].retry_count, 1);
    assert!(reports[1].recovery_attempted);
    assert_eq!(reports[1].category, ErrorCategory::Timeout);
    assert_eq!(observer.count("retried"), 2);
}

#[test]
fn a_panicking_handler_is_caught_classified_and_the_worker_lives_on() {
    let dlq = MemoryDeadLetters::new();
    let observer = RecordingObserver::new();
    let bus = Bus::builder()
        .recovery(Arc::new(NoRetry))
        .dead_letters(Arc::new(dlq.clone()))
        .observer(observer.clone())
        .build();
    bus.subscriber("s")
        .topic("t")
        .start(|m: &Message<'_>| -> Result<(), HandlerError> {
            if &m.payload[..] == b"boom" {
                panic!("handler exploded");
            }
            Ok(())
        })
        .unwrap();
    bus.publish("t", &b"boom"[..]).unwrap();
    for _ in 0..10 {
        bus.publish("t", &b"fine"[..]).unwrap();
    }
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!((s.acked, s.panics, s.dead_lettered), (10, 1, 1));
    let r = &observer.reports()[0];
    assert_eq!(r.category, ErrorCategory::MessageProcessing);
    assert_eq!(r.severity, bus_errors::Severity::High);
    assert!(r.message.contains("handler exploded"), "{}", r.message);
    assert_eq!(
        dlq.letters()[0].report.error_type,
        "bus_errors::error::PanicError"
    );
}

#[test]
fn invalid_topics_and_oversized_payloads_are_refused_with_typed_errors_and_handed_back() {
    let mut config = BusConfig::default();
    config.max_payload_bytes = 8;
    let bus = Bus::builder().config(config).build();
    bus.subscriber("s")
        .topic("t")
        .start(|_: &Message<'_>| Ok::<(), HandlerError>(()))
        .unwrap();
    match bus.publish("bad topic", &b"payload"[..]) {
        Err(PublishError::InvalidTopic {
            source: TopicError::InvalidChar { ch: ' ', .. },
            payload,
            ..
        }) => {
            assert_eq!(&payload[..], b"payload")
        }
        other => panic!("unexpected {other:?}"),
    }
    match bus.publish("t", vec![7_u8; 9]) {
        Err(PublishError::PayloadTooLarge {
            envelope,
            size: 9,
            limit: 8,
        }) => assert_eq!(envelope.payload.len(), 9),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        bus.publish("t", vec![7_u8; 8]).is_ok(),
        "the limit is inclusive"
    );
    // A huge name is refused with a message that names its length, not one
    // that repeats it (it ends up in logs and terminals).
    let huge = "x".repeat(100_000);
    let err = bus.publish(&huge, &b"p"[..]).unwrap_err();
    let said = err.to_string();
    assert!(said.len() < 300, "{} bytes: {said:.300}", said.len());
    assert!(said.contains("100000 bytes"), "{said}");
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!((s.published, s.rejected_at_publish, s.acked), (4, 3, 1));
}

/// A handler that blocks until released, to fill queues deterministically.
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

#[test]
fn a_full_queue_under_reject_refuses_the_publish_and_counts_it() {
    let bus = Bus::builder().build();
    let (open, h) = gate();
    bus.subscriber("s")
        .topic("t")
        .capacity(2)
        .overflow(OverflowPolicy::Reject)
        .start(h)
        .unwrap();
    bus.publish("t", &b"in-handler"[..]).unwrap();
    assert!(
        wait_until(LONG, || bus.queue_depths()[0].depth == 0),
        "handler took the first message"
    );
    bus.publish("t", &b"1"[..]).unwrap();
    bus.publish("t", &b"2"[..]).unwrap();
    let err = bus.publish("t", &b"3"[..]).unwrap_err();
    assert!(matches!(&err, PublishError::QueueFull { group, .. } if group == "s"));
    assert_eq!(&err.into_payload()[..], b"3");
    open.store(true, SeqCst);
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!((s.acked, s.rejected_at_publish), (3, 1));
}

#[test]
fn a_full_queue_under_block_waits_then_rejects() {
    let mut config = BusConfig::default();
    config.publish_timeout = Duration::from_millis(30);
    let bus = Bus::builder().config(config).build();
    let (open, h) = gate();
    bus.subscriber("s")
        .topic("t")
        .capacity(1)
        .overflow(OverflowPolicy::Block { timeout: LONG })
        .start(h)
        .unwrap();
    bus.publish("t", &b"in-handler"[..]).unwrap();
    assert!(wait_until(LONG, || bus.queue_depths()[0].depth == 0));
    bus.publish("t", &b"queued"[..]).unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(
        bus.publish("t", &b"late"[..]),
        Err(PublishError::QueueFull { .. })
    ));
    assert!(
        started.elapsed() >= Duration::from_millis(30),
        "it waited the publish timeout first"
    );
    open.store(true, SeqCst);
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!((s.acked, s.rejected_at_publish), (2, 1));
}

#[test]
fn a_full_queue_under_dead_letter_spills_to_the_dlq_with_a_queue_overflow_report() {
    let dlq = MemoryDeadLetters::new();
    let bus = Bus::builder().dead_letters(Arc::new(dlq.clone())).build();
    let (open, h) = gate();
    bus.subscriber("s")
        .topic("t")
        .capacity(1)
        .overflow(OverflowPolicy::DeadLetter)
        .start(h)
        .unwrap();
    bus.publish("t", &b"in-handler"[..]).unwrap();
    assert!(wait_until(LONG, || bus.queue_depths()[0].depth == 0));
    bus.publish("t", &b"queued"[..]).unwrap();
    let spilled = bus.publish("t", &b"spilled"[..]).unwrap();
    open.store(true, SeqCst);
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!((s.acked, s.dead_lettered), (2, 1));
    let letter = &dlq.letters()[0];
    assert_eq!(letter.envelope.id, spilled);
    assert_eq!(letter.reason, DeadLetterReason::QueueOverflow);
    assert_eq!(letter.report.category, ErrorCategory::QueueOverflow);
}

/// A copy spilled by a full queue that the dead-letter store also refuses
/// goes back into its own group's queue: the other group gets no second
/// copy, and the ledger balances.
#[test]
fn a_spilled_copy_the_dlq_refuses_is_requeued_to_its_group_only() {
    let dlq = FlakyStore::failing_first(1);
    let bus = Bus::builder().dead_letters(dlq.clone()).build();
    let (open, gated) = gate();
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let other = Arc::clone(&seen);
    bus.subscriber("small")
        .topic("t")
        .capacity(1)
        .overflow(OverflowPolicy::DeadLetter)
        .start(gated)
        .unwrap();
    bus.subscriber("other")
        .topic("t")
        .start(move |m: &Message<'_>| -> Result<(), HandlerError> {
            other.lock().unwrap().push(m.payload.to_vec());
            Ok(())
        })
        .unwrap();
    bus.publish("t", &b"in-handler"[..]).unwrap();
    assert!(wait_until(LONG, || bus
        .queue_depths()
        .iter()
        .all(|q| q.depth == 0)));
    bus.publish("t", &b"queued"[..]).unwrap();
    bus.publish("t", &b"spilled"[..]).unwrap();
    assert_eq!(dlq.refused(), 1, "the spill met a refusing store");
    open.store(true, SeqCst);
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!((s.published, s.acked, s.dead_lettered), (6, 6, 0));
    let mut other_got = seen.lock().unwrap().clone();
    other_got.sort();
    assert_eq!(
        other_got,
        [&b"in-handler"[..], b"queued", b"spilled"].map(<[u8]>::to_vec)
    );
}

/// While the dead-letter store keeps refusing, spilled copies go back into
/// their queue only up to twice its capacity; the rest are discarded and
/// counted, so the queue stays bounded and the ledger balances.
#[test]
fn re_queued_spills_stop_at_twice_the_capacity_while_the_dlq_refuses() {
    let dlq = FlakyStore::failing_first(usize::MAX);
    let bus = Bus::builder().dead_letters(dlq.clone()).build();
    let (open, gated) = gate();
    bus.subscriber("small")
        .topic("t")
        .capacity(2)
        .overflow(OverflowPolicy::DeadLetter)
        .start(gated)
        .unwrap();
    bus.publish("t", &b"in-handler"[..]).unwrap();
    assert!(wait_until(LONG, || bus.queue_depths()[0].depth == 0));
    for _ in 0..50 {
        bus.publish("t", &b"more"[..]).unwrap();
    }
    assert_eq!(
        bus.queue_depths()[0].depth,
        4,
        "bounded at twice the capacity"
    );
    assert_eq!(dlq.refused(), 48, "every copy past the bound met the store");
    open.store(true, SeqCst);
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!((s.acked, s.discarded_by_policy), (5, 46));
}

/// Closing a subscription whose handler hangs returns by its timeout with
/// the worker left running; shutdown waits for that worker once the handler
/// returns, and the ledger balances.
#[test]
fn closing_a_subscription_returns_by_its_timeout_when_a_handler_hangs() {
    let bus = Bus::builder().build();
    let (open, gated) = gate();
    let handle = bus.subscriber("stuck").topic("t").start(gated).unwrap();
    bus.publish("t", &b"hangs"[..]).unwrap();
    assert!(wait_until(LONG, || bus.queue_depths()[0].depth == 0));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(handle.close(Duration::from_millis(20))));
    let left = rx
        .recv_timeout(LONG)
        .expect("close returned while the handler hangs");
    assert_eq!(left, 1, "the hung worker is left running");
    open.store(true, SeqCst);
    let report = bus.shutdown(LONG);
    assert_eq!(report.stuck_workers, 0);
    assert_invariant(&report.stats);
    assert_eq!(report.stats.acked, 1);
}

/// A handler that never returns does not hold shutdown past its deadline:
/// the worker is left running and reported, its delivery stays in flight,
/// and the ledger closes once the handler does return.
#[test]
fn shutdown_returns_by_its_deadline_when_a_handler_hangs() {
    let bus = Arc::new(Bus::builder().build());
    let (open, gated) = gate();
    bus.subscriber("stuck").topic("t").start(gated).unwrap();
    bus.publish("t", &b"hangs"[..]).unwrap();
    assert!(wait_until(LONG, || bus.queue_depths()[0].depth == 0));
    let (tx, rx) = std::sync::mpsc::channel();
    let b = Arc::clone(&bus);
    std::thread::spawn(move || tx.send(b.shutdown(Duration::from_millis(20))));
    let report = rx
        .recv_timeout(LONG)
        .expect("shutdown returned although a handler hangs");
    assert_eq!(report.stuck_workers, 1);
    assert!(!report.drained);
    assert_eq!(report.stats.in_flight(), 1);
    open.store(true, SeqCst);
    assert!(wait_until(LONG, || bus.stats().invariant_holds()));
    assert_eq!(bus.stats().acked, 1);
}

/// The same, when the hung handler finally fails and its policy says retry:
/// the transport is closed, so the message is dead-lettered (reason
/// shutdown) instead of being handed to a timer that is gone.
#[test]
fn a_handler_that_fails_after_shutdown_gave_up_on_it_is_dead_lettered() {
    let dlq = MemoryDeadLetters::new();
    let bus = Arc::new(
        Bus::builder()
            .recovery(retry(1, 3))
            .dead_letters(Arc::new(dlq.clone()))
            .build(),
    );
    let open = Arc::new(AtomicBool::new(false));
    let o = Arc::clone(&open);
    bus.subscriber("stuck")
        .topic("t")
        .start(move |_: &Message<'_>| -> Result<(), HandlerError> {
            while !o.load(SeqCst) {
                std::thread::park_timeout(Duration::from_millis(1));
            }
            Err(HandlerError::msg("failed late"))
        })
        .unwrap();
    let id = bus.publish("t", &b"hangs"[..]).unwrap();
    assert!(wait_until(LONG, || bus.queue_depths()[0].depth == 0));
    let report = bus.shutdown(Duration::from_millis(20));
    assert_eq!(report.stuck_workers, 1);
    open.store(true, SeqCst);
    assert!(wait_until(LONG, || bus.stats().invariant_holds()));
    let s = bus.stats();
    assert_eq!((s.dead_lettered, s.failed, s.retried), (1, 1, 0));
    let letters = dlq.letters();
    assert_eq!(letters[0].envelope.id, id);
    assert_eq!(letters[0].reason, DeadLetterReason::Shutdown);
}

#[test]
fn a_full_queue_under_discard_lowest_discards_and_counts_only_lower_priorities() {
    let observer = RecordingObserver::new();
    let bus = Bus::builder().observer(observer.clone()).build();
    let (open, h) = gate();
    bus.subscriber("s")
        .topic("t")
        .capacity(2)
        .overflow(OverflowPolicy::DiscardLowest)
        .start(h)
        .unwrap();
    let t = Topic::new("t").unwrap();
    bus.publish("t", &b"in-handler"[..]).unwrap();
    assert!(wait_until(LONG, || bus.queue_depths()[0].depth == 0));
    bus.publish_envelope(Envelope::new(t.clone(), &b"low"[..]).with_priority(Priority::Low))
        .unwrap();
    bus.publish_envelope(Envelope::new(t.clone(), &b"normal"[..]))
        .unwrap();
    bus.publish_envelope(
        Envelope::new(t.clone(), &b"critical"[..]).with_priority(Priority::Critical),
    )
    .unwrap();
    open.store(true, SeqCst);
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!((s.acked, s.discarded_by_policy), (3, 1));
    assert_eq!(observer.count("discarded"), 1);
}

#[test]
fn unrouted_publishes_are_rejected_by_default_or_discarded_when_configured() {
    let bus = Bus::builder().build();
    assert!(matches!(
        bus.publish("nobody", &b"x"[..]),
        Err(PublishError::NoSubscribers { .. })
    ));
    assert_invariant(&bus.shutdown(LONG).stats);

    let mut config = BusConfig::default();
    config.unrouted = Unrouted::Discard;
    let bus = Bus::builder().config(config).build();
    assert!(bus.publish("nobody", &b"x"[..]).is_ok());
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!(s.discarded_by_policy, 1);
}

#[test]
fn shutdown_dead_letters_what_could_not_be_delivered_and_leaves_nothing_unaccounted() {
    let dlq = MemoryDeadLetters::new();
    // Retries far in the future: at shutdown they are still waiting.
    let bus = Bus::builder()
        .recovery(retry(3_600_000, 3))
        .dead_letters(Arc::new(dlq.clone()))
        .build();
    let h = FlakyHandler::new(Script::always_fail(ErrorCategory::Connection));
    bus.subscriber("s").topic("t").start(h.clone()).unwrap();
    for _ in 0..20 {
        bus.publish("t", &b"x"[..]).unwrap();
    }
    assert!(wait_until(LONG, || h.calls() == 20));
    let report = bus.shutdown(Duration::from_millis(100));
    assert!(!report.drained);
    assert_eq!(report.dead_lettered_at_shutdown, 20);
    assert_invariant(&report.stats);
    assert!(
        dlq.letters()
            .iter()
            .all(|l| l.reason == DeadLetterReason::Shutdown && l.envelope.attempt == 2)
    );
    // After shutdown, publishing is refused and counted.
    assert!(matches!(
        bus.publish("t", &b"late"[..]),
        Err(PublishError::Closed { .. })
    ));
}

#[test]
fn no_worker_sleeps_while_a_message_waits_to_retry() {
    // One worker. The first message fails and waits an hour to retry; the rest
    // must flow through the same worker meanwhile.
    let clock = ManualClock::new();
    let bus = Bus::builder()
        .clock(Arc::new(clock.clone()))
        .recovery(retry(3_600_000, 1))
        .build();
    let acked = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&acked);
    bus.subscriber("s")
        .topic("t")
        .start(move |m: &Message<'_>| -> Result<(), HandlerError> {
            if &m.payload[..] == b"slow" && m.attempt == 1 {
                return Err(HandlerError::msg("not yet"));
            }
            a.fetch_add(1, SeqCst);
            Ok(())
        })
        .unwrap();
    bus.publish("t", &b"slow"[..]).unwrap();
    for _ in 0..100 {
        bus.publish("t", &b"fast"[..]).unwrap();
    }
    assert!(
        wait_until(LONG, || acked.load(SeqCst) == 100),
        "other messages flowed while one waited"
    );
    assert_eq!(bus.stats().in_flight(), 1);
    clock.advance(Duration::from_secs(3600));
    assert!(
        wait_until(LONG, || acked.load(SeqCst) == 101),
        "the waiting one was retried once its time came"
    );
    assert_invariant(&bus.shutdown(LONG).stats);
}

#[test]
fn a_failing_dlq_keeps_the_message_queued_and_the_bus_reports_it() {
    let store = FlakyStore::failing_first(2);
    let observer = RecordingObserver::new();
    let mut config = BusConfig::default();
    config.dlq_retry_delay = Duration::from_millis(5);
    let bus = Bus::builder()
        .config(config)
        .recovery(Arc::new(NoRetry))
        .dead_letters(store.clone())
        .observer(observer.clone())
        .build();
    bus.subscriber("s")
        .topic("t")
        .start(FlakyHandler::new(Script::always_fail(
            ErrorCategory::Serialization,
        )))
        .unwrap();
    let id = bus.publish("t", &b"poison"[..]).unwrap();
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!((s.dead_lettered, s.dlq_write_failures), (1, 2));
    assert_eq!(store.inner.letters()[0].envelope.id, id);
    assert_eq!(observer.count("dlq_failed"), 2);
    assert_eq!(observer.count("dlq_recovered"), 1);
    assert_eq!(
        store.inner.letters()[0].envelope.history.len(),
        1,
        "failed DLQ writes leave no phantom attempts"
    );
}

/// A guard that refuses until opened.
struct Gate(AtomicBool);
impl Guard for Gate {
    fn try_acquire(&self) -> Result<Permit, Rejected> {
        if self.0.load(SeqCst) {
            Ok(Permit::new(0))
        } else {
            Err(Rejected {
                state: bus_core::CircuitState::Open,
                retry_after: Duration::from_millis(1),
            })
        }
    }
    fn record(&self, _: Permit, _: Outcome) {}
}
struct Provider(Arc<Gate>);
impl GuardProvider for Provider {
    fn guard(&self, _: &str) -> Arc<dyn Guard> {
        self.0.clone()
    }
}

#[test]
fn an_open_guard_pauses_fetching_and_the_message_waits_in_the_transport() {
    let gate = Arc::new(Gate(AtomicBool::new(false)));
    let observer = RecordingObserver::new();
    let bus = Bus::builder()
        .guards(Arc::new(Provider(Arc::clone(&gate))))
        .observer(observer.clone())
        .build();
    let h = FlakyHandler::new(Script(vec![bus_test::Step::Ok]));
    bus.subscriber("s").topic("t").start(h.clone()).unwrap();
    bus.publish("t", &b"x"[..]).unwrap();
    assert!(wait_until(LONG, || observer.count("parked") >= 3));
    // Not fetched, not failed: still queued in the transport, handler untouched.
    assert_eq!(bus.queue_depths()[0].depth, 1);
    assert_eq!(h.calls(), 0);
    gate.0.store(true, SeqCst);
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!((s.failed, s.acked), (0, 1));
    assert!(s.parked >= 3);
    assert_eq!(h.calls(), 1);
}

struct Scripted(Mutex<Vec<Decision>>);
impl RecoveryPolicy for Scripted {
    fn decide(&self, _: &Failure<'_>) -> Resolution {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(0)
            .into()
    }
}

#[test]
fn discard_and_escalate_decisions_are_counted_and_observed() {
    let dlq = MemoryDeadLetters::new();
    let observer = RecordingObserver::new();
    let policy = Scripted(Mutex::new(vec![
        Decision::Discard {
            reason: "configured".into(),
        },
        Decision::Escalate {
            reason: DeadLetterReason::NotRetryable,
        },
    ]));
    let bus = Bus::builder()
        .recovery(Arc::new(policy))
        .dead_letters(Arc::new(dlq.clone()))
        .observer(observer.clone())
        .build();
    bus.subscriber("s")
        .topic("t")
        .start(FlakyHandler::new(Script::always_fail(
            ErrorCategory::Authentication,
        )))
        .unwrap();
    bus.publish("t", &b"1"[..]).unwrap();
    bus.publish("t", &b"2"[..]).unwrap();
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!((s.discarded_by_policy, s.dead_lettered), (1, 1));
    assert_eq!(observer.count("escalated"), 1);
    assert_eq!(dlq.letters()[0].reason, DeadLetterReason::NotRetryable);
}

#[test]
fn reports_carry_message_identity_and_sanitized_context() {
    let observer = RecordingObserver::new();
    let bus = Bus::builder()
        .recovery(Arc::new(NoRetry))
        .observer(observer.clone())
        .build();
    bus.subscriber("s")
        .topic("t")
        .start(|_: &Message<'_>| -> Result<(), HandlerError> {
            Err(HandlerError::msg("x".repeat(10_000)))
        })
        .unwrap();
    let env = Envelope::new(Topic::new("t").unwrap(), &b"p"[..]).with_correlation_id("corr-1");
    let id = bus.publish_envelope(env).unwrap();
    assert_invariant(&bus.shutdown(LONG).stats);
    let r = &observer.reports()[0];
    assert_eq!(r.message_id, Some(id));
    assert_eq!(r.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(r.topic.as_deref(), Some("t"));
    assert_eq!(r.component, "s");
    assert!(
        r.message.len() < 5_000,
        "message truncated by the sanitizer"
    );
}

#[test]
fn closing_a_subscription_keeps_its_group_queue_for_the_next_member() {
    let bus = Bus::builder().build();
    let first = FlakyHandler::new(Script(vec![bus_test::Step::Ok]));
    let handle = bus.subscriber("s").topic("t").start(first.clone()).unwrap();
    bus.publish("t", &b"1"[..]).unwrap();
    assert!(wait_until(LONG, || first.calls() == 1));
    assert_eq!(handle.close(LONG), 0);
    bus.publish("t", &b"2"[..]).unwrap();
    let second = FlakyHandler::new(Script(vec![bus_test::Step::Ok]));
    bus.subscriber("s")
        .topic("t")
        .start(second.clone())
        .unwrap();
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!((first.calls(), second.calls(), s.acked), (1, 1, 2));
}

#[test]
fn a_refused_dead_letter_pauses_the_subscriber() {
    // The DLQ refuses the poison message's letter: the subscriber pauses for
    // `dlq_retry_delay` instead of racing through messages it may not be able
    // to dead-letter either.
    let store = FlakyStore::failing_first(1);
    let observer = RecordingObserver::new();
    let mut config = BusConfig::default();
    config.dlq_retry_delay = Duration::from_millis(400);
    let bus = Bus::builder()
        .config(config)
        .recovery(Arc::new(NoRetry))
        .dead_letters(store.clone())
        .observer(observer.clone())
        .build();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = Arc::clone(&handled);
    bus.subscriber("s")
        .topic("t")
        .start(move |m: &Message<'_>| -> Result<(), HandlerError> {
            h.fetch_add(1, SeqCst);
            if &m.payload[..] == b"poison" {
                Err(HandlerError::msg("bad"))
            } else {
                Ok(())
            }
        })
        .unwrap();
    bus.publish("t", &b"poison"[..]).unwrap();
    assert!(wait_until(LONG, || observer.count("dlq_failed") == 1));
    bus.publish("t", &b"fine"[..]).unwrap();
    // A slow machine only makes this more likely to hold; it fails if no pause happens.
    assert!(
        !wait_until(Duration::from_millis(150), || handled.load(SeqCst) > 1),
        "worker did not pause"
    );
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    assert_eq!((s.acked, s.dead_lettered, s.dlq_write_failures), (1, 1, 1));
}

/// An observer is handed the bus's own ledger once, at build, and reads
/// every publish from it: accepted ones times their group copies, refused
/// ones once each and also as rejected.
#[test]
fn observers_read_publishes_from_the_ledger_they_are_attached_to() {
    #[derive(Default)]
    struct Attached(Mutex<Vec<bus_core::Ledger>>);
    impl bus_core::Observer for Attached {
        fn attach(&self, ledger: &bus_core::Ledger) {
            self.0.lock().unwrap().push(ledger.clone());
        }
    }
    let seen = Arc::new(Attached::default());
    let bus = Bus::builder().observer(seen.clone()).build();
    for group in ["billing", "audit"] {
        bus.subscriber(group)
            .topic("orders")
            .start(|_: &Message<'_>| Ok::<(), HandlerError>(()))
            .unwrap();
    }
    for i in 0..3_u8 {
        bus.publish("orders", vec![i]).unwrap();
    }
    assert!(bus.publish("orders..bad", &b"x"[..]).is_err());
    assert!(bus.publish("nobody.listens", &b"x"[..]).is_err());
    let s = bus.shutdown(LONG).stats;
    assert_invariant(&s);
    let ledgers = seen.0.lock().unwrap().clone();
    assert_eq!(ledgers.len(), 1, "attached once");
    let read = ledgers[0].stats();
    assert_eq!(read, s, "the observer reads the bus's own ledger");
    assert_eq!((read.published, read.rejected_at_publish), (3 * 2 + 2, 2));
    assert_eq!((read.accepted, ledgers[0].accepted()), (3 * 2, 3 * 2));
}

#[test]
fn a_message_published_by_a_handler_continues_its_conversation() {
    let bus = Arc::new(Bus::builder().build());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let inner = Arc::clone(&bus);
    bus.subscriber("shipping")
        .topic("orders.placed")
        .start(move |_: &Message<'_>| -> Result<(), HandlerError> {
            inner.publish("orders.shipped", &b"box"[..]).unwrap();
            Ok(())
        })
        .unwrap();
    let s2 = Arc::clone(&seen);
    bus.subscriber("mail")
        .topic("orders.shipped")
        .start(move |m: &Message<'_>| -> Result<(), HandlerError> {
            s2.lock().unwrap().push(m.envelope().clone());
            Ok(())
        })
        .unwrap();
    let first = bus.publish("orders.placed", &b"one"[..]).unwrap();
    let tagged = Envelope::new(Topic::new("orders.placed").unwrap(), &b"two"[..])
        .with_correlation_id("checkout-9");
    let second = bus.publish_envelope(tagged).unwrap();
    // Outside a handler nothing is added: the message is its own conversation.
    bus.publish("orders.shipped", &b"direct"[..]).unwrap();
    assert!(wait_until(LONG, || seen.lock().unwrap().len() == 3));
    let seen = seen.lock().unwrap().clone();
    let by_cause = |id: bus_core::MessageId| {
        seen.iter()
            .find(|e| e.headers.get(bus_core::trace::CAUSATION_ID) == Some(&id.to_string()))
            .unwrap_or_else(|| panic!("no message caused by {id}: {seen:?}"))
    };
    assert_eq!(by_cause(first).correlation_id, Some(first.to_string()));
    assert_eq!(
        by_cause(second).correlation_id.as_deref(),
        Some("checkout-9")
    );
    let direct = seen.iter().find(|e| &e.payload[..] == b"direct").unwrap();
    assert_eq!(direct.correlation_id, None);
    assert!(direct.headers.is_empty());
}
