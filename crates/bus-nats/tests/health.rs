//! A lost broker shows in health: degraded at once, critical after the
//! configured time, healthy again once the server is back; the outage is
//! measured. Runs on a nats-server of the test's own.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_core::Transport;
use bus_health::{HealthConfig, HealthMonitor, HealthStatus};
use bus_nats::{NatsConfig, NatsTransport};
use bus_test::wait_until;
use common::server::OwnServer;
use std::sync::Arc;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(30);

#[test]
fn a_killed_server_is_degraded_then_critical_then_healthy_again() {
    let Some(mut server) = OwnServer::start() else {
        return;
    };
    let nats = Arc::new(NatsTransport::connect(NatsConfig::new(server.url())).unwrap());
    let mut cfg = HealthConfig::default();
    cfg.broker_critical_after = Duration::from_millis(800);
    let source = Arc::clone(&nats);
    let monitor = HealthMonitor::builder()
        .with_config(cfg)
        .with_broker_source(Arc::new(move || source.broker_connection()))
        .build()
        .unwrap();
    assert_eq!(monitor.report().status, HealthStatus::Healthy);

    server.kill();
    let mut saw_degraded = false;
    assert!(wait_until(PATIENCE, || {
        let r = monitor.report();
        saw_degraded |= r.status == HealthStatus::Degraded;
        r.status == HealthStatus::Critical
    }));
    assert!(saw_degraded, "critical without being degraded first");
    let r = monitor.report();
    assert!(
        r.reasons
            .iter()
            .any(|w| w.contains(&server.url()) && w.contains("unreachable")),
        "{:?}",
        r.reasons
    );
    let b = r.broker.unwrap();
    assert!(!b.connected);
    assert!(b.down_seconds.unwrap() >= 0.8);

    server.restart();
    assert!(wait_until(PATIENCE, || monitor.report().status
        == HealthStatus::Healthy));
    let b = nats.broker_connection().unwrap();
    assert!(b.connected);
    assert_eq!(b.outages, 1);
    assert!(b.total_down_seconds >= 0.8, "{b:?}");
    assert!(nats.stats().time_disconnected >= Duration::from_millis(800));
}
