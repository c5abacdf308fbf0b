//! The configuration shown in docs/tuning.md is valid.
#![allow(clippy::unwrap_used)] // tests may unwrap

#[test]
fn tuning_guide_example_config_parses_and_validates() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/tuning.md"))
            .unwrap();
    let start = text.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + text[start..].find("```").unwrap();
    let cfg = bus::Config::from_toml_str(&text[start..end]).unwrap();
    assert_eq!(cfg.breaker.consecutive_failures, Some(5));
    assert_eq!(cfg.dlq.max_letters, Some(1_000_000));
    assert!(cfg.recovery.topics.contains_key("payments.charge"));
}
