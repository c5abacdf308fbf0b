//! Closed-state acquire + success: bus-breaker beside `failsafe` and
//! `recloser`, on one thread and on two threads (per-call time).
//!
//! `cargo bench -p bus-breaker --bench breaker -- --quick`

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ok() -> Result<u64, std::io::Error> {
    Ok(black_box(1))
}

/// Runs `op` `iters` times on each of `threads` threads at once; the time per
/// call (wall time of the slowest thread divided by `iters`).
fn per_call_on(threads: usize, iters: u64, op: Arc<dyn Fn() + Send + Sync>) -> Duration {
    let barrier = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let op = op.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    op();
                }
                start.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .max()
        .unwrap_or_default()
}

type Op = Arc<dyn Fn() + Send + Sync>;

/// (name, acquire+success if the library has a separate permit API, call with an Ok closure)
fn contenders() -> Vec<(&'static str, Option<Op>, Op)> {
    let ours = Arc::new(
        bus_breaker::CircuitBreaker::builder("bench")
            .build()
            .expect("the default configuration is valid"),
    );
    let ours2 = ours.clone();
    let fs = failsafe::Config::new().build();
    let rc = Arc::new(recloser::Recloser::custom().build());
    use failsafe::CircuitBreaker as _;
    vec![
        (
            "bus-breaker",
            Some(Arc::new(move || {
                if let Ok(p) = ours.try_acquire() {
                    p.success();
                }
            })),
            Arc::new(move || {
                let _ = black_box(ours2.call(ok));
            }),
        ),
        (
            "failsafe",
            None,
            Arc::new(move || {
                let _ = black_box(fs.call(ok));
            }),
        ),
        (
            "recloser",
            None,
            Arc::new(move || {
                let _ = black_box(rc.call(ok));
            }),
        ),
    ]
}

fn closed_state(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("closed_{threads}_thread"));
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        for (name, acquire, call) in contenders() {
            if let Some(acquire) = acquire {
                group.bench_function(format!("{name}/acquire+success"), |b| {
                    b.iter_custom(|iters| per_call_on(threads, iters, acquire.clone()))
                });
            }
            group.bench_function(format!("{name}/call_ok"), |b| {
                b.iter_custom(|iters| per_call_on(threads, iters, call.clone()))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, closed_state);
criterion_main!(benches);
