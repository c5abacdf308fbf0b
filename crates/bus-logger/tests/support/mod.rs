//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub)]

use bus_errors::{Classification, ErrorCategory, ErrorReport, Severity};
use std::path::Path;

/// A report with every optional field set, unique per `i`.
pub fn full_report(i: usize) -> ErrorReport {
    let cat = ErrorCategory::ALL[i % 8];
    let sev = Severity::ALL[i % 4];
    let mut r = ErrorReport::new(
        Classification::new(cat, sev),
        format!("component-{}", i % 5),
        format!("failure number {i}"),
    )
    .with_topic(format!("orders.t{}", i % 7))
    .with_message_id(uuid::Uuid::now_v7())
    .with_correlation_id(format!("corr-{i}"))
    .with_context("attempt_host", "db-1")
    .with_attempt(1 + (i % 3) as u32);
    r.error_type = "std::io::error::Error".into();
    r.source_chain = vec![format!("inner {i}")];
    r.retry_count = (i % 3) as u32;
    r.record_recovery(i % 2 == 0, Some(i % 4 == 0), "retry in 1s");
    r
}

/// All reports under `dir`, panicking on any unreadable line.
pub fn read_all(dir: &Path) -> Vec<ErrorReport> {
    bus_logger::read_reports(dir)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}
