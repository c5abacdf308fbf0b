//! The files: reading back, errors at open and at run time, the metrics snapshot.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use bus_core::ErrorSink;
use bus_core::time::ManualClock;
use bus_logger::{ErrorLogger, FlushError, LoggerConfig, LoggerError, ReadError, Statistics};
use std::sync::Arc;
use std::time::Duration;
use support::{full_report, read_all};

#[test]
fn reader_returns_every_report_as_the_same_struct() {
    let dir = tempfile::tempdir().unwrap();
    let logger = ErrorLogger::open(dir.path(), LoggerConfig::default()).unwrap();
    let sent: Vec<_> = (0..64).map(full_report).collect();
    for r in &sent {
        logger.record(r);
    }
    logger.flush().unwrap();
    assert_eq!(read_all(dir.path()), sent);
}

#[test]
fn reader_reports_a_torn_line_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let good = full_report(1);
    let line = serde_json::to_string(&good).unwrap();
    let text = format!("{line}\n{}\n{line}\n", &line[..line.len() / 2]);
    std::fs::write(logs.join("errors.jsonl"), text).unwrap();
    let items: Vec<_> = bus_logger::read_reports(dir.path()).unwrap().collect();
    assert_eq!(items.len(), 3);
    assert!(matches!(&items[0], Ok(r) if *r == good));
    assert!(matches!(&items[1], Err(ReadError::Parse { line: 2, .. })));
    assert!(matches!(&items[2], Ok(r) if *r == good));
}

#[test]
fn reading_a_directory_without_logs_yields_nothing() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(bus_logger::read_reports(dir.path()).unwrap().count(), 0);
}

#[test]
fn open_under_a_regular_file_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = ErrorLogger::open(file.join("data"), LoggerConfig::default()).unwrap_err();
    let want = file.join("data").join("logs");
    assert!(matches!(&err, LoggerError::CreateDir { path, .. } if *path == want));
    assert!(
        err.to_string().contains(&want.display().to_string()),
        "{err}"
    );
}

#[test]
fn open_when_the_log_file_is_a_directory_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs").join("errors.jsonl");
    std::fs::create_dir_all(&log).unwrap();
    let err = ErrorLogger::open(dir.path(), LoggerConfig::default()).unwrap_err();
    assert!(matches!(&err, LoggerError::OpenFile { path, .. } if *path == log));
}

#[test]
fn invalid_config_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let err = ErrorLogger::open(dir.path(), LoggerConfig::default().with_channel_capacity(0))
        .unwrap_err();
    assert!(matches!(err, LoggerError::InvalidConfig(_)));
}

#[test]
fn log_dir_replaced_by_a_file_is_counted_not_a_panic_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let logger = ErrorLogger::open(dir.path(), LoggerConfig::default()).unwrap();
    let logs = logger.log_dir().to_path_buf();
    std::fs::remove_dir_all(&logs).unwrap();
    std::fs::write(&logs, b"in the way").unwrap();

    for i in 0..10 {
        logger.record(&full_report(i));
    }
    assert!(matches!(logger.flush(), Err(FlushError::WriteFailures(10))));
    let c = logger.counters();
    assert_eq!(c.write_failures, 10);
    assert_eq!(c.lines_written, 0);
    assert_eq!(logger.statistics().log.write_failures, 10);
    assert_eq!(logger.statistics().total, 10, "reports still counted");

    // The obstacle goes away: the writer recreates the directory and goes on.
    std::fs::remove_file(&logs).unwrap();
    let later = full_report(99);
    logger.record(&later);
    logger.flush().unwrap();
    assert_eq!(logger.counters().lines_written, 1);
    assert_eq!(read_all(dir.path()), vec![later]);
}

#[test]
fn log_dir_removed_after_open_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let logger = ErrorLogger::open(dir.path(), LoggerConfig::default()).unwrap();
    let before = full_report(1);
    logger.record(&before);
    logger.flush().unwrap();
    std::fs::remove_dir_all(logger.log_dir()).unwrap();
    let after = full_report(2);
    logger.record(&after);
    logger.flush().unwrap();
    assert_eq!(read_all(dir.path()), vec![after]);
    assert_eq!(logger.counters().write_failures, 0);
}

#[test]
fn rotation_failure_at_run_time_is_counted_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = LoggerConfig::default().with_max_file_bytes(100);
    let logger = ErrorLogger::open(dir.path(), config).unwrap();
    logger.record(&full_report(0));
    logger.flush().unwrap();
    let logs = logger.log_dir().to_path_buf();
    std::fs::remove_dir_all(&logs).unwrap();
    std::fs::write(&logs, b"in the way").unwrap();
    for i in 1..6 {
        logger.record(&full_report(i));
    }
    assert!(matches!(logger.flush(), Err(FlushError::WriteFailures(5))));
}

fn snapshot(logger: &ErrorLogger) -> Statistics {
    serde_json::from_slice(&std::fs::read(logger.metrics_path()).unwrap()).unwrap()
}

#[test]
fn metrics_snapshot_is_written_at_most_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let config = LoggerConfig::default()
        .with_metrics_interval(Duration::from_secs(10))
        .with_clock(Arc::new(clock.clone()));
    let logger = ErrorLogger::open(dir.path(), config).unwrap();
    assert!(!logger.metrics_path().exists());

    logger.record(&full_report(0));
    logger.flush().unwrap();
    assert_eq!(logger.counters().snapshots_written, 1);
    assert_eq!(snapshot(&logger).total, 1);

    for i in 1..51 {
        logger.record(&full_report(i));
        logger.flush().unwrap();
    }
    clock.advance(Duration::from_secs(9));
    logger.flush().unwrap();
    assert_eq!(
        logger.counters().snapshots_written,
        1,
        "not within the interval"
    );
    assert_eq!(snapshot(&logger).total, 1);

    clock.advance(Duration::from_secs(1));
    logger.record(&full_report(51));
    logger.flush().unwrap();
    assert_eq!(logger.counters().snapshots_written, 2);
    let snap = snapshot(&logger);
    assert_eq!(snap.total, 52);
    assert_eq!(snap.log.lines_written, 52);
    assert_eq!(snap.by_category.values().sum::<u64>(), 52);

    let names: Vec<_> = std::fs::read_dir(logger.log_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.contains("tmp")), "{names:?}");
}

#[test]
fn dropping_the_logger_writes_everything_and_a_final_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let config = LoggerConfig::default().with_clock(Arc::new(clock.clone()));
    let logger = ErrorLogger::open(dir.path(), config).unwrap();
    let metrics = logger.metrics_path();
    let sent: Vec<_> = (0..500).map(full_report).collect();
    for r in &sent {
        logger.record(r);
    }
    drop(logger);
    assert_eq!(read_all(dir.path()), sent);
    let snap: Statistics = serde_json::from_slice(&std::fs::read(metrics).unwrap()).unwrap();
    assert_eq!(snap.total, 500);
    assert_eq!(snap.log.lines_written, 500);
}
