//! How fast reports go through the logger, and what `record` costs its caller.
//!
//! `cargo bench -p bus-logger -- --quick`. Besides criterion's estimates
//! (a mean per iteration), each `record/*` bench prints the median and p99 of
//! individually timed calls, because the goal (< 1 µs per call) is a median.

use bus_core::ErrorSink;
use bus_errors::{Classification, ErrorCategory, ErrorReport};
use bus_logger::{ErrorLogger, LoggerConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn sample_report() -> ErrorReport {
    ErrorReport::new(
        Classification::of(ErrorCategory::Connection),
        "orders-worker",
        "connection refused by db-primary:5432",
    )
    .with_topic("orders.created")
    .with_message_id(uuid::Uuid::now_v7())
    .with_correlation_id("req-7f3a9c")
    .with_context("db", "primary")
    .with_attempt(2)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Times `record` call by call; flushes (untimed) every `flush_every` calls
/// when set, so the channel never fills.
fn record_latency(c: &mut Criterion, name: &str, config: LoggerConfig, flush_every: Option<u64>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let logger = ErrorLogger::open(dir.path(), config).expect("open logger");
    let report = sample_report();
    let mut samples: Vec<Duration> = Vec::new();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                if flush_every.is_some_and(|n| i % n == 0) {
                    let _ = logger.flush();
                }
                let start = Instant::now();
                logger.record(black_box(&report));
                let took = start.elapsed();
                total += took;
                if samples.len() < 2_000_000 {
                    samples.push(took);
                }
            }
            total
        })
    });
    samples.sort_unstable();
    let counters = logger.counters();
    eprintln!(
        "{name}: per-call median {:?}, p99 {:?}, p99.9 {:?} over {} calls (timer overhead included); \
         lines written {}, shed {}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
        samples.len(),
        counters.lines_written,
        counters.log_dropped,
    );
}

fn latency(c: &mut Criterion) {
    // Channel never full: every report becomes a line.
    record_latency(
        c,
        "record/accepted",
        LoggerConfig::default().with_channel_capacity(8192),
        Some(4096),
    );
    // Writer outrun: most lines are shed (the overload path).
    record_latency(
        c,
        "record/shed",
        LoggerConfig::default().with_channel_capacity(1),
        None,
    );
}

fn throughput(c: &mut Criterion) {
    const N: u64 = 10_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let logger = ErrorLogger::open(
        dir.path(),
        LoggerConfig::default().with_channel_capacity(N as usize + 1),
    )
    .expect("open logger");
    let report = sample_report();
    let mut group = c.benchmark_group("throughput");
    group.throughput(Throughput::Elements(N));
    group.bench_function("record_and_write_10k", |b| {
        b.iter(|| {
            for _ in 0..N {
                logger.record(black_box(&report));
            }
            logger.flush().expect("flush");
        })
    });
    group.finish();
    let counters = logger.counters();
    eprintln!(
        "throughput: lines written {}, shed {}, rotations {}",
        counters.lines_written, counters.log_dropped, counters.rotations
    );
}

criterion_group!(benches, latency, throughput);
criterion_main!(benches);
