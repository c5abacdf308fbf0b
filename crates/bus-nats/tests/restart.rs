//! The server SIGKILLed and restarted mid-stream, on a nats-server of the
//! test's own: the bus recovers on its own, every message is handled once,
//! and the ledger adds up exactly.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_core::{Bus, BusConfig, Envelope, Topic};
use bus_nats::{ConnectionState, NatsConfig, NatsTransport};
use bus_test::wait_until;
use common::server::OwnServer;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn kill_and_restart_mid_stream_counts_every_message_once() {
    let Some(mut server) = OwnServer::start() else {
        return;
    };
    // A short ack_wait: a settle the crash lost comes back quickly.
    let config = NatsConfig::new(server.url()).with_ack_wait(Duration::from_secs(2));
    let nats = NatsTransport::connect(config).unwrap();
    let mut cfg = BusConfig::default();
    cfg.publish_timeout = Duration::from_secs(2);
    let bus = Bus::builder()
        .transport(Arc::new(nats.clone()))
        .config(cfg)
        .build();
    let handled: Arc<Mutex<HashMap<(&str, bus_core::MessageId), u32>>> = Arc::default();
    for group in ["first", "second"] {
        let h = Arc::clone(&handled);
        bus.subscriber(group)
            .topic("restart.flow")
            .workers(2)
            .start(
                move |m: &bus_core::Message<'_>| -> Result<(), std::io::Error> {
                    *h.lock().unwrap().entry((group, m.id)).or_default() += 1;
                    Ok(())
                },
            )
            .unwrap();
    }
    let topic = Topic::new("restart.flow").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let published: Arc<Mutex<HashSet<bus_core::MessageId>>> = Arc::default();
    let publisher = {
        let (bus, stop, published) = (bus.clone(), Arc::clone(&stop), Arc::clone(&published));
        std::thread::spawn(move || {
            let mut i = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // A refused publish hands the message back: it is the
                // publisher's, counted rejected, and not sent again here.
                if let Ok(id) = bus.publish_envelope(Envelope::new(topic.clone(), i.to_string())) {
                    published.lock().unwrap().insert(id);
                }
            }
        })
    };
    let handled_at_least = |n: usize| {
        let h = Arc::clone(&handled);
        move || h.lock().unwrap().len() >= n
    };
    for round in 1..=2 {
        assert!(wait_until(PATIENCE, handled_at_least(3000 * round)));
        server.kill();
        assert!(wait_until(PATIENCE, || nats.connection_state()
            == ConnectionState::Reconnecting));
        server.restart();
        assert!(wait_until(PATIENCE, || nats.connection_state()
            == ConnectionState::Connected));
    }
    assert!(wait_until(PATIENCE, handled_at_least(9000)));
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    // Idle on both sides: the ledger has settled every delivery and the
    // server holds nothing unsettled that it could still redeliver.
    assert!(
        wait_until(PATIENCE, || {
            bus.stats().in_flight() == 0
                && nats
                    .consumer_status()
                    .iter()
                    .all(|c| c.fresh && c.num_pending == 0 && c.num_ack_pending == 0)
        }),
        "not idle: {:?} {:?}",
        bus.stats(),
        nats.consumer_status()
    );
    let report = bus.shutdown(Duration::from_secs(10));
    let s = report.stats;
    let handled = handled.lock().unwrap();
    let published = published.lock().unwrap();
    let twice: Vec<_> = handled.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "restart: {} published, {} handled, {:?}, {:?}",
        published.len(),
        handled.len(),
        s,
        nats.stats()
    );
    assert!(
        twice.is_empty(),
        "handled more than once by a group: {twice:?}"
    );
    assert_eq!(handled.values().sum::<u32>() as u64, s.acked);
    assert!(
        published
            .iter()
            .all(|id| handled.contains_key(&("first", *id))
                && handled.contains_key(&("second", *id))),
        "a published message did not reach both groups"
    );
    assert_eq!(s.accepted, 2 * published.len() as u64);
    assert!(s.invariant_holds(), "{s:?}");
}
