//! `busctl dlq ...` through `cli::run`, output parsed.
// Test helpers live outside #[test] fns; PublishError (bus-core) is large by design.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;

use bus_dlq::{DeadLetterStore, DlqConfig, DlqQuery, Filter, LetterState, SqliteDlq};
use bus_errors::ErrorCategory;
use busctl::dlq::{CliError, DlqCommand, run};
use clap::Parser;
use serde_json::Value;

#[derive(Parser)]
struct Busctl {
    #[command(subcommand)]
    cmd: DlqCommand,
}

fn exec(args: &[&str]) -> Result<String, CliError> {
    let cmd = Busctl::try_parse_from(std::iter::once("dlq").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"))
        .cmd;
    let mut out = Vec::new();
    run(cmd, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn json(args: &[&str]) -> Value {
    serde_json::from_str(&exec(args).unwrap()).unwrap()
}

fn seeded() -> (tempfile::TempDir, String, SqliteDlq) {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    for i in 0..6 {
        let (topic, cat) = if i < 4 {
            ("orders", ErrorCategory::Timeout)
        } else {
            ("billing", ErrorCategory::Connection)
        };
        dlq.push(&common::letter(topic, cat, "svc", &format!("failed {i}")))
            .unwrap();
    }
    let d = dir.path().to_str().unwrap().to_owned();
    (dir, d, dlq)
}

#[test]
fn list_filters_and_prints_json_and_text() {
    let (_t, d, _dlq) = seeded();
    let all = json(&["list", "--data-dir", &d, "--json"]);
    assert_eq!(all.as_array().unwrap().len(), 6);
    let orders = json(&[
        "list",
        "--data-dir",
        &d,
        "--json",
        "--topic",
        "orders",
        "--limit",
        "3",
    ]);
    assert_eq!(orders.as_array().unwrap().len(), 3);
    assert!(
        orders
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["topic"] == "orders")
    );
    let conn = json(&[
        "list",
        "--data-dir",
        &d,
        "--json",
        "--category",
        "connection",
        "--since",
        "1h",
    ]);
    assert_eq!(conn.as_array().unwrap().len(), 2);
    let text = exec(&["list", "--data-dir", &d, "--text", "FAILED 5"]).unwrap();
    assert!(
        text.contains("1 letters") && text.contains("failed 5"),
        "{text}"
    );
}

#[test]
fn show_stats_groups_verify() {
    let (_t, d, dlq) = seeded();
    let id = dlq.list(&Filter::all()).unwrap()[0].id.to_string();
    let shown = json(&["show", "--data-dir", &d, "--json", &id]);
    assert_eq!(shown["letter"]["id"], id.as_str());
    assert!(
        exec(&["show", "--data-dir", &d, &id])
            .unwrap()
            .contains("payload")
    );
    let stats = json(&["stats", "--data-dir", &d, "--json"]);
    assert_eq!(stats["total"], 6);
    assert_eq!(stats["by_topic"]["orders"], 4);
    assert_eq!(stats["by_category"]["CONNECTION"], 2);
    let groups = json(&["groups", "--data-dir", &d, "--json"]);
    assert_eq!(groups.as_array().unwrap().len(), 2);
    assert_eq!(groups[0]["count"], 4);
    let verify = json(&["verify", "--data-dir", &d, "--json"]);
    assert_eq!(verify["rows_checked"], 6);
    assert_eq!(verify["integrity"][0], "ok");
}

#[test]
fn replay_requests_and_dry_run_changes_nothing() {
    let (_t, d, dlq) = seeded();
    let dry = json(&[
        "replay",
        "--data-dir",
        &d,
        "--json",
        "--topic",
        "orders",
        "--dry-run",
    ]);
    assert_eq!(dry["selected"].as_array().unwrap().len(), 4);
    assert_eq!(dry["marked"], 0);
    assert_eq!(
        dlq.count(&Filter::all().state(LetterState::ReplayRequested))
            .unwrap(),
        0
    );
    let text = exec(&[
        "replay",
        "--data-dir",
        &d,
        "--topic",
        "orders",
        "--to",
        "orders.retry",
    ])
    .unwrap();
    assert!(
        text.contains("requested replay of 4 letters to orders.retry")
            && text.contains("a bus running on this data dir"),
        "{text}"
    );
    let taken = dlq
        .take_replay_requests(10, std::time::SystemTime::now())
        .unwrap();
    assert_eq!(taken.len(), 4);
    assert!(
        taken
            .iter()
            .all(|t| t.replay_topic.as_ref().map(|t| t.as_str()) == Some("orders.retry"))
    );
}

#[test]
fn purge_needs_a_filter_or_all_and_honours_dry_run() {
    let (_t, d, dlq) = seeded();
    assert!(matches!(
        exec(&["purge", "--data-dir", &d]),
        Err(CliError::NoFilter { command: "purge" })
    ));
    let dry = json(&[
        "purge",
        "--data-dir",
        &d,
        "--json",
        "--topic",
        "billing",
        "--dry-run",
    ]);
    assert_eq!(dry["selected"].as_array().unwrap().len(), 2);
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 6);
    let done = json(&["purge", "--data-dir", &d, "--json", "--topic", "billing"]);
    assert_eq!(done["deleted"], 2);
    assert_eq!(dlq.count(&Filter::all()).unwrap(), 4);
    // Nothing is older than a day yet.
    assert_eq!(
        json(&["purge", "--data-dir", &d, "--json", "--older-than", "1d"])["deleted"],
        0
    );
    assert_eq!(
        json(&["purge", "--data-dir", &d, "--json", "--all"])["deleted"],
        4
    );
}

#[test]
fn export_then_import_into_another_dir() {
    let (t, d, _dlq) = seeded();
    let file = t.path().join("out.jsonl");
    let msg = exec(&["export", "--data-dir", &d, "-o", file.to_str().unwrap()]).unwrap();
    assert!(msg.contains("exported 6"), "{msg}");
    let other = tempfile::tempdir().unwrap();
    let o = other.path().to_str().unwrap();
    let r = json(&["import", "--data-dir", o, "--json", file.to_str().unwrap()]);
    assert_eq!(r["inserted"], 6);
    let a = exec(&["export", "--data-dir", &d]).unwrap();
    let b = exec(&["export", "--data-dir", o]).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.lines().count(), 6);
}

