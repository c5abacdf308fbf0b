//! `busctl dlq list | head -1`: a reader that closes the pipe early ends
//! the command quietly, with success.
#![allow(clippy::unwrap_used)] // tests may unwrap

use bus::errors::{Classification, ErrorCategory, ErrorReport};
use bus::plug::{DeadLetter, DeadLetterReason};
use bus::{Envelope, Topic};
use bus_dlq::{DlqConfig, SqliteDlq};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

/// Enough letters that `list` prints far more than a pipe holds (64 KiB),
/// so it is still writing when the reader goes away.
const LETTERS: usize = 3000;

#[test]
fn list_into_a_pipe_closed_after_one_line_exits_zero_and_says_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let letters: Vec<DeadLetter> = (0..LETTERS)
        .map(|i| {
            let env = Envelope::new(Topic::new("orders").unwrap(), format!("{{\"n\":{i}}}"));
            let report = ErrorReport::new(
                Classification::of(ErrorCategory::Timeout),
                "billing",
                "upstream timed out after 1500ms",
            );
            DeadLetter::new(
                env,
                report,
                DeadLetterReason::RetriesExhausted,
                "billing",
                "billing",
            )
        })
        .collect();
    assert!(dlq.push_many(&letters).iter().all(Result::is_ok));
    dlq.close();

    let mut child = Command::new(env!("CARGO_BIN_EXE_busctl"))
        .args(["dlq", "list", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("ID "), "{first}");
    // `head -1` exits: the read end closes while busctl still has rows to write.
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}; stderr: {stderr}");
    assert_eq!(stderr, "", "nothing said on a closed pipe");
}
