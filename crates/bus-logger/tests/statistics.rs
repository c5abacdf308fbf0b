//! History bounds and windowed statistics, with a manual clock.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use bus_core::ErrorSink;
use bus_core::time::ManualClock;
use bus_errors::{Classification, ErrorCategory, ErrorReport, Severity};
use bus_logger::{ErrorLogger, LoggerConfig, OTHER_COMPONENT};
use std::sync::Arc;
use std::time::Duration;

fn with_recovery(cat: ErrorCategory, attempted: bool, ok: Option<bool>) -> ErrorReport {
    let mut r = ErrorReport::new(Classification::of(cat), "svc", "boom");
    r.record_recovery(attempted, ok, "retry");
    r
}

fn open(clock: &ManualClock, config: LoggerConfig) -> (tempfile::TempDir, ErrorLogger) {
    let dir = tempfile::tempdir().unwrap();
    let logger = ErrorLogger::open(dir.path(), config.with_clock(Arc::new(clock.clone()))).unwrap();
    (dir, logger)
}

#[test]
fn history_stays_at_its_bound_after_100k_reports() {
    let clock = ManualClock::new();
    let (_dir, logger) = open(&clock, LoggerConfig::default().with_channel_capacity(256));
    let mut last_ids = std::collections::VecDeque::new();
    for i in 0..100_000 {
        let r = ErrorReport::new(Classification::FALLBACK, "c", format!("{i}"));
        last_ids.push_back(r.id);
        if last_ids.len() > 1000 {
            last_ids.pop_front();
        }
        logger.record(&r);
    }
    let history = logger.history();
    assert_eq!(history.len(), 1000);
    let ids: Vec<_> = history.iter().map(|r| r.id).collect();
    assert_eq!(ids, Vec::from(last_ids));
    let stats = logger.statistics();
    assert_eq!(stats.total, 100_000);
    assert_eq!(stats.history_len, 1000);
    logger.flush().unwrap();
    let c = logger.counters();
    assert_eq!(
        c.lines_written + c.log_dropped,
        100_000,
        "every report written or counted as shed"
    );
}

#[test]
fn reports_older_than_an_hour_leave_last_hour() {
    let clock = ManualClock::new();
    let (_dir, logger) = open(&clock, LoggerConfig::default());
    logger.record(&with_recovery(ErrorCategory::Connection, true, Some(true)));
    logger.record(&with_recovery(ErrorCategory::Connection, true, Some(false)));
    logger.record(&with_recovery(ErrorCategory::Timeout, false, None));
    clock.advance(Duration::from_secs(30 * 60));
    logger.record(&with_recovery(ErrorCategory::Timeout, true, None));

    let s = logger.statistics();
    assert_eq!(s.total, 4);
    assert_eq!(s.last_hour, 4);
    assert_eq!(s.recovery_success_rate, Some(0.5));
    assert_eq!(s.last_hour_by_category.get("CONNECTION"), Some(&2));
    assert!((s.per_minute_rate - 4.0 / 60.0).abs() < 1e-9);

    clock.advance(Duration::from_secs(31 * 60));
    let s = logger.statistics();
    assert_eq!(s.total, 4, "the total is since open");
    assert_eq!(s.last_hour, 1);
    assert_eq!(s.last_hour_by_category.get("CONNECTION"), None);
    assert_eq!(s.last_hour_by_category.get("TIMEOUT"), Some(&1));
    assert_eq!(s.by_category.get("CONNECTION"), Some(&2));
    assert_eq!(
        s.recovery_success_rate, None,
        "no known outcome in the window"
    );
    assert!((s.per_minute_rate - 1.0 / 60.0).abs() < 1e-9);

    clock.advance(Duration::from_secs(60 * 60));
    assert_eq!(logger.statistics().last_hour, 0);
}

#[test]
fn a_report_counts_in_the_window_until_its_minute_is_an_hour_old() {
    let clock = ManualClock::new();
    let (_dir, logger) = open(&clock, LoggerConfig::default());
    logger.record(&with_recovery(ErrorCategory::Timeout, false, None));
    clock.advance(Duration::from_secs(59 * 60 + 59));
    assert_eq!(logger.statistics().last_hour, 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(logger.statistics().last_hour, 0);
}

#[test]
fn counts_by_category_severity_and_component() {
    let clock = ManualClock::new();
    let (_dir, logger) = open(&clock, LoggerConfig::default().with_max_components(2));
    for (i, comp) in ["a", "b", "c", "a", "d"].iter().enumerate() {
        let sev = Severity::ALL[i % 4];
        logger.record(&ErrorReport::new(
            Classification::new(ErrorCategory::Serialization, sev),
            *comp,
            "x",
        ));
    }
    let s = logger.statistics();
    assert_eq!(s.by_category.get("SERIALIZATION"), Some(&5));
    assert_eq!(s.by_severity.get("LOW"), Some(&2));
    assert_eq!(s.by_severity.get("CRITICAL"), Some(&1));
    assert_eq!(s.by_component.get("a"), Some(&2));
    assert_eq!(s.by_component.get("b"), Some(&1));
    assert_eq!(s.by_component.get(OTHER_COMPONENT), Some(&2));
}

#[test]
fn statistics_under_concurrent_recorders_add_up() {
    let clock = ManualClock::new();
    let (_dir, logger) = open(&clock, LoggerConfig::default().with_history_len(100));
    let logger = Arc::new(logger);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let logger = logger.clone();
            let clock = clock.clone();
            std::thread::spawn(move || {
                for i in 0..5000 {
                    let cat = ErrorCategory::ALL[(t + i) % 8];
                    logger.record(&ErrorReport::new(
                        Classification::of(cat),
                        format!("w{t}"),
                        "x",
                    ));
                    if i % 1000 == 0 {
                        clock.advance(Duration::from_secs(1));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = logger.statistics();
    assert_eq!(s.total, 20_000);
    assert_eq!(s.last_hour, 20_000);
    assert_eq!(s.by_category.values().sum::<u64>(), 20_000);
    assert_eq!(s.by_severity.values().sum::<u64>(), 20_000);
    assert_eq!(s.by_component.values().sum::<u64>(), 20_000);
    assert_eq!(s.by_component.get("w3"), Some(&5000));
    assert_eq!(logger.history().len(), 100);
}
