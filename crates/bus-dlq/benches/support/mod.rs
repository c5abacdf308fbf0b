//! The letters and pushing loops shared by the DLQ bench and the
//! `dlq_profile` example.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use bus_core::{DeadLetter, DeadLetterReason, Envelope, Topic};
use bus_dlq::{DeadLetterStore, SqliteDlq};
use bus_errors::{Classification, ErrorCategory, ErrorReport};

/// Payload bytes of every letter.
pub const PAYLOAD: usize = 1024;

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
pub fn push_blocking(dlq: &SqliteDlq, letters: &[Vec<DeadLetter>], chunk: usize) {
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
pub fn push_pipelined(dlq: &SqliteDlq, letters: Vec<Vec<DeadLetter>>) {
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
