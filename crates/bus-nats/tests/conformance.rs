//! The conformance suite of `bus-test`, transport and pipeline scenarios,
//! against NatsTransport on a real nats-server (skipped loudly when
//! unreachable, unless BUS_REQUIRE_NATS=1). Every context gets its own
//! streams (memory storage, deleted at the end); the reconnect scenario
//! gets a server of its own, with file storage, that it kills and restarts.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_nats::{NatsConfig, NatsTransport, Storage};
use bus_test::conformance::{Ctx, Features};
use common::server::OwnServer;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A pull request in flight when a subscription is dropped can still be
/// answered; that message comes back after ack_wait (never lost). Keep
/// ack_wait inside the suite's patience.
const ACK_WAIT: Duration = Duration::from_secs(4);

/// Every publish is a broker round trip: on a loaded 2-core machine the
/// 10k scenario's drain needs more than the default 10 s.
const PATIENCE: Duration = Duration::from_secs(30);

fn shared_server(scenario: &str) -> Option<Ctx> {
    if !common::nats_available(scenario) {
        return None;
    }
    let mut cfg = common::config().with_storage(Storage::Memory);
    cfg.ack_wait = ACK_WAIT;
    let nats = NatsTransport::connect(cfg).unwrap();
    let cleanup = nats.clone();
    // No per-subscriber queue bound (a capacity is refused): the server's
    // max_ack_pending bounds a group instead.
    Some(
        Ctx::new(Arc::new(nats))
            .with_features(Features::new().publish_to_group())
            .with_patience(PATIENCE)
            .on_teardown(move || {
                let _ = cleanup.delete_streams();
            }),
    )
}

fn own_server() -> Option<Ctx> {
    let server = OwnServer::start()?;
    let cfg = NatsConfig::new(server.url()).with_ack_wait(ACK_WAIT);
    let nats = NatsTransport::connect(cfg).unwrap();
    let server = Arc::new(Mutex::new(server));
    let restart = Arc::clone(&server);
    let features = Features::new().publish_to_group().reconnect(move || {
        restart.lock().unwrap().restart();
    });
    Some(
        Ctx::new(Arc::new(nats))
            .with_features(features)
            .with_patience(PATIENCE)
            .on_teardown(move || drop(server)),
    )
}

bus_test::transport_conformance!(nats, |scenario: &str| {
    if scenario == "reconnect_loses_nothing" {
        own_server()
    } else {
        shared_server(scenario)
    }
});
