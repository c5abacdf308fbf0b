//! The snapshot file and the table `busctl health` prints.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use bus_core::CircuitState;
use bus_errors::ErrorCategory;
use bus_health::{
    HealthConfig, HealthStatus, SNAPSHOT_FILE, SnapshotError, SnapshotWriter, read_snapshot,
};
use std::time::Duration;
use support::*;

#[test]
fn snapshot_round_trips_and_renders_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = monitor(HealthConfig::default());
    acked(&m, 90, 1);
    failed(&m, 10, ErrorCategory::Serialization);
    circuit(&m, "billing", CircuitState::Closed, CircuitState::Open);
    let path = m.write_snapshot(dir.path()).unwrap();
    assert_eq!(path, dir.path().join(SNAPSHOT_FILE));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temp file left behind: {names:?}");

    let back = read_snapshot(dir.path()).unwrap();
    assert_eq!(back.status, HealthStatus::Degraded);
    assert_eq!(back.totals.acked, 90);
    assert_eq!(
        back.category_totals.get(&ErrorCategory::Serialization),
        Some(&10)
    );
    assert_eq!(back.circuits.get("billing"), Some(&CircuitState::Open));

    let table = back.render_table();
    assert!(table.starts_with("status            DEGRADED"), "{table}");
    assert!(table.contains("success rate      90.0%"), "{table}");
    assert!(table.contains("SERIALIZATION"), "{table}");
    assert!(
        table.contains("billing") && table.contains("open"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("acked") && l.ends_with(" 90")),
        "{table}"
    );
}

#[test]
fn reading_a_missing_or_corrupt_snapshot_says_which_file() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        read_snapshot(dir.path()),
        Err(SnapshotError::Io { .. })
    ));
    std::fs::write(dir.path().join(SNAPSHOT_FILE), "{not json").unwrap();
    let err = read_snapshot(dir.path()).unwrap_err();
    assert!(matches!(err, SnapshotError::Parse { .. }));
    assert!(err.to_string().contains(SNAPSHOT_FILE));
}

#[test]
fn periodic_writer_writes_and_writes_again_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = monitor(HealthConfig::default());
    let writer = SnapshotWriter::start(m.clone(), dir.path(), Duration::from_secs(3600)).unwrap();
    acked(&m, 5, 1);
    writer.stop(); // final write reflects the latest counts
    assert_eq!(read_snapshot(dir.path()).unwrap().totals.acked, 5);
}
