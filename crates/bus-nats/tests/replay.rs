//! Publishing to one consumer group (a replayed dead letter goes back to the
//! group that failed it): over NATS a replay subject per group, read by the
//! group's second durable consumer, against a real nats-server.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_core::{Bus, Envelope, Message, SubscribeOptions, Subscription, Topic, Transport};
use bus_nats::NatsTransport;
use bus_test::{assert_invariant, wait_until};
use common::{T, TestNats, config, nats_available};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

macro_rules! require_nats {
    () => {
        if !nats_available(module_path!()) {
            return;
        }
    };
}

const QUIET: Duration = Duration::from_millis(400);

fn topic(s: &str) -> Topic {
    Topic::new(s).unwrap()
}

fn sub(nats: &NatsTransport, tp: &Topic, group: &str) -> Box<dyn Subscription> {
    nats.subscribe(tp, &SubscribeOptions::group(group)).unwrap()
}

#[test]
fn a_message_for_one_group_reaches_that_group_alone() {
    require_nats!();
    let t = TestNats::new(config());
    let tp = topic("replays.one");
    let (mut a, mut b) = (sub(&t.nats, &tp, "billing"), sub(&t.nats, &tp, "audit"));
    // Both groups settle the original.
    let original = Envelope::new(tp.clone(), &b"first"[..]);
    assert_eq!(t.nats.publish(original.clone(), T).unwrap().copies, 2);
    for s in [&mut a, &mut b] {
        let d = s.next(T).unwrap().expect("the original");
        assert_eq!(d.envelope().id, original.id);
        d.ack();
    }
    // The replay: a new message for billing alone.
    let replay = Envelope::new(tp.clone(), &b"again"[..]).with_header("tenant", "acme");
    let receipt = t
        .nats
        .publish_to_group("billing", replay.clone(), T)
        .unwrap();
    assert_eq!(receipt.copies, 1);
    let d = a.next(T).unwrap().expect("billing gets the replay");
    assert_eq!(d.envelope(), &replay, "topic, payload and headers survive");
    d.ack();
    assert!(b.next(QUIET).unwrap().is_none(), "audit must not get it");
    assert!(a.next(QUIET).unwrap().is_none(), "delivered once");
    // The topic's own publishes still reach both groups, once.
    assert_eq!(t.nats.publish(Envelope::new(tp, "x"), T).unwrap().copies, 2);
    for s in [&mut a, &mut b] {
        s.next(T).unwrap().expect("a topic publish").ack();
        assert!(s.next(QUIET).unwrap().is_none());
    }
    let status = t.nats.consumer_status();
    assert_eq!(status.len(), 2);
    for s in &status {
        assert_eq!((s.num_pending, s.num_ack_pending), (0, 0), "{s:?}");
    }
    drop((a, b));
    assert!(
        t.nats.delete_streams_if_settled().unwrap().is_empty(),
        "everything settled, replays included"
    );
}

#[test]
fn a_replay_to_a_group_with_no_member_survives_a_transport_restart() {
    require_nats!();
    let cfg = config();
    let tp = topic("replays.later");
    // The first process: its streams stay when it ends (they owe).
    let first = NatsTransport::connect(cfg.clone()).unwrap();
    let id = {
        let b = sub(&first, &tp, "audit");
        // billing has no member anywhere when the replay is stored.
        let env = Envelope::new(tp.clone(), &b"for billing"[..]);
        let id = env.id;
        assert_eq!(first.publish_to_group("billing", env, T).unwrap().copies, 1);
        assert_eq!(first.owed(&tp, "billing").unwrap(), 1);
        assert_eq!(first.owed(&tp, "audit").unwrap(), 0);
        drop(b);
        let kept = first.delete_streams_if_settled().unwrap();
        assert_eq!(kept.len(), 1, "the stream owes the replay: {kept:?}");
        assert_eq!(kept[0].1, 1);
        id
    };
    drop(first);
    let t = TestNats::new(cfg);
    let second = &t.nats;
    assert_eq!(second.owed(&tp, "billing").unwrap(), 1);
    let mut audit = sub(second, &tp, "audit");
    let mut billing = sub(second, &tp, "billing");
    let d = billing.next(T).unwrap().expect("the stored replay");
    assert_eq!(d.envelope().id, id);
    d.ack();
    assert!(
        audit.next(QUIET).unwrap().is_none(),
        "audit must not get it"
    );
    assert!(wait_until(T, || second.owed(&tp, "billing").unwrap() == 0));
    drop((audit, billing));
    assert!(second.delete_streams_if_settled().unwrap().is_empty());
}

