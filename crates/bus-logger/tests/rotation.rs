//! Size rotation: exactly `keep` rotated files plus the current one, no line
//! lost or split while rotating under concurrent callers.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use bus_core::ErrorSink;
use bus_logger::{ErrorLogger, LoggerConfig, log_files};
use std::collections::HashMap;
use std::sync::Arc;
use support::{full_report, read_all};

#[test]
fn rotation_under_concurrent_writers_loses_no_line() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 5000;
    const MAX: u64 = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let config = LoggerConfig::default()
        .with_max_file_bytes(MAX)
        .with_keep_files(10_000)
        .with_channel_capacity(THREADS * PER_THREAD + 1);
    let logger = Arc::new(ErrorLogger::open(dir.path(), config).unwrap());
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let logger = logger.clone();
            std::thread::spawn(move || {
                (0..PER_THREAD)
                    .map(|i| {
                        let r = full_report(t * PER_THREAD + i);
                        logger.record(&r);
                        r.id
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let sent: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    logger.flush().unwrap();

    let c = logger.counters();
    assert_eq!(c.log_dropped, 0);
    assert_eq!(c.write_failures, 0);
    assert_eq!(c.lines_written, (THREADS * PER_THREAD) as u64);
    let files = log_files(dir.path()).unwrap();
    assert!(c.rotations >= 20, "only {} rotations", c.rotations);
    assert_eq!(files.len() as u64, c.rotations + 1);
    for f in &files {
        let len = std::fs::metadata(f).unwrap().len();
        assert!(len <= MAX, "{} is {len} bytes", f.display());
    }

    let mut seen: HashMap<_, usize> = HashMap::new();
    for r in read_all(dir.path()) {
        *seen.entry(r.id).or_default() += 1;
    }
    assert_eq!(seen.len(), sent.len());
    for id in &sent {
        assert_eq!(seen.get(id), Some(&1), "report {id} not exactly once");
    }
}

#[test]
fn keeps_exactly_keep_rotated_files_plus_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = LoggerConfig::default()
        .with_max_file_bytes(2048)
        .with_keep_files(3);
    let logger = ErrorLogger::open(dir.path(), config).unwrap();
    let sent: Vec<_> = (0..300).map(full_report).collect();
    for r in &sent {
        logger.record(r);
    }
    logger.flush().unwrap();
    assert!(logger.counters().rotations > 3);

    let names: Vec<_> = log_files(dir.path())
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "errors.3.jsonl",
            "errors.2.jsonl",
            "errors.1.jsonl",
            "errors.jsonl"
        ]
    );
    // What is left is the newest reports, in order, with nothing missing
    // between the oldest kept one and the last.
    let back = read_all(dir.path());
    assert!(!back.is_empty() && back.len() < sent.len());
    assert_eq!(back[..], sent[sent.len() - back.len()..]);
}

#[test]
fn keep_zero_keeps_only_the_current_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = LoggerConfig::default()
        .with_max_file_bytes(1024)
        .with_keep_files(0);
    let logger = ErrorLogger::open(dir.path(), config).unwrap();
    let sent: Vec<_> = (0..50).map(full_report).collect();
    for r in &sent {
        logger.record(r);
    }
    logger.flush().unwrap();
    assert_eq!(log_files(dir.path()).unwrap(), vec![logger.log_path()]);
    let back = read_all(dir.path());
    assert_eq!(back[..], sent[sent.len() - back.len()..]);
}

#[test]
fn a_line_longer_than_the_limit_gets_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = LoggerConfig::default()
        .with_max_file_bytes(600)
        .with_keep_files(10);
    let logger = ErrorLogger::open(dir.path(), config).unwrap();
    let small = full_report(1);
    let big = full_report(2).with_context("blob", "x".repeat(2000));
    for r in [&small, &big, &small] {
        logger.record(r);
    }
    logger.flush().unwrap();
    let files = log_files(dir.path()).unwrap();
    assert_eq!(files.len(), 3);
    let middle = std::fs::read_to_string(&files[1]).unwrap();
    assert_eq!(middle.lines().count(), 1);
    assert_eq!(read_all(dir.path()), vec![small.clone(), big, small]);
}

#[test]
fn reopening_appends_and_rotates_the_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        LoggerConfig::default()
            .with_max_file_bytes(4096)
            .with_keep_files(100)
    };
    let first: Vec<_> = (0..5).map(full_report).collect();
    {
        let logger = ErrorLogger::open(dir.path(), config()).unwrap();
        first.iter().for_each(|r| logger.record(r));
    } // dropping drains the channel: no flush needed
    let second: Vec<_> = (5..40).map(full_report).collect();
    {
        let logger = ErrorLogger::open(dir.path(), config()).unwrap();
        second.iter().for_each(|r| logger.record(r));
    }
    let all: Vec<_> = first.into_iter().chain(second).collect();
    assert_eq!(read_all(dir.path()), all);
    for f in log_files(dir.path()).unwrap() {
        assert!(std::fs::metadata(f).unwrap().len() <= 4096);
    }
}

#[test]
fn reopening_with_a_smaller_keep_removes_the_excess_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = |keep| {
        LoggerConfig::default()
            .with_max_file_bytes(1024)
            .with_keep_files(keep)
    };
    {
        let logger = ErrorLogger::open(dir.path(), config(8)).unwrap();
        (0..100).for_each(|i| logger.record(&full_report(i)));
    }
    assert_eq!(log_files(dir.path()).unwrap().len(), 9);
    let logger = ErrorLogger::open(dir.path(), config(2)).unwrap();
    let names: Vec<_> = log_files(dir.path())
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["errors.2.jsonl", "errors.1.jsonl", "errors.jsonl"]);
    drop(logger);
}
