//! Status transitions as the window fills and drains, with a manual clock.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use bus_core::time::ManualClock;
use bus_core::{BusEvent, CircuitState, DlqError, QueueDepth};
use bus_errors::ErrorCategory;
use bus_health::{HealthConfig, HealthMonitor, HealthStatus};
use std::sync::Arc;
use std::time::Duration;
use support::*;

#[test]
fn no_traffic_is_healthy() {
    let (m, _) = monitor(HealthConfig::default());
    let r = m.report();
    assert_eq!(r.status, HealthStatus::Healthy);
    assert_eq!(r.success_rate, None);
    assert!(r.reasons.is_empty());
}

#[test]
fn status_goes_healthy_degraded_critical_and_recovers_when_the_window_drains() {
    let (m, clock) = monitor(HealthConfig::default());
    acked(&m, 100, 1);
    assert_eq!(m.report().status, HealthStatus::Healthy);

    // 100 acked, 10 failed: 90.9 % -> degraded
    clock.advance(Duration::from_secs(10));
    failed(&m, 10, ErrorCategory::Timeout);
    let r = m.report();
    assert_eq!(r.status, HealthStatus::Degraded, "{:?}", r.reasons);
    assert!((r.success_rate.unwrap() - 100.0 / 110.0).abs() < 1e-9);
    assert!(r.reasons[0].contains("below 95.0%"), "{:?}", r.reasons);

    // 100 acked, 40 failed: 71 % -> critical
    clock.advance(Duration::from_secs(10));
    failed(&m, 30, ErrorCategory::Connection);
    let r = m.report();
    assert_eq!(r.status, HealthStatus::Critical);
    assert_eq!(r.window.failed, 40);
    assert_eq!(r.categories.get(&ErrorCategory::Timeout), Some(&10));
    assert_eq!(r.categories.get(&ErrorCategory::Connection), Some(&30));
    assert!((r.error_rate_per_minute - 40.0).abs() < 1e-9);

    // 45 s later the acks (t=0) have left but not the failures (t=10, t=20)
    clock.advance(Duration::from_secs(45));
    let r = m.report();
    assert_eq!(r.window.acked, 0);
    assert_eq!(r.window.failed, 40);
    assert_eq!(r.status, HealthStatus::Critical);

    // after a whole window with no traffic, healthy again; totals remain
    clock.advance(Duration::from_secs(60));
    let r = m.report();
    assert_eq!(r.status, HealthStatus::Healthy, "{:?}", r.reasons);
    assert_eq!(r.window.failed, 0);
    assert_eq!(r.totals.acked, 100);
    assert_eq!(r.totals.failed, 40);
    assert_eq!(r.category_totals.get(&ErrorCategory::Connection), Some(&30));
}

#[test]
fn fresh_successes_restore_health_within_the_window() {
    let (m, clock) = monitor(HealthConfig::default());
    failed(&m, 50, ErrorCategory::Timeout);
    acked(&m, 50, 1);
    assert_eq!(m.report().status, HealthStatus::Critical);
    clock.advance(Duration::from_secs(61));
    acked(&m, 100, 1);
    assert_eq!(m.report().status, HealthStatus::Healthy);
}

#[test]
fn thresholds_and_min_samples_are_configurable() {
    let mut cfg = HealthConfig::default();
    cfg.healthy_threshold = 0.5;
    cfg.degraded_threshold = 0.2;
    cfg.min_samples = 10;
    let (m, _) = monitor(cfg);
    failed(&m, 5, ErrorCategory::Timeout);
    assert_eq!(
        m.report().status,
        HealthStatus::Healthy,
        "5 samples are below min_samples"
    );
    acked(&m, 5, 1);
    assert_eq!(
        m.report().status,
        HealthStatus::Healthy,
        "50 % meets the 0.5 threshold"
    );
    failed(&m, 1, ErrorCategory::Timeout);
    assert_eq!(m.report().status, HealthStatus::Degraded);
}

#[test]
fn forced_open_circuit_is_critical_until_it_closes() {
    let (m, _) = monitor(HealthConfig::default());
    acked(&m, 1000, 1);
    circuit(
        &m,
        "billing",
        CircuitState::Closed,
        CircuitState::ForcedOpen,
    );
    let r = m.report();
    assert_eq!(r.status, HealthStatus::Critical);
    assert_eq!(r.circuits.get("billing"), Some(&CircuitState::ForcedOpen));
    assert!(r.reasons.iter().any(|x| x.contains("forced open")));
    circuit(&m, "billing", CircuitState::ForcedOpen, CircuitState::Open);
    assert_eq!(
        m.report().status,
        HealthStatus::Degraded,
        "an open circuit degrades"
    );
    circuit(&m, "billing", CircuitState::Open, CircuitState::Closed);
    assert_eq!(m.report().status, HealthStatus::Healthy);
}

