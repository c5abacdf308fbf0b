//! Closed-state acquire + success: bus-breaker beside `failsafe` and
//! `recloser`, on one thread and on two threads (per-call time).
//!
//! `cargo bench -p bus-breaker --bench breaker -- --quick`

use bus_test::quartiles;
use criterion::{Criterion, criterion_group};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ok() -> Result<u64, std::io::Error> {
    Ok(black_box(1))
}

/// Runs an op `iters` times on each of `threads` threads at once; the time per
/// call (wall time of the slowest thread divided by `iters`).
fn per_call_on(threads: usize, iters: u64, op: &Op) -> Duration {
    thread_times(threads, iters, op)
        .into_iter()
        .max()
        .unwrap_or_default()
}

/// Runs an op `iters` times on each of `threads` threads at once (each thread
/// makes its own with `op`); each thread's wall time.
fn thread_times(threads: usize, iters: u64, op: &Op) -> Vec<Duration> {
    let barrier = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let op = op.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut call = op();
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    call();
                }
                start.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect()
}

/// Makes, on the thread that will run it, the call to time.
type Op = Arc<dyn Fn() -> Box<dyn FnMut()> + Send + Sync>;

/// An op whose every thread calls the same shared `f`.
fn shared(f: impl Fn() + Send + Sync + 'static) -> Op {
    let f = Arc::new(f);
    Arc::new(move || {
        let f = f.clone();
        Box::new(move || f())
    })
}

/// `call` with an Ok closure through `b`.
fn call_ok(b: Arc<bus_breaker::CircuitBreaker>) -> impl Fn() + Send + Sync + 'static {
    move || {
        let _ = black_box(b.call(ok));
    }
}

fn breaker() -> bus_breaker::CircuitBreaker {
    bus_breaker::CircuitBreaker::builder("bench")
        .build()
        .expect("the default configuration is valid")
}

/// The control for "two threads are no slower per call than one": the same
/// breaker code, but each thread calls a breaker of its own, so nothing at
/// all is shared between the threads. Its two-thread/one-thread ratio is
/// what this machine charges a second busy thread (frequency, a hypervisor
/// sharing the cores); the shared breaker's ratio over it is what sharing
/// the breaker costs.
const PER_THREAD: &str = "bus-breaker-per-thread";

/// (name, acquire+success if the library has a separate permit API, call with an Ok closure)
fn contenders() -> Vec<(&'static str, Option<Op>, Op)> {
    let ours = Arc::new(breaker());
    let ours2 = ours.clone();
    let fs = failsafe::Config::new().build();
    let rc = Arc::new(recloser::Recloser::custom().build());
    use failsafe::CircuitBreaker as _;
    vec![
        (
            "bus-breaker",
            Some(shared(move || {
                if let Ok(p) = ours.try_acquire() {
                    p.success();
                }
            })),
            shared(call_ok(ours2)),
        ),
        (
            "failsafe",
            None,
            shared(move || {
                let _ = black_box(fs.call(ok));
            }),
        ),
        (
            "recloser",
            None,
            shared(move || {
                let _ = black_box(rc.call(ok));
            }),
        ),
        (
            PER_THREAD,
            None,
            // The same shape of call as the shared one (a boxed closure
            // calling an `Arc`'d closure holding an `Arc`'d breaker), so at
            // one thread the two are the same workload.
            Arc::new(|| shared(call_ok(Arc::new(breaker())))()),
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
                    b.iter_custom(|iters| per_call_on(threads, iters, &acquire))
                });
            }
            group.bench_function(format!("{name}/call_ok"), |b| {
                b.iter_custom(|iters| per_call_on(threads, iters, &call))
            });
        }
        group.finish();
    }
}

