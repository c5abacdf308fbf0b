//! Failures that need the transport's test hooks: a transaction that
//! fails before its commit, and a commit that fails.

#![allow(clippy::unwrap_used)] // tests may unwrap

use super::SqliteTransport;
use crate::SqliteConfig;
use bus_core::{Envelope, PublishError, SubscribeOptions, Topic, Transport};
use std::sync::atomic::Ordering;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn setup() -> (
    tempfile::TempDir,
    SqliteTransport,
    Box<dyn bus_core::Subscription>,
    Topic,
) {
    let dir = tempfile::tempdir().unwrap();
    let t = SqliteTransport::open(SqliteConfig::new(dir.path())).unwrap();
    let topic = Topic::new("orders").unwrap();
    let s = t.subscribe(&topic, &SubscribeOptions::group("g")).unwrap();
    (dir, t, s, topic)
}

#[test]
fn a_failed_transaction_hands_the_message_back_and_the_queue_goes_on() {
    let (_dir, t, mut s, topic) = setup();
    t.shared().fail_next_batch.store(true, Ordering::SeqCst);
    match t.publish(Envelope::new(topic.clone(), &b"lost?"[..]), T) {
        Err(PublishError::Transport { envelope, .. }) => {
            assert_eq!(&envelope.payload[..], b"lost?");
        }
        other => panic!("expected the message back, got {other:?}"),
    }
    assert!(
        s.next(Duration::from_millis(50)).unwrap().is_none(),
        "not stored"
    );
    assert_eq!(t.queue_depths()[0].depth, 0);
    assert!(t.poisoned().is_none(), "a rolled-back batch is not fatal");
    t.publish(Envelope::new(topic, &b"next"[..]), T).unwrap();
    let d = s.next(T).unwrap().unwrap();
    assert_eq!(&d.envelope().payload[..], b"next");
    d.ack();
}

#[test]
fn a_failed_commit_poisons_the_transport_and_nothing_is_confirmed_after() {
    let (_dir, t, _s, topic) = setup();
    t.shared().fail_next_commit.store(true, Ordering::SeqCst);
    assert!(matches!(
        t.publish(Envelope::new(topic.clone(), &b"a"[..]), T),
        Err(PublishError::Transport { .. })
    ));
    assert!(t.poisoned().is_some());
    match t.publish(Envelope::new(topic, &b"b"[..]), T) {
        Err(PublishError::Transport { envelope, .. }) => assert_eq!(&envelope.payload[..], b"b"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
