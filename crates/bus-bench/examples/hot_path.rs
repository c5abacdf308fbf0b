//! A steady stream through one variant, for a profiler to watch:
//!
//! ```text
//! cargo build --profile bench -p bus-bench --example hot_path
//! perf record --call-graph dwarf target/release/examples/hot_path on 300000
//! ```
//!
//! Variants: `raw` (a crossbeam channel), `off` (the bus, error handling
//! off), `on` (error handling on); one publisher, one subscriber (or
//! `GROUPS`, each receiving every message: `hot_path on 1000000 4` is the
//! benches' 1to4), the same fixtures as the benches. Prints messages per
//! second, then (on Linux) each thread's CPU time and context switches, so
//! where a topology's time goes shows without a profiler.

#![allow(clippy::unwrap_used)]

#[path = "../benches/support/mod.rs"]
mod support;

use bus_bench::{FailEvery, Fixture, OnOptions, payload};
use std::time::Instant;
use support::{Raw, publish_from, settle, subscribe};

fn main() {
    let mut args = std::env::args().skip(1);
    let variant = args.next().unwrap_or_else(|| "on".to_owned());
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let groups: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let started = Instant::now();
    match variant.as_str() {
        "raw" => {
            let raw = Raw::new(groups as usize, |env| {
                std::hint::black_box(env.payload.len());
            });
            publish_from(1, 0, n, &|seq| raw.publish(payload(seq)));
            raw.wait(n * groups);
            threads();
        }
        "on" | "off" => {
            let fx = if variant == "on" {
                Fixture::on(OnOptions::default()).unwrap()
            } else {
                Fixture::off()
            };
            subscribe(&fx, groups, FailEvery(0));
            publish_from(1, 0, n, &|seq| fx.publish(seq));
            settle(&fx);
            threads();
        }
        other => panic!("unknown variant {other}: raw, off or on"),
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{variant}: {n} messages in {secs:.3} s, {:.0} msg/s",
        n as f64 / secs
    );
}

/// Each live thread's CPU time and context switches (voluntary, forced), from
/// `/proc/self/task` (the publisher has exited by now: its share is the
/// process's total minus these).
fn threads() {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for t in tasks.flatten() {
        let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
        let stat = read("stat");
        // Fields after the parenthesised name: utime and stime are 14 and
        // 15, in clock ticks (USER_HZ, 100 per second on Linux).
        let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        let f: Vec<u64> = after.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        let status = read("status");
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map_or("?", str::trim)
                .to_owned()
        };
        let (vol, forced) = (
            field("voluntary_ctxt_switches:"),
            field("nonvoluntary_ctxt_switches:"),
        );
        if ticks > 0 {
            println!(
                "  {:<18} cpu {:>5} ms  switches {vol} / {forced}",
                read("comm").trim(),
                ticks * 10
            );
        }
    }
}
