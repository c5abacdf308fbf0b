//! Helpers shared by the benches: the raw crossbeam baseline, publisher
//! threads, subscriber setup and JSON output.
#![allow(dead_code, unreachable_pub)]

use bus_bench::{FailEvery, Fixture, TOPIC};
use bus_core::{Envelope, Topic};
use crossbeam_channel::{Receiver, Sender, bounded};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Queue capacity of the raw channels: the bus's default subscriber capacity.
pub const CAPACITY: usize = 1024;

/// How long a bench waits for its messages before giving up loudly.
pub const WAIT: Duration = Duration::from_secs(120);

/// Messages per criterion iteration: `full`, or `quick` under `--quick`.
pub fn messages(full: u64, quick: u64) -> u64 {
    if bus_bench::quick() { quick } else { full }
}

/// The physical limit: `consumers` threads, each draining its own bounded
/// crossbeam channel of [`Envelope`]s and running `on_msg` on each.
pub struct Raw {
    txs: Vec<Sender<Envelope>>,
    threads: Vec<JoinHandle<()>>,
    /// Messages handled by all consumers.
    pub handled: Arc<AtomicU64>,
    topic: Topic,
}

impl Raw {
    pub fn new(consumers: usize, on_msg: impl Fn(&Envelope) + Clone + Send + 'static) -> Self {
        let handled = Arc::new(AtomicU64::new(0));
        let mut txs = Vec::new();
        let mut threads = Vec::new();
        for i in 0..consumers {
            let (tx, rx): (Sender<Envelope>, Receiver<Envelope>) = bounded(CAPACITY);
            txs.push(tx);
            let handled = Arc::clone(&handled);
            let on_msg = on_msg.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("raw-consumer-{i}"))
                    .spawn(move || {
                        while let Ok(env) = rx.recv() {
                            on_msg(&env);
                            handled.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .unwrap(),
            );
        }
        Self {
            txs,
            threads,
            handled,
            topic: Topic::new(TOPIC).unwrap(),
        }
    }

    /// Sends one envelope holding `payload` to every consumer (fan-out clones
    /// the envelope, as the bus does for each group).
    pub fn publish(&self, payload: Vec<u8>) {
        let env = Envelope::new(self.topic.clone(), payload);
        let (last, rest) = self.txs.split_last().unwrap();
        for tx in rest {
            tx.send(env.clone()).unwrap();
        }
        last.send(env).unwrap();
    }

    pub fn consumers(&self) -> u64 {
        self.txs.len() as u64
    }

    /// Waits until `target` messages were handled.
    pub fn wait(&self, target: u64) {
        let deadline = Instant::now() + WAIT;
        while self.handled.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "raw consumers stalled");
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.txs.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Runs `publish(seq)` for `n` sequence numbers starting at `first`, split
/// over `publishers` threads, and returns when all have published.
pub fn publish_from(publishers: u64, first: u64, n: u64, publish: &(dyn Fn(u64) + Sync)) {
    std::thread::scope(|s| {
        for p in 0..publishers {
            s.spawn(move || {
                let mut seq = first + p;
                while seq < first + n {
                    publish(seq);
                    seq += publishers;
                }
            });
        }
    });
}

/// Starts `groups` subscribers on [`TOPIC`], each in its own group (so each
/// receives every message), one worker each, running `fail.handler`.
pub fn subscribe(fx: &Fixture, groups: u64, fail: FailEvery) -> Arc<AtomicU64> {
    let calls = Arc::new(AtomicU64::new(0));
    for g in 0..groups {
        fx.bus
            .subscriber(&format!("bench-g{g}"))
            .topic(TOPIC)
            .start(fail.handler(Arc::clone(&calls)))
            .unwrap();
    }
    calls
}

/// Waits until the fixture settled every accepted delivery.
pub fn settle(fx: &Fixture) {
    assert!(fx.wait_idle(WAIT), "bus stalled: {:?}", fx.bus.stats());
}

/// Writes `json` to `<target>/<name>`, creating the directory.
pub fn write_json(name: &str, json: &str) {
    let dir = bus_bench::target_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, json).unwrap();
    eprintln!("wrote {}", path.display());
}
