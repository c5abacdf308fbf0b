//! What the assembled bus leaves in its data directory while it runs and
//! after: the periodic health snapshot, the modes of the directory and its
//! files, and the reason a plain bus gives its dead letters.
#![allow(clippy::unwrap_used)] // tests may unwrap

use bus::dlq::{DlqQuery, Filter};
use bus::plug::DeadLetterReason;
use bus::{Bus, Config, Message};
use bus_test::wait_until;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &std::path::Path, toml: &str) -> Config {
    let mut cfg = Config::from_toml_str(toml).unwrap();
    cfg.data_dir = dir.to_owned();
    cfg
}

#[test]
fn health_snapshot_is_written_while_the_bus_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), r#"health_snapshot_interval = "20ms""#);
    let bus = Bus::from_config(cfg).unwrap();
    bus.subscriber("billing")
        .topic("orders")
        .start(|_: &Message<'_>| Ok::<(), std::io::Error>(()))
        .unwrap();
    bus.publish("orders", &b"1"[..]).unwrap();
    // No shutdown: a process killed now must leave a snapshot that has
    // seen the delivery.
    let acked_on_disk = wait_until(WAIT, || {
        bus::health::read_snapshot(dir.path()).is_ok_and(|r| r.totals.acked == 1)
    });
    assert!(
        acked_on_disk,
        "health.json was not rewritten while the bus ran"
    );
    let _ = bus.shutdown(WAIT);
}

#[test]
fn health_snapshot_interval_defaults_to_ten_seconds_and_zero_means_shutdown_only() {
    assert_eq!(
        Config::default().health_snapshot_interval,
        Duration::from_secs(10)
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), r#"health_snapshot_interval = "0s""#);
    let bus = Bus::from_config(cfg).unwrap();
    assert!(!dir.path().join(bus::health::SNAPSHOT_FILE).exists());
    let _ = bus.shutdown(WAIT);
    assert!(bus::health::read_snapshot(dir.path()).is_ok());
}

#[cfg(unix)]
#[test]
fn data_dir_is_created_owner_only_with_owner_only_files() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("srv").join("bus-data");
    let bus = Bus::from_config(config(&data, "")).unwrap();
    let _ = bus.shutdown(WAIT);
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&data.join("dlq.sqlite")), 0o600, "dlq.sqlite");
    assert_eq!(mode(&data.join("health.json")), 0o600, "health.json");
}

#[test]
fn a_plain_bus_dead_letters_a_failure_as_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::from_config(config(dir.path(), "error_handling = false")).unwrap();
    bus.subscriber("billing")
        .topic("orders")
        .start(|_: &Message<'_>| Err::<(), _>(std::io::Error::other("down")))
        .unwrap();
    bus.publish("orders", &b"1"[..]).unwrap();
    let _ = bus.shutdown(WAIT);
    let dlq = bus.dlq().unwrap();
    let letters = dlq.list(&Filter::default()).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "not_retried");
    let stored = dlq.get(letters[0].id).unwrap().unwrap();
    assert_eq!(stored.letter.reason, DeadLetterReason::NotRetried);
    assert_eq!(dlq.stats().unwrap().by_reason.get("not_retried"), Some(&1));
}
