//! Tests that need the crate's private test hooks.

use crate::{ErrorLogger, FlushError, LoggerConfig, read_reports};
use bus_core::ErrorSink;
use bus_errors::{Classification, ErrorCategory, ErrorReport};
use std::sync::Arc;

fn report(i: usize) -> ErrorReport {
    ErrorReport::new(
        Classification::of(ErrorCategory::MessageProcessing),
        format!("worker-{}", i % 3),
        format!("failure {i}"),
    )
}

#[test]
fn full_channel_counts_log_dropped_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let logger =
        ErrorLogger::open(dir.path(), LoggerConfig::default().with_channel_capacity(4)).unwrap();
    let release = logger.pause_writer();
    let reports: Vec<_> = (0..100).map(report).collect();
    // If `record` blocked on the full channel this would never return: the
    // writer is stalled until `release` is dropped.
    for r in &reports {
        logger.record(r);
    }
    assert_eq!(logger.counters().log_dropped, 96);
    let stats = logger.statistics();
    assert_eq!(stats.total, 100);
    assert_eq!(stats.log.log_dropped, 96);
    assert_eq!(
        logger.history().len(),
        100,
        "shed lines still reach the history"
    );

    drop(release);
    logger.flush().unwrap();
    let back: Vec<_> = read_reports(dir.path())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(back, reports[..4].to_vec());
    assert_eq!(logger.counters().lines_written, 4);
}

#[test]
fn concurrent_callers_with_a_stalled_writer_never_block() {
    let dir = tempfile::tempdir().unwrap();
    let logger = Arc::new(
        ErrorLogger::open(
            dir.path(),
            LoggerConfig::default()
                .with_channel_capacity(16)
                .with_history_len(50),
        )
        .unwrap(),
    );
    let release = logger.pause_writer();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let logger = logger.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    logger.record(&report(t * 10_000 + i));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let c = logger.counters();
    assert_eq!(c.log_dropped, 8000 - 16);
    assert_eq!(logger.statistics().total, 8000);
    assert_eq!(logger.history().len(), 50);
    drop(release);
    logger.flush().unwrap();
    assert_eq!(logger.counters().lines_written, 16);
}

#[test]
fn flush_reports_failures_since_the_previous_flush() {
    let dir = tempfile::tempdir().unwrap();
    let logger = ErrorLogger::open(dir.path(), LoggerConfig::default()).unwrap();
    let logs = logger.log_dir().to_path_buf();
    std::fs::remove_dir_all(&logs).unwrap();
    std::fs::write(&logs, b"not a directory").unwrap();
    for i in 0..3 {
        logger.record(&report(i));
    }
    assert!(matches!(logger.flush(), Err(FlushError::WriteFailures(3))));
    assert!(matches!(logger.flush(), Ok(())));
}

#[test]
fn recoveries_are_counted_when_the_delivery_finally_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let logger = ErrorLogger::open(dir.path(), LoggerConfig::default()).unwrap();
    assert_eq!(logger.statistics().recovery_success_rate, None);
    // A failure retried: its report cannot say how the delivery ends.
    let mut retried = report(0);
    retried.record_recovery(true, None, "retry in 10ms");
    logger.record(&retried);
    assert_eq!(logger.statistics().recovery_success_rate, None);
    // It succeeds on its second attempt; another gives up after retries.
    let topic = bus_core::Topic::new("orders").unwrap();
    logger.recovered("worker-0", &topic, 2);
    let mut exhausted = report(1);
    exhausted.record_recovery(true, Some(false), "dead-letter: retries_exhausted");
    logger.record(&exhausted);
    assert_eq!(logger.statistics().recovery_success_rate, Some(0.5));
}
