//! Faults from outside the process, against the real `busctl` binary:
//! SIGTERM and SIGINT mid-run, a second signal, and a full disk.
#![allow(clippy::unwrap_used)] // tests may unwrap

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A demo run far longer than any test may take: a run that ends early
/// was ended by the signal.
const RUN: &str = "30s";

fn spawn_demo(dir: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_busctl"))
        .args(["demo", "--data-dir", dir.to_str().unwrap()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the demo has handled enough messages to have logged `lines`
/// failures (transient failures and panics are logged as they happen).
fn wait_for_progress(child: &mut Child, dir: &Path, lines: usize) {
    let log = dir.join("logs").join("errors.jsonl");
    let progressed = bus_test::wait_until(Duration::from_secs(20), || {
        std::fs::read(&log).is_ok_and(|b| b.iter().filter(|&&c| c == b'\n').count() >= lines)
    });
    if !progressed {
        let _ = child.kill();
        panic!("the demo made no progress in 20 s");
    }
}

fn kill(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} failed");
}

/// Waits for the child's exit (at most `limit`), returning its status,
/// stdout and stderr; kills it and fails if it does not exit in time. The
/// pipes are read while it runs, so a child that writes more than a pipe
/// holds never blocks on a reader that waits for its exit.
fn finish(mut child: Child, limit: Duration) -> (ExitStatus, String, String) {
    fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = String::new();
            r.read_to_string(&mut s).unwrap();
            s
        })
    }
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let mut status = None;
    bus_test::wait_until(limit, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("busctl did not exit within {limit:?} of the signal");
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// The ledger adds up with every term and nothing is left in flight; every
/// dead letter the summary counts is in the queue on disk, those made at
/// shutdown with reason `shutdown`.
fn assert_nothing_vanished(s: &Value) {
    let settled = n(s, "acked")
        + n(s, "dead_lettered")
        + n(s, "rejected_at_publish")
        + n(s, "discarded_by_policy")
        + n(s, "returned_at_shutdown");
    assert_eq!(n(s, "published"), settled, "{s}");
    assert_eq!(n(s, "in_flight"), 0, "{s}");
    assert_eq!(n(s, "returned_at_shutdown"), 0, "{s}");
    assert_eq!(s["invariant_holds"], true, "{s}");
    assert_eq!(n(&s["dlq"], "total"), n(s, "dead_lettered"), "{s}");
    let at_shutdown = s["dlq"]["by_reason"]["shutdown"].as_u64().unwrap_or(0);
    assert_eq!(at_shutdown, n(s, "dead_lettered_at_shutdown"), "{s}");
    assert!(n(s, "published") > 0, "{s}");
}

fn graceful(signal: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_demo(dir.path(), &["--duration", RUN, "--json"]);
    wait_for_progress(&mut child, dir.path(), 50);
    kill(&child, signal);
    let signalled = Instant::now();
    let (status, out, err) = finish(child, Duration::from_secs(25));
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "took {:?} after the signal",
        signalled.elapsed()
    );
    assert!(status.success(), "{status}: {err}");
    assert!(
        err.contains(&format!("{name} received")),
        "stderr names the signal: {err}"
    );
    let s: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(s["interrupted_by"], name, "{s}");
    assert_nothing_vanished(&s);
    // The final health snapshot was written.
    let health: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("health.json")).unwrap()).unwrap();
    assert_eq!(
        health["totals"]["dead_lettered"].as_u64(),
        Some(n(&s, "dead_lettered"))
    );
}

#[test]
fn sigterm_drains_shuts_down_and_reports() {
    graceful("TERM", "SIGTERM");
}

#[test]
fn sigint_drains_shuts_down_and_reports() {
    graceful("INT", "SIGINT");
}

#[test]
fn sigint_with_no_drain_time_dead_letters_the_rest_and_prints_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_demo(dir.path(), &["--duration", RUN, "--drain-timeout", "0s"]);
    wait_for_progress(&mut child, dir.path(), 50);
    kill(&child, "INT");
    let (status, out, err) = finish(child, Duration::from_secs(25));
    assert!(status.success(), "{status}: {err}");
    assert!(out.contains("interrupted by SIGINT"), "{out}");
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("invariant:"))
        .unwrap_or_else(|| panic!("no invariant line: {out}"));
    assert!(line.ends_with("holds"), "{line}");
    let d = dir.path().to_str().unwrap();
    let stats = Command::new(env!("CARGO_BIN_EXE_busctl"))
        .args(["dlq", "stats", "--data-dir", d, "--json"])
        .output()
        .unwrap();
    assert!(stats.status.success());
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    let (terms, total) = invariant_terms(line);
    assert_eq!(terms[1], n(&stats, "total"), "{line} vs {stats}");
    assert_eq!(total, terms.iter().sum::<u64>(), "{line}");
}

