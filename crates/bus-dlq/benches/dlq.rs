//! Group-commit throughput against plain `write` + `fdatasync`.
//!
//! Every group runs in the same process on the same filesystem (temp dirs
//! under the target directory), so the ratios compare like with like:
//!
//! - `full_4_pushers`: 1 KiB letters from 4 threads, `Durability::Full`,
//!   beside `baseline_write_fdatasync_per_256`: the same bytes appended with
//!   one `sync_data` per 256 records.
//! - `full_1_pusher` beside `baseline_write_fdatasync_per_record`.
//!
//! `cargo bench -p bus-dlq -- --quick` for a short run.

// A harness = false target is not cfg(test): allow unwrap as every test does.
#![allow(clippy::unwrap_used)]

use bus_core::{DeadLetter, DeadLetterReason, Envelope, Topic};
use bus_dlq::{DeadLetterStore, DlqConfig, SqliteDlq};
use bus_errors::{Classification, ErrorCategory, ErrorReport};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PAYLOAD: usize = 1024;

fn scratch() -> tempfile::TempDir {
    // Same filesystem as the target directory.
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-scratch");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn letter() -> DeadLetter {
    let env = Envelope::new(Topic::new("bench.orders").unwrap(), vec![0xAB_u8; PAYLOAD]);
    let report = ErrorReport::new(
        Classification::of(ErrorCategory::Timeout),
        "bench",
        "timed out after 1500ms",
    );
    DeadLetter::new(
        env,
        report,
        DeadLetterReason::RetriesExhausted,
        "bench",
        "g",
    )
}

/// `iters` letters shared out between `threads` pushers.
fn letters_per_thread(threads: usize, iters: u64) -> Vec<Vec<DeadLetter>> {
    (0..threads)
        .map(|t| {
            (0..iters / threads as u64 + u64::from((t as u64) < iters % threads as u64))
                .map(|_| letter())
                .collect()
        })
        .collect()
}

fn push_with(threads: usize, iters: u64) -> Duration {
    push_chunks(threads, iters, 1)
}

/// `threads` pushers, each handing `chunk` letters at a time to `push_many`.
fn push_chunks(threads: usize, iters: u64, chunk: usize) -> Duration {
    let dir = scratch();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let letters = letters_per_thread(threads, iters);
    let start = Instant::now();
    std::thread::scope(|s| {
        for batch in &letters {
            let dlq = &dlq;
            s.spawn(move || {
                if chunk == 1 {
                    for l in batch {
                        dlq.push(l).unwrap();
                    }
                } else {
                    for c in batch.chunks(chunk) {
                        assert!(dlq.push_many(c).iter().all(Result::is_ok));
                    }
                }
            });
        }
    });
    let took = start.elapsed();
    dlq.close();
    took
}

/// `threads` pushers handing letters over with `push_then` (as the bus's
/// workers do): nobody waits for a commit, so batches fill up; the clock stops
/// when the last letter is durable.
fn push_pipelined(threads: usize, iters: u64) -> Duration {
    let dir = scratch();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let letters = letters_per_thread(threads, iters);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<bool>();
    let start = Instant::now();
    std::thread::scope(|s| {
        for batch in letters {
            let dlq = &dlq;
            let done_tx = done_tx.clone();
            s.spawn(move || {
                for l in batch {
                    let tx = done_tx.clone();
                    dlq.push_then(l, Box::new(move |r, _| tx.send(r.is_ok()).unwrap_or(())));
                }
            });
        }
    });
    for _ in 0..iters {
        assert!(done_rx.recv().unwrap(), "a pipelined push failed");
    }
    let took = start.elapsed();
    dlq.close();
    took
}

/// Appends `iters` records of one letter's row size, `sync_data` every `every`.
fn write_sync(iters: u64, every: u64) -> Duration {
    let dir = scratch();
    let mut f = std::fs::File::create(dir.path().join("log")).unwrap();
    let record = vec![0xAB_u8; PAYLOAD + 512]; // payload plus the JSON columns
    let start = Instant::now();
    for i in 1..=iters {
        f.write_all(&record).unwrap();
        if i % every == 0 {
            f.sync_data().unwrap();
        }
    }
    f.sync_data().unwrap();
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dlq_1KiB");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.bench_function("full_4_pushers", |b| b.iter_custom(|n| push_with(4, n)));
    g.bench_function("baseline_write_fdatasync_per_256", |b| {
        b.iter_custom(|n| write_sync(n, 256))
    });
    g.bench_function("full_4_pushers_pipelined", |b| {
        b.iter_custom(|n| push_pipelined(4, n))
    });
    g.bench_function("full_4_pushers_push_many_64", |b| {
        b.iter_custom(|n| push_chunks(4, n, 64))
    });
    g.bench_function("full_1_pusher", |b| b.iter_custom(|n| push_with(1, n)));
    g.bench_function("baseline_write_fdatasync_per_record", |b| {
        b.iter_custom(|n| write_sync(n, 1))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
