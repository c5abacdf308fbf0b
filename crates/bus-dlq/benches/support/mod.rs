//! The letters, pushing loops and baseline shared by the DLQ bench and the
//! `dlq_profile` and `dlq_rounds` examples, so every figure of #5 measures
//! the same work.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use bus_core::{DeadLetter, DeadLetterReason, Envelope, Topic};
use bus_dlq::{DeadLetterStore, DlqConfig, SqliteDlq};
use bus_errors::{Classification, ErrorCategory, ErrorReport};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Payload bytes of every letter.
pub const PAYLOAD: usize = 1024;

/// Bytes of one baseline record: a letter's payload plus about what its
/// JSON columns take.
pub const BASELINE_RECORD: usize = PAYLOAD + 512;

/// How pushers hand letters to the store.
#[derive(Debug, Clone, Copy)]
pub enum Push {
    /// `push` (chunk 1) or `push_many` of `chunk` letters, waiting for each commit.
    Blocking {
        /// Letters per call.
        chunk: usize,
    },
    /// `push_then`, as the bus's workers do: nobody waits for a commit.
    Pipelined,
}

/// Times `letters` (one pusher thread per batch) going into `dlq` until the
/// last one is durable.
pub fn time_pushes(dlq: &SqliteDlq, letters: Vec<Vec<DeadLetter>>, how: Push) -> Duration {
    let start = Instant::now();
    match how {
        Push::Blocking { chunk } => push_blocking(dlq, &letters, chunk),
        Push::Pipelined => push_pipelined(dlq, letters),
    }
    start.elapsed()
}

/// [`time_pushes`] of `n` letters from `threads` pushers into a new store
/// at `dir` (anything there is removed first), closed afterwards.
pub fn time_new_store(dir: &Path, threads: usize, n: u64, how: Push) -> Duration {
    let _ = std::fs::remove_dir_all(dir);
    let dlq = SqliteDlq::open(DlqConfig::new(dir)).unwrap();
    let took = time_pushes(&dlq, letters_per_thread(threads, n), how);
    dlq.close();
    took
}

/// The baseline: appends `n` records of [`BASELINE_RECORD`] bytes to a new
/// file in `dir`, `sync_data` every `every` and once at the end.
pub fn write_sync(dir: &Path, n: u64, every: u64) -> Duration {
    std::fs::create_dir_all(dir).unwrap();
    let mut f = std::fs::File::create(dir.join("log")).unwrap();
    let record = vec![0xAB_u8; BASELINE_RECORD];
    let start = Instant::now();
    for i in 1..=n {
        f.write_all(&record).unwrap();
        if i % every == 0 {
            f.sync_data().unwrap();
        }
    }
    f.sync_data().unwrap();
    start.elapsed()
}

/// One 1 KiB letter (a fresh id each time).
pub fn letter() -> DeadLetter {
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

/// `n` letters shared out between `threads` pushers.
pub fn letters_per_thread(threads: usize, n: u64) -> Vec<Vec<DeadLetter>> {
    (0..threads)
        .map(|t| {
            (0..n / threads as u64 + u64::from((t as u64) < n % threads as u64))
                .map(|_| letter())
                .collect()
        })
        .collect()
}

/// One thread per batch, each pushing its letters and waiting for each
/// commit (`chunk` 1: `push`; more: `push_many` of `chunk` letters).
fn push_blocking(dlq: &SqliteDlq, letters: &[Vec<DeadLetter>], chunk: usize) {
    std::thread::scope(|s| {
        for batch in letters {
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
}

/// One thread per batch handing letters over with `push_then` (as the bus's
/// workers do); returns once every letter is durable.
fn push_pipelined(dlq: &SqliteDlq, letters: Vec<Vec<DeadLetter>>) {
    let total: usize = letters.iter().map(Vec::len).sum();
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<bool>();
    std::thread::scope(|s| {
        for batch in letters {
            let done_tx = done_tx.clone();
            s.spawn(move || {
                for l in batch {
                    let tx = done_tx.clone();
                    dlq.push_then(l, Box::new(move |r, _| tx.send(r.is_ok()).unwrap_or(())));
                }
            });
        }
    });
    for _ in 0..total {
        assert!(done_rx.recv().unwrap(), "a pipelined push failed");
    }
}
