//! The configuration shown in docs/tuning.md is valid.
#![allow(clippy::unwrap_used)] // tests may unwrap

#[test]
fn tuning_guide_example_config_parses_and_validates() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/tuning.md")).unwrap();
    let start = text.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + text[start..].find("```").unwrap();
    let cfg = bus::Config::from_toml_str(&text[start..end]).unwrap();
    assert_eq!(cfg.breaker.consecutive_failures, Some(5));
    assert_eq!(cfg.dlq.max_letters, Some(1_000_000));
    assert!(cfg.recovery.topics.contains_key("payments.charge"));
    assert_eq!(cfg.alerts.command.as_ref().map(Vec::len), Some(3));
    assert!(cfg.alerts.webhook.is_some());
    assert_eq!(cfg.sqlite.as_ref().map(|s| s.prefetch), Some(32));
    assert_eq!(
        cfg.health_snapshot_interval,
        std::time::Duration::from_secs(10)
    );
}

/// docs/operations.md describes a replayed message as the code builds it:
/// a new id, the old one and the letter's in headers, attempt 1.
#[test]
fn operations_guide_describes_replayed_messages_as_built() {
    use bus::errors::{Classification, ErrorCategory, ErrorReport};
    use bus::plug::{DeadLetter, DeadLetterReason};
    use bus::{Envelope, Topic};
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations.md"
    ))
    .unwrap();
    let mut env = Envelope::new(Topic::new("orders").unwrap(), &b"x"[..]);
    env.attempt = 3;
    let report = ErrorReport::new(
        Classification::of(ErrorCategory::Timeout),
        "billing",
        "slow",
    );
    let letter = DeadLetter::new(
        env.clone(),
        report,
        DeadLetterReason::RetriesExhausted,
        "billing",
        "billing",
    );
    let replayed = bus::dlq::replay_envelope(&letter, None);
    assert_ne!(replayed.id, env.id, "a replay gets a new message id");
    assert_eq!(replayed.attempt, 1);
    for header in [bus::dlq::ORIGINAL_ID_HEADER, bus::dlq::REPLAYED_FROM_HEADER] {
        assert!(replayed.headers.contains_key(header), "{header}");
        assert!(
            text.contains(&format!("`{header}`")),
            "the guide names {header}"
        );
    }
    assert!(text.contains("gets a new message id"), "the guide says so");
    assert!(!text.contains("same\nmessage id") && !text.contains("same message id"));
}
