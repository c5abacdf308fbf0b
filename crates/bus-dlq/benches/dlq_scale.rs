//! The DLQ commands an operator runs on a large store, at 100 000 letters:
//! what `busctl dlq export`, `import`, `replay` (marking) and `verify` do,
//! through the same library calls.
//!
//! - `export`: every letter as JSON lines to a file.
//! - `import`: that file into a new store.
//! - `mark_replay`: every dead letter marked `replay_requested`.
//! - `verify`: integrity check plus decoding every row.
//!
//! Letters look like the demo's: a small JSON payload, a header, two
//! earlier attempts in their history. Goals: export and import under 5 s
//! each, marking under 1 s.
//!
//! `cargo bench -p bus-dlq --bench dlq_scale -- --quick` for a short run.

// A harness = false target is not cfg(test): allow unwrap as every test does.
#![allow(clippy::unwrap_used)]

use bus_core::{AttemptRecord, DeadLetter, DeadLetterReason, Envelope, Topic};
use bus_dlq::{DlqConfig, DlqFile, DlqQuery, Filter, SqliteDlq};
use bus_errors::{Classification, ErrorCategory, ErrorReport, Severity};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Letters in the store.
const LETTERS: u64 = 100_000;

fn scratch() -> tempfile::TempDir {
    // Same filesystem as the target directory.
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-scratch");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// A letter like the demo's (JSON payload, two failed attempts before).
fn letter(seq: u64) -> DeadLetter {
    let payload = format!(
        "{{\"seq\":{seq},\"fault\":\"transient\",\"amount_cents\":{},\"customer\":\"c-{}\"}}",
        seq % 10_000,
        seq % 977
    );
    let mut env = Envelope::new(Topic::new("orders.created").unwrap(), payload)
        .with_header("tenant", "acme")
        .with_content_type("application/json");
    env.attempt = 3;
    for attempt in 1..=2 {
        env.history.push(AttemptRecord {
            attempt,
            at: SystemTime::now(),
            component: "billing".into(),
            category: ErrorCategory::Timeout,
            severity: Severity::High,
            error_type: "demo::TransientError".into(),
            message: format!("upstream timed out after {}ms", 1000 + attempt),
            decision: "retry in 1.5s".into(),
        });
    }
    let report = ErrorReport::new(
        Classification::of(ErrorCategory::Timeout),
        "billing",
        "upstream timed out after 1003ms",
    );
    DeadLetter::new(
        env,
        report,
        DeadLetterReason::RetriesExhausted,
        "billing",
        "billing",
    )
}

/// A closed store of [`LETTERS`] letters at `dir`.
fn seed(dir: &Path) {
    let dlq = SqliteDlq::open(DlqConfig::new(dir)).unwrap();
    for chunk in (0..LETTERS).collect::<Vec<_>>().chunks(1024) {
        let letters: Vec<_> = chunk.iter().map(|&i| letter(i)).collect();
        assert!(dlq.push_many(&letters).iter().all(Result::is_ok));
    }
    dlq.close();
}

/// Copies the store's files from `from` to a new `to`.
fn copy_store(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn export(src: &Path, file: &Path) -> Duration {
    let start = Instant::now();
    let dlq = DlqFile::open_read_only(src).unwrap();
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).unwrap());
    assert_eq!(dlq.export_jsonl(&Filter::all(), &mut out).unwrap(), LETTERS);
    out.into_inner().unwrap().sync_all().unwrap();
    start.elapsed()
}

fn import(file: &Path, dst: &Path) -> Duration {
    let _ = std::fs::remove_dir_all(dst);
    let start = Instant::now();
    let dlq = DlqFile::create_or_open(dst).unwrap();
    let mut input = std::io::BufReader::new(std::fs::File::open(file).unwrap());
    assert_eq!(dlq.import_jsonl(&mut input).unwrap().inserted, LETTERS);
    start.elapsed()
}

fn mark(pristine: &Path, work: &Path) -> Duration {
    copy_store(pristine, work);
    let start = Instant::now();
    let dlq = DlqFile::open_read_write(work).unwrap();
    assert_eq!(dlq.request_replay(&Filter::all(), None).unwrap(), LETTERS);
    start.elapsed()
}

fn verify(src: &Path) -> Duration {
    let start = Instant::now();
    assert!(
        DlqFile::open_read_only(src)
            .unwrap()
            .verify()
            .unwrap()
            .is_ok()
    );
    start.elapsed()
}

fn repeat(iters: u64, mut once: impl FnMut() -> Duration) -> Duration {
    (0..iters).map(|_| once()).sum()
}

fn bench(c: &mut Criterion) {
    let dir = scratch();
    let src = dir.path().join("src");
    seed(&src);
    let file = dir.path().join("letters.jsonl");
    let (dst, work) = (dir.path().join("dst"), dir.path().join("work"));
    let mut g = c.benchmark_group("dlq_100k_letters");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(LETTERS));
    g.bench_function("export", |b| {
        b.iter_custom(|n| repeat(n, || export(&src, &file)))
    });
    g.bench_function("import", |b| {
        b.iter_custom(|n| repeat(n, || import(&file, &dst)))
    });
    g.bench_function("mark_replay", |b| {
        b.iter_custom(|n| repeat(n, || mark(&src, &work)))
    });
    g.bench_function("verify", |b| b.iter_custom(|n| repeat(n, || verify(&src))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
