//! Publish-to-handler latency, paced so it measures latency, not queueing:
//! one message every 10 µs from one publisher to one subscriber, for the raw
//! crossbeam channel, the bus with error handling off and on.
//!
//! The publisher writes the send time (ns since a shared `Instant`) into the
//! first 8 bytes of the 64-byte payload just before publishing; the handler
//! records `now - sent` into an HDR histogram (3 significant digits).
//!
//! The three variants live side by side for the whole bench (the same
//! threads exist during every measurement) and are measured in interleaved
//! rounds: 2 000 unrecorded warm-up messages each, then 20 rounds (5 under
//! `--quick`) in which each variant in turn sends 10 000 messages (4 000).
//! Each round gives each variant a p99; the added p99 is, per round, the
//! bus's p99 minus raw's, and its median over the rounds is the result: on
//! a shared two-core machine a single preemption of a few milliseconds
//! blows up the p99 of whichever run it lands in, and pooling would charge
//! it to whichever variant was unlucky. The pooled percentiles of every
//! variant go to `target/bench-latency.json` too (criterion has no
//! percentile output). Then a criterion benchmark per variant whose "time
//! per iteration" is the *mean* latency of a message (iter_custom returns the
//! sum of measured latencies).
//!
//! `cargo bench -p bus-bench --bench latency -- --quick` for a short run.

#![allow(clippy::unwrap_used)]

mod support;

use bus_bench::{Fixture, OnOptions, TOPIC, payload, quartiles};
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

    /// The p99 of a run of `n` messages, added to `pooled`.
    fn round_p99(&self, n: u64, publish: &dyn Fn(Vec<u8>), pooled: &mut Histogram<u64>) -> u64 {
        self.hist.lock().unwrap().reset();
        self.run(n, publish);
        let h = self.hist.lock().unwrap();
        pooled.add(&*h).unwrap();
        h.value_at_quantile(0.99)
    }
}

/// A variant: its recorder and how it publishes a payload.
type Variant<'a> = (&'a Recorder, &'a dyn Fn(Vec<u8>));

/// Pooled percentiles of one variant as a JSON member.
fn percentiles(name: &str, h: &Histogram<u64>) -> String {
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

fn latency(c: &mut Criterion) {
    let quick = bus_bench::quick();
    let (rounds, per_round) = if quick { (5, 4_000) } else { (20, 10_000) };
    let names = ["raw_crossbeam", "bus_off", "bus_on"];

    let raw_rec = Recorder::new();
    let r = raw_rec.clone();
    let raw = Raw::new(1, move |env| r.record(&env.payload));
    let fixtures = [Fixture::off(), Fixture::on(OnOptions::default()).unwrap()];
    let bus_recs = [Recorder::new(), Recorder::new()];
    for (fx, rec) in fixtures.iter().zip(&bus_recs) {
        let r = rec.clone();
        fx.bus
            .subscriber("bench-latency")
            .topic(TOPIC)
            .start(move |m: &Message<'_>| -> Result<(), std::io::Error> {
                r.record(&m.payload);
                Ok(())
            })
            .unwrap();
    }
    let publish_raw = |p: Vec<u8>| raw.publish(p);
    let publish_off = |p: Vec<u8>| fixtures[0].publish_payload(p);
    let publish_on = |p: Vec<u8>| fixtures[1].publish_payload(p);
    let variants: [Variant<'_>; 3] = [
        (&raw_rec, &publish_raw),
        (&bus_recs[0], &publish_off),
        (&bus_recs[1], &publish_on),
    ];

    for (rec, publish) in &variants {
        rec.run(2_000, *publish);
    }
    let mut pooled: Vec<Histogram<u64>> = (0..3)
        .map(|_| Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap())
        .collect();
    // p99 per round and variant, in a rotating order so no variant always
    // runs right after the same other one.
    let mut p99 = vec![[0f64; 3]; rounds];
    for (round, row) in p99.iter_mut().enumerate() {
        for k in 0..3 {
            let i = (round + k) % 3;
            let (rec, publish) = variants[i];
            row[i] = rec.round_p99(per_round, publish, &mut pooled[i]) as f64;
        }
    }
    let added = |bus: usize, base: usize| quartiles(p99.iter().map(|r| r[bus] - r[base]).collect());
    let member = |name: &str, (p25, mid, p75): (f64, f64, f64)| {
        eprintln!("latency {name}: median {mid:.0} ns (p25 {p25:.0}, p75 {p75:.0})");
        format!("\"{name}\": {{\"median\": {mid:.0}, \"p25\": {p25:.0}, \"p75\": {p75:.0}}}")
    };
    let mut results: Vec<String> = names
        .iter()
        .zip(&pooled)
        .map(|(name, h)| percentiles(name, h))
        .collect();
    results.push(member("added_p99_on_raw_ns", added(2, 0)));
    results.push(member("added_p99_on_off_ns", added(2, 1)));
    let worst = p99.iter().map(|r| r[2] - r[0]).fold(f64::MIN, f64::max);
    results.push(format!("\"added_p99_on_raw_worst_round_ns\": {worst:.0}"));

    let mut g = c.benchmark_group("latency");
    for (name, (rec, publish)) in names.iter().zip(variants) {
        g.bench_function(*name, |b| b.iter_custom(|iters| rec.run(iters, publish)));
    }
    g.finish();
    for fx in fixtures {
        let stats = fx.shutdown().stats;
        assert!(stats.invariant_holds(), "{stats:?}");
    }
    drop(raw);

    support::write_json(
        "bench-latency.json",
        &format!(
            "{{\n  \"interval_ns\": {},\n  \"rounds\": {rounds},\n  \"messages\": {},\n  \"quick\": {quick},\n  \"variants\": {{\n    {}\n  }}\n}}\n",
            INTERVAL.as_nanos(),
            rounds as u64 * per_round,
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