#[test]
fn a_missing_store_is_an_error_not_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("nope");
    let err = exec(&["list", "--data-dir", d.to_str().unwrap()]).unwrap_err();
    assert!(
        matches!(err, CliError::Dlq(bus_dlq::DlqError::NoStore(_))),
        "{err}"
    );
    assert!(err.to_string().contains("no dead-letter store at"), "{err}");
    assert!(!d.exists());
}

#[test]
fn verify_fails_on_a_damaged_row() {
    let (t, d, dlq) = seeded();
    let id = dlq.list(&Filter::all()).unwrap()[0].id.to_string();
    let c = rusqlite::Connection::open(t.path().join("dlq.sqlite")).unwrap();
    // Wherever the row is: a lone push may still be staged in `inbox`.
    for table in ["letters", "inbox"] {
        c.execute(
            &format!("UPDATE {table} SET detail_json = 'x' WHERE id = ?"),
            [&id],
        )
        .unwrap();
    }
    let mut out = Vec::new();
    let cmd = Busctl::try_parse_from(["dlq", "verify", "--data-dir", &d])
        .unwrap()
        .cmd;
    assert!(matches!(run(cmd, &mut out), Err(CliError::VerifyFailed(1))));
    assert!(String::from_utf8(out).unwrap().contains(&id));
}

/// The reading commands must not write to the store of a running service: a
/// `Full` open fills the write-ahead log with about 32 MiB of zeros first.
#[test]
fn reading_commands_leave_a_live_stores_write_ahead_log_alone() {
    let dir = tempfile::tempdir().unwrap();
    // The service keeps the store open (under `Normal`, which does not
    // preallocate), so the log outlives each command.
    let config = DlqConfig::new(dir.path()).with_durability(bus_dlq::Durability::Normal);
    let wal = std::path::PathBuf::from(format!("{}-wal", config.db_path().display()));
    let service = SqliteDlq::open(config).unwrap();
    service
        .push(&common::letter(
            "orders",
            ErrorCategory::Timeout,
            "svc",
            "x",
        ))
        .unwrap();
    let len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let before = len();
    let d = dir.path().to_str().unwrap();
    for cmd in ["list", "groups", "stats", "verify", "export"] {
        exec(&[cmd, "--data-dir", d]).unwrap();
        assert!(
            len() < before + (1 << 20),
            "`{cmd}` grew the log from {before} to {} bytes",
            len()
        );
    }
    assert_eq!(service.count(&Filter::all()).unwrap(), 1);
}
