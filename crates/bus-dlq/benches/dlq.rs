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

mod support;

use bus_dlq::{DlqConfig, SqliteDlq};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{PAYLOAD, letters_per_thread, push_blocking, push_pipelined};

fn scratch() -> tempfile::TempDir {
    // Same filesystem as the target directory.
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-scratch");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
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
    push_blocking(&dlq, &letters, chunk);
    let took = start.elapsed();
    dlq.close();
    took
}

/// `threads` pushers handing letters over with `push_then` (as the bus's
/// workers do): nobody waits for a commit, so batches fill up; the clock stops
/// when the last letter is durable.
fn push_then_all(threads: usize, iters: u64) -> Duration {
    let dir = scratch();
    let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
    let letters = letters_per_thread(threads, iters);
    let start = Instant::now();
    push_pipelined(&dlq, letters);
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
        b.iter_custom(|n| push_then_all(4, n))
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
