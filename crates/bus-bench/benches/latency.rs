//! Publish-to-handler latency, paced so it measures latency, not queueing:
//! one message every 10 µs from one publisher to one subscriber, for the raw
//! crossbeam channel, the bus with error handling off and on.
//!
//! The publisher writes the send time (ns since a shared `Instant`) into the
//! first 8 bytes of the 64-byte payload just before publishing; the handler
//! records `now - sent` into an HDR histogram (3 significant digits).
//!
//! Per variant: 2 000 unrecorded warm-up messages, then a fixed run
//! (200 000 messages, 20 000 under `--quick`) whose p50/p99/p999/max go to
//! `target/bench-latency.json` (criterion has no percentile output). Then a
//! criterion benchmark whose "time per iteration" is the *mean* latency of a
//! message (iter_custom returns the sum of measured latencies).
//!
//! `cargo bench -p bus-bench --bench latency -- --quick` for a short run.

#![allow(clippy::unwrap_used)]

mod support;

use bus_bench::{Fixture, OnOptions, TOPIC, payload};
use bus_core::Message;
use criterion::{Criterion, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use support::Raw;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
const INTERVAL: Duration = Duration::from_micros(10);

fn now_ns() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

/// What every handler does: read the send time, record the latency.
#[derive(Clone)]
struct Recorder {
    hist: Arc<Mutex<Histogram<u64>>>,
    sum_ns: Arc<AtomicU64>,
    seen: Arc<AtomicU64>,
}

impl Recorder {
    fn new() -> Self {
        Self {
            // 1 ns to 60 s at 3 significant digits (saturating_record clamps, it does not resize).
            hist: Arc::new(Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
            )),
            sum_ns: Arc::new(AtomicU64::new(0)),
            seen: Arc::new(AtomicU64::new(0)),
        }
    }

    fn record(&self, payload: &[u8]) {
        let sent = u64::from_le_bytes(payload[..8].try_into().unwrap());
        let lat = now_ns().saturating_sub(sent).max(1);
        self.hist.lock().unwrap().saturating_record(lat);
        self.sum_ns.fetch_add(lat, Ordering::Relaxed);
        self.seen.fetch_add(1, Ordering::Release);
    }

    /// Publishes `n` paced messages through `publish` and waits for all.
    /// Returns the sum of their latencies.
    fn run(&self, n: u64, publish: &dyn Fn(Vec<u8>)) -> Duration {
        let sum0 = self.sum_ns.load(Ordering::Relaxed);
        let target = self.seen.load(Ordering::Relaxed) + n;
        let mut next = Instant::now();
        for seq in 0..n {
            while Instant::now() < next {
                std::hint::spin_loop();
            }
            next += INTERVAL;
            let mut p = payload(seq);
            p[..8].copy_from_slice(&now_ns().to_le_bytes());
            publish(p);
        }
        let deadline = Instant::now() + support::WAIT;
        while self.seen.load(Ordering::Acquire) < target {
            assert!(Instant::now() < deadline, "latency run stalled");
            std::thread::yield_now();
        }
        Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed) - sum0)
    }

    fn percentiles(&self, name: &str, n: u64, publish: &dyn Fn(Vec<u8>)) -> String {
        self.run(2_000, publish);
        self.hist.lock().unwrap().reset();
        self.run(n, publish);
        let h = self.hist.lock().unwrap();
        let json = format!(
            "\"{name}\": {{\"count\": {}, \"mean_ns\": {:.0}, \"p50_ns\": {}, \"p99_ns\": {}, \"p999_ns\": {}, \"max_ns\": {}}}",
            h.len(),
            h.mean(),
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
        eprintln!("latency {name}: {json}");
        json
    }
}

fn latency(c: &mut Criterion) {
    let n = support::messages(200_000, 20_000);
    let mut results = Vec::new();
    let mut g = c.benchmark_group("latency");

    {
        let rec = Recorder::new();
        let r = rec.clone();
        let raw = Raw::new(1, move |env| r.record(&env.payload));
        let publish = |p: Vec<u8>| raw.publish(p);
        results.push(rec.percentiles("raw_crossbeam", n, &publish));
        g.bench_function("raw_crossbeam", |b| {
            b.iter_custom(|iters| rec.run(iters, &publish))
        });
    }

    for (variant, make) in [
        ("bus_off", (|| Fixture::off()) as fn() -> Fixture),
        ("bus_on", || Fixture::on(OnOptions::default()).unwrap()),
    ] {
        let fx = make();
        let rec = Recorder::new();
        let r = rec.clone();
        fx.bus
            .subscriber("bench-latency")
            .topic(TOPIC)
            .start(move |m: &Message<'_>| -> Result<(), std::io::Error> {
                r.record(&m.payload);
                Ok(())
            })
            .unwrap();
        let publish = |p: Vec<u8>| fx.publish_payload(p);
        results.push(rec.percentiles(variant, n, &publish));
        g.bench_function(variant, |b| b.iter_custom(|iters| rec.run(iters, &publish)));
        let stats = fx.shutdown().stats;
        assert!(stats.invariant_holds(), "{stats:?}");
    }
    g.finish();

    support::write_json(
        "bench-latency.json",
        &format!(
            "{{\n  \"interval_ns\": {},\n  \"messages\": {n},\n  \"quick\": {},\n  \"variants\": {{\n    {}\n  }}\n}}\n",
            INTERVAL.as_nanos(),
            bus_bench::quick(),
            results.join(",\n    ")
        ),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = latency
}
criterion_main!(benches);
