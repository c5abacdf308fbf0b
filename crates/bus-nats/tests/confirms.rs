//! 10 000 messages published while the link drops every answer of the
//! server (it stores them; their PubAcks are lost), then the server
//! SIGKILLed and restarted with all 10 000 confirms in flight, on a
//! nats-server of the test's own behind a relay: every message ends one way. Confirmed ones are delivered, once; refused ones are handed back
//! and never delivered; in-doubt ones are reconciled against what the
//! stream delivered. None is lost, none counted twice.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_core::{Bus, BusConfig, MessageId, PublishError, PublisherOptions};
use bus_nats::{ConnectionState, NatsConfig, NatsTransport};
use bus_test::wait_until;
use common::proxy::Proxy;
use common::server::OwnServer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(60);
/// Delivering 10 000 on a loaded 2-core machine.
const DELIVERY: Duration = Duration::from_secs(240);
const MESSAGES: usize = 10_000;

#[test]
fn a_restart_with_10k_confirms_in_flight_ends_every_message_one_way() {
    let Some(mut server) = OwnServer::start() else {
        return;
    };
    let proxy = Proxy::start(server.port());
    let mut config = NatsConfig::new(proxy.url()).with_ack_wait(Duration::from_secs(2));
    // Long enough that no PubAck is given up on while the 10 000 are
    // handed over on a loaded machine: the resends come after the restart.
    config.request_timeout = Duration::from_secs(15);
    // No API request gets an answer through the muted link either: the
    // group count a publish needs must come from the cache all along.
    config.consumer_cache_ttl = Duration::from_secs(600);
    let nats = NatsTransport::connect(config).unwrap();
    let mut cfg = BusConfig::default();
    cfg.publish_timeout = Duration::from_secs(5);
    let bus = Bus::builder()
        .transport(Arc::new(nats.clone()))
        .config(cfg)
        .build();
    let handled: Arc<Mutex<HashMap<MessageId, u32>>> = Arc::default();
    let h = Arc::clone(&handled);
    bus.subscriber("ledger")
        .topic("confirms.flow")
        .workers(2)
        .start(
            move |m: &bus_core::Message<'_>| -> Result<(), std::io::Error> {
                *h.lock().unwrap().entry(m.id).or_default() += 1;
                Ok(())
            },
        )
        .unwrap();
    // A message first, so the stream and the group count are known and
    // every later publish is handed over without asking the server.
    bus.publish("confirms.flow", "warm-up").unwrap();
    assert!(wait_until(PATIENCE, || handled.lock().unwrap().len() == 1));
    // The whole run fits in the window, and no confirmation gets back:
    // every message is handed over and waits for its PubAck.
    let publisher = bus.publisher_with(PublisherOptions::default().window(MESSAGES));
    proxy.mute_server(true);
    let confirmations: Vec<_> = (0..MESSAGES)
        .map(|i| {
            publisher
                .publish("confirms.flow", format!("{i:0>64}"))
                .unwrap()
        })
        .collect();
    let in_flight = publisher.in_flight();
    if in_flight != MESSAGES {
        let early: Vec<String> = confirmations
            .into_iter()
            .filter(|c| c.is_settled())
            .take(3)
            .map(|c| format!("{:?}", c.wait()))
            .collect();
        panic!("{in_flight} of {MESSAGES} in flight; answered early: {early:?}");
    }
    server.kill();
    proxy.cut();
    proxy.mute_server(false);
    assert!(wait_until(PATIENCE, || nats.connection_state()
        == ConnectionState::Reconnecting));
    // Back on the same store, with what it had stored; every unconfirmed
    // message is resent with its Nats-Msg-Id, and the server keeps one copy.
    server.restart();

    let (mut confirmed, mut refused, mut in_doubt) = (Vec::new(), Vec::new(), Vec::new());
    for c in confirmations {
        let id = c.id();
        match c.wait() {
            Ok(got) => {
                assert_eq!(got, id);
                confirmed.push(id);
            }
            Err(PublishError::InDoubt { envelope, .. }) => in_doubt.push(envelope.id),
            Err(e) => {
                assert!(
                    e.envelope().is_some(),
                    "a refusal hands the message back: {e}"
                );
                refused.push(id);
            }
        }
    }
    assert_eq!(confirmed.len() + refused.len() + in_doubt.len(), MESSAGES);
    assert!(
        wait_until(DELIVERY, || {
            let h = handled.lock().unwrap();
            confirmed.iter().all(|id| h.contains_key(id))
        }),
        "{} confirmed messages not delivered; {:?} {:?} {:?}",
        {
            let h = handled.lock().unwrap();
            confirmed.iter().filter(|id| !h.contains_key(id)).count()
        },
        nats.consumer_status(),
        nats.stats(),
        bus.stats()
    );
    assert!(
        wait_until(PATIENCE, || {
            nats.consumer_status()
                .iter()
                .all(|c| c.fresh && c.num_pending == 0 && c.num_ack_pending == 0)
        }),
        "not idle: {:?}",
        nats.consumer_status()
    );
    let report = bus.shutdown(Duration::from_secs(10));
    let s = report.stats;
    let handled = handled.lock().unwrap();
    // In doubt: the server may have stored it; if so it was delivered.
    let stored_in_doubt = in_doubt
        .iter()
        .filter(|id| handled.contains_key(id))
        .count();
    let st = nats.stats();
    eprintln!(
        "confirms: {} confirmed, {} refused, {} in doubt ({} of them stored); resends {} (the server keeps one copy per Nats-Msg-Id), first-send duplicates {}; {s:?}",
        confirmed.len(),
        refused.len(),
        in_doubt.len(),
        stored_in_doubt,
        st.publish_resends,
        st.duplicate_publishes,
    );
    let twice: Vec<_> = handled.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let refused_but_delivered: Vec<_> = refused
        .iter()
        .filter(|id| handled.contains_key(id))
        .collect();
    assert!(
        refused_but_delivered.is_empty(),
        "refused and delivered both: {refused_but_delivered:?}"
    );
    assert_eq!(
        handled.len(),
        1 + confirmed.len() + stored_in_doubt,
        "delivered = the warm-up + confirmed + the in-doubt ones the stream had"
    );
    // The ledger: each message counted once, at its confirmation or refusal.
    assert_eq!(s.published, MESSAGES as u64 + 1, "{s:?}");
    assert_eq!(s.accepted, confirmed.len() as u64 + 1, "{s:?}");
    assert_eq!(
        s.rejected_at_publish,
        (refused.len() + in_doubt.len()) as u64,
        "{s:?}"
    );
    assert_eq!(
        s.acked,
        (1 + confirmed.len() + stored_in_doubt) as u64,
        "{s:?}"
    );
}
