//! The in-memory side: bounded history, counts, and windowed statistics.

use bus_errors::{ErrorCategory, ErrorReport, Severity};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

/// The bucket that counts components beyond
/// [`LoggerConfig::max_components`](crate::LoggerConfig::max_components).
pub const OTHER_COMPONENT: &str = "other";

/// Minutes in the statistics window.
const WINDOW_MINUTES: u64 = 60;

/// What happened to the file side of the logger, since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LogCounters {
    /// Lines written to the log file.
    pub lines_written: u64,
    /// Reports whose line was shed because the writer's channel was full
    /// (they are still in the history and the statistics).
    pub log_dropped: u64,
    /// Lines that could not be written (disk full, directory gone, ...).
    pub write_failures: u64,
    /// Times the log file was rotated.
    pub rotations: u64,
    /// Metrics snapshot files written.
    pub snapshots_written: u64,
    /// Metrics snapshot files that could not be written.
    pub snapshot_failures: u64,
}

#[derive(Debug, Default)]
pub(crate) struct AtomicCounters {
    pub(crate) lines_written: AtomicU64,
    pub(crate) log_dropped: AtomicU64,
    pub(crate) write_failures: AtomicU64,
    pub(crate) rotations: AtomicU64,
    pub(crate) snapshots_written: AtomicU64,
    pub(crate) snapshot_failures: AtomicU64,
}

impl AtomicCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn load(&self) -> LogCounters {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LogCounters {
            lines_written: l(&self.lines_written),
            log_dropped: l(&self.log_dropped),
            write_failures: l(&self.write_failures),
            rotations: l(&self.rotations),
            snapshots_written: l(&self.snapshots_written),
            snapshot_failures: l(&self.snapshot_failures),
        }
    }
}

/// A summary of the reports seen, like the seed's `get_error_statistics`,
/// but with the rates computed over a window instead of since start.
/// This is also the content of `error_metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Statistics {
    /// When this summary was made (wall clock, RFC 3339 in JSON).
    #[serde(with = "humantime_serde")]
    pub generated_at: SystemTime,
    /// Reports recorded since the logger was opened.
    pub total: u64,
    /// Reports recorded in the last hour: the current minute and the 59
    /// before it, so a report leaves this count between 59 and 60 minutes
    /// after it was recorded.
    pub last_hour: u64,
    /// `last_hour / 60`: reports per minute over the last hour.
    pub per_minute_rate: f64,
    /// Over the last hour, of the reports whose recovery was attempted and
    /// whose outcome is known, the share that succeeded (`0.0..=1.0`);
    /// `None` when there were none.
    pub recovery_success_rate: Option<f64>,
    /// Reports since open, by category name (`"CONNECTION"`, ...).
    pub by_category: BTreeMap<String, u64>,
    /// Reports since open, by severity name (`"LOW"`, ...).
    pub by_severity: BTreeMap<String, u64>,
    /// Reports since open, by component (capped; the overflow is under `"other"`).
    pub by_component: BTreeMap<String, u64>,
    /// Reports in the last hour, by category name.
    pub last_hour_by_category: BTreeMap<String, u64>,
    /// Reports in the last hour, by severity name.
    pub last_hour_by_severity: BTreeMap<String, u64>,
    /// How many reports the history holds now.
    pub history_len: usize,
    /// The file side's counters.
    pub log: LogCounters,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    minute: u64,
    count: u64,
    by_category: [u64; 8],
    by_severity: [u64; 4],
    recovery_known: u64,
    recovery_succeeded: u64,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        minute: u64::MAX,
        count: 0,
        by_category: [0; 8],
        by_severity: [0; 4],
        recovery_known: 0,
        recovery_succeeded: 0,
    };
}

/// Everything `record` updates, behind one mutex.
#[derive(Debug)]
pub(crate) struct State {
    start: Instant,
    history: VecDeque<Arc<ErrorReport>>,
    history_cap: usize,
    total: u64,
    by_category: [u64; 8],
    by_severity: [u64; 4],
    by_component: HashMap<String, u64>,
    other_components: u64,
    max_components: usize,
    buckets: [Bucket; WINDOW_MINUTES as usize],
}

