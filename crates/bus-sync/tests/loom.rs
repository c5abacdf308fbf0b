//! Loom models of the primitives (run with `--cfg bus_loom`; `cargo xtask
//! validate` does). Each asserts what its primitive's docs promise.
#![cfg(bus_loom)]
#![allow(clippy::unwrap_used)] // tests may unwrap

use bus_sync::prim::atomic::{AtomicBool, AtomicU64, Ordering};
use bus_sync::{RingPos, Striped, TaggedCount, TickRing, Writer};
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;

/// Three preemptions explore all five models in about 16 s here; four take
/// over a minute. An explicit `LOOM_MAX_PREEMPTIONS` wins, to explore
/// further by hand.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

fn sum(counts: &Striped<AtomicU64>) -> u64 {
    counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
}

/// Three threads count on one owned stripe and one shared (the sizes under
/// `bus_loom`): whichever stripe each gets (its own, the shared one beside
/// another sharer, or one an exited thread handed on), every count lands.
#[test]
fn striped_counts_from_owners_and_sharers_sum_exactly() {
    model(|| {
        let counts = Arc::new(Striped::new(|| AtomicU64::new(0)));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let counts = Arc::clone(&counts);
                thread::spawn(move || {
                    let (cell, w) = counts.mine();
                    w.add(cell, 1);
                    w.add(cell, 2);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(sum(&counts), 9);
    });
}

/// A reader summing the stripes while two threads count sees a sum that
/// never goes back, never exceeds what was counted, and includes all of a
/// writer it has seen finish.
#[test]
fn a_striped_sum_read_while_counting_stays_within_bounds() {
    model(|| {
        let counts = Arc::new(Striped::new(|| AtomicU64::new(0)));
        let done = Arc::new(AtomicBool::new(false));
        let first = {
            let (counts, done) = (Arc::clone(&counts), Arc::clone(&done));
            thread::spawn(move || {
                let (cell, w) = counts.mine();
                w.add(cell, 1);
                w.add(cell, 1);
                done.store(true, Ordering::Release);
            })
        };
        let second = {
            let counts = Arc::clone(&counts);
            thread::spawn(move || {
                let (cell, w) = counts.mine();
                w.add(cell, 1);
            })
        };
        let seen_done = done.load(Ordering::Acquire);
        let a = sum(&counts);
        let b = sum(&counts);
        assert!(a <= b && b <= 3, "read {a} then {b}");
        if seen_done {
            assert!(a >= 2, "the finished writer's 2 are missing from {a}");
        }
        first.join().unwrap();
        second.join().unwrap();
        assert_eq!(sum(&counts), 3);
    });
}

/// Threads asking for positions at once, one of them with a late time:
/// each gets the computed position, and what the ring remembers ends at
/// the furthest tick asked for, never behind it.
#[test]
fn tick_ring_positions_stay_computed_and_the_memory_only_moves_forward() {
    model(|| {
        let ring = Arc::new(TickRing::new(0, Duration::from_nanos(10), 4));
        let ask = |ring: &TickRing, now: u64| {
            assert_eq!(ring.pos(now), ring.pos_of(now / 10), "at {now} ns");
        };
        let ahead = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                ask(&ring, 95);
                ask(&ring, 1_003);
            })
        };
        let late = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                ask(&ring, 15);
                ask(&ring, 97);
            })
        };
        ask(&ring, 52);
        ahead.join().unwrap();
        late.join().unwrap();
        assert_eq!(ring.remembered(), Some(RingPos { tick: 100, slot: 0 }));
    });
}

/// Two threads restart a shared cell for a new tick at once while a late
/// writer adds to the tick it held: neither new count is lost, and the
/// late one never clobbers the new tick.
#[test]
fn a_shared_window_cell_loses_no_count_across_a_roll() {
    model(|| {
        let cell = Arc::new(TaggedCount::new());
        cell.add(Writer::shared(), 4, 3);
        let rollers: Vec<_> = (0..2)
            .map(|_| {
                let cell = Arc::clone(&cell);
                thread::spawn(move || cell.add(Writer::shared(), 8, 1))
            })
            .collect();
        cell.add(Writer::shared(), 4, 1);
        for t in rollers {
            t.join().unwrap();
        }
        assert_eq!((cell.read(8), cell.read(4)), (2, 0));
    });
}

/// Striped window cells written by their owners (plain loads and stores)
/// across a roll, by threads that may inherit one another's stripe: the
/// new tick holds every count made for it.
#[test]
fn striped_window_cells_lose_no_count_across_a_roll() {
    model(|| {
        let cells = Arc::new(Striped::new(TaggedCount::new));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let cells = Arc::clone(&cells);
                thread::spawn(move || {
                    let (cell, w) = cells.mine();
                    cell.add(w, 1, 1);
                    cell.add(w, 2, 1);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (old, new): (u64, u64) = cells
            .iter()
            .map(|c| (c.read(1), c.read(2)))
            .fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
        assert_eq!((old, new), (0, 3));
    });
}
