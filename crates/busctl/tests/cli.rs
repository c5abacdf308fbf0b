//! Runs the real `busctl` binary against a temp data directory.
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

fn demo(dir: &Path) -> Value {
    let d = dir.to_str().unwrap();
    let (ok, out, err) = busctl(&[
        "demo",
        "--data-dir",
        d,
        "--messages",
        "20000",
        "--fail-rate",
        "0.05",
        "--poison-rate",
        "0.01",
        "--panic-rate",
        "0.005",
        "--seed",
        "1",
        "--json",
    ]);
    assert!(ok, "demo failed: {err}");
    assert_eq!(out.lines().count(), 1, "one JSON object: {out}");
    serde_json::from_str(&out).unwrap()
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn demo_summary_adds_up_and_matches_the_dlq_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s = demo(dir.path());
    let settled = n(&s, "acked")
        + n(&s, "dead_lettered")
        + n(&s, "rejected_at_publish")
        + n(&s, "discarded_by_policy")
        + n(&s, "returned_at_shutdown");
    assert_eq!(n(&s, "published"), settled, "{s}");
    assert_eq!(s["invariant_holds"], true);
    assert_eq!(n(&s, "orders"), 20_000);
    // 3 groups on orders.created, plus the burst publishes.
    let burst = &s["burst"];
    let rejected_orders = n(&s, "orders_rejected");
    assert_eq!(
        n(&s, "published"),
        3 * (20_000 - rejected_orders) + rejected_orders + n(burst, "published"),
        "{s}"
    );
    assert!(
        n(burst, "rejected") > 0,
        "the burst overflows the small queue"
    );
    assert!(n(&s, "panics") > 0 && n(&s, "retried") > 0);
    assert!(
        n(&s["breakers"]["inventory"], "trips") >= 1,
        "outage opened the breaker"
    );
    assert!(n(&s, "parked") > 0);
    // Poison letters are dead-lettered; transient failures and panics recovered.
    assert!(n(&s, "dead_lettered") > 100, "{s}");
    assert_eq!(s["dlq"]["total"].as_u64(), Some(n(&s, "dead_lettered")));
    assert!(["healthy", "degraded", "critical"].contains(&s["health"]["status"].as_str().unwrap()));

    // `busctl dlq stats --json` reads the same file.
    let d = dir.path().to_str().unwrap();
    let (ok, out, err) = busctl(&["dlq", "stats", "--data-dir", d, "--json"]);
    assert!(ok, "{err}");
    let stats: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(n(&stats, "total"), n(&s, "dead_lettered"));

    let (ok, out, err) = busctl(&["dlq", "list", "--data-dir", d, "--json"]);
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert!(!list.as_array().unwrap().is_empty());
    assert_eq!(list[0]["category"], "SERIALIZATION");

    // The final health snapshot, as a table and as JSON.
    let (ok, out, err) = busctl(&["health", "--data-dir", d]);
    assert!(ok, "{err}");
    assert!(out.contains("status") && out.contains("inventory"), "{out}");
    let (ok, out, _) = busctl(&["health", "--data-dir", d, "--json"]);
    assert!(ok);
    let h: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        h["totals"]["dead_lettered"].as_u64(),
        Some(n(&s, "dead_lettered"))
    );
}

#[test]
fn same_seed_gives_the_same_poison_count() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (sa, sb) = (demo(a.path()), demo(b.path()));
    assert_eq!(
        sa["dlq"]["by_category"]["SERIALIZATION"],
        sb["dlq"]["by_category"]["SERIALIZATION"]
    );
}

#[test]
fn bad_arguments_and_missing_snapshot_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, _, err) = busctl(&["demo", "--data-dir", d, "--fail-rate", "1.5"]);
    assert!(!ok);
    assert!(err.contains("--fail-rate"), "{err}");
    let (ok, _, err) = busctl(&["demo", "--data-dir", d, "--transport", "carrier-pigeon"]);
    assert!(!ok);
    assert!(err.contains("memory"), "{err}");
    let (ok, _, err) = busctl(&["health", "--data-dir", d]);
    assert!(!ok);
    assert!(err.contains("health"), "{err}");
}

