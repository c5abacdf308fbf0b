//! Processes SIGKILLed at random moments on one queue file lose nothing
//! confirmed. Like sled's crash tests, this binary re-runs itself as the
//! child.
//!
//! Each child publishes through confirms (printing `C <id>` only once a
//! publish is confirmed) and consumes with two members that fail some
//! deliveries on purpose: a nak with a short delay (`N`), a term (`T`, as
//! the bus does after dead-lettering), else an ack (`A`, printed after the
//! ack call). Every delivery prints `D <id>` first. The parent kills the
//! child at a random moment, reads which rows the file still shows leased
//! (what was in flight at the kill), and starts the next child on the same
//! file. After the last kill a child drains the queue and exits cleanly.
//!
//! Checked: every confirmed id is acked or terminated in the end (none
//! missing, none left in the file); a message delivered again after it was
//! acked or terminated is one the file showed leased at the kill that ended
//! the run which settled it (the only duplicates allowed), so the
//! duplicates after a kill never exceed what was leased then; and within
//! one run nothing settled is delivered again. `BUS_SQLITE_CRASH_KILLS`
//! sets the number of kills (20 by default; `cargo xtask soak` runs 200).

#![allow(clippy::unwrap_used)] // tests may unwrap

use bus_core::{Confirm, Envelope, Route, SubscribeOptions, Topic, Transport};
use bus_sqlite::{SqliteConfig, SqliteTransport};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const TOPIC: &str = "crash.work";
const GROUP: &str = "crashy";
/// Messages each child publishes (it is killed before it finishes, mostly).
const PER_CHILD: usize = 400;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn open(dir: &Path) -> SqliteTransport {
    SqliteTransport::open(SqliteConfig::new(dir).with_prefetch(8)).unwrap()
}

fn consume(t: &SqliteTransport, seed: u64, stop_when_empty: bool) {
    let topic = Topic::new(TOPIC).unwrap();
    let mut sub = t
        .subscribe(&topic, &SubscribeOptions::group(GROUP))
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut idle_since: Option<Instant> = None;
    loop {
        let Ok(next) = sub.next(Duration::from_millis(100)) else {
            return;
        };
        let Some(d) = next else {
            let empty = t.queue_depths().iter().all(|q| q.depth == 0);
            let since = *idle_since.get_or_insert_with(Instant::now);
            if stop_when_empty && empty && since.elapsed() > Duration::from_millis(500) {
                return;
            }
            continue;
        };
        idle_since = None;
        let id = d.envelope().id;
        say(&format!("D {id}"));
        let roll = if stop_when_empty { 99 } else { rng.u32(0..100) };
        match roll {
            0..10 => {
                d.nak(Duration::from_millis(rng.u64(0..30)));
                say(&format!("N {id}"));
            }
            10..15 => {
                d.term();
                say(&format!("T {id}"));
            }
            _ => {
                d.ack();
                say(&format!("A {id}"));
            }
        }
    }
}

fn child(dir: &Path, seed: u64, drain: bool) {
    let t = Arc::new(open(dir));
    let topic = Topic::new(TOPIC).unwrap();
    drop(
        t.subscribe(&topic, &SubscribeOptions::group(GROUP))
            .unwrap(),
    );
    say("READY");
    if drain {
        consume(&t, seed, true);
        t.close();
        say("DRAINED");
        return;
    }
    let consumers: Vec<_> = (0..2)
        .map(|i| {
            let t = Arc::clone(&t);
            std::thread::spawn(move || consume(&t, seed + i, false))
        })
        .collect();
    // A window of 64 unconfirmed publishes.
    let (permit_tx, permits) = crossbeam_channel::bounded::<()>(64);
    for i in 0..PER_CHILD {
        permit_tx.send(()).unwrap();
        let env = Envelope::new(topic.clone(), format!("{seed}-{i}").into_bytes());
        let id = env.id;
        let permits = permits.clone();
        let confirm = Confirm::new(move |outcome| {
            if outcome.is_ok() {
                say(&format!("C {id}"));
            }
            let _ = permits.try_recv();
        });
        t.send(env, Route::Topic, Duration::from_secs(10), confirm);
    }
    for c in consumers {
        let _ = c.join();
    }
}

/// Ids of the rows the file shows leased (to anyone).
fn leased_in_file(dir: &Path) -> HashSet<Uuid> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.join("queue.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT id FROM messages WHERE owner IS NOT NULL")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|id| Uuid::from_slice(&id.unwrap()).unwrap())
        .collect()
}

fn rows_in_file(dir: &Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("queue.sqlite")).unwrap();
    conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap()
}

#[derive(Default)]
struct Ledger {
    confirmed: HashSet<Uuid>,
    /// Run in which each id was first acked or terminated.
    settled_in: HashMap<Uuid, usize>,
    /// Ids leased in the file at the kill that ended each run.
    leased_at_kill: Vec<HashSet<Uuid>>,
    /// Settled ids delivered again, each with the kill that left it leased
    /// (`read_run` fails on any other), so the duplicates after a kill
    /// never exceed what was leased at that moment.
    duplicates: HashSet<(usize, Uuid)>,
    deliveries: usize,
}

