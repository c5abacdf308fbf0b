//! Cost of `decide()` per failure and of `on_success()` per success.
//! Run: `cargo bench -p bus-recovery -- --quick`.

use bus_core::time::{Clock, ManualClock};
use bus_core::{Envelope, Failure, RecoveryPolicy, Success, Topic};
use bus_errors::{Classification, ErrorCategory, ErrorReport};
use bus_recovery::{BudgetConfig, Recovery};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

fn recovery(budget: bool) -> Recovery {
    let b = Recovery::builder()
        .seed(1)
        .clock(Arc::new(ManualClock::new()));
    let b = if budget {
        // A huge floor: the bench measures the bookkeeping, not the shedding.
        b.budget(BudgetConfig {
            window: Duration::from_secs(10),
            percent: 0.2,
            min_retries_per_sec: u32::MAX,
        })
    } else {
        b.no_budget()
    };
    b.build().unwrap_or_else(|e| panic!("{e}"))
}

fn bench_decide(c: &mut Criterion) {
    let topic = Topic::new("orders").unwrap_or_else(|e| panic!("{e}"));
    let env = Envelope::new(topic, &b"{\"id\":1}"[..]);
    let mut group = c.benchmark_group("decide");
    for (name, category, budget) in [
        (
            "retry_message_processing",
            ErrorCategory::MessageProcessing,
            true,
        ),
        ("retry_connection_jitter", ErrorCategory::Connection, true),
        ("retry_no_budget", ErrorCategory::MessageProcessing, false),
        (
            "escalate_authentication",
            ErrorCategory::Authentication,
            true,
        ),
    ] {
        let r = recovery(budget);
        let report = ErrorReport::new(Classification::of(category), "billing", "boom");
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || env.clone(),
                |env| {
                    let f = Failure::new(&report, env, "billing", Duration::ZERO);
                    black_box(r.decide(&f).apply(env))
                },
                criterion::BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn bench_on_success(c: &mut Criterion) {
    let topic = Topic::new("orders").unwrap_or_else(|e| panic!("{e}"));
    let env = Envelope::new(topic, &b"{\"id\":1}"[..]);
    // The bus stamps each success with the time it already read.
    let at = bus_core::time::SystemClock.stamp();
    let mut group = c.benchmark_group("on_success");
    let with_budget = recovery(true);
    group.bench_function("budget", |b| {
        b.iter(|| {
            with_budget.on_success(black_box(&Success::new(
                &env,
                "billing",
                Duration::ZERO,
                at,
            )))
        });
    });
    let plain = recovery(false);
    group.bench_function("no_budget", |b| {
        b.iter(|| {
            plain.on_success(black_box(&Success::new(
                &env,
                "billing",
                Duration::ZERO,
                at,
            )))
        });
    });
    // A component whose deadline grew: successes walk it back.
    let grown = Recovery::builder()
        .seed(1)
        .clock(Arc::new(ManualClock::new()))
        .budget(BudgetConfig {
            window: Duration::from_secs(10),
            percent: 0.2,
            min_retries_per_sec: u32::MAX,
        })
        .component_deadline("billing", Duration::from_secs(1))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(grown.deadlines().on_timeout("billing").is_some());
    group.bench_function("budget_and_grown_deadline", |b| {
        b.iter(|| {
            grown.on_success(black_box(&Success::new(
                &env,
                "billing",
                Duration::ZERO,
                at,
            )))
        });
    });
    group.finish();
}

criterion_group!(benches, bench_decide, bench_on_success);
criterion_main!(benches);