#[test]
fn demo_over_nats_jetstream_adds_up() {
    if !bus_test::nats::nats_available("busctl demo --transport nats") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = busctl(&[
        "demo",
        "--transport",
        "nats",
        "--nats-url",
        bus_test::nats::URL,
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--messages",
        "2000",
        "--fail-rate",
        "0.05",
        "--poison-rate",
        "0.01",
        "--seed",
        "7",
        "--json",
    ]);
    assert!(ok, "demo over NATS failed: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["invariant_holds"], true, "{v}");
    assert_eq!(
        n(&v, "published"),
        n(&v, "acked")
            + n(&v, "dead_lettered")
            + n(&v, "rejected_at_publish")
            + n(&v, "discarded_by_policy")
    );
    assert!(n(&v, "dead_lettered") > 0, "poison reached the DLQ: {v}");
    assert_eq!(
        n(&v, "acked") + n(&v, "dead_lettered"),
        3 * 2000 + 500,
        "three groups plus the burst: {v}"
    );
}

#[test]
fn demo_over_sqlite_adds_up_in_the_summary_and_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, out, err) = busctl(&[
        "demo",
        "--transport",
        "sqlite",
        "--data-dir",
        d,
        "--messages",
        "2000",
        "--seed",
        "7",
        "--json",
    ]);
    assert!(ok, "demo over SQLite failed: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["invariant_holds"], true, "{v}");
    assert!(n(&v, "dead_lettered") > 0, "poison reached the DLQ: {v}");
    // The file's ledger: every group settled everything, and it balances.
    let (ok, out, err) = busctl(&["queue", "show", "--data-dir", d, "--json"]);
    assert!(ok, "{err}");
    let groups: Value = serde_json::from_str(&out).unwrap();
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 4, "{out}");
    let mut terminated = 0;
    for g in groups {
        let pending = n(g, "ready") + n(g, "delayed") + n(g, "leased");
        assert_eq!(pending, 0, "{g}");
        assert_eq!(
            n(g, "published"),
            n(g, "acked") + n(g, "terminated") + n(g, "evicted") + pending,
            "{g}"
        );
        terminated += n(g, "terminated");
    }
    assert_eq!(terminated, n(&v, "dead_lettered"), "{v}");
    let (ok, out, _) = busctl(&["queue", "show", "--data-dir", d]);
    assert!(
        ok && out.contains("billing") && out.contains("balances"),
        "{out}"
    );
    // Nobody subscribes any more: the group can go.
    let (ok, out, err) = busctl(&[
        "queue",
        "drop",
        "--data-dir",
        d,
        "--topic",
        "reports.daily",
        "--group",
        "reports",
    ]);
    assert!(ok && out.contains("dropped"), "{out}{err}");
    let (ok, _, err) = busctl(&[
        "queue",
        "drop",
        "--data-dir",
        d,
        "--topic",
        "reports.daily",
        "--group",
        "reports",
    ]);
    assert!(!ok && err.contains("no group"), "{err}");
}

/// Every `busctl queue` command docs/operations.md shows is one busctl accepts.
#[test]
fn the_operations_guide_shows_queue_commands_busctl_accepts() {
    use clap::Parser;
    #[derive(Parser)]
    struct Busctl {
        #[command(subcommand)]
        _cmd: busctl::queue::QueueCommand,
    }
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations.md"
    ))
    .unwrap();
    let mut checked = 0;
    for line in guide.lines() {
        let words: Vec<&str> = line
            .split(" #")
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let ["busctl", "queue", rest @ ..] = &words[..] else {
            continue;
        };
        if let Err(e) = Busctl::try_parse_from(std::iter::once(&"queue").chain(rest)) {
            panic!("docs/operations.md: `{line}`: {e}");
        }
        checked += 1;
    }
    assert_eq!(checked, 3, "the guide's queue commands were found");
}

/// The first try, on SQLite: a demo killed with SIGKILL mid-run
/// leaves its queues in the file, and the next demo on the data dir
/// resumes them with a ledger that adds up (what it was handed of the
/// earlier run's work counted as `broker.resumed`).
#[test]
fn a_killed_demo_over_sqlite_is_resumed_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut first = Command::new(env!("CARGO_BIN_EXE_busctl"))
        .args(["demo", "--transport", "sqlite", "--data-dir", d])
        .args(["--duration", "60s", "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the file holds work: some published, not all settled.
    let published = || {
        let (ok, out, _) = busctl(&["queue", "show", "--data-dir", d, "--json"]);
        ok.then(|| serde_json::from_str::<Value>(&out).ok())
            .flatten()
            .and_then(|v| {
                v.as_array()
                    .map(|gs| gs.iter().map(|g| n(g, "published")).sum::<u64>())
            })
            .unwrap_or(0)
    };
    assert!(
        bus_test::wait_until(std::time::Duration::from_secs(60), || published() > 1000),
        "no progress"
    );
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let (ok, out, err) = busctl(&[
        "demo",
        "--transport",
        "sqlite",
        "--data-dir",
        d,
        "--messages",
        "300",
        "--json",
    ]);
    assert!(ok, "the second run failed: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["invariant_holds"], true, "{v}");
    let b = &v["broker"];
    assert!(n(b, "owed_at_start") > 0, "the kill left work: {v}");
    assert_eq!(
        n(&v, "published") + n(b, "resumed"),
        n(&v, "acked")
            + n(&v, "dead_lettered")
            + n(&v, "rejected_at_publish")
            + n(&v, "discarded_by_policy")
            + n(&v, "returned_at_shutdown")
            + n(&v, "pending"),
        "{v}"
    );
}
