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

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::path::PathBuf;
use std::time::Duration;

use support::{Push, time_new_store, write_sync};

fn scratch() -> tempfile::TempDir {
    // Same filesystem as the target directory.
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-scratch");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// `iters` letters from `threads` pushers into a new store.
fn pushes(threads: usize, iters: u64, how: Push) -> Duration {
    time_new_store(&scratch().path().join("dlq"), threads, iters, how)
}

/// The baseline, `sync_data` every `every` records.
fn baseline(iters: u64, every: u64) -> Duration {
    write_sync(scratch().path(), iters, every)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dlq_1KiB");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    let one_by_one = Push::Blocking { chunk: 1 };
    g.bench_function("full_4_pushers", |b| {
        b.iter_custom(|n| pushes(4, n, one_by_one))
    });
    g.bench_function("baseline_write_fdatasync_per_256", |b| {
        b.iter_custom(|n| baseline(n, 256))
    });
    g.bench_function("full_4_pushers_pipelined", |b| {
        b.iter_custom(|n| pushes(4, n, Push::Pipelined))
    });
    g.bench_function("full_4_pushers_push_many_64", |b| {
        b.iter_custom(|n| pushes(4, n, Push::Blocking { chunk: 64 }))
    });
    g.bench_function("full_1_pusher", |b| {
        b.iter_custom(|n| pushes(1, n, one_by_one))
    });
    g.bench_function("baseline_write_fdatasync_per_record", |b| {
        b.iter_custom(|n| baseline(n, 1))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
