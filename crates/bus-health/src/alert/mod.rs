//! Alerts: what is raised, the [`AlertSink`] plug, and the pacing that turns
//! an outage into one alert per key per interval instead of ten thousand.
//!
//! Raising never blocks the delivery thread. A first, lock-free filter on the
//! calling thread (64 hashed slots of atomics) lets through at most one alert
//! per key per interval and counts the rest; what passes goes over a bounded
//! channel to the alert thread (dropped and counted when full), which
//! de-duplicates exactly by key again, adds the suppressed counts to the next
//! alert of that key, and hands it to every sink in turn.

mod sinks;

pub use sinks::{AlertError, CommandAlertSink, TracingAlertSink, WebhookAlertSink};

use crate::config::HealthConfig;
use crate::monitor::Inner;
use bus_core::time::saturating_nanos;
use bus_errors::{ErrorCategory, ErrorReport, Severity};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

/// Why an alert was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertKind {
    /// A failure was escalated by the recovery policy.
    Escalated,
    /// A failure was reported with `CRITICAL` severity.
    CriticalReport,
    /// The health status became critical.
    StatusCritical,
    /// A circuit was forced open.
    CircuitForcedOpen,
    /// The dead-letter queue failed to write.
    DlqWriteFailed,
}

impl AlertKind {
    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertKind::Escalated => "escalated",
            AlertKind::CriticalReport => "critical_report",
            AlertKind::StatusCritical => "status_critical",
            AlertKind::CircuitForcedOpen => "circuit_forced_open",
            AlertKind::DlqWriteFailed => "dlq_write_failed",
        }
    }
}

/// One alert, as sinks receive it (and as JSON on a command's stdin or in a
/// webhook body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Alert {
    /// The de-duplication key: `kind:category:component`.
    pub key: String,
    /// Why.
    pub kind: AlertKind,
    /// How bad.
    pub severity: Severity,
    /// The component (subscriber or circuit) concerned, or `"bus"`.
    pub component: String,
    /// The failure category, when a report caused it.
    pub category: Option<ErrorCategory>,
    /// What happened.
    pub message: String,
    /// How many alerts of this key were suppressed since the last one sent.
    pub suppressed: u64,
    /// When it was raised (wall clock).
    #[serde(with = "humantime_serde")]
    pub raised_at: SystemTime,
}

