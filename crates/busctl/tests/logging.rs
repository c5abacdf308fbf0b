//! The bus's log lines on busctl's stderr: warnings by default, each failed
//! delivery's report with `-v`, JSON lines with `--log-format json`, and
//! `RUST_LOG` checked like any other input.
#![allow(clippy::unwrap_used)] // tests may unwrap

use serde_json::Value;
use std::process::Command;

fn demo(extra: &[&str], rust_log: Option<&str>) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_busctl"));
    cmd.args([
        "demo",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--seed",
        "3",
    ])
    .args(["--messages", "20000", "--fail-rate", "0.2", "--json"])
    .args(extra)
    .env_remove("RUST_LOG");
    if let Some(spec) = rust_log {
        cmd.env("RUST_LOG", spec);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8(out.stderr).unwrap())
}

fn report_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "bus_logger::report")
        .collect()
}

#[test]
fn verbose_json_writes_each_failed_delivery_as_a_json_line() {
    let (ok, err) = demo(&["-v", "--log-format", "json"], None);
    assert!(ok, "{err}");
    let reports = report_lines(&err);
    assert!(
        reports.len() > 100,
        "{} report lines in\n{err}",
        reports.len()
    );
    for r in &reports {
        let level = r["level"].as_str().unwrap();
        assert!(["ERROR", "WARN", "INFO"].contains(&level), "{r}");
        assert!(r["fields"]["category"].is_string(), "{r}");
        assert!(r["fields"]["component"].is_string(), "{r}");
    }
}

#[test]
fn by_default_reports_stay_in_the_error_log() {
    let (ok, err) = demo(&[], None);
    assert!(ok, "{err}");
    assert!(!err.contains("bus_logger::report"), "{err}");
    assert!(report_lines(&err).is_empty());
    // RUST_LOG asks for them in text.
    let (ok, err) = demo(&[], Some("warn,bus_logger::report=warn"));
    assert!(ok, "{err}");
    assert!(err.contains("bus_logger::report"), "{err}");
}

#[test]
fn a_bad_rust_log_is_refused_before_anything_runs() {
    let (ok, err) = demo(&[], Some("bus=loud"));
    assert!(!ok);
    assert!(err.contains("RUST_LOG=\"bus=loud\""), "{err}");
}
