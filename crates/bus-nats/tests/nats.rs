//! The transport against a real nats-server (started if needed; skipped
//! loudly when unreachable, unless BUS_REQUIRE_NATS=1).

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_core::{
    Bus, DeadLetterReason, Envelope, MemoryDeadLetters, Message, Priority, PublishError,
    SimpleRetry, SubscribeOptions, Topic, Transport,
};
use bus_errors::ErrorCategory;
use bus_nats::{ConnectionState, NatsDlq};
use bus_test::{FlakyHandler, Script, assert_invariant, wait_until};
use common::{T, TestNats, config, nats_available};
use std::sync::Arc;
use std::time::Duration;

macro_rules! require_nats {
    () => {
        if !nats_available(module_path!()) {
            return;
        }
    };
}

fn topic(s: &str) -> Topic {
    Topic::new(s).unwrap()
}

#[test]
fn round_trip_keeps_payload_and_headers() {
    require_nats!();
    let t = TestNats::new(config());
    assert_eq!(t.nats.connection_state(), ConnectionState::Connected);
    let tp = topic("orders.created");
    let mut sub = t
        .nats
        .subscribe(&tp, &SubscribeOptions::group("billing"))
        .unwrap();
    let env = Envelope::new(tp.clone(), &b"\x00{\"id\":1}\xff"[..])
        .with_priority(Priority::High)
        .with_header("tenant", "acme")
        .with_header("odd key", "a:b\r\nc")
        .with_correlation_id("req-42")
        .with_content_type("application/json");
    let receipt = t.nats.publish(env.clone(), T).unwrap();
    assert_eq!(receipt.copies, 1);
    let d = sub.next(T).unwrap().expect("a delivery");
    assert_eq!(d.envelope(), &env);
    d.ack();
    assert!(sub.next(Duration::from_millis(300)).unwrap().is_none());
    let depths = t.nats.queue_depths();
    assert_eq!(depths.len(), 1);
    assert_eq!(depths[0].depth, 0);
    assert_eq!(depths[0].group, "billing");
}

#[test]
fn publish_without_a_group_hands_the_message_back() {
    require_nats!();
    let t = TestNats::new(config());
    let env = Envelope::new(topic("nobody.home"), &b"x"[..]);
    let id = env.id;
    let err = t.nats.publish(env, T).unwrap_err();
    assert!(matches!(&err, PublishError::NoSubscribers { envelope } if envelope.id == id));
}

#[test]
fn same_envelope_id_published_twice_is_delivered_once() {
    require_nats!();
    let t = TestNats::new(config());
    let tp = topic("dedup");
    let mut sub = t
        .nats
        .subscribe(&tp, &SubscribeOptions::group("g"))
        .unwrap();
    let env = Envelope::new(tp, &b"once"[..]);
    assert_eq!(t.nats.publish(env.clone(), T).unwrap().copies, 1);
    assert_eq!(
        t.nats.publish(env.clone(), T).unwrap().copies,
        0,
        "a duplicate is no new copy"
    );
    assert_eq!(t.nats.stats().duplicate_publishes, 1);
    let d = sub.next(T).unwrap().expect("delivered");
    assert_eq!(d.envelope().id, env.id);
    d.ack();
    assert!(
        sub.next(Duration::from_millis(500)).unwrap().is_none(),
        "delivered twice"
    );
}

