//! Runs the code of every example (the same files, included here).
#![allow(clippy::unwrap_used)] // tests may unwrap

#[path = "../crates/bus/examples/async_service.rs"]
mod async_service;
#[path = "../crates/bus/examples/custom_error.rs"]
mod custom_error;
#[path = "../crates/bus/examples/custom_recovery.rs"]
mod custom_recovery;
#[path = "../crates/bus/examples/dlq_replay.rs"]
mod dlq_replay;
#[path = "../crates/bus/examples/minimal.rs"]
mod minimal;
#[path = "../crates/bus/examples/service.rs"]
mod service;
#[path = "../crates/bus/examples/traces.rs"]
mod traces;

#[test]
fn minimal_delivers_to_both_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let stats = minimal::run(dir.path()).unwrap();
    assert_eq!(stats.published, 6, "3 messages x 2 groups");
    assert_eq!(stats.acked, 6);
    assert!(stats.invariant_holds());
}

#[test]
fn custom_error_is_classified_by_its_classify_impl() {
    let dir = tempfile::tempdir().unwrap();
    let (stats, category) = custom_error::run(dir.path()).unwrap();
    assert_eq!(category, bus::errors::ErrorCategory::Authentication);
    assert_eq!(stats.dead_lettered, 1);
    assert_eq!(stats.retried, 0, "not retryable");
    assert!(stats.invariant_holds());
}

#[test]
fn custom_recovery_policy_retries_until_success() {
    let dir = tempfile::tempdir().unwrap();
    let (stats, calls) = custom_recovery::run(dir.path()).unwrap();
    assert_eq!(calls, 3);
    assert_eq!(stats.retried, 2);
    assert_eq!(stats.acked, 1);
    assert!(stats.invariant_holds());
}

#[test]
fn dlq_replay_delivers_after_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (stats, delivered) = dlq_replay::run(dir.path()).unwrap();
    assert_eq!(delivered, 1);
    assert_eq!(stats.published, 2, "original + replay");
    assert_eq!(stats.dead_lettered, 1);
    assert_eq!(stats.acked, 1);
    assert!(stats.invariant_holds());
}

#[test]
fn service_handles_two_topics_answers_health_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    let run = service::run(dir.path()).unwrap();
    assert_eq!(run.stats.published, 4);
    assert_eq!(run.stats.acked, 2);
    assert_eq!(run.stats.dead_lettered, 2);
    assert_eq!(run.stats.retried, 0, "neither failure is retryable");
    assert!(run.stats.invariant_holds());
    use bus::errors::ErrorCategory;
    assert_eq!(
        run.dead_letters,
        [
            ("orders.created".to_owned(), ErrorCategory::Serialization),
            ("payments.charge".to_owned(), ErrorCategory::Authentication),
        ]
    );
    let (status, body) = run.healthz;
    assert!(
        status == "HTTP/1.1 200 OK" || status == "HTTP/1.1 503 Service Unavailable",
        "{status}"
    );
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(report["status"].is_string(), "{body}");
    assert!(dir.path().join("bus-data").join("health.json").exists());
}

#[test]
fn traces_makes_one_trace_from_the_request_to_the_retried_handler() {
    let dir = tempfile::tempdir().unwrap();
    let tree = traces::run(dir.path()).unwrap();
    let parent = |name: &str| -> Vec<&str> {
        tree.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, p)| p.as_str())
            .collect()
    };
    assert_eq!(parent("publish orders.placed"), ["checkout"]);
    assert_eq!(parent("process orders.placed"), ["publish orders.placed"]);
    assert_eq!(parent("publish parcels.ready"), ["process orders.placed"]);
    assert_eq!(
        parent("process parcels.ready"),
        ["publish parcels.ready", "publish parcels.ready"],
        "two attempts, both children of the publish"
    );
}

#[test]
fn async_service_retries_the_unavailable_inventory_and_parks_bad_orders() {
    let dir = tempfile::tempdir().unwrap();
    let run = async_service::run(dir.path(), 100).unwrap();
    let s = run.stats;
    assert!(s.invariant_holds(), "{s:?}");
    assert_eq!(s.published, 102);
    assert_eq!(s.acked, 100, "every good order reserved: {s:?}");
    assert_eq!(s.dead_lettered, 2, "the malformed orders: {s:?}");
    assert_eq!(s.retried, 10, "one retry per order the inventory failed");
    assert_eq!(run.inventory_calls, 110);
}
