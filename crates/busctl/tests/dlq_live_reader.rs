//! Read commands beside a live store in another process: this binary
//! re-runs itself as a child that holds a `Durability::Full` store open and
//! pushes letters when told; the parent reads through `busctl dlq`'s
//! read-only open while the child's commits sit in its write-ahead log, and
//! the child goes on pushing after each read.

// A harness = false target is not cfg(test): allow unwrap as every test does.
#![allow(clippy::unwrap_used)]

mod common;

use bus_dlq::{DeadLetterStore, DlqConfig, Durability, SqliteDlq};
use bus_errors::ErrorCategory;
use busctl::dlq::{DlqCommand, run};
use clap::Parser;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const CHILD_ENV: &str = "BUS_DLQ_LIVE_WRITER_DIR";

#[derive(Parser)]
struct Busctl {
    #[command(subcommand)]
    cmd: DlqCommand,
}

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
        return;
    }
    parent();
    println!("live_reader: ok");
}

/// Pushes the number of letters each stdin line asks for, and answers with
/// the total once they are committed; exits at end of input.
fn child(dir: &str) {
    let dlq = SqliteDlq::open(DlqConfig::new(dir).with_durability(Durability::Full)).unwrap();
    let mut total = 0_u64;
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let n: u64 = line.unwrap().trim().parse().unwrap();
        for _ in 0..n {
            total += 1;
            dlq.push(&common::letter(
                "orders",
                ErrorCategory::Timeout,
                "svc",
                &format!("failed {total}"),
            ))
            .unwrap();
        }
        writeln!(out, "{total}").unwrap();
        out.flush().unwrap();
    }
    dlq.close();
}

fn read(args: &[&str]) -> String {
    let cmd = Busctl::try_parse_from(std::iter::once("dlq").chain(args.iter().copied()))
        .unwrap()
        .cmd;
    let mut out = Vec::new();
    run(cmd, &mut out).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    String::from_utf8(out).unwrap()
}

fn listed(d: &str) -> usize {
    let v: serde_json::Value =
        serde_json::from_str(&read(&["list", "--data-dir", d, "--json"])).unwrap();
    v.as_array().unwrap().len()
}

/// The child's pipes: ask for letters, hear the total once committed.
struct Writer {
    to_child: std::process::ChildStdin,
    from_child: BufReader<std::process::ChildStdout>,
}

impl Writer {
    fn push(&mut self, n: u64) -> u64 {
        writeln!(self.to_child, "{n}").unwrap();
        self.to_child.flush().unwrap();
        let mut line = String::new();
        self.from_child.read_line(&mut line).unwrap();
        line.trim().parse().unwrap()
    }
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_owned();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, &d)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let to_child = child.stdin.take().unwrap();
    let from_child = BufReader::new(child.stdout.take().unwrap());
    let mut writer = Writer {
        to_child,
        from_child,
    };
    assert_eq!(writer.push(5), 5);
    assert!(
        dir.path().join("dlq.sqlite-wal").exists(),
        "the live store's commits are in its log"
    );
    assert_eq!(listed(&d), 5);
    let stats: serde_json::Value =
        serde_json::from_str(&read(&["stats", "--data-dir", &d, "--json"])).unwrap();
    assert_eq!(stats["total"], 5);
    read(&["verify", "--data-dir", &d]);
    assert_eq!(read(&["export", "--data-dir", &d]).lines().count(), 5);
    // The writer goes on beside the reader, and the next read sees it.
    assert_eq!(writer.push(3), 8);
    assert_eq!(listed(&d), 8);
    read(&["replay", "--data-dir", &d, "--all", "--dry-run"]);
    assert_eq!(writer.push(1), 9);
    drop(writer);
    assert!(child.wait().unwrap().success());
    // Closed by its owner: every letter is there.
    assert_eq!(listed(&d), 9);
}
