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
            let consumer = std::thread::Builder::new()
                .name("raw-consumer".to_owned())
                .spawn(move || {
                    while let Ok(env) = rx.recv() {
                        std::hint::black_box(env.payload.len());
                        h.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .unwrap();
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
        // The publisher alone: the handler holds its first message until
        // every publish is done, so nothing is consumed while publishing.
        "pub-raw" => {
            let (tx, rx) = crossbeam_channel::bounded::<Envelope>(n as usize);
            let topic = Topic::new(TOPIC).unwrap();
            for seq in 0..n {
                tx.send(Envelope::new(topic.clone(), payload(seq))).unwrap();
            }
            println!(
                "publish only: {:.0} ns each",
                started.elapsed().as_nanos() as f64 / n as f64
            );
            drop(rx);
        }
        "pub-off" | "pub-on" => {
            let fx = if variant == "pub-on" {
                Fixture::on(OnOptions::default()).unwrap()
            } else {
                Fixture::off()
            };
            let gate = Arc::new(std::sync::Barrier::new(2));
            let g = Arc::clone(&gate);
            let first = std::sync::atomic::AtomicBool::new(true);
            fx.bus
                .subscriber("profile")
                .topic(TOPIC)
                .capacity(n as usize + 1)
                .start(
                    move |_m: &bus_core::Message<'_>| -> Result<(), std::io::Error> {
                        if first.swap(false, Ordering::Relaxed) {
                            g.wait();
                        }
                        Ok(())
                    },
                )
                .unwrap();
            let t0 = Instant::now();
            for seq in 0..n {
                fx.publish(seq);
            }
            println!(
                "publish only: {:.0} ns each",
                t0.elapsed().as_nanos() as f64 / n as f64
            );
            gate.wait();
            assert!(fx.wait_settled(n, Duration::from_secs(300)));
        }
        other => panic!("unknown variant {other}: raw, off, on, pub-raw, pub-off or pub-on"),
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{variant}: {n} messages in {secs:.3} s, {:.0} msg/s",
        n as f64 / secs
    );
}