impl Alert {
    /// The alert as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Receives alerts on the monitor's alert thread (never on a delivery thread).
/// Sinks run one after another: a slow sink delays later alerts, not the bus.
pub trait AlertSink: Send + Sync {
    /// Delivers one alert. Errors are the sink's to log.
    fn alert(&self, alert: &Alert);
}

impl<T: AlertSink + ?Sized> AlertSink for Arc<T> {
    fn alert(&self, alert: &Alert) {
        (**self).alert(alert)
    }
}

enum Msg {
    Alert { alert: Alert, at_nanos: u64 },
    Flush(Sender<()>),
}

#[derive(Debug, Default)]
struct Slot {
    key: AtomicU64,
    /// Monotonic nanos since start + 1 of the last alert let through; 0 = never.
    last: AtomicU64,
    suppressed: AtomicU64,
}

const SLOTS: usize = 64;

/// The calling-side half: the lock-free filter and the channel.
pub(crate) struct Alerter {
    tx: Sender<Msg>,
    interval_nanos: u64,
    slots: Box<[Slot]>,
    dropped: AtomicU64,
}

fn fnv(kind: AlertKind, category: Option<ErrorCategory>, component: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let cat = category.map_or(0xFF, |c| c.index() as u8);
    for b in [kind as u8, cat].into_iter().chain(component.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Alerter {
    pub(crate) fn start(
        config: &HealthConfig,
        sinks: Vec<Arc<dyn AlertSink>>,
        monitor: Weak<Inner>,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(config.alert_queue_capacity);
        let interval_nanos = saturating_nanos(config.alert_interval);
        let every = config.evaluate_every;
        let spawned = std::thread::Builder::new()
            .name("bus-health-alerts".into())
            .spawn(move || run(rx, sinks, interval_nanos, every, monitor));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "bus-health: could not start the alert thread; alerts are dropped");
        }
        Self {
            tx,
            interval_nanos,
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            dropped: AtomicU64::new(0),
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    pub(crate) fn raise_report(&self, now_nanos: u64, kind: AlertKind, report: &ErrorReport) {
        self.raise_with(
            now_nanos,
            kind,
            Some(report.category),
            &report.component,
            report.severity,
            || {
                format!(
                    "{} {} failure in {}: {}",
                    report.severity, report.category, report.component, report.message
                )
            },
        );
    }

    pub(crate) fn raise(
        &self,
        now_nanos: u64,
        kind: AlertKind,
        category: Option<ErrorCategory>,
        component: &str,
        message: String,
    ) {
        self.raise_with(
            now_nanos,
            kind,
            category,
            component,
            Severity::Critical,
            || message,
        );
    }

    fn raise_with(
        &self,
        now_nanos: u64,
        kind: AlertKind,
        category: Option<ErrorCategory>,
        component: &str,
        severity: Severity,
        message: impl FnOnce() -> String,
    ) {
        let hash = fnv(kind, category, component);
        let slot = &self.slots[(hash % SLOTS as u64) as usize];
        if slot.key.load(Relaxed) != hash {
            // A different key took this slot: start over for ours (a collision
            // can only cause an extra alert, which the alert thread filters).
            slot.key.store(hash, Relaxed);
            slot.last.store(0, Relaxed);
        }
        let stamp = now_nanos.saturating_add(1);
        let last = slot.last.load(Relaxed);
        if last != 0 && stamp.saturating_sub(last) < self.interval_nanos {
            slot.suppressed.fetch_add(1, Relaxed);
            return;
        }
        if slot
            .last
            .compare_exchange(last, stamp, Relaxed, Relaxed)
            .is_err()
        {
            slot.suppressed.fetch_add(1, Relaxed);
            return;
        }
        let suppressed = slot.suppressed.swap(0, Relaxed);
        let alert = Alert {
            key: format!(
                "{}:{}:{component}",
                kind.as_str(),
                category.map_or("-", ErrorCategory::as_str)
            ),
            kind,
            severity,
            component: component.to_owned(),
            category,
            message: message(),
            suppressed,
            raised_at: SystemTime::now(),
        };
        match self.tx.try_send(Msg::Alert {
            alert,
            at_nanos: now_nanos,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        if self.tx.send_timeout(Msg::Flush(ack_tx), timeout).is_err() {
            return false;
        }
        ack_rx.recv_timeout(timeout).is_ok()
    }
}

fn run(
    rx: Receiver<Msg>,
    sinks: Vec<Arc<dyn AlertSink>>,
    interval_nanos: u64,
    every: Duration,
    monitor: Weak<Inner>,
) {
    // key -> (nanos of the last alert delivered, suppressed since)
    let mut seen: HashMap<String, (u64, u64)> = HashMap::new();
    loop {
        match rx.recv_timeout(every) {
            Ok(Msg::Alert {
                mut alert,
                at_nanos,
            }) => {
                if let Some((last, suppressed)) = seen.get_mut(&alert.key) {
                    if at_nanos.saturating_sub(*last) < interval_nanos {
                        *suppressed += 1 + alert.suppressed;
                        continue;
                    }
                    alert.suppressed += *suppressed;
                    *last = at_nanos;
                    *suppressed = 0;
                } else {
                    if seen.len() >= 4096 {
                        seen.retain(|_, (last, _)| at_nanos.saturating_sub(*last) < interval_nanos);
                    }
                    seen.insert(alert.key.clone(), (at_nanos, 0));
                }
                for sink in &sinks {
                    sink.alert(&alert);
                }
            }
            Ok(Msg::Flush(ack)) => {
                let _ = ack.send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                // Catch a transition to critical that no event announced
                // (the success rate sinking); report() raises the alert.
                if let Some(inner) = monitor.upgrade() {
                    let _ = inner.report();
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