/// The goals as ratios, measured in interleaved rounds: every round times
/// each contender's `call_ok` on one thread and on two threads back to back,
/// so a slow spell of a shared machine lands on all of them. Prints the
/// median of the per-round ratios and writes them to
/// `target/bench-breaker-ratios.json` for `cargo xtask bench`.
fn interleaved() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, iters) = if quick { (7, 200_000) } else { (21, 2_000_000) };
    let calls: Vec<(&str, Op)> = contenders()
        .into_iter()
        .map(|(name, _, call)| (name, call))
        .collect();
    // per contender: [one thread, two threads (slowest thread), two threads
    // (mean of the threads)] nanoseconds per call, per round
    let mut times = vec![[Vec::new(), Vec::new(), Vec::new()]; calls.len()];
    let per_call = |d: Duration| d.as_secs_f64() * 1e9 / iters as f64;
    let control = calls
        .iter()
        .position(|(name, _)| *name == PER_THREAD)
        .expect("the control is a contender");
    let mut measure = |i: usize, threads: usize| {
        let t = thread_times(threads, iters, &calls[i].1);
        if threads == 1 {
            times[i][0].push(per_call(t[0]));
        } else {
            let max = t.iter().max().copied().unwrap_or_default();
            times[i][1].push(per_call(max));
            times[i][2].push(t.iter().map(|d| per_call(*d)).sum::<f64>() / t.len() as f64);
        }
    };
    for round in 0..rounds {
        for k in 0..calls.len() {
            let i = (round + k) % calls.len();
            if i == control {
                continue; // measured right beside bus-breaker
            }
            // bus-breaker and its control run back to back at each thread
            // count, the order alternating by round, so the sharing ratio
            // compares runs moments apart.
            let pair: &[usize] = match (i, round % 2) {
                (0, 0) => &[0, control],
                (0, _) => &[control, 0],
                _ => std::slice::from_ref(&i),
            };
            for threads in [1, 2] {
                for &j in pair {
                    measure(j, threads);
                }
            }
        }
    }
    let median = |v: Vec<f64>| quartiles(v).1;
    let ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
    let ours = &times[0];
    let mut json = format!("{{\n  \"rounds\": {rounds},\n  \"iters\": {iters}");
    for (i, (name, _)) in calls.iter().enumerate().skip(1) {
        if *name == PER_THREAD {
            continue;
        }
        for (t, label) in [(0, "1_thread"), (1, "2_threads")] {
            let r = ratio(&ours[t], &times[i][t]);
            println!("interleaved: bus-breaker / {name} call_ok, {label}: {r:.3}");
            json.push_str(&format!(",\n  \"vs_{name}_{label}\": {r:.4}"));
        }
    }
    for (i, (name, _)) in calls.iter().enumerate() {
        let r = ratio(&times[i][1], &times[i][0]);
        let m = ratio(&times[i][2], &times[i][0]);
        println!(
            "interleaved: {name} call_ok, 2 threads / 1 thread per call: {r:.3} (slowest thread), {m:.3} (mean of the threads)"
        );
        json.push_str(&format!(
            ",\n  \"{name}_two_over_one\": {r:.4},\n  \"{name}_two_over_one_mean\": {m:.4}"
        ));
        let (one, two) = (median(times[i][0].clone()), median(times[i][1].clone()));
        json.push_str(&format!(
            ",\n  \"{name}_ns_1_thread\": {one:.2},\n  \"{name}_ns_2_threads\": {two:.2}"
        ));
    }
    // Sharing's own cost: per round, the shared breaker's per-call time on
    // two threads over the per-thread breakers' (the same code, nothing
    // shared), measured back to back. The same ratio on one thread compares
    // two identical workloads: its spread is the noise floor.
    let mut sharing = |t: usize, key: &str, label: &str| {
        let (p25, mid, p75) = quartiles(
            (0..rounds)
                .map(|n| ours[t][n] / times[control][t][n])
                .collect(),
        );
        println!(
            "interleaved: bus-breaker shared / one breaker per thread, per call, {label}: {mid:.3} (p25 {p25:.3}, p75 {p75:.3})"
        );
        json.push_str(&format!(
            ",\n  \"bus-breaker_{key}\": {{ \"median\": {mid:.4}, \"p25\": {p25:.4}, \"p75\": {p75:.4} }}"
        ));
    };
    sharing(1, "sharing_2_threads", "2 threads (slowest thread)");
    sharing(
        2,
        "sharing_2_threads_mean",
        "2 threads (mean of the threads)",
    );
    sharing(
        0,
        "sharing_1_thread",
        "1 thread (identical workloads: the noise floor)",
    );
    json.push_str("\n}\n");
    let dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        std::path::PathBuf::from,
    );
    let _ = std::fs::create_dir_all(&dir);
    if let Err(e) = std::fs::write(dir.join("bench-breaker-ratios.json"), json) {
        eprintln!("could not write bench-breaker-ratios.json: {e}");
    }
}

criterion_group!(benches, closed_state);

/// Whether criterion was given a filter (`cargo bench -- <filter>`) or
/// `--list`: then only criterion runs. Values of criterion's options (such
/// as `--measurement-time 0.5`) are not filters.
fn filtered() -> bool {
    const TAKES_VALUE: [&str; 14] = [
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--profile-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--list" {
            return true;
        }
        if TAKES_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return true;
        }
    }
    false
}

fn main() {
    benches();
    if !filtered() {
        interleaved();
    }
    Criterion::default().configure_from_args().final_summary();
}