impl State {
    pub(crate) fn new(start: Instant, history_cap: usize, max_components: usize) -> Self {
        Self {
            start,
            history: VecDeque::with_capacity(history_cap.min(4096)),
            history_cap,
            total: 0,
            by_category: [0; 8],
            by_severity: [0; 4],
            by_component: HashMap::new(),
            other_components: 0,
            max_components,
            buckets: [Bucket::EMPTY; WINDOW_MINUTES as usize],
        }
    }

    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs() / 60
    }

    /// Counts a recovery that worked: a delivery acked after earlier
    /// failures, whose reports could not yet say how it ended.
    pub(crate) fn recovered(&mut self, now: Instant) {
        let minute = self.minute(now);
        let slot = (minute % WINDOW_MINUTES) as usize;
        if let Some(b) = self.buckets.get_mut(slot) {
            if b.minute != minute {
                *b = Bucket::EMPTY;
                b.minute = minute;
            }
            b.recovery_known += 1;
            b.recovery_succeeded += 1;
        }
    }

    /// Counts one report and keeps it in the history. Never panics.
    pub(crate) fn observe(&mut self, report: Arc<ErrorReport>, now: Instant) {
        self.total += 1;
        let cat = report.category.index();
        let sev = report.severity.index();
        if let Some(c) = self.by_category.get_mut(cat) {
            *c += 1;
        }
        if let Some(s) = self.by_severity.get_mut(sev) {
            *s += 1;
        }
        if let Some(c) = self.by_component.get_mut(report.component.as_str()) {
            *c += 1;
        } else if self.by_component.len() < self.max_components {
            self.by_component.insert(report.component.clone(), 1);
        } else {
            self.other_components += 1;
        }

        let minute = self.minute(now);
        let slot = (minute % WINDOW_MINUTES) as usize;
        if let Some(b) = self.buckets.get_mut(slot) {
            if b.minute != minute {
                *b = Bucket::EMPTY;
                b.minute = minute;
            }
            b.count += 1;
            if let Some(c) = b.by_category.get_mut(cat) {
                *c += 1;
            }
            if let Some(s) = b.by_severity.get_mut(sev) {
                *s += 1;
            }
            if report.recovery_attempted {
                if let Some(ok) = report.recovery_successful {
                    b.recovery_known += 1;
                    b.recovery_succeeded += u64::from(ok);
                }
            }
        }

        if self.history_cap > 0 {
            if self.history.len() >= self.history_cap {
                self.history.pop_front();
            }
            self.history.push_back(report);
        }
    }

    pub(crate) fn history(&self) -> Vec<Arc<ErrorReport>> {
        self.history.iter().cloned().collect()
    }

    pub(crate) fn statistics(&self, now: Instant, log: LogCounters) -> Statistics {
        let current = self.minute(now);
        let mut last_hour = 0;
        let mut cat = [0u64; 8];
        let mut sev = [0u64; 4];
        let (mut known, mut succeeded) = (0u64, 0u64);
        for b in &self.buckets {
            let live =
                b.minute != u64::MAX && b.minute <= current && current - b.minute < WINDOW_MINUTES;
            if !live {
                continue;
            }
            last_hour += b.count;
            for (acc, v) in cat.iter_mut().zip(b.by_category) {
                *acc += v;
            }
            for (acc, v) in sev.iter_mut().zip(b.by_severity) {
                *acc += v;
            }
            known += b.recovery_known;
            succeeded += b.recovery_succeeded;
        }
        let by_cat = |a: &[u64; 8]| -> BTreeMap<String, u64> {
            ErrorCategory::ALL
                .iter()
                .zip(a)
                .filter(|(_, n)| **n > 0)
                .map(|(c, n)| (c.as_str().to_owned(), *n))
                .collect()
        };
        let by_sev = |a: &[u64; 4]| -> BTreeMap<String, u64> {
            Severity::ALL
                .iter()
                .zip(a)
                .filter(|(_, n)| **n > 0)
                .map(|(s, n)| (s.as_str().to_owned(), *n))
                .collect()
        };
        let mut by_component: BTreeMap<String, u64> = self
            .by_component
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if self.other_components > 0 {
            *by_component.entry(OTHER_COMPONENT.to_owned()).or_default() += self.other_components;
        }
        Statistics {
            generated_at: SystemTime::now(),
            total: self.total,
            last_hour,
            per_minute_rate: last_hour as f64 / WINDOW_MINUTES as f64,
            recovery_success_rate: (known > 0).then(|| succeeded as f64 / known as f64),
            by_category: by_cat(&self.by_category),
            by_severity: by_sev(&self.by_severity),
            by_component,
            last_hour_by_category: by_cat(&cat),
            last_hour_by_severity: by_sev(&sev),
            history_len: self.history.len(),
            log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_errors::Classification;
    use std::time::Duration;

    const WINDOW: Duration = Duration::from_secs(WINDOW_MINUTES * 60);

    fn report(cat: ErrorCategory, component: &str) -> Arc<ErrorReport> {
        Arc::new(ErrorReport::new(Classification::of(cat), component, "m"))
    }

    #[test]
    fn history_keeps_only_the_most_recent() {
        let t0 = Instant::now();
        let mut s = State::new(t0, 3, 10);
        let reports: Vec<_> = (0..5)
            .map(|_| report(ErrorCategory::Timeout, "c"))
            .collect();
        for r in &reports {
            s.observe(r.clone(), t0);
        }
        let ids: Vec<_> = s.history().iter().map(|r| r.id).collect();
        let want: Vec<_> = reports[2..].iter().map(|r| r.id).collect();
        assert_eq!(ids, want);
        assert_eq!(s.statistics(t0, LogCounters::default()).total, 5);
    }

    #[test]
    fn components_beyond_the_cap_go_to_other() {
        let t0 = Instant::now();
        let mut s = State::new(t0, 0, 2);
        for c in ["a", "b", "c", "d", "a"] {
            s.observe(report(ErrorCategory::Timeout, c), t0);
        }
        let st = s.statistics(t0, LogCounters::default());
        assert_eq!(st.by_component.get("a"), Some(&2));
        assert_eq!(st.by_component.get("b"), Some(&1));
        assert_eq!(st.by_component.get(OTHER_COMPONENT), Some(&2));
        assert_eq!(st.by_component.len(), 3);
        assert_eq!(st.history_len, 0);
    }

    #[test]
    fn window_buckets_are_reused_after_an_hour() {
        let t0 = Instant::now();
        let mut s = State::new(t0, 0, 2);
        s.observe(report(ErrorCategory::Connection, "a"), t0);
        // Same slot (minute 60 % 60 == 0), an hour later: the old count is gone.
        let t1 = t0 + WINDOW;
        s.observe(report(ErrorCategory::Timeout, "a"), t1);
        let st = s.statistics(t1, LogCounters::default());
        assert_eq!(st.last_hour, 1);
        assert_eq!(st.last_hour_by_category.get("TIMEOUT"), Some(&1));
        assert_eq!(st.last_hour_by_category.get("CONNECTION"), None);
        assert_eq!(st.by_category.get("CONNECTION"), Some(&1));
    }
}
