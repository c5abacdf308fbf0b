//! Throughput: a raw crossbeam channel, the bus with error handling off, and
//! the bus with error handling on, side by side in one run.
//!
//! Every message is a `bus_core::Envelope` with a fresh 64-byte payload
//! allocated per message. Topologies (publishers → subscribers):
//!
//! - `1to1`: one publisher thread, one subscriber (one worker).
//! - `4to1`: four publisher threads, one subscriber (one worker).
//! - `1to4`: one publisher thread, fan-out to four subscribers, each in its
//!   own consumer group so each receives every message (one worker each).
//!   The raw baseline sends a clone of the envelope to four channels. The
//!   element count is messages *published*; each is handled four times.
//!
//! An iteration publishes a fixed number of messages and ends when the
//! subscriber side has handled all of them (the raw consumers' counter; the
//! bus's `acked` count). Threads, channels and buses are set up once per
//! benchmark, outside the measured time.
//!
//! `cargo bench -p bus-bench --bench throughput -- --quick` for a short run.

// A harness = false target is not cfg(test): allow unwrap as every test does.
#![allow(clippy::unwrap_used)]

mod support;

use bus_bench::{FailEvery, Fixture, OnOptions, payload};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use support::{Raw, publish_from, settle, subscribe};

const TOPOLOGIES: [(&str, u64, u64); 3] = [("1to1", 1, 1), ("4to1", 4, 1), ("1to4", 1, 4)];

fn throughput(c: &mut Criterion) {
    let n = support::messages(100_000, 20_000);
    for (name, publishers, subscribers) in TOPOLOGIES {
        let mut g = c.benchmark_group(format!("throughput/{name}"));
        g.throughput(Throughput::Elements(n));

        let raw = Raw::new(subscribers as usize, |env| {
            std::hint::black_box(env.payload.len());
        });
        g.bench_function("raw_crossbeam", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let target = raw.handled.load(std::sync::atomic::Ordering::Relaxed)
                        + n * raw.consumers();
                    let t0 = Instant::now();
                    publish_from(publishers, 0, n, &|seq| raw.publish(payload(seq)));
                    raw.wait(target);
                    total += t0.elapsed();
                }
                total
            });
        });
        drop(raw);

        for (variant, make) in [
            ("bus_off", (|| Fixture::off()) as fn() -> Fixture),
            ("bus_on", || Fixture::on(OnOptions::default()).unwrap()),
        ] {
            let fx = make();
            subscribe(&fx, subscribers, FailEvery(0));
            g.bench_function(variant, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t0 = Instant::now();
                        publish_from(publishers, 0, n, &|seq| fx.publish(seq));
                        settle(&fx);
                        total += t0.elapsed();
                    }
                    total
                });
            });
            let stats = fx.shutdown().stats;
            assert!(stats.invariant_holds(), "{stats:?}");
            assert_eq!(stats.failed, 0);
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = throughput
}
criterion_main!(benches);
