//! Settles are confirmed by the server, but pipelined: an ack returns
//! without waiting for its confirmation, the confirmations arrive once the
//! server answers, and `close` waits for them. On a nats-server of the
//! test's own, paused (SIGSTOP) or killed and restarted.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_core::{Delivery, Envelope, SubscribeOptions, Subscription, Topic, Transport};
use bus_nats::{ConnectionState, NatsConfig, NatsTransport};
use bus_test::wait_until;
use common::server::OwnServer;
use std::time::Duration;

const N: usize = 50;
const PATIENCE: Duration = Duration::from_secs(30);
const GROUP: &str = "settlers";

/// A transport on `server` with `N` messages delivered to one member of
/// `GROUP` and not yet settled. `ack_wait` is long: nothing is redelivered
/// and no settle gives up while the server is away.
fn delivered(server: &OwnServer) -> (NatsTransport, Box<dyn Subscription>, Vec<Delivery>) {
    let config = NatsConfig::new(server.url()).with_ack_wait(Duration::from_secs(60));
    let nats = NatsTransport::connect(config).unwrap();
    let mut sub = nats
        .subscribe(&topic(), &SubscribeOptions::group(GROUP))
        .unwrap();
    for i in 0..N {
        nats.publish(Envelope::new(topic(), i.to_string()), common::T)
            .unwrap();
    }
    let mut held = Vec::new();
    while held.len() < N {
        held.push(sub.next(common::T).unwrap().expect("a delivery"));
    }
    (nats, sub, held)
}

fn topic() -> Topic {
    Topic::new("settle.pipelined").unwrap()
}

/// Every settle confirmed, none failed.
fn all_confirmed(nats: &NatsTransport) {
    assert!(
        wait_until(PATIENCE, || nats.stats().settles_unconfirmed == 0),
        "{:?}",
        nats.stats()
    );
    assert_eq!(nats.stats().settle_failures, 0, "{:?}", nats.stats());
}

/// The server owes the group nothing: no message will come back.
fn nothing_owed(nats: &NatsTransport) {
    assert_eq!(nats.owed(&topic(), GROUP).unwrap(), 0, "{:?}", nats.stats());
}

#[test]
fn acks_return_while_the_server_is_paused_and_are_confirmed_after() {
    let Some(server) = OwnServer::start() else {
        return;
    };
    let (nats, mut sub, held) = delivered(&server);
    server.pause();
    for d in held {
        d.ack();
    }
    // Every ack returned, and none of them can have been confirmed yet:
    // the acks did not wait for the server.
    assert_eq!(nats.stats().settles_unconfirmed, N as u64);
    server.resume();
    all_confirmed(&nats);
    nothing_owed(&nats);
    assert!(sub.next(Duration::from_millis(500)).unwrap().is_none());
    assert_eq!(nats.stats().duplicates_suppressed, 0, "{:?}", nats.stats());
}

#[test]
fn acks_sent_while_the_server_is_down_are_confirmed_after_its_restart() {
    let Some(mut server) = OwnServer::start() else {
        return;
    };
    let (nats, mut sub, held) = delivered(&server);
    server.kill();
    for d in held {
        d.ack();
    }
    assert_eq!(nats.stats().settles_unconfirmed, N as u64);
    server.restart();
    assert!(wait_until(PATIENCE, || nats.connection_state()
        == ConnectionState::Connected));
    all_confirmed(&nats);
    // The restarted server may have lost the deliveries' state (its store
    // lags): it ignores their acks, though it confirms them, and delivers
    // them again. They were settled here, so they are acked again without
    // reaching a handler, until the server owes nothing.
    assert!(wait_until(PATIENCE, || {
        // (A pull cut by the restart reports it; the next call reopens it.)
        let next = sub.next(Duration::from_millis(200));
        assert!(!matches!(next, Ok(Some(_))), "redelivered to a handler");
        nats.owed(&topic(), GROUP).unwrap() == 0
    }));
    let stats = nats.stats();
    assert!(stats.duplicates_suppressed <= N as u64, "{stats:?}");
    eprintln!(
        "restart: {} of {N} acks were lost with the server's state and settled again",
        stats.duplicates_suppressed
    );
}

#[test]
fn close_waits_for_the_settles_still_unconfirmed() {
    let Some(server) = OwnServer::start() else {
        return;
    };
    let (nats, sub, held) = delivered(&server);
    drop(sub);
    server.pause();
    for d in held {
        d.ack();
    }
    assert_eq!(nats.stats().settles_unconfirmed, N as u64);
    let closing = {
        let nats = nats.clone();
        std::thread::spawn(move || nats.close())
    };
    // Closed first, then waiting: the server answers only now.
    assert!(wait_until(PATIENCE, || nats.connection_state()
        == ConnectionState::Closed));
    server.resume();
    assert!(closing.join().unwrap().is_empty());
    let stats = nats.stats();
    assert_eq!(
        stats.settles_unconfirmed, 0,
        "close returned early: {stats:?}"
    );
    all_confirmed(&nats);
    nothing_owed(&nats);
}

#[test]
fn a_settle_for_a_deleted_consumer_fails_at_once() {
    let Some(server) = OwnServer::start() else {
        return;
    };
    let (nats, sub, mut held) = delivered(&server);
    drop(sub);
    nats.delete_streams().unwrap();
    held.pop().unwrap().ack();
    // Nobody answers on the consumer's ack subject any more: the settle
    // fails now, well before ack_wait (60 s), instead of resending.
    assert!(wait_until(PATIENCE, || nats.stats().settles_unconfirmed == 0));
    assert_eq!(nats.stats().settle_failures, 1, "{:?}", nats.stats());
}
