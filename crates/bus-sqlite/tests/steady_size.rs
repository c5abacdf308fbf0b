//! Under a steady load the file does not grow without bound: acked rows
//! leave it, SQLite reuses their pages, and checkpoints let the WAL start
//! over. Rounds of publish + consume + ack run one after another; the
//! database and WAL sizes after the last round stay within a margin of
//! those after the second (the first sizes the file). `BUS_SQLITE_STEADY`
//! sets `rounds x messages` (`8x5000` by default; the soak runs more).

#![allow(clippy::unwrap_used)] // tests may unwrap

use bus_core::{Confirm, Envelope, Route, SubscribeOptions, Topic, Transport};
use bus_sqlite::{Durability, SqliteConfig, SqliteTransport};
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn size(dir: &Path) -> u64 {
    ["queue.sqlite", "queue.sqlite-wal"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
        .sum()
}

fn main() {
    let (rounds, n) = std::env::var("BUS_SQLITE_STEADY")
        .ok()
        .and_then(|v| {
            let (r, n) = v.split_once('x')?;
            Some((r.parse().ok()?, n.parse().ok()?))
        })
        .unwrap_or((8_usize, 5000_usize));
    let dir = tempfile::tempdir().unwrap();
    let config = SqliteConfig::new(dir.path())
        .with_durability(Durability::Normal)
        .with_prefetch(256);
    let t = SqliteTransport::open(config).unwrap();
    let topic = Topic::new("steady").unwrap();
    let mut sub = t
        .subscribe(&topic, &SubscribeOptions::group("g").with_capacity(n * 2))
        .unwrap();
    let payload = bytes::Bytes::from(vec![0x42_u8; 1024]);
    let mut sizes = Vec::new();
    for _ in 0..rounds {
        let (permit, freed) = crossbeam_channel::bounded::<()>(512);
        for _ in 0..n {
            permit.send(()).unwrap();
            let freed = freed.clone();
            let confirm = Confirm::new(move |outcome| {
                outcome.unwrap();
                let _ = freed.try_recv();
            });
            t.send(
                Envelope::new(topic.clone(), payload.clone()),
                Route::Topic,
                T,
                confirm,
            );
        }
        for _ in 0..n {
            sub.next(T).unwrap().unwrap().ack();
        }
        // The last acks are committed with the next transaction.
        assert!(sub.next(Duration::from_millis(10)).unwrap().is_none());
        sizes.push(size(dir.path()));
    }
    let groups = bus_sqlite::inspect(dir.path()).unwrap();
    assert_eq!(groups[0].pending(), 0);
    assert!(groups[0].balances());
    eprintln!("steady_size: {rounds} rounds of {n}: file + WAL bytes after each {sizes:?}");
    let (second, last) = (sizes[1.min(sizes.len() - 1)], sizes[sizes.len() - 1]);
    assert!(
        last <= second + second / 2 + (1 << 20),
        "the file grew from {second} to {last} bytes under a steady load"
    );
    println!("test the_file_stays_bounded_under_a_steady_load ... ok");
}
