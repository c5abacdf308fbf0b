//! What `busctl demo` prints: numbers that agree with each other, units that
//! resolve them, and no claim the run does not back.
#![allow(clippy::unwrap_used)] // tests may unwrap

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn busctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_busctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn demo(dir: &Path, extra: &[&str]) -> String {
    let d = dir.to_str().unwrap();
    let mut args = vec!["demo", "--data-dir", d, "--seed", "1"];
    args.extend_from_slice(extra);
    let (ok, out, err) = busctl(&args);
    assert!(ok, "demo failed: {err}\n{out}");
    out
}

/// The number after `label` on the first line that starts with it (after
/// indentation); with `last`, the line's last number instead.
fn number(out: &str, label: &str, last: bool) -> u64 {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no line {label:?} in\n{out}"));
    let nums: Vec<u64> = line[line.find(label).unwrap() + label.len()..]
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let n = if last { nums.last() } else { nums.first() };
    *n.unwrap_or_else(|| panic!("no number in {line:?}"))
}

#[test]
fn summary_and_health_table_count_the_same_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let out = demo(dir.path(), &["--messages", "20000"]);
    let (summary, table) = out.split_at(out.find("status ").unwrap());
    let published = number(summary, "published", false);
    let rejected = number(summary, "rejected_at_publish", false);
    let accepted = number(summary, "accepted", false);
    assert!(
        rejected > 0,
        "the burst overflowed the reports queue:\n{out}"
    );
    assert_eq!(accepted, published - rejected, "{summary}");
    // Each counter of the table is named for what it counts, and the one
    // the summary also shows has the same value there.
    assert_eq!(number(table, "accepted", true), accepted, "{out}");
    assert_eq!(number(table, "rejected", true), rejected, "{out}");
    assert_eq!(
        number(table, "acked", true),
        number(summary, "acked", false)
    );
    assert!(
        !table.lines().any(|l| l.starts_with("published")),
        "no table row may name another number `published`:\n{table}"
    );
    assert!(
        table.contains("deliveries (one per subscriber group"),
        "{table}"
    );
}

#[test]
fn latency_is_shown_in_a_unit_that_resolves_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = demo(dir.path(), &["--messages", "2000"]);
    let line = |label: &str| {
        out.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no line {label:?} in\n{out}"))
    };
    // `1.2 ms`: a number of at least 1 (no `0.0001`) and a unit.
    let resolved = |v: &str, line: &str| {
        let (num, unit) = v.trim().split_once(' ').unwrap_or_else(|| panic!("{line}"));
        let num: f64 = num.parse().unwrap_or_else(|_| panic!("{line}"));
        assert!(num >= 1.0, "{line}");
        assert!(["ns", "µs", "ms", "s"].contains(&unit), "{line}");
    };
    let mean = line("latency mean");
    resolved(&mean["latency mean".len()..], mean);
    let quantiles = line("latency p50/p99");
    let values: Vec<&str> = quantiles["latency p50/p99".len()..]
        .split("(bucket bounds)")
        .next()
        .unwrap()
        .split(" / ")
        .collect();
    assert_eq!(values.len(), 2, "{quantiles}");
    for v in values {
        let v = v
            .trim()
            .strip_prefix("<= ")
            .unwrap_or_else(|| panic!("{quantiles}"));
        resolved(v, quantiles);
    }
}

#[test]
fn outage_spans_thirty_to_fifty_percent_of_the_orders() {
    let dir = tempfile::tempdir().unwrap();
    let out = demo(dir.path(), &["--messages", "20000", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outage"]["from_order"], 6000, "{v}");
    assert_eq!(v["outage"]["to_order"], 10000, "{v}");
    assert!(
        v["breakers"]["inventory"]["trips"].as_u64().unwrap() >= 1,
        "the outage opened inventory's breaker: {v}"
    );
    let human = demo(dir.path(), &["--messages", "20000"]);
    assert!(
        human.contains("down from order 6000 to order 10000 (30 % to 50 % of the run)"),
        "{human}"
    );
}

#[test]
fn with_error_handling_off_no_breakers_are_listed_and_letters_say_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("plain.toml");
    std::fs::write(&config, "error_handling = false\n").unwrap();
    let data = dir.path().join("data");
    let out = demo(
        &data,
        &["--messages", "2000", "--config", config.to_str().unwrap()],
    );
    assert!(!out.contains("circuit breakers:"), "{out}");
    assert!(out.contains("reason   not_retried"), "{out}");
    assert!(!out.contains("retries_exhausted"), "{out}");
    let (ok, stats, err) = busctl(&["dlq", "stats", "--data-dir", data.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(stats.contains("not_retried"), "{stats}");
    assert!(!stats.contains("retries_exhausted"), "{stats}");
}

#[test]
fn summary_over_nats_claims_no_queue_bound() {
    if !bus_test::nats::nats_available("busctl demo --transport nats (summary)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats = ["--transport", "nats", "--nats-url", bus_test::nats::URL];
    let mut args = vec!["--messages", "1000"];
    args.extend_from_slice(&nats);
    let out = demo(dir.path(), &args);
    assert!(!out.contains("-slot queue"), "{out}");
    assert!(!out.contains("overflow policy: reject"), "{out}");
    assert!(out.contains("no per-subscriber queue bound"), "{out}");
    args.push("--json");
    let v: Value = serde_json::from_str(&demo(dir.path(), &args)).unwrap();
    assert_eq!(v["burst"]["queue_capacity"], Value::Null, "{v}");
    assert_eq!(v["burst"]["overflow_policy"], Value::Null, "{v}");
}
