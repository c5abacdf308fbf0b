//! Many threads at once: half-open admission and closed-state counting.
#![allow(clippy::unwrap_used)] // tests may unwrap

use bus_breaker::{BreakerConfig, CircuitBreaker, SlidingWindow};
use bus_core::CircuitState;
use bus_core::time::ManualClock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const THREADS: usize = 8;

#[test]
fn half_open_never_admits_more_than_the_permitted_probes() {
    const PERMITTED: u32 = 3;
    const EPISODES: usize = 200;
    let clock = ManualClock::new();
    let breaker = Arc::new(
        CircuitBreaker::builder("stress")
            .config(
                BreakerConfig::builder()
                    .consecutive_failures(Some(1))
                    .permitted_calls_in_half_open(PERMITTED)
                    .build()
                    .unwrap(),
            )
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap(),
    );
    let start = Arc::new(Barrier::new(THREADS + 1));
    let end = Arc::new(Barrier::new(THREADS + 1));
    let admitted = Arc::new(AtomicU32::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (b, start, end, admitted) = (
                breaker.clone(),
                start.clone(),
                end.clone(),
                admitted.clone(),
            );
            std::thread::spawn(move || {
                for episode in 0..EPISODES {
                    start.wait();
                    for attempt in 0..50 {
                        let Ok(p) = b.try_acquire() else { continue };
                        if p.state() != CircuitState::HalfOpen {
                            p.success(); // already closed again
                            continue;
                        }
                        admitted.fetch_add(1, Ordering::SeqCst);
                        match (episode % 3, (t + attempt) % 2) {
                            (0, _) => p.failure(),
                            (1, _) => p.success(),
                            // Some probes are dropped: their slots are reused,
                            // so count only the ones that report.
                            (_, 0) => {
                                admitted.fetch_sub(1, Ordering::SeqCst);
                                drop(p);
                            }
                            _ => p.success(),
                        }
                    }
                    end.wait();
                }
            })
        })
        .collect();
    for episode in 0..EPISODES {
        breaker.reset();
        breaker.try_acquire().unwrap().failure();
        assert_eq!(breaker.state(), CircuitState::Open);
        clock.advance(Duration::from_secs(60));
        admitted.store(0, Ordering::SeqCst);
        start.wait();
        end.wait();
        let n = admitted.load(Ordering::SeqCst);
        assert!(n <= PERMITTED, "episode {episode}: {n} probes reported");
        let expected = if episode % 3 == 0 {
            CircuitState::Open
        } else {
            CircuitState::Closed
        };
        if n == PERMITTED {
            assert_eq!(breaker.state(), expected, "episode {episode}");
        }
    }
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn concurrent_outcomes_are_each_counted_exactly_once() {
    const CALLS: u64 = 20_000;
    let breaker = Arc::new(
        CircuitBreaker::builder("count")
            .config(
                BreakerConfig::builder()
                    .consecutive_failures(None)
                    .failure_rate_threshold(None)
                    .window(SlidingWindow::Count { size: 1_000_000 })
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
    );
    let workers: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            let b = breaker.clone();
            std::thread::spawn(move || {
                for i in 0..CALLS {
                    let p = b.try_acquire().unwrap();
                    // Thread 0 fails now and then, so the ring goes dirty and
                    // clean while the others count in their stripes.
                    if t == 0 && i % 1000 == 0 {
                        p.failure()
                    } else {
                        p.success()
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let m = breaker.metrics();
    assert_eq!(m.calls, CALLS * THREADS as u64);
    assert_eq!(m.failed_calls, CALLS / 1000);
}
