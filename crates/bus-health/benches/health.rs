//! Observer overhead per event: `HealthMonitor::on_event` for Acked and
//! Failed, single thread and with a second thread hammering the same monitor.
//!
//! `on_event` gets the time from the bus, which reads its clock once per
//! delivery anyway (to time the handler); so the events here carry a time
//! read once. `observe/acked` is the same event stamped by the monitor's own
//! system clock, for what a caller outside a bus pays (clock read included).

use bus_core::time::{Clock, SystemClock};
use bus_core::{BusEvent, Observer, Topic};
use bus_errors::{Classification, ErrorCategory, ErrorReport, Severity};
use bus_health::HealthMonitor;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn events(c: &mut Criterion) {
    let monitor = HealthMonitor::new();
    let topic = Topic::new("orders.created").unwrap_or_else(|e| panic!("{e}"));
    let report = ErrorReport::new(
        Classification::new(ErrorCategory::Timeout, Severity::Medium),
        "billing",
        "timed out",
    );
    let acked = BusEvent::Acked {
        topic: &topic,
        component: "billing",
        created_at: std::time::SystemTime::UNIX_EPOCH,
        handler_time: Duration::from_micros(300),
        attempt: 1,
    };
    let failed = BusEvent::Failed { report: &report };

    let at = SystemClock.stamp();
    let mut g = c.benchmark_group("on_event");
    g.bench_function("acked/1-thread", |b| {
        b.iter(|| monitor.on_event(black_box(at), black_box(&acked)))
    });
    g.bench_function("failed/1-thread", |b| {
        b.iter(|| monitor.on_event(black_box(at), black_box(&failed)))
    });

    // A second thread keeps hitting the same counters while we measure.
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (monitor, stop) = (monitor.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let topic = Topic::new("orders.created").unwrap_or_else(|e| panic!("{e}"));
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..1024 {
                    monitor.on_event(
                        at,
                        &BusEvent::Acked {
                            topic: &topic,
                            component: "billing",
                            created_at: std::time::SystemTime::UNIX_EPOCH,
                            handler_time: Duration::from_micros(300),
                            attempt: 1,
                        },
                    );
                }
            }
        })
    };
    g.bench_function("acked/2-threads", |b| {
        b.iter(|| monitor.on_event(black_box(at), black_box(&acked)))
    });
    g.bench_function("failed/2-threads", |b| {
        b.iter(|| monitor.on_event(black_box(at), black_box(&failed)))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();
    g.finish();

    c.bench_function("observe/acked", |b| {
        b.iter(|| monitor.observe(black_box(&acked)))
    });

    c.bench_function("report", |b| b.iter(|| black_box(monitor.report())));
}

criterion_group!(benches, events);
criterion_main!(benches);
