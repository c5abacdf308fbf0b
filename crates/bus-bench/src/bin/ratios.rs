//! Throughput ratios measured in interleaved rounds: the raw crossbeam
//! baseline, the bus with error handling off and on, one after the other in
//! every round (in a rotating order), so a slow spell of a shared machine
//! lands on all three instead of on whichever criterion happened to be
//! measuring. Each round gives one ratio per pair; the median over rounds is
//! the result, the quartiles its spread.
//!
//! ```text
//! cargo run --profile bench -p bus-bench --bin ratios -- [--rounds R] [--messages N] [--out PATH] [--only TOPOLOGY] [--hog]
//! ```
//!
//! Same topologies, payloads and fixtures as the `throughput` criterion
//! bench (`1to1`, `4to1`, `1to4`). Writes `target/bench-ratios.json`.
//!
//! `--hog` runs one more thread that only spins, for the whole run: on a
//! two-core machine the publisher and the consumer then share their cores
//! with it, as they do on a host whose other tenants are busy. Throughput
//! then follows the instructions both threads spend per message, not the
//! slower thread's, which is the regime where the bus's ratios are lowest.

#![allow(clippy::unwrap_used)]

#[path = "../../benches/support/mod.rs"]
mod support;

use bus_bench::{FailEvery, Fixture, OnOptions, payload, quartiles};
use std::time::Instant;
use support::{Raw, publish_from, settle, subscribe};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const TOPOLOGIES: [(&str, u64, u64); 3] = [("1to1", 1, 1), ("4to1", 4, 1), ("1to4", 1, 4)];

/// Messages per second of one timed batch.
fn rate(n: u64, run: impl FnOnce()) -> f64 {
    let t0 = Instant::now();
    run();
    n as f64 / t0.elapsed().as_secs_f64()
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let mut rounds: usize = 45;
    let mut n: u64 = 200_000;
    let mut out = bus_bench::target_dir().join("bench-ratios.json");
    let (mut only, mut hog) = (None, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().ok_or("--rounds R")?.parse()?,
            "--messages" => n = args.next().ok_or("--messages N")?.parse()?,
            "--out" => out = args.next().ok_or("--out PATH")?.into(),
            "--only" => only = Some(args.next().ok_or("--only TOPOLOGY")?),
            "--hog" => hog = true,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if rounds == 0 || n == 0 {
        return Err("--rounds and --messages must be at least 1".into());
    }
    if only
        .as_deref()
        .is_some_and(|o| !TOPOLOGIES.iter().any(|t| t.0 == o))
    {
        return Err(format!("--only: one of 1to1, 4to1, 1to4, not {only:?}").into());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hog = hog.then(|| {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut x = 0_u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
        })
    });
    let mut entries = Vec::new();
    for (name, publishers, groups) in TOPOLOGIES {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let raw = Raw::new(groups as usize, |env| {
            std::hint::black_box(env.payload.len());
        });
        let off = Fixture::off();
        subscribe(&off, groups, FailEvery(0));
        let on = Fixture::on(OnOptions::default())?;
        subscribe(&on, groups, FailEvery(0));
        let run_raw = || {
            let target = raw.handled.load(std::sync::atomic::Ordering::Relaxed) + n * groups;
            rate(n, || {
                publish_from(publishers, 0, n, &|seq| raw.publish(payload(seq)));
                raw.wait(target);
            })
        };
        let run_bus = |fx: &Fixture| {
            rate(n, || {
                publish_from(publishers, 0, n, &|seq| fx.publish(seq));
                settle(fx);
            })
        };
        // One warm-up round, not recorded.
        let _ = (run_raw(), run_bus(&off), run_bus(&on));
        let (mut on_raw, mut off_raw, mut on_off) = (Vec::new(), Vec::new(), Vec::new());
        let mut rates = [Vec::new(), Vec::new(), Vec::new()];
        for round in 0..rounds {
            let mut r = [0.0; 3];
            for k in 0..3 {
                let v = (round + k) % 3;
                r[v] = match v {
                    0 => run_raw(),
                    1 => run_bus(&off),
                    _ => run_bus(&on),
                };
            }
            on_raw.push(r[2] / r[0]);
            off_raw.push(r[1] / r[0]);
            on_off.push(r[2] / r[1]);
            for (all, v) in rates.iter_mut().zip(r) {
                all.push(v);
            }
        }
        for fx in [&off, &on] {
            let stats = fx.shutdown().stats;
            if !stats.invariant_holds() || stats.failed != 0 {
                return Err(format!("{name}: ledger broken: {stats:?}").into());
            }
        }
        let [raw_rates, off_rates, on_rates] = rates;
        for (pair, ratios) in [("on_raw", on_raw), ("off_raw", off_raw), ("on_off", on_off)]
            .into_iter()
            .chain([
                ("raw_rate", raw_rates),
                ("off_rate", off_rates),
                ("on_rate", on_rates),
            ])
        {
            let (p25, median, p75) = quartiles(ratios);
            eprintln!("{name} {pair}: median {median:.3} (p25 {p25:.3}, p75 {p75:.3})");
            entries.push(format!(
                "  \"{name}/{pair}\": {{ \"median\": {median:.4}, \"p25\": {p25:.4}, \"p75\": {p75:.4} }}"
            ));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let hogged = hog.is_some();
    if let Some(h) = hog {
        let _ = h.join();
    }
    let json = format!(
        "{{\n  \"rounds\": {rounds},\n  \"messages\": {n},\n  \"hog\": {},\n{}\n}}\n",
        hogged,
        entries.join(",\n")
    );
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &json)?;
    print!("{json}");
    Ok(())
}
