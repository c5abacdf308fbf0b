//! `busctl dlq ...` as an operator meets it, through `cli::run`: what a
//! replay refuses and says, tables that stay aligned and safe to print,
//! `groups` paged by group, and an `export` without a misleading `--json`.
#![allow(clippy::unwrap_used)] // tests may unwrap

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

fn parse(args: &[&str]) -> Result<DlqCommand, clap::Error> {
    Busctl::try_parse_from(std::iter::once("dlq").chain(args.iter().copied())).map(|b| b.cmd)
}

fn exec(args: &[&str]) -> Result<String, CliError> {
    let mut out = Vec::new();
    run(parse(args).unwrap_or_else(|e| panic!("{e}")), &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

/// A store with `letters` pushed, closed, and its directory as text.
fn store_with(letters: &[bus_dlq::DeadLetter]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    for l in letters {
        dlq.push(l).unwrap();
    }
    dlq.close();
    let d = dir.path().to_str().unwrap().to_owned();
    (dir, d)
}

fn plain(n: usize) -> Vec<bus_dlq::DeadLetter> {
    (0..n)
        .map(|i| common::letter("orders", ErrorCategory::Timeout, "svc", &format!("t{i}")))
        .collect()
}

fn requested(d: &str) -> u64 {
    bus_dlq::DlqFile::open_read_only(d)
        .unwrap()
        .count(&Filter::all().state(LetterState::ReplayRequested))
        .unwrap()
}

#[test]
fn replay_without_a_filter_is_refused_like_purge_until_all_is_given() {
    let (_t, d) = store_with(&plain(3));
    for args in [
        vec!["replay", "--data-dir", &d],
        vec!["replay", "--data-dir", &d, "--dry-run"],
    ] {
        let err = exec(&args).unwrap_err();
        assert!(
            matches!(err, CliError::NoFilter { command: "replay" }),
            "{args:?}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("add a filter") && msg.contains("--all"),
            "{msg}"
        );
    }
    assert_eq!(requested(&d), 0, "a refused replay marks nothing");
    let done = exec(&["replay", "--data-dir", &d, "--all"]).unwrap();
    assert!(done.contains("requested replay of 3 letters"), "{done}");
    assert_eq!(requested(&d), 3);
}

#[test]
fn replay_says_it_only_marks_and_who_delivers() {
    let (_t, d) = store_with(&plain(2));
    let text = exec(&["replay", "--data-dir", &d, "--topic", "orders"]).unwrap();
    assert!(text.contains("requested replay of 2 letters"), "{text}");
    assert!(text.contains("a bus running on this data dir"), "{text}");
    assert!(text.contains("replay_poll_interval"), "{text}");
    assert!(text.contains("Nothing is delivered yet"), "{text}");
    assert!(text.contains("busctl itself delivers nothing"), "{text}");
    let (_t2, d2) = store_with(&plain(2));
    let v: Value = serde_json::from_str(
        &exec(&["replay", "--data-dir", &d2, "--topic", "orders", "--json"]).unwrap(),
    )
    .unwrap();
    assert_eq!(v["marked"], 2);
    assert!(
        v["note"].as_str().unwrap().contains("replay_poll_interval"),
        "{v}"
    );
}

#[test]
fn replay_marks_exactly_the_selected_page_in_one_go() {
    let (_t, d) = store_with(&plain(10));
    let all = bus_dlq::DlqFile::open_read_only(&d)
        .unwrap()
        .list(&Filter::all())
        .unwrap();
    let text = exec(&[
        "replay",
        "--data-dir",
        &d,
        "--topic",
        "orders",
        "--offset",
        "2",
        "--limit",
        "3",
    ])
    .unwrap();
    assert!(text.contains("requested replay of 3 letters"), "{text}");
    let marked: Vec<_> = bus_dlq::DlqFile::open_read_only(&d)
        .unwrap()
        .list(&Filter::all().state(LetterState::ReplayRequested))
        .unwrap()
        .into_iter()
        .map(|l| l.id)
        .collect();
    let expected: Vec<_> = all[2..5].iter().map(|l| l.id).collect();
    assert_eq!(marked, expected);
}

/// The byte offset of `ERROR` in the header, and of each row's error cell.
#[test]
fn list_columns_stay_aligned_on_long_topics_states_and_categories() {
    let mut letters = vec![
        common::letter("a", ErrorCategory::Timeout, "svc", "short"),
        common::letter(
            "orders.created.eu-west-1.priority",
            ErrorCategory::ResourceExhaustion,
            "svc",
            "a much longer reason that goes on and on",
        ),
        common::letter("b", ErrorCategory::MessageProcessing, "svc", "x"),
    ];
    letters[2].report.message = "line one\nline two".into();
    let (_t, d) = store_with(&letters);
    let dlq = SqliteDlq::open(DlqConfig::new(&d)).unwrap();
    dlq.request_replay(&Filter::all().topic("a"), None).unwrap();
    dlq.close();
    let text = exec(&["list", "--data-dir", &d]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "header, 3 rows, count: {text}");
    let col = |line: &str| line.chars().count() - line.split("  ").last().unwrap().chars().count();
    let error_at = lines[0].find("ERROR").unwrap();
    for row in &lines[1..4] {
        assert_eq!(col(row), error_at, "misaligned row in\n{text}");
    }
    assert!(text.contains("replay_requested"), "{text}");
    assert!(text.contains("RESOURCE_EXHAUSTION"), "{text}");
    assert!(text.contains("line one\\nline two"), "{text}");
}

#[test]
fn show_escapes_control_bytes_of_the_payload_and_texts() {
    let mut l = common::letter("orders", ErrorCategory::Timeout, "svc", "boom");
    l.envelope.payload = b"{\"a\":1}\n\x1b[2J\x1b]0;pwned\x07\xff end"[..].into();
    l.report.message = "bad\x1b[31m red".into();
    let id = l.id.to_string();
    let (_t, d) = store_with(&[l]);
    let text = exec(&["show", "--data-dir", &d, &id]).unwrap();
    assert!(
        !text.bytes().any(|b| b == 0x1b || b == 0x07),
        "raw control bytes printed: {text:?}"
    );
    assert!(
        text.contains("{\"a\":1}\n\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\xff end"),
        "{text}"
    );
    assert!(text.contains("bad\\u{1b}[31m red"), "{text}");
}

#[test]
fn groups_limit_counts_groups_and_every_letter_of_them() {
    let mut letters = Vec::new();
    for (component, n) in [("a", 3), ("b", 2), ("c", 1)] {
        for _ in 0..n {
            letters.push(common::letter(
                "orders",
                ErrorCategory::Timeout,
                component,
                "timed out",
            ));
        }
    }
    let (_t, d) = store_with(&letters);
    let groups = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["groups", "--data-dir", &d, "--json"];
        all.extend_from_slice(args);
        serde_json::from_str::<Value>(&exec(&all).unwrap())
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let two = groups(&["--limit", "2"]);
    let counts: Vec<_> = two.iter().map(|g| g["count"].as_u64().unwrap()).collect();
    assert_eq!(counts, [3, 2], "{two:?}");
    let rest = groups(&["--offset", "2"]);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["component"], "c");
}

#[test]
fn export_has_no_json_flag_its_output_is_json_lines_anyway() {
    let (_t, d) = store_with(&plain(2));
    let err = parse(&["export", "--data-dir", &d, "--json"]).expect_err("--json is refused");
    assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    let lines = exec(&["export", "--data-dir", &d]).unwrap();
    for line in lines.lines() {
        serde_json::from_str::<Value>(line).unwrap();
    }
    assert_eq!(lines.lines().count(), 2);
}