#[test]
fn dlq_write_failure_is_critical_until_recovered() {
    let (m, clock) = monitor(HealthConfig::default());
    let err = DlqError::Full("disk".into());
    m.observe(&BusEvent::DlqWriteFailed {
        component: "billing",
        error: &err,
    });
    // not a window thing: it stays critical however long it lasts
    clock.advance(Duration::from_secs(600));
    let r = m.report();
    assert_eq!(r.status, HealthStatus::Critical);
    assert_eq!(r.dlq_failing, vec!["billing".to_owned()]);
    m.observe(&BusEvent::DlqRecovered {
        component: "billing",
    });
    assert_eq!(m.report().status, HealthStatus::Healthy);
}

#[test]
fn recovery_rate_counts_retried_acks_against_dead_letters() {
    let (m, _) = monitor(HealthConfig::default());
    acked(&m, 3, 2);
    acked(&m, 5, 1);
    dead_lettered(&m, 1, bus_core::DeadLetterReason::RetriesExhausted);
    let r = m.report();
    assert_eq!(r.window.recovered, 3);
    assert_eq!(r.recovery_rate, Some(0.75));
    assert_eq!(r.delivery_success_rate, Some(8.0 / 9.0));
    assert_eq!(r.latency.count, 8);
    assert_eq!(r.latency.p50_seconds, Some(0.000_5));
}

#[test]
fn sources_feed_queues_circuits_and_age() {
    let clock = ManualClock::new();
    let m = HealthMonitor::builder()
        .with_clock(Arc::new(clock))
        .with_queue_source(Arc::new(|| {
            vec![QueueDepth {
                topic: "orders.created".into(),
                group: "billing".into(),
                depth: 95,
                capacity: 100,
                in_flight: 2,
            }]
        }))
        .with_circuit_source(Arc::new(|| {
            vec![
                ("shipping".to_owned(), CircuitState::HalfOpen),
                ("payments".to_owned(), CircuitState::Open),
            ]
        }))
        .with_oldest_age_source(Arc::new(|| Some(Duration::from_secs(7))))
        .build()
        .unwrap();
    let r = m.report();
    assert_eq!(r.status, HealthStatus::Degraded);
    assert_eq!(r.queues[0].depth, 95);
    assert_eq!(r.circuits.get("shipping"), Some(&CircuitState::HalfOpen));
    assert_eq!(r.oldest_message_age_seconds, Some(7.0));
    // The open circuit and the nearly full queue degrade; the half-open one
    // (testing recovery) does not.
    assert_eq!(r.reasons.len(), 2, "{:?}", r.reasons);
    assert!(r.reasons.iter().any(|w| w.contains("payments")));
    assert!(
        !r.reasons.iter().any(|w| w.contains("shipping")),
        "{:?}",
        r.reasons
    );
}

#[test]
fn every_event_kind_is_counted() {
    let (m, _) = monitor(HealthConfig::default());
    let t = topic();
    m.observe(&BusEvent::Rejected {
        topic: "orders.created",
        reason: "queue_full",
    });
    m.observe(&BusEvent::Retried {
        topic: &t,
        component: "c",
        attempt: 1,
        delay: Duration::from_secs(1),
    });
    m.observe(&BusEvent::Discarded {
        topic: &t,
        component: "c",
        reason: "lowest priority",
    });
    m.observe(&BusEvent::Parked {
        component: "c",
        state: CircuitState::Open,
        retry_after: Duration::from_secs(1),
    });
    let r = report(
        ErrorCategory::Configuration,
        bus_errors::Severity::High,
        "c",
    );
    m.observe(&BusEvent::Escalated { report: &r });
    let w = m.report().window;
    assert_eq!(
        (w.rejected, w.retried, w.discarded, w.parked, w.escalated),
        (1, 1, 1, 1, 1)
    );
}

/// Publishes are read from the ledger of the bus the monitor observes, on
/// each report: every delivery published (a publish reaching two groups
/// counts two), none refused. The window holds them from the report that
/// first saw them; the totals are exact, in the report and in /metrics.
#[test]
fn publishes_are_read_from_the_ledger_of_the_observed_bus() {
    // The alert thread's periodic report would file publishes too.
    let mut config = HealthConfig::default();
    config.evaluate_every = Duration::from_secs(3600);
    let window = config.window;
    let (m, clock) = monitor(config);
    let bus = observed_bus(&m, &clock, &["billing", "audit"]);
    bus.publish("orders.created", &b"1"[..]).unwrap();
    bus.publish("orders.created", &b"2"[..]).unwrap();
    assert!(bus.publish("nobody.listens", &b"x"[..]).is_err());
    let r = m.report();
    assert_eq!((r.window.published, r.totals.published), (4, 4));

    // Two windows on, the publishes have left the window, not the totals.
    clock.advance(window * 2);
    bus.publish("orders.created", &b"3"[..]).unwrap();
    let r = m.report();
    assert_eq!((r.window.published, r.totals.published), (2, 6));
    clock.advance(window * 2);
    assert_eq!(m.report().window.published, 0);

    let text = m.render_metrics_text();
    assert!(
        text.contains("bus_messages_published_total 6"),
        "totals are exact: {text}"
    );
    let s = bus.shutdown(Duration::from_secs(10)).stats;
    assert_eq!(
        m.report().totals.published,
        s.published - s.rejected_at_publish
    );
}