#[test]
fn the_bus_counts_a_message_for_one_group_once_in_its_ledger() {
    require_nats!();
    let t = TestNats::new(config());
    let bus = Bus::builder().transport(Arc::new(t.nats.clone())).build();
    let counts: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::default()).collect();
    for (group, n) in ["billing", "audit"].into_iter().zip(&counts) {
        let n = Arc::clone(n);
        bus.subscriber(group)
            .topic("replays.ledger")
            .start(move |_m: &Message<'_>| -> Result<(), std::io::Error> {
                n.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
    }
    let tp = topic("replays.ledger");
    bus.publish_envelope(Envelope::new(tp.clone(), "all"))
        .unwrap();
    for _ in 0..3 {
        bus.publish_to_group("billing", Envelope::new(tp.clone(), "billing"))
            .unwrap();
    }
    assert!(wait_until(T, || {
        counts[0].load(Ordering::SeqCst) == 4 && counts[1].load(Ordering::SeqCst) == 1
    }));
    let report = bus.shutdown(T);
    assert_eq!(counts[1].load(Ordering::SeqCst), 1, "audit got a replay");
    assert_eq!(report.stats.published, 5, "2 copies + 3 for billing");
    assert_eq!(report.stats.acked, 5);
    assert_invariant(&report.stats);
}

#[test]
fn a_replay_that_keeps_failing_meets_the_max_deliver_backstop_of_its_group() {
    require_nats!();
    let t = TestNats::new(config().with_max_deliver(2));
    let dlq = bus_core::MemoryDeadLetters::new();
    t.nats.set_dead_letters(Arc::new(dlq.clone()));
    let tp = topic("replays.dying");
    let mut billing = sub(&t.nats, &tp, "billing");
    let env = Envelope::new(tp, &b"still broken"[..]).with_header("k", "v");
    t.nats.publish_to_group("billing", env.clone(), T).unwrap();
    for attempt in 1..=2 {
        let mut d = billing.next(T).unwrap().expect("delivered");
        assert_eq!(d.envelope().attempt, attempt);
        d.envelope_mut().attempt += 1;
        d.nak(Duration::ZERO);
    }
    assert!(
        wait_until(Duration::from_secs(15), || dlq.len() == 1),
        "the replay consumer's MaxDeliver advisory must become a dead letter"
    );
    let letter = &dlq.letters()[0];
    assert_eq!(letter.envelope.id, env.id);
    assert_eq!(
        letter.envelope.topic, env.topic,
        "the topic, not the replay subject"
    );
    assert_eq!(letter.envelope.headers["k"], "v");
    assert_eq!(letter.group, "billing");
    assert!(wait_until(T, || t.nats.stats().backstop_dead_letters == 1));
    assert!(billing.next(QUIET).unwrap().is_none());
}

#[test]
fn a_replay_after_its_settled_stream_was_deleted_is_still_owed() {
    require_nats!();
    let t = TestNats::new(config());
    let tp = topic("replays.again");
    let mut billing = sub(&t.nats, &tp, "billing");
    t.nats
        .publish_to_group("billing", Envelope::new(tp.clone(), "one"), T)
        .unwrap();
    billing.next(T).unwrap().expect("the first replay").ack();
    drop(billing);
    assert!(t.nats.delete_streams_if_settled().unwrap().is_empty());
    // The stream and the group's consumers are gone; this one recreates
    // them, so the replay is owed and waits for the group.
    t.nats
        .publish_to_group("billing", Envelope::new(tp.clone(), "two"), T)
        .unwrap();
    assert_eq!(t.nats.owed(&tp, "billing").unwrap(), 1);
    let kept = t.nats.delete_streams_if_settled().unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let mut billing = sub(&t.nats, &tp, "billing");
    let d = billing.next(T).unwrap().expect("the second replay");
    assert_eq!(&d.envelope().payload[..], b"two");
    d.ack();
}
