//! The SQLite transport beside a hand-written rusqlite program doing the
//! same transactions, in interleaved rounds on this machine's disk.
//!
//! ```text
//! cargo run --profile bench -p bus-bench --bin sqlite -- [--rounds R] [--messages N]
//!     [--single S] [--dir DIR] [--out PATH]
//! ```
//!
//! Each round runs, in a rotating order:
//!
//! - `bus`: `SqliteTransport` under `Durability::Full`, 4 publisher
//!   threads each keeping 256 publishes in flight through `send` and its
//!   confirms, one consumer leasing 256 at a time and acking each; from
//!   the first publish until every message is acked and the transport has
//!   closed (its last acks committed).
//! - `raw`: the same work written by hand on rusqlite ([`raw`]): one
//!   writer thread, the same table and indexes, each transaction inserting
//!   what the publishers sent (up to 1024 operations), leasing up to 256
//!   rows for the consumer with `UPDATE ... RETURNING`, deleting the rows
//!   acked since, `synchronous = FULL` (one fsync of the WAL) for a commit
//!   that inserted and `NORMAL` for one that did not, as the transport does.
//! - `single`: one thread calling `publish` (each waits for its commit and
//!   fsync) `S` times, beside `baseline`: `write` + `fdatasync` of a 1 KiB
//!   record, `S` times (the dead-letter store's baseline).
//!
//! Payloads are 1 KiB. Writes `target/bench-sqlite.json` (or `--out`):
//! per mode the median rate, and the medians and quartiles of the
//! per-round ratios `bus_over_raw` and `single_over_baseline`.

#![allow(clippy::unwrap_used)]

mod bus;
mod raw;

use bus_bench::quartiles;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Payload size, as the issue's goals state them.
pub(crate) const PAYLOAD_BYTES: usize = 1024;
/// Publisher threads and their windows of unconfirmed publishes.
pub(crate) const PUBLISHERS: usize = 4;
pub(crate) const WINDOW: usize = 256;
/// Rows a lease takes at once (the transport's `prefetch`).
pub(crate) const LEASE: usize = 256;
/// Operations in one transaction at most (the transport's `max_batch`).
pub(crate) const MAX_BATCH: usize = 1024;

struct Args {
    rounds: usize,
    messages: usize,
    single: usize,
    dir: PathBuf,
    out: PathBuf,
}

fn args() -> Args {
    let target = bus_bench::target_dir();
    let mut a = Args {
        rounds: 5,
        messages: 100_000,
        single: 1000,
        dir: target.join("bench-scratch/sqlite"),
        out: target.join("bench-sqlite.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => a.rounds = value().parse().unwrap(),
            "--messages" => a.messages = value().parse().unwrap(),
            "--single" => a.single = value().parse().unwrap(),
            "--dir" => a.dir = value().into(),
            "--out" => a.out = value().into(),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// A fresh scratch directory for one run.
fn fresh(dir: &std::path::Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Seconds per record of `write` + `fdatasync` of 1 KiB records.
fn baseline(dir: &std::path::Path, n: usize) -> f64 {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("log")).unwrap();
    let record = vec![0xAB_u8; PAYLOAD_BYTES];
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(&record).unwrap();
        f.sync_data().unwrap();
    }
    start.elapsed().as_secs_f64() / n as f64
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn median(v: &[f64]) -> f64 {
    quartiles(v.to_vec()).1
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.dir).unwrap();
    let (mut bus_rates, mut raw_rates, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    let (mut single_s, mut base_s, mut single_ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..a.rounds {
        let mut order = ["bus", "raw", "single"];
        order.rotate_left(round % 3);
        let (mut b, mut r) = (0.0, 0.0);
        for mode in order {
            match mode {
                "bus" => {
                    b = rate(
                        a.messages,
                        bus::pipelined(&fresh(&a.dir, "bus"), a.messages),
                    )
                }
                "raw" => {
                    r = rate(
                        a.messages,
                        raw::pipelined(&fresh(&a.dir, "raw"), a.messages),
                    )
                }
                _ => {
                    let ours = bus::single(&fresh(&a.dir, "single"), a.single);
                    let base = baseline(&fresh(&a.dir, "baseline"), a.single);
                    eprintln!(
                        "round {round}: single publish {:.0} µs, write+fdatasync {:.0} µs: {:.2}x",
                        ours * 1e6,
                        base * 1e6,
                        ours / base
                    );
                    single_s.push(ours);
                    base_s.push(base);
                    single_ratio.push(ours / base);
                }
            }
        }
        eprintln!(
            "round {round}: bus {b:.0} msg/s, raw {r:.0} msg/s: {:.1} %",
            b / r * 100.0
        );
        bus_rates.push(b);
        raw_rates.push(r);
        ratio.push(b / r);
    }
    let q = |v: &[f64]| {
        let (p25, m, p75) = quartiles(v.to_vec());
        format!("{{ \"median\": {m:.4}, \"p25\": {p25:.4}, \"p75\": {p75:.4} }}")
    };
    let json = format!(
        "{{\n  \"rounds\": {},\n  \"messages\": {},\n  \"single\": {},\n  \"payload_bytes\": {PAYLOAD_BYTES},\n  \
         \"publishers\": {PUBLISHERS},\n  \"window\": {WINDOW},\n  \"lease\": {LEASE},\n  \
         \"bus_rate\": {:.1},\n  \"raw_rate\": {:.1},\n  \"bus_over_raw\": {},\n  \
         \"single_us\": {:.1},\n  \"baseline_us\": {:.1},\n  \"single_over_baseline\": {}\n}}\n",
        a.rounds,
        a.messages,
        a.single,
        median(&bus_rates),
        median(&raw_rates),
        q(&ratio),
        median(&single_s) * 1e6,
        median(&base_s) * 1e6,
        q(&single_ratio),
    );
    std::fs::write(&a.out, &json).unwrap();
    print!("{json}");
    let _ = std::fs::remove_dir_all(&a.dir);
}
