//! How a demo run ends: the typed errors that make busctl exit non-zero, and
//! the observer that remembers why the dead-letter queue refused writes (so
//! the error can say which groups and what the store answered).

use bus::ShutdownReport;
use bus::plug::{BusEvent, Observer};
use bus::time::Stamp;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Why a demo run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DemoError {
    /// A publisher thread could not be started; the ones that had started
    /// were stopped and joined before this was returned.
    #[error(
        "could not start publisher thread {failed} of {wanted} ({source}); the {started} started were stopped and joined and the bus was shut down"
    )]
    SpawnPublisher {
        /// The 1-based number of the thread that failed.
        failed: usize,
        /// Threads asked for.
        wanted: usize,
        /// Threads that had started.
        started: usize,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
    /// A publisher thread panicked.
    #[error("a publisher thread panicked")]
    PublisherPanicked,
    /// The ledger does not add up once the bus is shut down.
    #[error(
        "the invariant does not hold: published {published} != settled {settled} (acked + dead_lettered + rejected_at_publish + discarded_by_policy + returned_at_shutdown); {in_flight} deliveries unaccounted for ({stuck_workers} workers were still in a handler at the deadline)"
    )]
    InvariantBroken {
        /// Deliveries published.
        published: u64,
        /// Deliveries that reached an end.
        settled: u64,
        /// The difference.
        in_flight: u64,
        /// Workers left inside a handler.
        stuck_workers: usize,
    },
    /// Over a broker, this run's ledger and the streams it kept disagree:
    /// it settled more than it was due, or left unsettled more than the
    /// streams still owe.
    #[error(
        "the invariant does not hold over the broker: published {published} + resumed {resumed} = settled {settled} + pending {pending}, but the streams kept owe {owed} (pending must not exceed it)"
    )]
    BrokerLedger {
        /// Deliveries this run published.
        published: u64,
        /// Deliveries an earlier run left that this run was handed.
        resumed: u64,
        /// Deliveries that reached an end.
        settled: u64,
        /// Deliveries due and not at an end.
        pending: u64,
        /// What the kept streams owe, as the server counts it.
        owed: u64,
    },
    /// The dead-letter queue refused messages at shutdown: they were handed
    /// back to this process, which has nowhere left to keep them.
    #[error(
        "{count} deliveries handed back at shutdown (returned_at_shutdown) and dropped by this process: the dead-letter queue refused them{refusals}; by topic: {topics}"
    )]
    HandedBack {
        /// `returned_at_shutdown`.
        count: u64,
        /// The unsaved messages per topic.
        topics: String,
        /// Which groups' writes were refused, and the store's last error.
        refusals: String,
    },
}

impl DemoError {
    /// The error for a finished run, if it was not clean.
    ///
    /// `invariant_holds` is the summary's verdict: over a broker it also
    /// counts what an earlier run left and what the streams keep.
    pub(crate) fn check(
        report: &ShutdownReport,
        refusals: &DlqRefusals,
        invariant_holds: bool,
    ) -> Option<Self> {
        let st = report.stats;
        if !invariant_holds {
            return Some(Self::InvariantBroken {
                published: st.published,
                settled: st.settled(),
                in_flight: st.in_flight(),
                stuck_workers: report.stuck_workers,
            });
        }
        if st.returned_at_shutdown > 0 {
            let mut by_topic: BTreeMap<&str, u64> = BTreeMap::new();
            for env in &report.unsaved {
                *by_topic.entry(env.topic.as_str()).or_default() += 1;
            }
            let topics = if by_topic.is_empty() {
                "unknown (settled after the shutdown report)".to_owned()
            } else {
                join(by_topic.iter().map(|(t, n)| format!("{t} {n}")))
            };
            return Some(Self::HandedBack {
                count: st.returned_at_shutdown,
                topics,
                refusals: refusals.describe(),
            });
        }
        None
    }
}

/// Shuts the bus down, then says on stderr what the error log could not
/// keep: its lines are the operator's record of what failed, and a run on
/// a full disk loses them as surely as it loses dead letters.
pub(crate) fn shut_down(bus: &bus::Bus, drain: std::time::Duration) -> ShutdownReport {
    let report = bus.shutdown(drain);
    if let Some(logger) = bus.logger() {
        // Every report recorded before the shutdown is written, or has
        // failed, once this returns; its own error is what is counted below.
        let _ = logger.flush();
        let c = logger.counters();
        if c.write_failures > 0 || c.log_dropped > 0 {
            eprintln!(
                "warning: the error log is missing {} report lines: {} could not be written (a full disk or a missing directory), {} were shed while its writer was behind",
                c.write_failures + c.log_dropped,
                c.write_failures,
                c.log_dropped
            );
        }
    }
    report
}

fn join(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

#[derive(Debug, Default)]
struct Refusals {
    by_group: BTreeMap<String, u64>,
    last_error: Option<String>,
}

/// Counts dead-letter writes the store refused, per subscriber group, and
/// keeps the store's last error.
#[derive(Debug, Default)]
pub(crate) struct DlqRefusals(Mutex<Refusals>);

impl DlqRefusals {
    /// `" (groups a 3, b 1; last error: ...)"`, or empty if none was seen.
    pub(crate) fn describe(&self) -> String {
        let r = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if r.by_group.is_empty() {
            return String::new();
        }
        let groups = join(r.by_group.iter().map(|(g, n)| format!("{g} {n}")));
        let last = r.last_error.as_deref().unwrap_or("unknown");
        format!(" (refused writes by group: {groups}; the store's last error: {last})")
    }
}

impl Observer for DlqRefusals {
    fn on_event(&self, _at: Stamp, event: &BusEvent<'_>) {
        if let BusEvent::DlqWriteFailed { component, error } = event {
            let mut r = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            *r.by_group.entry((*component).to_owned()).or_default() += 1;
            r.last_error = Some(error.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bus::plug::DlqError;

    #[test]
    fn refusals_name_each_group_and_the_last_error() {
        let r = DlqRefusals::default();
        assert_eq!(r.describe(), "");
        let e = DlqError::Full("disk full".into());
        for c in ["billing", "billing", "audit"] {
            r.on_event(
                Stamp::default(),
                &BusEvent::DlqWriteFailed {
                    component: c,
                    error: &e,
                },
            );
        }
        let d = r.describe();
        assert!(d.contains("audit 1, billing 2"), "{d}");
        assert!(d.contains("disk full"), "{d}");
    }
}
