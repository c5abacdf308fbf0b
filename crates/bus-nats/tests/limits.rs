//! Stream limits: the streams the bus makes never drop an unsettled
//! message; a full one refuses publishes with a typed, counted error; a
//! stream that could drop is refused unless the user accepts it.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use async_nats::jetstream::stream;
use bus_core::{Bus, Envelope, PublishError, SubscribeOptions, Topic, Transport, TransportError};
use bus_errors::{Classify, ErrorCategory};
use bus_nats::{Discard, NatsConfig, NatsError, NatsTransport};
use common::{T, TestNats, config, nats_available};
use std::sync::Arc;

fn nats_error(e: &TransportError) -> Option<&NatsError> {
    match e {
        TransportError::Other(inner) => inner.downcast_ref::<NatsError>(),
        _ => None,
    }
}

#[test]
fn a_full_stream_refuses_with_a_typed_resource_exhaustion_counted_as_rejected() {
    if !nats_available("limits") {
        return;
    }
    let mut cfg = config();
    cfg.max_bytes = 20_000;
    cfg.discard = Discard::New;
    let t = TestNats::new(cfg);
    let tp = Topic::new("reports.daily").unwrap();
    // A group that takes nothing: every message stays in the stream.
    let _idle = t
        .nats
        .subscribe(&tp, &SubscribeOptions::group("slow"))
        .unwrap();
    let bus = Bus::builder().transport(Arc::new(t.nats.clone())).build();
    let (mut accepted, mut refused) = (0_u64, 0_u64);
    for i in 0..200 {
        match bus.publish_envelope(Envelope::new(tp.clone(), vec![b'x'; 500 + i % 3])) {
            Ok(_) => accepted += 1,
            Err(PublishError::Transport { source, envelope }) => {
                let e = nats_error(&source).unwrap_or_else(|| panic!("untyped: {source}"));
                assert!(matches!(e, NatsError::Refused { .. }), "{e}");
                assert_eq!(e.category(), ErrorCategory::ResourceExhaustion, "{e}");
                assert!(e.is_resource_exhaustion());
                assert_eq!(envelope.payload.len(), 500 + i % 3, "handed back whole");
                refused += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(accepted > 0 && refused > 100, "{accepted} / {refused}");
    let s = bus.stats();
    assert_eq!(s.rejected_at_publish, refused);
    assert_eq!(s.accepted, accepted);
    // Nothing accepted was dropped to make room.
    let name = t.nats.config().stream_for(&tp);
    let js = t.nats.jetstream().clone();
    let held = t
        .nats
        .block_on(T, async move {
            js.get_stream(name)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .state
                .messages
        })
        .unwrap();
    assert_eq!(held, accepted);
}

#[test]
fn a_lossy_configuration_is_refused_at_connect_unless_accepted() {
    let lossy = |c: NatsConfig| NatsTransport::connect(c).map(|_| ()).unwrap_err();
    let mut old = NatsConfig::new(common::URL);
    old.max_bytes = 300_000;
    old.discard = Discard::Old;
    let e = lossy(old.clone());
    assert!(
        matches!(nats_error(&e), Some(NatsError::LossyStream { .. })),
        "{e}"
    );
    let mut aged = NatsConfig::new(common::URL);
    aged.max_age = std::time::Duration::from_secs(7 * 24 * 3600);
    assert!(matches!(
        nats_error(&lossy(aged)),
        Some(NatsError::LossyStream { .. })
    ));
    // The defaults cannot drop anything.
    assert!(NatsConfig::default().validate().is_ok());
    old.allow_message_loss = true;
    assert!(old.validate().is_ok());
}

#[test]
fn a_lossy_stream_found_on_the_server_is_refused_unless_accepted() {
    if !nats_available("limits") {
        return;
    }
    let cfg = config();
    let t = TestNats::new(cfg.clone());
    let tp = Topic::new("orders.created").unwrap();
    // Someone made the stream by hand, with discard old at a size limit.
    let name = cfg.stream_for(&tp);
    let subjects = vec![
        format!("{}.orders", cfg.subject_prefix),
        format!("{}.orders.>", cfg.subject_prefix),
    ];
    let js = t.nats.jetstream().clone();
    let n2 = name.clone();
    t.nats
        .block_on(T, async move {
            js.create_stream(stream::Config {
                name: n2,
                subjects,
                max_bytes: 300_000,
                discard: stream::DiscardPolicy::Old,
                ..Default::default()
            })
            .await
            .map(|_| ())
        })
        .unwrap()
        .unwrap();
    let Err(e) = t.nats.subscribe(&tp, &SubscribeOptions::group("billing")) else {
        panic!("a lossy stream was accepted");
    };
    match nats_error(&e) {
        Some(NatsError::LossyStream { stream, .. }) => assert_eq!(stream, &name),
        other => panic!("{e} / {other:?}"),
    }
    let mut accepting = cfg;
    accepting.allow_message_loss = true;
    let t2 = TestNats::new(accepting);
    assert!(
        t2.nats
            .subscribe(&tp, &SubscribeOptions::group("billing"))
            .is_ok()
    );
}

#[test]
fn with_loss_accepted_every_message_the_stream_deletes_is_counted() {
    if !nats_available("limits") {
        return;
    }
    let mut cfg = config();
    cfg.max_messages = 10;
    cfg.discard = Discard::Old;
    cfg.allow_message_loss = true;
    let t = TestNats::new(cfg);
    let tp = Topic::new("reports.daily").unwrap();
    let mut sub = t
        .nats
        .subscribe(&tp, &SubscribeOptions::group("slow"))
        .unwrap();
    for i in 0..3 {
        t.nats
            .publish(Envelope::new(tp.clone(), format!("{i}")), T)
            .unwrap();
    }
    // Two handled before the flood; the stream keeps the last 10 of 30.
    for _ in 0..2 {
        sub.next(T).unwrap().expect("a delivery").ack();
    }
    for i in 3..30 {
        t.nats
            .publish(Envelope::new(tp.clone(), format!("{i}")), T)
            .unwrap();
    }
    drop(sub);
    let status = t.nats.consumer_status();
    assert_eq!(
        status[0].num_pending + status[0].num_ack_pending,
        10,
        "{status:?}"
    );
    assert_eq!(
        t.nats.stats().dropped_by_limits,
        18,
        "30 - 2 handled - 10 kept"
    );
    let link = t.nats.broker_connection().unwrap();
    assert_eq!(link.dropped, 18);
    // Counted once, however often the status is read.
    t.nats.consumer_status();
    assert_eq!(t.nats.stats().dropped_by_limits, 18);
}
