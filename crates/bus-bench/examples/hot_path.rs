//! A steady 1→1 stream through one variant, for a profiler to watch:
//!
//! ```text
//! cargo build --profile bench -p bus-bench --example hot_path
//! perf record -g target/release/examples/hot_path on 2000000
//! ```
//!
//! Variants: `raw` (a crossbeam channel), `off` (the bus, error handling
//! off), `on` (error handling on). Prints messages per second.

#![allow(clippy::unwrap_used)]

use bus_bench::{FailEvery, Fixture, OnOptions, TOPIC, payload};
use bus_core::{Envelope, Topic};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
            let (tx, rx) = crossbeam_channel::bounded::<Envelope>(1024);
            let handled = Arc::new(AtomicU64::new(0));
            let h = Arc::clone(&handled);
            let consumer = std::thread::spawn(move || {
                while let Ok(env) = rx.recv() {
                    std::hint::black_box(env.payload.len());
                    h.fetch_add(1, Ordering::Relaxed);
                }
            });
            let topic = Topic::new(TOPIC).unwrap();
            for seq in 0..n {
                tx.send(Envelope::new(topic.clone(), payload(seq))).unwrap();
            }
            drop(tx);
            consumer.join().unwrap();
        }
        "on" | "off" => {
            let fx = if variant == "on" {
                Fixture::on(OnOptions::default()).unwrap()
            } else {
                Fixture::off()
            };
            let calls = Arc::new(AtomicU64::new(0));
            fx.bus
                .subscriber("profile")
                .topic(TOPIC)
                .start(FailEvery(0).handler(calls))
                .unwrap();
            for seq in 0..n {
                fx.publish(seq);
            }
            assert!(fx.wait_settled(n, Duration::from_secs(300)));
        }
        other => panic!("unknown variant {other}: raw, off or on"),
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{variant}: {n} messages in {secs:.3} s, {:.0} msg/s",
        n as f64 / secs
    );
}
