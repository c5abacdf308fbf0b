//! Runs the code of every example (the same files, included here).
#![allow(clippy::unwrap_used)] // tests may unwrap

#[path = "../examples/custom_error.rs"]
mod custom_error;
#[path = "../examples/custom_recovery.rs"]
mod custom_recovery;
#[path = "../examples/dlq_replay.rs"]
mod dlq_replay;
#[path = "../examples/minimal.rs"]
mod minimal;

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
