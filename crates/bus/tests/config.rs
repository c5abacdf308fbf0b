//! Configuration from TOML and JSON: good files load, bad ones name the key.
#![allow(clippy::unwrap_used)] // tests may unwrap

use bus::{Config, ConfigError};
use std::time::Duration;

#[test]
fn toml_file_loads_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.toml");
    std::fs::write(
        &path,
        r#"
        data_dir = "/tmp/somewhere"
        max_payload_bytes = 4096
        publish_timeout = "250ms"
        error_handling = false
        http = "127.0.0.1:0"

        [breaker]
        consecutive_failures = 7
        wait_in_open = "5s"

        [recovery]
        seed = 7
        [recovery.categories.TIMEOUT]
        max_retries = 5
        backoff = { kind = "constant", delay = "100ms" }

        [dlq]
        durability = "normal"
        max_letters = 1000

        [logger]
        keep_files = 2

        [health]
        window = "2m"
        "#,
    )
    .unwrap();
    let cfg = Config::from_file(&path).unwrap();
    assert_eq!(cfg.data_dir, std::path::Path::new("/tmp/somewhere"));
    assert_eq!(cfg.max_payload_bytes, 4096);
    assert_eq!(cfg.publish_timeout, Duration::from_millis(250));
    assert!(!cfg.error_handling);
    assert_eq!(cfg.breaker.consecutive_failures, Some(7));
    assert_eq!(cfg.breaker.wait_in_open, Duration::from_secs(5));
    assert_eq!(cfg.recovery.seed, Some(7));
    assert_eq!(
        cfg.recovery.categories[&bus::errors::ErrorCategory::Timeout].max_retries,
        5
    );
    assert_eq!(cfg.dlq.durability, bus::dlq::Durability::Normal);
    assert_eq!(cfg.dlq.max_letters, Some(1000));
    assert_eq!(cfg.logger.keep_files, 2);
    assert_eq!(cfg.health.window, Duration::from_secs(120));
    assert_eq!(cfg.http.as_deref(), Some("127.0.0.1:0"));
}

#[test]
fn json_file_loads_and_matches_toml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.json");
    std::fs::write(
        &path,
        r#"{"publish_timeout": "2s", "breaker": {"failure_rate_threshold": 25.0},
            "recovery": {"budget": null}}"#,
    )
    .unwrap();
    let cfg = Config::from_file(&path).unwrap();
    assert_eq!(cfg.publish_timeout, Duration::from_secs(2));
    assert_eq!(cfg.breaker.failure_rate_threshold, Some(25.0));
    assert!(cfg.recovery.budget.is_none());
    let toml = Config::from_toml_str(
        "publish_timeout = \"2s\"\n[breaker]\nfailure_rate_threshold = 25.0\n",
    )
    .unwrap();
    assert_eq!(toml.breaker, cfg.breaker);
}

#[test]
fn out_of_range_values_name_the_key_and_value() {
    let cases = [
        (
            "[breaker]\nfailure_rate_threshold = 150.0\n",
            "breaker.failure_rate_threshold",
            "150",
        ),
        (
            "[breaker]\npermitted_calls_in_half_open = 0\n",
            "breaker.permitted_calls_in_half_open",
            "0",
        ),
        ("max_payload_bytes = 0\n", "max_payload_bytes", "0"),
        ("[dlq]\nmax_letters = 0\n", "dlq.max_letters", "0"),
        ("http = \"not an address\"\n", "http", "not an address"),
        (
            "[health]\nhealthy_threshold = 1.5\n",
            "health.healthy_threshold",
            "1.5",
        ),
        (
            "[recovery.categories.TIMEOUT]\nmax_retries = 1\nbackoff = { kind = \"exponential\", base = \"1s\", factor = 0.5, cap = \"10s\" }\n",
            "recovery.categories.TIMEOUT.backoff.factor",
            "0.5",
        ),
    ];
    for (text, key, value) in cases {
        let err = Config::from_toml_str(text).unwrap_err();
        match &err {
            ConfigError::Invalid {
                key: k, value: v, ..
            } => {
                assert_eq!(k, key, "{text}");
                assert!(v.contains(value), "{text}: value {v:?}");
            }
            other => panic!("{text}: expected Invalid, got {other:?}"),
        }
        assert!(err.to_string().contains(key));
    }
}

