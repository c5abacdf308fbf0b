//! The CPU an idle bus costs: N subscribers, one topic each, each handles
//! one message and then waits for more that never come. The whole
//! process's CPU time (`CLOCK_PROCESS_CPUTIME_ID`, every thread, in
//! nanoseconds) over a few seconds of that idleness, as a percentage of one
//! core.
//!
//! ```text
//! cargo run --profile bench -p bus-bench --bin idle -- [--subscribers N,N,..] [--seconds S] [--out PATH]
//! ```
//!
//! Defaults: 2, 200 and 1000 subscribers, 3 s each, on the error-handling-on
//! fixture (breakers, recovery, SQLite dead letters, logger, health), so the
//! idle threads of every component count. Writes `target/bench-idle.json`.

#![allow(clippy::unwrap_used)]

use bus_bench::{Fixture, OnOptions};
use bus_core::Message;
use rustix::time::{ClockId, clock_gettime};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// CPU time of every thread of this process so far.
fn process_cpu() -> Duration {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

/// One measurement: `subscribers` idle subscribers for `idle`.
struct Reading {
    subscribers: usize,
    threads: usize,
    percent: f64,
    shutdown: Duration,
}

fn measure(subscribers: usize, idle: Duration) -> Result<Reading, BoxError> {
    let fx = Fixture::on(OnOptions::default())?;
    let handled = Arc::new(AtomicU64::new(0));
    for i in 0..subscribers {
        let handled = Arc::clone(&handled);
        fx.bus
            .subscriber(&format!("idle{i}"))
            .topic(&format!("idle.t{i}"))
            .start(move |_m: &Message<'_>| -> Result<(), std::io::Error> {
                handled.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })?;
    }
    // Every worker takes one message first: the measured state is a bus
    // whose streams have stopped, not one that never started.
    for i in 0..subscribers {
        fx.bus.publish(&format!("idle.t{i}"), &b"x"[..])?;
    }
    let n = u64::try_from(subscribers)?;
    if !fx.wait_settled(n, Duration::from_secs(60)) {
        return Err(
            format!("{subscribers} subscribers: the first messages were not handled").into(),
        );
    }
    // Let the workers finish the spin that follows a message and go to
    // sleep: with a thousand of them yielding on two busy cores, that can
    // take a second.
    std::thread::sleep(Duration::from_secs(2));
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count);
    let (cpu0, wall0) = (process_cpu(), Instant::now());
    std::thread::sleep(idle);
    let (cpu, wall) = (process_cpu() - cpu0, wall0.elapsed());
    let t0 = Instant::now();
    let report = fx.shutdown();
    let shutdown = t0.elapsed();
    if !report.stats.invariant_holds() || report.stats.acked != n {
        return Err(format!(
            "{subscribers} subscribers: ledger broken: {:?}",
            report.stats
        )
        .into());
    }
    Ok(Reading {
        subscribers,
        threads,
        percent: cpu.as_secs_f64() / wall.as_secs_f64() * 100.0,
        shutdown,
    })
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let mut counts = vec![2, 200, 1000];
    let mut seconds = 3.0_f64;
    let mut out = bus_bench::target_dir().join("bench-idle.json");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--subscribers" => {
                counts = args
                    .next()
                    .ok_or("--subscribers N,N,..")?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--seconds" => seconds = args.next().ok_or("--seconds S")?.parse()?,
            "--out" => out = args.next().ok_or("--out PATH")?.into(),
            "--help" | "-h" => {
                println!(
                    "idle [--subscribers N,N,..] [--seconds S] [--out PATH]: CPU of an idle bus, % of one core"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if counts.is_empty() || counts.contains(&0) || !seconds.is_finite() || seconds <= 0.0 {
        return Err("--subscribers needs counts of at least 1, --seconds a positive time".into());
    }
    let idle = Duration::from_secs_f64(seconds);
    let mut entries = Vec::new();
    for n in counts {
        let r = measure(n, idle)?;
        eprintln!(
            "{} idle subscribers ({} threads): {:.2} % of a core over {seconds} s; shutdown {:.1} ms",
            r.subscribers,
            r.threads,
            r.percent,
            r.shutdown.as_secs_f64() * 1e3
        );
        entries.push(format!(
            "  \"subscribers_{}\": {{ \"percent\": {:.4}, \"threads\": {}, \"shutdown_ms\": {:.2} }}",
            r.subscribers,
            r.percent,
            r.threads,
            r.shutdown.as_secs_f64() * 1e3
        ));
    }
    let json = format!(
        "{{\n  \"seconds\": {seconds},\n{}\n}}\n",
        entries.join(",\n")
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &json)?;
    print!("{json}");
    Ok(())
}
