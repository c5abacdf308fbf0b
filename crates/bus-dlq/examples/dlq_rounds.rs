//! Interleaved rounds of the DLQ goals (#5), for a noisy machine: each round
//! runs one pusher under `Full` and the `write` + `fdatasync` per record
//! baseline back to back (and 4 pipelined pushers beside the per-256
//! baseline); the median of the per-round ratios is the result, its
//! quartiles the spread. `cargo xtask bench` judges #5 from these.
//!
//! `cargo run --release -p bus-dlq --example dlq_rounds -- <dir> [rounds] [single|pipelined|both] [letters] [out.json]`
//! (`letters` per pipelined run, default 100 000; the criterion bench's
//! samples hold a few thousand to a few tens of thousands). With `out.json`,
//! the figures are also written there as `{"median", "p25", "p75"}` objects.

#![allow(clippy::unwrap_used)]

#[path = "../benches/support/mod.rs"]
mod support;

use bus_test::quartiles;
use support::{Push, time_new_store, write_sync};

/// Blocking pushes per single-pusher run.
const SINGLE: u64 = 500;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let rounds: usize = args.get(2).map_or(9, |r| r.parse().unwrap());
    let what = args.get(3).map_or("both", String::as_str).to_owned();
    let n: u64 = args.get(4).map_or(100_000, |n| n.parse().unwrap());
    let out = args.get(5);
    let (mut single, mut pipelined) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        if what != "pipelined" {
            let per = |d: std::time::Duration| d.as_secs_f64() / SINGLE as f64;
            let ours = per(time_new_store(&dir, 1, SINGLE, Push::Blocking { chunk: 1 }));
            let base = per(write_sync(&dir, SINGLE, 1));
            eprintln!(
                "single: {:.0} µs vs {:.0} µs: {:.2}x",
                ours * 1e6,
                base * 1e6,
                ours / base
            );
            single.push(ours / base);
        }
        if what != "single" {
            let ours = n as f64 / time_new_store(&dir, 4, n, Push::Pipelined).as_secs_f64();
            let base = n as f64 / write_sync(&dir, n, 256).as_secs_f64();
            eprintln!(
                "pipelined: {ours:.0}/s vs {base:.0}/s: {:.1} %",
                ours / base * 100.0
            );
            pipelined.push(ours / base);
        }
    }
    let mut json = Vec::new();
    if !single.is_empty() {
        let (q1, m, q3) = quartiles(single);
        println!(
            "single pusher / write+fdatasync per record: median {m:.2}x (quartiles {q1:.2}-{q3:.2})"
        );
        json.push(format!(
            "  \"single_over_per_record\": {{ \"median\": {m:.4}, \"p25\": {q1:.4}, \"p75\": {q3:.4} }}"
        ));
    }
    if !pipelined.is_empty() {
        let (q1, m, q3) = quartiles(pipelined);
        println!(
            "4 pipelined / write+fdatasync per 256: median {:.1} % (quartiles {:.1}-{:.1})",
            m * 100.0,
            q1 * 100.0,
            q3 * 100.0
        );
        json.push(format!(
            "  \"pipelined_over_per_256\": {{ \"median\": {m:.4}, \"p25\": {q1:.4}, \"p75\": {q3:.4} }}"
        ));
    }
    if let Some(out) = out {
        let text = format!(
            "{{\n  \"rounds\": {rounds},\n  \"letters\": {n},\n{}\n}}\n",
            json.join(",\n")
        );
        std::fs::write(out, text).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