#[test]
fn every_group_gets_everything_and_members_share() {
    require_nats!();
    let t = TestNats::new(config());
    let tp = topic("fan.out");
    let mut a1 = t
        .nats
        .subscribe(&tp, &SubscribeOptions::group("a"))
        .unwrap();
    let mut a2 = t
        .nats
        .subscribe(&tp, &SubscribeOptions::group("a"))
        .unwrap();
    let mut b = t
        .nats
        .subscribe(&tp, &SubscribeOptions::group("b"))
        .unwrap();
    for i in 0..20 {
        let r = t
            .nats
            .publish(Envelope::new(tp.clone(), i.to_string()), T)
            .unwrap();
        assert_eq!(r.copies, 2);
    }
    let drain = |s: &mut Box<dyn bus_core::Subscription>, max: usize| {
        let mut got = Vec::new();
        while got.len() < max {
            match s.next(Duration::from_millis(500)).unwrap() {
                Some(d) => {
                    got.push(String::from_utf8(d.envelope().payload.to_vec()).unwrap());
                    d.ack();
                }
                None => break,
            }
        }
        got
    };
    // Alternate between the two members so both take part.
    let mut got_a = Vec::new();
    for _ in 0..10 {
        got_a.extend(drain(&mut a1, 1));
        got_a.extend(drain(&mut a2, 1));
    }
    got_a.extend(drain(&mut a1, 20));
    got_a.extend(drain(&mut a2, 20));
    let mut got_b = drain(&mut b, 40);
    let mut want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    want.sort();
    got_a.sort();
    got_b.sort();
    assert_eq!(got_a, want, "group a: each message once across its members");
    assert_eq!(got_b, want, "group b: everything");
}

#[test]
fn a_dropped_delivery_is_redelivered_with_the_same_attempt() {
    require_nats!();
    let t = TestNats::new(config());
    let tp = topic("drop");
    let mut sub = t
        .nats
        .subscribe(&tp, &SubscribeOptions::group("g"))
        .unwrap();
    t.nats.publish(Envelope::new(tp, &b"x"[..]), T).unwrap();
    let d = sub.next(T).unwrap().unwrap();
    assert_eq!(d.envelope().attempt, 1);
    drop(d);
    let d = sub.next(T).unwrap().expect("redelivered at once");
    assert_eq!(d.envelope().attempt, 1, "a drop is not a failed attempt");
    d.ack();
}

#[test]
fn retry_through_the_bus_naks_with_the_policy_delay() {
    require_nats!();
    let t = TestNats::new(config());
    let handler = FlakyHandler::new(Script::fail_then_ok(2, ErrorCategory::MessageProcessing));
    let bus = Bus::builder()
        .transport(Arc::new(t.nats.clone()))
        .recovery(Arc::new(SimpleRetry {
            max_retries: 3,
            delay: Duration::from_millis(200),
        }))
        .build();
    bus.subscriber("worker")
        .topic("jobs.run")
        .start(handler.clone())
        .unwrap();
    let started = std::time::Instant::now();
    let id = bus.publish("jobs.run", &b"job"[..]).unwrap();
    assert!(wait_until(Duration::from_secs(15), || bus.stats().acked == 1));
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "two naks of 200 ms each must delay the success"
    );
    assert_eq!(handler.attempts_of(id), Some(3));
    assert_eq!(handler.calls(), 3);
    let report = bus.shutdown(T);
    assert_eq!(report.stats.retried, 2);
    assert_invariant(&report.stats);
}

#[test]
fn poison_goes_to_the_dead_letter_store_then_is_termed() {
    require_nats!();
    let t = TestNats::new(config());
    let dlq = MemoryDeadLetters::new();
    let handler = FlakyHandler::new(Script::always_fail(ErrorCategory::Serialization));
    let bus = Bus::builder()
        .transport(Arc::new(t.nats.clone()))
        .dead_letters(Arc::new(dlq.clone()))
        .recovery(Arc::new(SimpleRetry {
            max_retries: 0,
            delay: Duration::from_millis(10),
        }))
        .build();
    bus.subscriber("parser")
        .topic("raw.in")
        .start(handler.clone())
        .unwrap();
    let id = bus.publish("raw.in", &b"\xffnot json"[..]).unwrap();
    assert!(wait_until(Duration::from_secs(10), || dlq.len() == 1));
    let letter = &dlq.letters()[0];
    assert_eq!(letter.envelope.id, id);
    assert_eq!(&letter.envelope.payload[..], b"\xffnot json");
    assert_eq!(letter.group, "parser");
    // Termed: never redelivered, and the consumer has nothing outstanding.
    assert!(wait_until(Duration::from_secs(5), || t.nats.queue_depths()
        [0]
    .depth
        == 0));
    assert!(
        !wait_until(Duration::from_millis(300), || handler.calls() > 1),
        "a termed message was redelivered"
    );
    assert_eq!(handler.calls(), 1);
    let report = bus.shutdown(T);
    assert_eq!(report.stats.dead_lettered, 1);
    assert_invariant(&report.stats);
}