#[test]
fn a_second_signal_exits_at_once_and_says_what_may_be_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_demo(dir.path(), &["--duration", RUN, "--json"]);
    wait_for_progress(&mut child, dir.path(), 50);
    // Two different signals, so the kernel cannot merge them into one.
    kill(&child, "TERM");
    kill(&child, "INT");
    let (status, out, err) = finish(child, Duration::from_secs(10));
    assert!(!status.success(), "{status}: {out}");
    assert!(
        matches!(status.code(), Some(130 | 143)),
        "128 + the signal: {status}"
    );
    assert!(err.contains("exiting at once"), "{err}");
    assert!(err.contains("in flight may be lost"), "{err}");
    assert!(out.is_empty(), "no summary: {out}");
}

/// `published P = acked A + ... + returned_at_shutdown S + pending N: holds`
/// as `([A, D, R, P', S, N], P)`.
fn invariant_terms(line: &str) -> (Vec<u64>, u64) {
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(nums.len(), 7, "published and six terms: {line}");
    for term in [
        "published",
        "acked",
        "dead_lettered",
        "rejected_at_publish",
        "discarded_by_policy",
        "returned_at_shutdown",
        "pending",
    ] {
        assert!(line.contains(term), "{term} missing: {line}");
    }
    (nums[1..].to_vec(), nums[0])
}

/// A 2 MiB tmpfs, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_full_disk_exits_non_zero_says_what_was_handed_back_and_leaves_whole_files() {
    let disk = match Tmpfs::mount() {
        Ok(d) => d,
        Err(why) => {
            let msg = format!(
                "\n!!! full-disk test NOT RUN: {why}\n!!! it needs root (mount -t tmpfs)\n"
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
            eprintln!("{msg}");
            return;
        }
    };
    let child = spawn_demo(
        &disk.path,
        &[
            "--poison-rate",
            "0.5",
            "--duration",
            "3s",
            "--drain-timeout",
            "2s",
        ],
    );
    let (status, out, err) = finish(child, Duration::from_secs(60));
    assert!(
        !status.success(),
        "a run that dropped messages exits non-zero: {out}\n{err}"
    );

    // The summary's invariant names every term, and they add up.
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("invariant:"))
        .unwrap_or_else(|| panic!("no invariant line: {out}\n{err}"));
    let (terms, published) = invariant_terms(line);
    assert_eq!(published, terms.iter().sum::<u64>(), "{line}");
    let returned = terms[4];
    assert!(returned > 0, "the full DLQ handed messages back: {line}");

    // Health says so too.
    assert!(out.contains("CRITICAL"), "{out}");
    assert!(out.contains("dead-letter queue cannot write"), "{out}");

    // stderr says how many, why, and the store's error.
    assert!(
        err.contains(&format!("{returned} deliveries handed back at shutdown")),
        "{err}"
    );
    assert!(err.contains("refused writes by group"), "{err}");
    assert!(err.contains("last error"), "{err}");

    // Whole lines only, and no temp file left behind.
    let files = files_under(&disk.path);
    let log = disk.path.join("logs").join("errors.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    // The log loses the lines it could not write once the disk filled,
    // and the run says so; what it did write (nothing, when the store
    // filled the disk before the log's first write) is whole lines.
    assert!(
        err.contains("warning: the error log is missing"),
        "the error log's losses went unreported: {err}"
    );
    for (i, l) in text.lines().enumerate() {
        serde_json::from_str::<Value>(l)
            .unwrap_or_else(|e| panic!("line {} of errors.jsonl is torn ({e}): {l:?}", i + 1));
    }
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the log ends with a whole line"
    );
    let tmp: Vec<_> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
}

#[test]
fn publishers_over_a_thread_limit_are_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The limit applies to an unprivileged user (root may exceed it), who
    // must be able to write the data directory.
    let perms = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    std::fs::set_permissions(dir.path(), perms).unwrap();
    // A copy it can run wherever the build directory is.
    let exe = dir.path().join("busctl");
    std::fs::copy(env!("CARGO_BIN_EXE_busctl"), &exe).unwrap();
    // RLIMIT_NPROC counts the threads of the user: the bus starts (about a
    // dozen threads), then publisher threads run into the limit.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["prlimit", "--nproc=30:30"])
        .arg(&exe)
        .args(["demo", "--publishers", "100", "--messages", "2000"])
        .arg("--data-dir")
        .arg(&data)
        .output();
    let out = match out {
        Ok(o)
            if !["setpriv:", "prlimit:"]
                .iter()
                .any(|tool| String::from_utf8_lossy(&o.stderr).contains(tool)) =>
        {
            o
        }
        other => {
            let msg = format!(
                "\n!!! thread-limit test NOT RUN: setpriv/prlimit unavailable or not permitted: {other:?}\n"
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
            eprintln!("{msg}");
            return;
        }
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an error, not a panic (101): {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("could not start publisher thread"), "{err}");
    assert!(err.contains("of 100"), "{err}");
}
