//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod clients;

use bus_core::time::ManualClock;
use bus_core::{BusEvent, CircuitState, DeadLetterReason, Topic};
use bus_errors::{Classification, ErrorCategory, ErrorReport, Severity};
use bus_health::{Alert, AlertSink, HealthConfig, HealthMonitor};
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

pub fn topic() -> Topic {
    Topic::new("orders.created").unwrap()
}

/// A monitor on a manual clock with a 60 s window of 60 buckets.
pub fn monitor(config: HealthConfig) -> (HealthMonitor, ManualClock) {
    let clock = ManualClock::new();
    let m = HealthMonitor::builder()
        .with_config(config)
        .with_clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    (m, clock)
}

/// A bus on `clock`, observed by `m`, with one subscriber that acks every
/// message on `orders.created` per group in `groups`.
pub fn observed_bus(m: &HealthMonitor, clock: &ManualClock, groups: &[&str]) -> bus_core::Bus {
    let bus = bus_core::Bus::builder()
        .clock(Arc::new(clock.clone()))
        .observer(Arc::new(m.clone()))
        .build();
    for group in groups {
        bus.subscriber(group)
            .topic("orders.created")
            .start(|_: &bus_core::Message<'_>| Ok::<(), bus_errors::HandlerError>(()))
            .unwrap();
    }
    bus
}

pub fn acked(m: &HealthMonitor, n: u64, attempt: u32) {
    let t = topic();
    for _ in 0..n {
        m.observe(&BusEvent::Acked {
            topic: &t,
            component: "billing",
            created_at: std::time::SystemTime::UNIX_EPOCH,
            handler_time: Duration::from_micros(300),
            attempt,
        });
    }
}

pub fn report(category: ErrorCategory, severity: Severity, component: &str) -> ErrorReport {
    ErrorReport::new(Classification::new(category, severity), component, "boom")
        .with_topic("orders.created")
}

pub fn failed(m: &HealthMonitor, n: u64, category: ErrorCategory) {
    let r = report(category, Severity::Medium, "billing");
    for _ in 0..n {
        m.observe(&BusEvent::Failed { report: &r });
    }
}

pub fn dead_lettered(m: &HealthMonitor, n: u64, reason: DeadLetterReason) {
    let t = topic();
    for _ in 0..n {
        m.observe(&BusEvent::DeadLettered {
            topic: &t,
            component: "billing",
            category: ErrorCategory::Timeout,
            reason: &reason,
        });
    }
}

pub fn circuit(m: &HealthMonitor, component: &str, from: CircuitState, to: CircuitState) {
    m.observe(&BusEvent::CircuitTransition {
        component,
        from,
        to,
    });
}

/// An alert sink that forwards to a channel.
pub struct ChannelSink(pub Sender<Alert>);

impl AlertSink for ChannelSink {
    fn alert(&self, alert: &Alert) {
        let _ = self.0.send(alert.clone());
    }
}

pub fn channel_sink() -> (Arc<ChannelSink>, Receiver<Alert>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    (Arc::new(ChannelSink(tx)), rx)
}