#[test]
fn max_deliver_advisory_becomes_a_dead_letter() {
    require_nats!();
    let t = TestNats::new(config().with_max_deliver(2));
    let dlq = MemoryDeadLetters::new();
    t.nats.set_dead_letters(Arc::new(dlq.clone()));
    let tp = topic("backstop.case");
    let mut sub = t
        .nats
        .subscribe(&tp, &SubscribeOptions::group("dying"))
        .unwrap();
    let env = Envelope::new(tp, &b"precious"[..]).with_header("k", "v");
    t.nats.publish(env.clone(), T).unwrap();
    // Two deliveries that fail and are retried (as the bus does), after
    // which JetStream gives up: MaxDeliver 2.
    for attempt in 1..=2 {
        let mut d = sub.next(T).unwrap().expect("delivered");
        assert_eq!(d.envelope().attempt, attempt);
        d.envelope_mut().attempt += 1;
        d.nak(Duration::ZERO);
    }
    assert!(
        wait_until(Duration::from_secs(15), || dlq.len() == 1),
        "the MaxDeliver advisory must become a dead letter"
    );
    let letter = &dlq.letters()[0];
    assert_eq!(letter.reason, DeadLetterReason::RetriesExhausted);
    assert_eq!(letter.envelope.id, env.id);
    assert_eq!(&letter.envelope.payload[..], b"precious");
    assert_eq!(letter.envelope.headers["k"], "v");
    assert_eq!(letter.group, "dying");
    // Counted once the store returned (just after the letter appears).
    assert!(wait_until(T, || t.nats.stats().backstop_dead_letters == 1));
    assert!(sub.next(Duration::from_millis(300)).unwrap().is_none());
}

/// A bus on the transport lends the backstop its store: a message the
/// server stopped redelivering is dead-lettered there and counted in the
/// bus's own ledger, so the invariant balances without a reconciliation.
#[test]
fn a_max_deliver_dead_letter_is_counted_in_the_bus_ledger() {
    require_nats!();
    let t = TestNats::new(config().with_max_deliver(2));
    let dlq = MemoryDeadLetters::new();
    let handler = FlakyHandler::new(Script::always_fail(ErrorCategory::MessageProcessing));
    // The bus would retry more often than the server redelivers.
    let bus = Bus::builder()
        .transport(Arc::new(t.nats.clone()))
        .dead_letters(Arc::new(dlq.clone()))
        .recovery(Arc::new(SimpleRetry {
            max_retries: 10,
            delay: Duration::from_millis(10),
        }))
        .build();
    bus.subscriber("dying")
        .topic("backstop.ledger")
        .start(handler.clone())
        .unwrap();
    let id = bus.publish("backstop.ledger", &b"precious"[..]).unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || dlq.len() == 1),
        "the MaxDeliver advisory must become a dead letter in the bus's store"
    );
    assert_eq!(dlq.letters()[0].envelope.id, id);
    assert!(wait_until(T, || bus.stats().dead_lettered == 1));
    assert_eq!(handler.calls(), 2, "MaxDeliver 2");
    let report = bus.shutdown(T);
    assert_eq!((report.stats.dead_lettered, report.stats.pending), (1, 0));
    assert_invariant(&report.stats);
    assert_eq!(t.nats.stats().backstop_dead_letters, 1);
}

