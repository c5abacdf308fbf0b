//! A steady stream through one variant, for a profiler to watch:
//!
//! ```text
//! cargo build --profile bench -p bus-bench --example hot_path
//! perf record --call-graph dwarf target/release/examples/hot_path on 300000
//! ```
//!
//! Variants: `raw` (a crossbeam channel), `off` (the bus, error handling
//! off), `on` (error handling on); one publisher, one subscriber, the same
//! fixtures as the benches. Prints messages per second.

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
    let started = Instant::now();
    match variant.as_str() {
        "raw" => {
            let raw = Raw::new(1, |env| {
                std::hint::black_box(env.payload.len());
            });
            publish_from(1, 0, n, &|seq| raw.publish(payload(seq)));
            raw.wait(n);
        }
        "on" | "off" => {
            let fx = if variant == "on" {
                Fixture::on(OnOptions::default()).unwrap()
            } else {
                Fixture::off()
            };
            subscribe(&fx, 1, FailEvery(0));
            publish_from(1, 0, n, &|seq| fx.publish(seq));
            settle(&fx);
        }
        other => panic!("unknown variant {other}: raw, off or on"),
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{variant}: {n} messages in {secs:.3} s, {:.0} msg/s",
        n as f64 / secs
    );
}