#[test]
fn unknown_keys_are_rejected_with_their_position() {
    let err =
        Config::from_toml_str("data_dir = \"x\"\n\n[breaker]\nfailure_treshold = 3\n").unwrap_err();
    match &err {
        ConfigError::Parse { line, message, .. } => {
            assert_eq!(*line, 4);
            assert!(message.contains("failure_treshold"), "{message}");
        }
        other => panic!("expected Parse, got {other:?}"),
    }
    let err = Config::from_json_str("{\n \"dataa_dir\": \"x\"}").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { line: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("dataa_dir"));
}

#[test]
fn syntax_errors_report_line_and_column() {
    let err =
        Config::from_toml_str("publish_timeout = \"1s\"\nmax_payload_bytes = = 3\n").unwrap_err();
    assert!(
        matches!(err, ConfigError::Parse { line: 2, column, .. } if column > 1),
        "{err:?}"
    );
    let err = Config::from_toml_str("publish_timeout = 5\n").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { line: 1, .. }), "{err:?}");
}

#[test]
fn unknown_extension_and_missing_file_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("bus.yaml");
    std::fs::write(&yaml, "a: 1").unwrap();
    assert!(matches!(
        Config::from_file(&yaml),
        Err(ConfigError::UnknownFormat { .. })
    ));
    assert!(matches!(
        Config::from_file(dir.path().join("nope.toml")),
        Err(ConfigError::Io { .. })
    ));
}

#[test]
fn bus_from_config_file_uses_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = dir.path().join("bus.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\nreplay_poll_interval = \"0s\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let bus = bus::Bus::from_config_file(&path).unwrap();
    assert_eq!(bus.data_dir(), data);
    let report = bus.shutdown(Duration::from_secs(5));
    assert!(report.stats.invariant_holds());
    assert!(data.join("dlq.sqlite").exists());
    assert!(data.join("health.json").exists());
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[breaker]\nfailure_rate_threshold = 0.0\n").unwrap();
    let err = bus::Bus::from_config_file(&bad).unwrap_err();
    assert!(
        err.to_string().contains("breaker.failure_rate_threshold"),
        "{err}"
    );
}

/// The pipeline's settings are keys of the one `Config` and reach the
/// running bus: a publish nobody subscribes to is discarded, not refused.
#[test]
fn pipeline_settings_are_keys_of_the_config_and_reach_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::from_toml_str(
        r#"
        poll_interval = "20ms"
        dlq_retry_delay = "3s"
        unrouted = "discard"
        "#,
    )
    .unwrap();
    assert_eq!(cfg.poll_interval, Duration::from_millis(20));
    assert_eq!(cfg.dlq_retry_delay, Duration::from_secs(3));
    assert_eq!(cfg.unrouted, bus::config::Unrouted::Discard);
    cfg.data_dir = dir.path().to_owned();
    let bus = bus::Bus::from_config(cfg).unwrap();
    bus.publish("nobody.listens", &b"x"[..]).unwrap();
    let report = bus.shutdown(Duration::from_secs(5));
    assert_eq!(report.stats.discarded_by_policy, 1);
    assert_eq!(report.stats.rejected_at_publish, 0);
    assert!(report.stats.invariant_holds());
}

#[test]
fn unrouted_publishes_are_refused_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let bus = bus::Bus::builder().data_dir(dir.path()).build().unwrap();
    let err = bus.publish("nobody.listens", &b"x"[..]).unwrap_err();
    assert!(matches!(err, bus::PublishError::NoSubscribers { .. }));
    assert_eq!(bus.stats().rejected_at_publish, 1);
}

#[test]
fn a_zero_poll_interval_is_refused_by_name() {
    let err = Config::from_toml_str(r#"poll_interval = "0s""#).unwrap_err();
    assert_eq!(err.key(), Some("poll_interval"), "{err}");
}