#[test]
fn nats_dlq_stores_letters_durably_on_a_stream() {
    require_nats!();
    let t = TestNats::new(config());
    let name = format!("{}_DLQ", t.nats.config().stream_prefix);
    let subj = format!("{}-dlq", t.nats.config().subject_prefix);
    let dlq = NatsDlq::new(&t.nats, name, subj).unwrap();
    let handler = FlakyHandler::new(Script::always_fail(ErrorCategory::Authentication));
    let bus = Bus::builder()
        .transport(Arc::new(t.nats.clone()))
        .dead_letters(Arc::new(dlq.clone()))
        .build();
    bus.subscriber("auth")
        .topic("secure.op")
        .start(handler)
        .unwrap();
    let id = bus.publish("secure.op", &b"op"[..]).unwrap();
    assert!(wait_until(Duration::from_secs(10), || dlq
        .letters()
        .map(|l| l.len())
        .unwrap_or(0)
        == 1));
    let letters = dlq.letters().unwrap();
    assert_eq!(letters[0].envelope.id, id);
    assert_eq!(letters[0].report.category, ErrorCategory::Authentication);
    let report = bus.shutdown(T);
    assert_invariant(&report.stats);
    dlq.delete().unwrap();
}

#[test]
fn bus_handlers_see_metadata_over_nats() {
    require_nats!();
    let t = TestNats::new(config());
    let bus = Bus::builder().transport(Arc::new(t.nats.clone())).build();
    let (tx, rx) = std::sync::mpsc::channel();
    bus.subscriber("meta")
        .topic("m.x")
        .start(move |m: &Message<'_>| -> Result<(), std::io::Error> {
            let _ = tx.send((m.correlation_id.clone(), m.headers.clone()));
            Ok(())
        })
        .unwrap();
    bus.publish_envelope(
        Envelope::new(topic("m.x"), &b"p"[..])
            .with_correlation_id("c-1")
            .with_header("h", "1"),
    )
    .unwrap();
    let (corr, headers) = rx.recv_timeout(T).unwrap();
    assert_eq!(corr.as_deref(), Some("c-1"));
    assert_eq!(headers["h"], "1");
    assert_invariant(&bus.shutdown(T).stats);
}

#[test]
fn a_queue_bound_is_refused_at_subscribe_with_a_typed_error() {
    require_nats!();
    let t = TestNats::new(config().with_max_ack_pending(64));
    let tp = topic("bounded");
    let refused = |options: SubscribeOptions| {
        let err = t.nats.subscribe(&tp, &options).err().expect("refused");
        let bus_core::TransportError::Other(source) = &err else {
            panic!("{err:?}");
        };
        source
            .downcast_ref::<bus_nats::NatsError>()
            .cloned()
            .unwrap()
    };
    let e = refused(SubscribeOptions::group("reports").with_capacity(32));
    assert!(
        matches!(&e, bus_nats::NatsError::NoQueueBound { group, capacity: 32, max_ack_pending: 64, .. } if group == "reports"),
        "{e:?}"
    );
    assert!(e.to_string().contains("max_ack_pending = 64"), "{e}");
    // Chosen, even at the default value: refused, never silently ignored.
    let default_capacity = SubscribeOptions::group("reports").capacity;
    let e = refused(SubscribeOptions::group("reports").with_capacity(default_capacity));
    assert!(
        matches!(&e, bus_nats::NatsError::NoQueueBound { .. }),
        "{e:?}"
    );
    let e =
        refused(SubscribeOptions::group("reports").with_overflow(bus_core::OverflowPolicy::Reject));
    assert!(
        matches!(
            e,
            bus_nats::NatsError::NoQueueBound {
                overflow: bus_core::OverflowPolicy::Reject,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(t.nats.consumer_status().is_empty(), "no group was created");

    // Through the subscriber builder: the error says why, nothing runs.
    let bus = Bus::builder().transport(Arc::new(t.nats.clone())).build();
    let err = bus
        .subscriber("reports")
        .topic("bounded")
        .capacity(32)
        .overflow(bus_core::OverflowPolicy::Reject)
        .start(|_m: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
        .expect_err("refused");
    assert!(
        matches!(&err, bus_core::SubscribeError::Transport(bus_core::TransportError::Other(s)) if s.is::<bus_nats::NatsError>()),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("NATS has no per-subscriber queue") && text.contains("capacity 32"),
        "{text}"
    );
    // The defaults are no bound: accepted.
    bus.subscriber("reports")
        .topic("bounded")
        .start(|_m: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
        .unwrap();
    bus.shutdown(T);
}
