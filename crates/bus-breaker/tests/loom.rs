//! Loom models of the state transitions (run with `--cfg bus_loom`).
#![cfg(bus_loom)]
#![allow(clippy::unwrap_used)] // tests may unwrap

use bus_breaker::{BreakerConfig, CircuitBreaker, SlidingWindow};
use bus_core::CircuitState;
use bus_core::time::ManualClock;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn open_breaker(permitted: u32) -> (Arc<CircuitBreaker>, ManualClock) {
    let clock = ManualClock::new();
    let b = CircuitBreaker::builder("loom")
        .config(
            BreakerConfig::builder()
                .consecutive_failures(Some(1))
                .window(SlidingWindow::Count { size: 2 })
                .permitted_calls_in_half_open(permitted)
                .build()
                .unwrap(),
        )
        .clock(std::sync::Arc::new(clock.clone()))
        .build()
        .unwrap();
    b.try_acquire().unwrap().failure();
    clock.advance(Duration::from_secs(60));
    (Arc::new(b), clock)
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn racing_open_to_half_open_admits_one_probe() {
    model(|| {
        let (b, _clock) = open_breaker(1);
        let admitted = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (b, admitted) = (b.clone(), admitted.clone());
                loom::thread::spawn(move || {
                    if let Ok(p) = b.try_acquire() {
                        assert_eq!(p.state(), CircuitState::HalfOpen);
                        admitted.fetch_add(1, Ordering::SeqCst);
                        p.failure();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::SeqCst), 1);
        assert_eq!(b.state(), CircuitState::Open);
    });
}

#[test]
fn dropped_probe_slot_is_reused_and_decision_waits_for_reports() {
    model(|| {
        let (b, _clock) = open_breaker(1);
        let b2 = b.clone();
        let t = loom::thread::spawn(move || {
            if let Ok(p) = b2.try_acquire() {
                drop(p); // unreported: gives the slot back
            }
        });
        // This thread keeps asking until it gets the probe (the other one
        // either never got it or released it).
        let p = loop {
            if let Ok(p) = b.try_acquire() {
                break p;
            }
            loom::thread::yield_now();
        };
        assert_eq!(p.state(), CircuitState::HalfOpen);
        p.success();
        t.join().unwrap();
        assert_eq!(b.state(), CircuitState::Closed);
    });
}

#[test]
fn concurrent_closed_outcomes_are_counted_once() {
    model(|| {
        let clock = ManualClock::new();
        let b = Arc::new(
            CircuitBreaker::builder("loom")
                .config(
                    BreakerConfig::builder()
                        .consecutive_failures(None)
                        .failure_rate_threshold(None)
                        .window(SlidingWindow::Count { size: 4 })
                        .build()
                        .unwrap(),
                )
                .clock(std::sync::Arc::new(clock))
                .build()
                .unwrap(),
        );
        let b2 = b.clone();
        let t = loom::thread::spawn(move || b2.try_acquire().unwrap().success());
        b.try_acquire().unwrap().failure();
        t.join().unwrap();
        let m = b.metrics();
        assert_eq!((m.calls, m.failed_calls), (2, 1));
    });
}