/// One monitor watching two buses counts both; a bus that is gone keeps
/// its publishes in the totals (they never go down).
#[test]
fn a_monitor_on_two_buses_counts_the_publishes_of_both() {
    let (m, clock) = monitor(HealthConfig::default());
    let bus = || observed_bus(&m, &clock, &["billing"]);
    let (a, b) = (bus(), bus());
    a.publish("orders.created", &b"a"[..]).unwrap();
    b.publish("orders.created", &b"b"[..]).unwrap();
    b.publish("orders.created", &b"c"[..]).unwrap();
    assert_eq!(m.report().totals.published, 3);
    a.shutdown(Duration::from_secs(10));
    drop(a);
    b.publish("orders.created", &b"d"[..]).unwrap();
    let r = m.report();
    assert_eq!((r.totals.published, r.window.published), (4, 4));
    b.shutdown(Duration::from_secs(10));
}

/// The bus stamps each event; the monitor counts it in the bucket of that
/// stamp, not of the moment it happened to see it.
#[test]
fn events_count_at_the_time_the_bus_stamped_them() {
    use bus_core::Observer;
    use bus_core::time::Clock;
    let config = HealthConfig::default();
    let window = config.window;
    let (m, clock) = monitor(config);
    let t = topic();
    let acked = BusEvent::Acked {
        topic: &t,
        component: "billing",
        created_at: std::time::SystemTime::UNIX_EPOCH,
        handler_time: Duration::from_micros(300),
        attempt: 1,
    };
    let stamped = clock.stamp();
    clock.advance(window * 2);
    // Stamped two windows ago: counted in total, outside the current window.
    m.on_event(stamped, &acked);
    let r = m.report();
    assert_eq!((r.totals.acked, r.window.acked), (1, 0));
    // Stamped now: inside the window.
    m.on_event(clock.stamp(), &acked);
    let r = m.report();
    assert_eq!((r.totals.acked, r.window.acked), (2, 1));
}

#[test]
fn a_lost_broker_is_degraded_at_once_and_critical_after_the_configured_time() {
    use bus_core::BrokerConnection;
    use std::sync::Mutex;
    let state: Arc<Mutex<Option<Duration>>> = Arc::default();
    let s2 = Arc::clone(&state);
    let mut cfg = HealthConfig::default();
    cfg.broker_critical_after = Duration::from_secs(3);
    let m = HealthMonitor::builder()
        .with_config(cfg)
        .with_broker_source(Arc::new(move || {
            let down = *s2.lock().unwrap();
            Some(BrokerConnection::new(
                "nats://broker:4222",
                down,
                1,
                down.unwrap_or_default(),
            ))
        }))
        .build()
        .unwrap();
    let r = m.report();
    assert_eq!(r.status, HealthStatus::Healthy, "{:?}", r.reasons);
    assert!(r.broker.as_ref().unwrap().connected);

    *state.lock().unwrap() = Some(Duration::ZERO);
    let r = m.report();
    assert_eq!(r.status, HealthStatus::Degraded, "{:?}", r.reasons);
    assert!(
        r.reasons[0].contains("nats://broker:4222 unreachable"),
        "{:?}",
        r.reasons
    );

    *state.lock().unwrap() = Some(Duration::from_millis(2_900));
    assert_eq!(m.report().status, HealthStatus::Degraded);
    *state.lock().unwrap() = Some(Duration::from_secs(3));
    let r = m.report();
    assert_eq!(r.status, HealthStatus::Critical, "{:?}", r.reasons);
    assert_eq!(r.broker.as_ref().unwrap().down_seconds, Some(3.0));

    *state.lock().unwrap() = None;
    assert_eq!(m.report().status, HealthStatus::Healthy);
    // The default allows ten seconds before critical.
    assert_eq!(
        HealthConfig::default().broker_critical_after,
        Duration::from_secs(10)
    );
}

#[test]
fn publishes_a_broker_refused_count_against_the_success_rate() {
    let (m, _) = monitor(HealthConfig::default());
    acked(&m, 8, 1);
    // A full queue is the publisher's to handle: not a failure of the bus.
    for _ in 0..50 {
        m.observe(&BusEvent::Rejected {
            topic: "orders.created",
            reason: "queue_full",
        });
    }
    let r = m.report();
    assert_eq!(r.success_rate, Some(1.0));
    assert_eq!(r.status, HealthStatus::Healthy);
    // 92 refusals by the broker beside 8 acks: 8 %, critical.
    for _ in 0..92 {
        m.observe(&BusEvent::Rejected {
            topic: "orders.created",
            reason: "transport",
        });
    }
    let r = m.report();
    assert_eq!(r.window.refused_by_broker, 92);
    assert_eq!(r.window.rejected, 142);
    assert!((r.success_rate.unwrap() - 0.08).abs() < 1e-9, "{r:?}");
    assert_eq!(r.status, HealthStatus::Critical, "{:?}", r.reasons);
}
