//! Many delivery threads calling on_event at once keep exact counts.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use bus_core::BusEvent;
use bus_errors::ErrorCategory;
use bus_health::HealthConfig;
use std::time::Duration;
use support::*;

const THREADS: u64 = 8;
const PER_THREAD: u64 = 100_000;

#[test]
fn eight_threads_keep_exact_totals_and_window_counts() {
    let (m, _clock) = monitor(HealthConfig::default());
    let r = report(
        ErrorCategory::Timeout,
        bus_errors::Severity::Medium,
        "billing",
    );
    std::thread::scope(|s| {
        for i in 0..THREADS {
            let (m, r) = (&m, &r);
            s.spawn(move || {
                let t = topic();
                for n in 0..PER_THREAD {
                    if (n + i) % 4 == 0 {
                        m.observe(&BusEvent::Failed { report: r });
                    } else {
                        m.observe(&BusEvent::Acked {
                            topic: &t,
                            component: "billing",
                            created_at: std::time::SystemTime::UNIX_EPOCH,
                            handler_time: Duration::from_micros(n % 5000),
                            attempt: 1,
                        });
                    }
                }
            });
        }
    });
    let rep = m.report();
    let total = THREADS * PER_THREAD;
    assert_eq!(rep.totals.failed, total / 4);
    assert_eq!(rep.totals.acked, total - total / 4);
    assert_eq!(rep.window.failed, total / 4, "the window is exact too");
    assert_eq!(rep.window.acked, total - total / 4);
    assert_eq!(
        rep.categories.get(&ErrorCategory::Timeout),
        Some(&(total / 4))
    );
    assert_eq!(rep.latency.count, total - total / 4);
}

#[test]
fn threads_racing_across_bucket_boundaries_lose_nothing_in_totals() {
    let (m, clock) = monitor(HealthConfig::default());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| acked(&m, 50_000, 1));
        }
        s.spawn(|| {
            for _ in 0..200 {
                clock.advance(Duration::from_millis(100)); // 20 s in all: inside the window
            }
        });
    });
    let rep = m.report();
    assert_eq!(rep.totals.acked, 200_000);
    assert_eq!(
        rep.window.acked, 200_000,
        "buckets reset lazily without losing increments"
    );
}
