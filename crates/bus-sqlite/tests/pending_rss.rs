//! Pending messages cost disk, not memory: the process's RSS stays small
//! however many messages wait in the file. `BUS_SQLITE_PENDING` sets how
//! many 100-byte messages are published and left pending (100 000 by
//! default; `cargo xtask soak` runs 10 million against a 100 MiB limit),
//! then a consumer takes some, and the file is reopened.

#![allow(clippy::unwrap_used)] // tests may unwrap

use bus_core::{Confirm, Envelope, Route, SubscribeOptions, Topic, Transport};
use bus_sqlite::{Durability, SqliteConfig, SqliteTransport};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT_KIB: u64 = 100 * 1024;

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

fn open(dir: &std::path::Path) -> Arc<SqliteTransport> {
    let config = SqliteConfig::new(dir).with_durability(Durability::Normal);
    Arc::new(SqliteTransport::open(config).unwrap())
}

fn main() {
    let n: usize = std::env::var("BUS_SQLITE_PENDING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let topic = Topic::new("pending.rss").unwrap();
    let started = Instant::now();
    {
        let t = open(dir.path());
        let opts = SubscribeOptions::group("g").with_capacity(usize::MAX / 2);
        drop(t.subscribe(&topic, &opts).unwrap());
        let payload = bytes::Bytes::from(vec![0x5a_u8; 100]);
        // Four publishers, 1024 confirms in flight each.
        std::thread::scope(|s| {
            for p in 0..4 {
                let (t, topic, payload) = (Arc::clone(&t), topic.clone(), payload.clone());
                s.spawn(move || {
                    let (permit, freed) = crossbeam_channel::bounded::<()>(1024);
                    let (confirmed, all_confirmed) = crossbeam_channel::unbounded::<()>();
                    let mut sent = 0;
                    for _ in (p..n).step_by(4) {
                        permit.send(()).unwrap();
                        let (freed, confirmed) = (freed.clone(), confirmed.clone());
                        let confirm = Confirm::new(move |outcome| {
                            outcome.unwrap();
                            let _ = freed.try_recv();
                            let _ = confirmed.send(());
                        });
                        let env = Envelope::new(topic.clone(), payload.clone());
                        t.send(env, Route::Topic, Duration::from_secs(60), confirm);
                        sent += 1;
                    }
                    for _ in 0..sent {
                        all_confirmed.recv().unwrap();
                    }
                });
            }
        });
        let depth = t.queue_depths()[0].depth;
        assert_eq!(depth, n, "every message pending");
        let (now, peak) = rss();
        eprintln!(
            "pending_rss: {n} pending after {:.1} s, RSS {} KiB, peak {} KiB",
            started.elapsed().as_secs_f64(),
            now,
            peak
        );
        assert!(peak < LIMIT_KIB, "peak RSS {peak} KiB with {n} pending");
        t.close();
    }
    // Reopened: the queue is all there, a consumer takes from its head.
    let t = open(dir.path());
    assert_eq!(t.queue_depths()[0].depth, n);
    let mut sub = t.subscribe(&topic, &SubscribeOptions::group("g")).unwrap();
    for _ in 0..1000.min(n) {
        sub.next(Duration::from_secs(10)).unwrap().unwrap().ack();
    }
    drop(sub);
    t.close();
    let (now, peak) = rss();
    eprintln!("pending_rss: after reopening and consuming, RSS {now} KiB, peak {peak} KiB");
    assert!(peak < LIMIT_KIB, "peak RSS {peak} KiB");
    let groups = bus_sqlite::inspect(dir.path()).unwrap();
    assert_eq!(groups[0].pending() as usize, n - 1000.min(n));
    assert!(groups[0].balances());
    println!("test pending_messages_cost_disk_not_memory ... ok");
}
