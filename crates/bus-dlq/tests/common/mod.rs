//! Letters for the integration tests.
#![allow(dead_code)]

use bus_core::{AttemptRecord, DeadLetter, DeadLetterReason, Envelope, Priority, Topic};
use bus_errors::{Classification, ErrorCategory, ErrorReport, Severity};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A letter with every field set to something non-default: binary payload,
/// headers, correlation id, history, source chain, context, custom reason.
pub(crate) fn rich_letter(seed: u64) -> DeadLetter {
    let mut rng = fastrand::Rng::with_seed(seed);
    let payload: Vec<u8> = (0..rng.usize(0..2048)).map(|_| rng.u8(..)).collect();
    let t0 = UNIX_EPOCH + Duration::new(1_700_000_000 + seed, 123_456_789);
    let mut env = Envelope::new(
        Topic::new(&format!("orders.t{}", seed % 3)).unwrap(),
        payload,
    )
    .with_priority(Priority::High)
    .with_header("tenant", "acme")
    .with_header("trace", format!("{seed:x}"))
    .with_correlation_id(format!("req-{seed}"))
    .with_content_type("application/octet-stream");
    env.created_at = t0;
    env.attempt = 3;
    for a in 1..=2 {
        env.history.push(AttemptRecord {
            attempt: a,
            at: t0 + Duration::from_millis(u64::from(a) * 1500 + 7),
            component: "billing".into(),
            category: ErrorCategory::Timeout,
            severity: Severity::High,
            error_type: "app::TimeoutError".into(),
            message: format!("timed out after {}ms", 1000 + a),
            decision: "retry in 1.5s".into(),
        });
    }
    let mut report = ErrorReport::new(
        Classification::of(ErrorCategory::Timeout),
        "billing",
        "timed out after 1003ms",
    )
    .with_topic(env.topic.as_str())
    .with_message_id(env.id)
    .with_correlation_id(format!("req-{seed}"))
    .with_context("db", "primary")
    .with_attempt(3);
    report.error_type = "app::TimeoutError".into();
    report.source_chain = vec!["socket read".into(), "os error 110".into()];
    report.timestamp = t0 + Duration::from_millis(4511);
    report.retry_count = 2;
    report.recovery_attempted = true;
    report.recovery_successful = Some(false);
    report.recovery_action = Some("dead-letter: retries exhausted".into());
    let reason = if seed.is_multiple_of(2) {
        DeadLetterReason::RetriesExhausted
    } else {
        DeadLetterReason::Other(format!("custom {seed}"))
    };
    let mut l = DeadLetter::new(env, report, reason, "billing", "billing-group");
    l.dead_lettered_at = t0 + Duration::from_millis(4512);
    l
}

/// A plain letter: topic, category, component and message chosen by the caller.
pub(crate) use bus_test::letter;

/// A letter dead-lettered at `at`.
pub(crate) fn letter_at(topic: &str, at: SystemTime) -> DeadLetter {
    let mut l = letter(topic, ErrorCategory::MessageProcessing, "c", "boom");
    l.dead_lettered_at = at;
    l.report.timestamp = at;
    l
}
