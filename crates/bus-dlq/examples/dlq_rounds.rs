//! Interleaved rounds of the DLQ goals, for a noisy machine: each round runs
//! one pusher under `Full` and the `write` + `fdatasync` per record baseline
//! back to back (and the pipelined 4 pushers beside the per-256 baseline),
//! and the median of the per-round ratios is printed.
//!
//! `cargo run --release -p bus-dlq --example dlq_rounds -- <dir> [rounds] [single|pipelined|both] [letters]`
//! (`letters` per pipelined run, default 100 000; the criterion bench's
//! samples hold a few thousand to a few tens of thousands).

#![allow(clippy::unwrap_used)]

#[path = "../benches/support/mod.rs"]
mod support;

use bus_dlq::{DlqConfig, SqliteDlq};
use std::io::Write;
use std::time::{Duration, Instant};

fn fresh(dir: &std::path::Path) -> SqliteDlq {
    let _ = std::fs::remove_dir_all(dir);
    SqliteDlq::open(DlqConfig::new(dir)).unwrap()
}

fn pushes(dir: &std::path::Path, threads: usize, n: u64, pipelined: bool) -> Duration {
    let dlq = fresh(dir);
    let letters = support::letters_per_thread(threads, n);
    let start = Instant::now();
    if pipelined {
        support::push_pipelined(&dlq, letters);
    } else {
        support::push_blocking(&dlq, &letters, 1);
    }
    let took = start.elapsed();
    dlq.close();
    took
}

fn write_sync(dir: &std::path::Path, n: u64, every: u64) -> Duration {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let mut f = std::fs::File::create(dir.join("log")).unwrap();
    let record = vec![0xAB_u8; support::PAYLOAD + 512];
    let start = Instant::now();
    for i in 1..=n {
        f.write_all(&record).unwrap();
        if i % every == 0 {
            f.sync_data().unwrap();
        }
    }
    f.sync_data().unwrap();
    start.elapsed()
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 4], v[v.len() / 2], v[v.len() * 3 / 4])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let rounds: usize = args.get(2).map_or(9, |r| r.parse().unwrap());
    let what = args.get(3).map_or("both", String::as_str).to_owned();
    let n: u64 = args.get(4).map_or(100_000, |n| n.parse().unwrap());
    let (mut single, mut pipelined) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        if what != "pipelined" {
            let ours = pushes(&dir, 1, 500, false).as_secs_f64() / 500.0;
            let base = write_sync(&dir, 500, 1).as_secs_f64() / 500.0;
            eprintln!(
                "single: {:.0} µs vs {:.0} µs: {:.2}x",
                ours * 1e6,
                base * 1e6,
                ours / base
            );
            single.push(ours / base);
        }
        if what != "single" {
            let ours = n as f64 / pushes(&dir, 4, n, true).as_secs_f64();
            let base = n as f64 / write_sync(&dir, n, 256).as_secs_f64();
            eprintln!(
                "pipelined: {ours:.0}/s vs {base:.0}/s: {:.1} %",
                ours / base * 100.0
            );
            pipelined.push(ours / base);
        }
    }
    if !single.is_empty() {
        let (q1, m, q3) = median(single);
        println!(
            "single pusher / write+fdatasync per record: median {m:.2}x (quartiles {q1:.2}-{q3:.2})"
        );
    }
    if !pipelined.is_empty() {
        let (q1, m, q3) = median(pipelined);
        println!(
            "4 pipelined / write+fdatasync per 256: median {:.1} % (quartiles {:.1}-{:.1})",
            m * 100.0,
            q1 * 100.0,
            q3 * 100.0
        );
    }
}
