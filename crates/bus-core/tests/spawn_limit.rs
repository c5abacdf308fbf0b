//! The OS refusing a thread is a typed error from the call that asked for
//! it, never a panic, and what that call had started is rolled back.
//!
//! Run under a real limit: the test runs itself again in a child process
//! whose user may own only a few threads (`RLIMIT_NPROC` through
//! `prlimit`; as an unprivileged user when run as root, whom the limit
//! does not bind). Linux only, like the limit.
#![cfg(target_os = "linux")]

use bus_core::{Bus, Message, SubscribeError};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::Duration;

/// Set in the child's environment: run the checks instead of the child.
const CHILD: &str = "BUS_CORE_SPAWN_LIMIT_CHILD";
const TEST: &str = "a_refused_thread_is_a_typed_error_and_rolls_back";
/// What the child prints when every check passed.
const PASSED: &str = "spawn-limit checks passed";

/// The `Uid:` line's real uid from `/proc/<pid>/status`.
fn uid_of(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Threads owned by `uid` now, all processes together (what the limit counts).
fn threads_of(uid: u32) -> usize {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .flatten()
        .filter_map(|p| std::fs::read_dir(p.path().join("task")).ok())
        .flat_map(|tasks| tasks.flatten())
        .filter(|t| {
            std::fs::read_to_string(t.path().join("status"))
                .ok()
                .and_then(|s| uid_of(&s))
                == Some(uid)
        })
        .count()
}

fn own_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        bus_test::wait_until(Duration::from_secs(20), cond),
        "timed out waiting for {what}"
    );
}

#[test]
fn a_refused_thread_is_a_typed_error_and_rolls_back() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let uid = uid_of(&status).expect("a Uid line");
    let mut cmd;
    if uid == 0 {
        // Root is exempt from RLIMIT_NPROC: the child runs as nobody, who
        // owns no other thread.
        cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "prlimit",
        ])
        .arg("--nproc=48");
    } else {
        cmd = Command::new("prlimit");
        cmd.arg(format!("--nproc={}", threads_of(uid) + 48));
    }
    let out = cmd
        .arg(&exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("cannot run the child under prlimit (util-linux's setpriv and prlimit)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(PASSED),
        "the child failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// Threads that hold a slot of the limit until released, each with its
/// own release flag.
struct Fillers(Vec<(Arc<AtomicBool>, JoinHandle<()>)>);

impl Fillers {
    /// Spawns fillers until the OS refuses one.
    fn fill() -> Self {
        let mut fillers = Vec::new();
        loop {
            let release = Arc::new(AtomicBool::new(false));
            let r = Arc::clone(&release);
            let spawned = std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    while !r.load(SeqCst) {
                        std::thread::park();
                    }
                });
            match spawned {
                Ok(t) => fillers.push((release, t)),
                Err(_) => break,
            }
            assert!(fillers.len() < 4096, "the thread limit is not in force");
        }
        Self(fillers)
    }

    /// Lets `n` fillers end and waits until the OS has taken their
    /// threads back (a joined thread is reaped a moment later).
    fn free(&mut self, n: usize) {
        let before = own_threads();
        let at = self.0.len() - n;
        for (release, t) in self.0.split_off(at) {
            release.store(true, SeqCst);
            t.thread().unpark();
            t.join().expect("filler");
        }
        wait_for("freed threads to be reaped", || own_threads() + n <= before);
    }
}

fn child() {
    let mut fillers = Fillers::fill();
    // Building starts no thread: it cannot fail (or panic) for want of one.
    let bus = Bus::builder().build();
    let seen = Arc::new(AtomicUsize::new(0));
    let handler = |seen: &Arc<AtomicUsize>| {
        let seen = Arc::clone(seen);
        move |_m: &Message<'_>| -> Result<(), std::io::Error> {
            seen.fetch_add(1, SeqCst);
            Ok(())
        }
    };

    // No thread at all: the transport's timer (started by the first
    // subscribe) is refused.
    let err = bus
        .subscriber("a")
        .topic("t")
        .workers(4)
        .start(handler(&seen))
        .expect_err("no thread can start");
    assert!(matches!(err, SubscribeError::Spawn(_)), "{err:?}");

    // Room for two: the timer and one worker start, the second worker is
    // refused, and the first is stopped and joined again.
    fillers.free(2);
    let before = own_threads();
    let err = bus
        .subscriber("a")
        .topic("t")
        .workers(4)
        .start(handler(&seen))
        .expect_err("only one worker can start");
    assert!(matches!(err, SubscribeError::Spawn(_)), "{err:?}");
    wait_for("the started worker to be rolled back", || {
        own_threads() == before + 1
    });

    // The slot it held is free again: a subscriber of the same group
    // starts, and gets the group's messages (no rolled-back worker
    // competes for them).
    let handle = bus
        .subscriber("a")
        .topic("t")
        .start(handler(&seen))
        .expect("the rolled-back worker's slot is free");
    for _ in 0..10 {
        bus.publish("t", &b"x"[..]).expect("accepted");
    }
    wait_for("ten messages handled", || seen.load(SeqCst) == 10);
    assert_eq!(handle.close(Duration::from_secs(10)), 0);
    let report = bus.shutdown(Duration::from_secs(10));
    assert!(report.stats.invariant_holds(), "{:?}", report.stats);
    assert_eq!(report.stats.acked, 10);
    fillers.free(fillers.0.len());
    println!("{PASSED}");
}
