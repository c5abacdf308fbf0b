//! The OpenMetrics output parses and carries the monitor's numbers.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use bus_core::time::ManualClock;
use bus_core::{CircuitState, DeadLetterReason, QueueDepth};
use bus_errors::ErrorCategory;
use bus_health::{HealthConfig, HealthMonitor};
use prometheus_parse::{Scrape, Value};
use std::sync::Arc;
use support::*;

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {metric} {labels:?}"));
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn metrics_parse_and_match_the_counters() {
    let (m, _) = monitor(HealthConfig::default());
    acked(&m, 7, 1);
    failed(&m, 3, ErrorCategory::Timeout);
    dead_lettered(&m, 2, DeadLetterReason::RetriesExhausted);
    dead_lettered(&m, 1, DeadLetterReason::Other("custom".into()));
    circuit(
        &m,
        "billing",
        CircuitState::Closed,
        CircuitState::ForcedOpen,
    );
    let text = m.render_metrics();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let s = parse(&text);
    assert_eq!(value(&s, "bus_messages_acked_total", &[]), 7.0);
    assert_eq!(
        value(&s, "bus_handler_failures_total", &[("category", "TIMEOUT")]),
        3.0
    );
    assert_eq!(
        value(
            &s,
            "bus_handler_failures_total",
            &[("category", "CONNECTION")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &s,
            "bus_dead_letters_total",
            &[("reason", "retries_exhausted")]
        ),
        2.0
    );
    assert_eq!(
        value(&s, "bus_dead_letters_total", &[("reason", "other")]),
        1.0
    );
    assert_eq!(value(&s, "bus_health_status", &[]), 2.0);
    assert_eq!(
        value(
            &s,
            "bus_circuit_state",
            &[("component", "billing"), ("state", "forced_open")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "bus_circuit_state",
            &[("component", "billing"), ("state", "closed")]
        ),
        0.0
    );
    assert!(
        text.contains("bus_handler_duration_seconds_bucket{le=\"+Inf\"} 7"),
        "{text}"
    );
    assert!(text.contains("bus_handler_duration_seconds_count 7"));

    // the classic text format carries the same samples and passes promtool
    let classic = m.render_metrics_text();
    assert!(
        !classic.contains("# EOF") && !classic.contains("# UNIT"),
        "{classic}"
    );
    assert!(
        classic.contains("# TYPE bus_messages_acked_total counter\n"),
        "{classic}"
    );
    assert!(
        classic.contains("# HELP bus_messages_acked_total Deliveries acknowledged.\n"),
        "{classic}"
    );
    let c = parse(&classic);
    assert_eq!(c.samples.len(), s.samples.len());
    assert_eq!(
        value(&c, "bus_handler_failures_total", &[("category", "TIMEOUT")]),
        3.0
    );
    promtool_check(&classic);
}

#[test]
fn label_cardinality_is_bounded() {
    let mut cfg = HealthConfig::default();
    cfg.max_label_values = 3;
    let m = HealthMonitor::builder()
        .with_config(cfg)
        .with_clock(Arc::new(ManualClock::new()))
        .with_queue_source(Arc::new(|| {
            (0..10)
                .map(|i| QueueDepth {
                    topic: format!("t{i}"),
                    group: "g".into(),
                    depth: 1,
                    capacity: 100,
                    in_flight: 2,
                })
                .collect()
        }))
        .build()
        .unwrap();
    for i in 0..10 {
        circuit(
            &m,
            &format!("c{i}"),
            CircuitState::Closed,
            CircuitState::Open,
        );
    }
    let s = parse(&m.render_metrics());
    let depth: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == "bus_queue_depth")
        .collect();
    assert_eq!(depth.len(), 4, "3 topics + other");
    assert_eq!(value(&s, "bus_queue_depth", &[("topic", "other")]), 7.0);
    assert_eq!(value(&s, "bus_queue_in_flight", &[("topic", "t0")]), 2.0);
    assert_eq!(
        value(&s, "bus_queue_in_flight", &[("topic", "other")]),
        14.0
    );
    let components: std::collections::BTreeSet<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == "bus_circuit_state")
        .map(|x| x.labels.get("component").unwrap().to_owned())
        .collect();
    assert_eq!(components.len(), 4, "{components:?}");
    assert!(components.contains("other"));
}

/// Runs `promtool check metrics` when promtool is installed.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        println!("note: promtool not on PATH; skipped `promtool check metrics`");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