impl Ledger {
    /// Reads one run's report; returns whether it ended with `DRAINED`.
    fn read_run(&mut self, run: usize, lines: &[String]) -> bool {
        let mut final_here: HashSet<Uuid> = HashSet::new();
        let mut drained = false;
        for line in lines {
            if line == "DRAINED" {
                drained = true;
                continue;
            }
            // A line cut short by the kill says nothing.
            let Some((kind, id)) = line.split_once(' ') else {
                continue;
            };
            let Ok(id) = Uuid::parse_str(id) else {
                continue;
            };
            match kind {
                "C" => {
                    self.confirmed.insert(id);
                }
                "D" => {
                    self.deliveries += 1;
                    assert!(
                        !final_here.contains(&id),
                        "run {run}: {id} delivered again after it was settled in the same run"
                    );
                    if let Some(&when) = self.settled_in.get(&id) {
                        // Its ack (or term) was not committed at some kill
                        // since: the file showed it leased then.
                        let kill = (when..run)
                            .rev()
                            .find(|k| self.leased_at_kill[*k].contains(&id))
                            .unwrap_or_else(|| {
                                panic!(
                                    "run {run}: {id}, settled in run {when}, delivered again \
                                     though no kill since found it leased"
                                )
                            });
                        self.duplicates.insert((kill, id));
                    }
                }
                "A" | "T" => {
                    final_here.insert(id);
                    self.settled_in.entry(id).or_insert(run);
                }
                _ => {}
            }
        }
        drained
    }
}

fn spawn(dir: &Path, seed: u64, drain: bool) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .env("BUS_SQLITE_CRASH_CHILD", dir)
        .env("BUS_SQLITE_CRASH_SEED", seed.to_string())
        .env("BUS_SQLITE_CRASH_DRAIN", if drain { "1" } else { "0" })
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the child's lines until it exits (or is killed after `kill_after`
/// from its `READY`).
fn run_child(dir: &Path, seed: u64, drain: bool, kill_after: Option<Duration>) -> Vec<String> {
    let mut child = spawn(dir, seed, drain);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut kill_at: Option<Instant> = None;
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let wait = kill_at.map_or(Duration::from_millis(100), |at| {
            at.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(line) => {
                if line == "READY" {
                    kill_at = kill_after.map(|k| Instant::now() + k);
                }
                lines.push(line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if kill_at.is_some_and(|at| Instant::now() >= at) {
            child.kill().unwrap(); // SIGKILL
            break;
        }
        assert!(Instant::now() < give_up, "child {seed} made no progress");
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    if kill_after.is_none() {
        assert!(status.success(), "the draining child failed: {status}");
    }
    lines
}

fn main() {
    if let Ok(dir) = std::env::var("BUS_SQLITE_CRASH_CHILD") {
        let seed = std::env::var("BUS_SQLITE_CRASH_SEED")
            .unwrap()
            .parse()
            .unwrap();
        let drain = std::env::var("BUS_SQLITE_CRASH_DRAIN").is_ok_and(|v| v == "1");
        child(Path::new(&dir), seed, drain);
        return;
    }
    let kills: usize = std::env::var("BUS_SQLITE_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = fastrand::u64(..);
    eprintln!("crash test: {kills} kills, seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::default();
    let started = Instant::now();
    for run in 0..kills {
        let kill_after = Duration::from_millis(rng.u64(20..400));
        let lines = run_child(dir.path(), rng.u64(..1 << 40), false, Some(kill_after));
        ledger.leased_at_kill.push(leased_in_file(dir.path()));
        ledger.read_run(run, &lines);
    }
    let lines = run_child(dir.path(), rng.u64(..1 << 40), true, None);
    ledger.leased_at_kill.push(HashSet::new());
    assert!(ledger.read_run(kills, &lines), "the last child drained");
    let missing: Vec<_> = ledger
        .confirmed
        .iter()
        .filter(|id| !ledger.settled_in.contains_key(id))
        .collect();
    let leased: usize = ledger.leased_at_kill.iter().map(HashSet::len).sum();
    eprintln!(
        "crash test: {} confirmed, {} settled, {} deliveries, {} duplicates after kills \
         (at most {leased} leased at the kills), {:.1} s",
        ledger.confirmed.len(),
        ledger.settled_in.len(),
        ledger.deliveries,
        ledger.duplicates.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        missing.is_empty(),
        "{} confirmed messages missing, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert!(ledger.confirmed.len() > kills, "the children published");
    assert_eq!(
        rows_in_file(dir.path()),
        0,
        "drained: nothing left in the file"
    );
    println!("test sigkilled_processes_lose_nothing_confirmed ... ok");
}
