//! Crash test (like sled's): this binary re-runs itself as a child that
//! pushes letters from several threads under `Durability::Full` (and marks
//! some for replay and replayed from another) and prints each id once its
//! push returned `Ok`. The parent kills it with SIGKILL at a random moment,
//! verifies the store read-only and again after reopening it (rows,
//! duplicate ids, the running totals and failure-group counts against the
//! table), and checks every acknowledged letter is there, once. Many iterations on the same database, so recovery after
//! recovery is exercised too.

// A harness = false target is not cfg(test): allow unwrap as every test does.
#![allow(clippy::unwrap_used)]

use bus_core::{DeadLetter, DeadLetterReason, Envelope, Topic};
use bus_dlq::{
    DeadLetterStore, DlqConfig, DlqFile, DlqQuery, Durability, Filter, LetterId, LetterState,
    SqliteDlq,
};
use bus_errors::{Classification, ErrorCategory, ErrorReport};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "BUS_DLQ_CRASH_CHILD_DIR";
const ITERATIONS: u64 = 60;
const PUSHERS: usize = 4;

fn main() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(&dir);
    }
    parent();
}

fn child(dir: &str) -> ! {
    let dlq = SqliteDlq::open(DlqConfig::new(dir).with_durability(Durability::Full))
        .unwrap_or_else(|e| panic!("child open: {e}"));
    // A tick every few pushes paces the replay marks below: one changing
    // transaction per tick, so the pushes are not starved of the lock.
    let (tick, ticks) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::scope(|s| {
        for t in 0..PUSHERS {
            let dlq = &dlq;
            let tick = tick.clone();
            s.spawn(move || {
                for i in 0_u64.. {
                    let env = Envelope::new(
                        Topic::new("crash.test").unwrap(),
                        vec![t as u8; 512 + (i % 700) as usize],
                    );
                    let report = ErrorReport::new(
                        Classification::of(ErrorCategory::Timeout),
                        "crash",
                        format!("push {i}"),
                    );
                    let l = DeadLetter::new(
                        env,
                        report,
                        DeadLetterReason::RetriesExhausted,
                        "crash",
                        "g",
                    );
                    let id = dlq.push(&l).unwrap_or_else(|e| panic!("child push: {e}"));
                    // One write per line, after the push returned Ok.
                    let line = format!("{id}\n");
                    let mut out = std::io::stdout().lock();
                    out.write_all(line.as_bytes()).unwrap();
                    out.flush().unwrap();
                    drop(out);
                    if i % 8 == 0 {
                        // Full: the marks are behind; skip this tick.
                        let _ = tick.try_send(());
                    }
                }
            });
        }
        // Replay marks beside the pushes: state changes move letters
        // between the keys of the failure-group counts, which must stay in
        // step with the letters whenever the kill lands.
        let dlq = &dlq;
        s.spawn(move || {
            while ticks.recv().is_ok() {
                let dead = Filter::all().state(LetterState::Dead).limit(4);
                dlq.request_replay(&dead, None)
                    .unwrap_or_else(|e| panic!("child replay: {e}"));
                let asked = Filter::all().state(LetterState::ReplayRequested);
                let ids: Vec<LetterId> = dlq
                    .scan(&asked, None, 2)
                    .unwrap_or_else(|e| panic!("child scan: {e}"))
                    .iter()
                    .map(|l| l.id)
                    .collect();
                dlq.set_state(
                    &ids,
                    &[LetterState::ReplayRequested],
                    LetterState::Replayed,
                    Some(std::time::SystemTime::now()),
                    None,
                )
                .unwrap_or_else(|e| panic!("child mark: {e}"));
            }
        });
    });
    unreachable!("pushers never stop")
}

fn parent() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let seed = std::env::var("BUS_DLQ_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut acked: BTreeSet<LetterId> = BTreeSet::new();
    let mut iterations_with_acks = 0;
    for iteration in 0..ITERATIONS {
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (seen, acks) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                // Each id is written with one write call after its push
                // returned; anything that does not parse was never acknowledged.
                if let Ok(id) = std::str::from_utf8(&line).unwrap_or("").parse::<LetterId>() {
                    ids.push(id);
                    let _ = seen.send(());
                }
            }
            ids
        });
        // The crash lands after a random number of acknowledgements, while
        // four pushers are mid-push: a moment chosen by progress, not by time.
        let after = rng.usize(1..=256);
        for _ in 0..after {
            acks.recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!("iteration {iteration}: the child stopped acknowledging")
                });
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let ids = reader.join().unwrap();
        if !ids.is_empty() {
            iterations_with_acks += 1;
        }
        acked.extend(ids);

        // Read-only first: a writable open would mend counts out of step.
        let file = DlqFile::open_read_only(dir.path()).unwrap();
        let report = file.verify().unwrap();
        assert!(
            report.is_ok(),
            "iteration {iteration} (seed {seed}): read-only verify: {report:?}"
        );
        drop(file);
        let dlq = SqliteDlq::open(DlqConfig::new(dir.path()))
            .unwrap_or_else(|e| panic!("iteration {iteration} (seed {seed}): reopen failed: {e}"));
        let report = dlq.verify().unwrap();
        assert!(
            report.is_ok(),
            "iteration {iteration} (seed {seed}): verify: {report:?}"
        );
        let listed: Vec<LetterId> = dlq
            .list(&Filter::all())
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        let stored: BTreeSet<LetterId> = listed.iter().copied().collect();
        assert_eq!(
            stored.len(),
            listed.len(),
            "iteration {iteration} (seed {seed}): a letter is listed twice"
        );
        let missing: Vec<_> = acked.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "iteration {iteration} (seed {seed}, killed after {after} acks, {status}): {} acknowledged letters lost, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        dlq.close();
    }
    assert!(
        iterations_with_acks >= ITERATIONS / 2,
        "children acknowledged too little: {iterations_with_acks} of {ITERATIONS}"
    );
    println!(
        "crash test: {ITERATIONS} SIGKILLs (seed {seed}), {} acknowledged letters all present and verified, {:.1?}",
        acked.len(),
        started.elapsed()
    );
}
