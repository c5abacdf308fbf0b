//! `cargo xtask bench [--quick]`: builds and runs every measuring program
//! (criterion benches, the RSS run, the interleaved-rounds measurements,
//! the NATS rounds),
//! then hands their results files to [`crate::report`].

use crate::report::{self, Goals, Run};
use crate::{cargo, root, step};
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The crates whose own criterion benches `cargo xtask bench` runs (each sets
/// `[lib] bench = false`; every `benches/*.rs` target is run by name so only
/// criterion sees `--quick`).
const BENCH_CRATES: [&str; 6] = [
    "bus-bench",
    "bus-breaker",
    "bus-recovery",
    "bus-logger",
    "bus-health",
    "bus-dlq",
];

/// `cargo run` of a measuring program (`target`: `["--bin", name]` or
/// `["--example", name]`) of `package`, in the bench profile; its own
/// arguments follow.
fn bench_run(package: &str, target: [&str; 2]) -> Command {
    let mut c = cargo();
    c.args(["run", "--profile", "bench", "-p", package])
        .args(target)
        .arg("--");
    c
}

/// `cargo xtask bench [--quick]`: runs the criterion benches, the RSS run and
/// the interleaved-rounds measurements, then writes
/// `target/bench-report.json` and `docs/benchmarks.md`.
pub(crate) fn bench(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    // Read first: a goal file that does not parse fails now, not after the
    // long run it would judge.
    let goals = Goals::load()?;
    let started = std::time::SystemTime::now();
    let t0 = Instant::now();
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let criterion_args: &[&str] = if quick {
        &[
            "--quick",
            "--warm-up-time",
            "0.2",
            "--measurement-time",
            "0.5",
        ]
    } else {
        &[]
    };
    // One cargo invocation for every crate: one feature resolution, so the
    // shared crates are compiled once; the build is timed apart from the runs.
    let mut selection: Vec<String> = Vec::new();
    for krate in BENCH_CRATES {
        let names = bench_targets(&root().join("crates").join(krate));
        if names.is_empty() {
            continue;
        }
        selection.extend(["-p".to_owned(), krate.to_owned()]);
        for name in names {
            selection.extend(["--bench".to_owned(), name]);
        }
    }
    let mut build = cargo();
    build.arg("bench").args(&selection).arg("--no-run");
    step("build benches (bench profile)", build)?;
    let mut failures = Vec::new();
    let mut run = cargo();
    run.arg("bench")
        .args(&selection)
        .arg("--")
        .args(criterion_args);
    if let Err(e) = step("run criterion benches", run) {
        failures.push(e);
    }
    let messages = if quick { "10000" } else { "1000000" };
    let rss_json = target.join("bench-rss.json");
    let mut rss = bench_run("bus-bench", ["--bin", "rss"]);
    rss.args(["--messages", messages, "--out"]).arg(&rss_json);
    if let Err(e) = step(&format!("peak RSS ({messages} messages)"), rss) {
        failures.push(e);
    }

    // The throughput goals: raw, off and on interleaved in every round, so a
    // slow spell of a shared machine cannot land on one variant alone. 45
    // rounds (about a minute): on a 2-core machine the median of 9 rounds of
    // 1to4 on/off read 0.939-0.971 in five runs of one build, of 45 rounds
    // 0.952-0.987 in nine.
    let ratios_json = target.join("bench-ratios.json");
    let (rounds, per_round) = if quick {
        ("5", "20000")
    } else {
        ("45", "200000")
    };
    let mut interleaved = bench_run("bus-bench", ["--bin", "ratios"]);
    interleaved
        .args(["--rounds", rounds, "--messages", per_round, "--out"])
        .arg(&ratios_json);
    if let Err(e) = step(
        &format!("interleaved throughput ratios ({rounds} rounds of {per_round} messages)"),
        interleaved,
    ) {
        failures.push(e);
    }

    // The DLQ goals, in interleaved rounds as well.
    let dlq_json = target.join("bench-dlq-rounds.json");
    let (dlq_rounds, dlq_letters) = if quick { ("3", "5000") } else { ("9", "50000") };
    let mut dlq = bench_run("bus-dlq", ["--example", "dlq_rounds"]);
    dlq.arg(target.join("bench-scratch/dlq-rounds"))
        .args([dlq_rounds, "both", dlq_letters])
        .arg(&dlq_json);
    if let Err(e) = step(
        &format!("DLQ interleaved rounds ({dlq_rounds} rounds, {dlq_letters} pipelined letters)"),
        dlq,
    ) {
        failures.push(e);
    }

    // The idle goal: CPU of a bus whose subscribers wait for nothing.
    let idle_json = target.join("bench-idle.json");
    let idle_seconds = if quick { "1" } else { "3" };
    let mut idle = bench_run("bus-bench", ["--bin", "idle"]);
    idle.args([
        "--subscribers",
        "2,200,1000",
        "--seconds",
        idle_seconds,
        "--out",
    ])
    .arg(&idle_json);
    if let Err(e) = step(
        &format!("idle CPU (2, 200 and 1000 subscribers, {idle_seconds} s each)"),
        idle,
    ) {
        failures.push(e);
    }

    // The NATS goals: the bus over NATS beside raw async-nats, interleaved
    // rounds against the server on 127.0.0.1:4222 (skipped, and said so in
    // the report, when none runs there). A round must fill a window of 256
    // many times over, hence 50 000 messages. The median of 5 rounds read
    // bus/raw 0.78 at window 1 with p25-p75 0.69-0.85; 7 rounds (about 4
    // minutes while a Publisher over NATS publishes one at a time) narrow it.
    let nats_json = target.join("bench-nats.json");
    let (nats_rounds, nats_messages) = if quick { ("2", "5000") } else { ("7", "50000") };
    let mut nats = bench_run("bus-bench", ["--bin", "nats"]);
    nats.args([
        "--rounds",
        nats_rounds,
        "--messages",
        nats_messages,
        "--out",
    ])
    .arg(&nats_json);
    if let Err(e) = step(
        &format!(
            "NATS interleaved rounds ({nats_rounds} rounds of {nats_messages} 1 KiB messages)"
        ),
        nats,
    ) {
        failures.push(e);
    }

    // The SQLite goals: bus-sqlite beside a hand-written rusqlite program
    // and a lone publisher beside write + fdatasync, interleaved rounds on
    // this machine's disk.
    let sqlite_json = target.join("bench-sqlite.json");
    let (sqlite_rounds, sqlite_messages, sqlite_single) = if quick {
        ("2", "20000", "200")
    } else {
        ("5", "100000", "1000")
    };
    let mut sqlite = bench_run("bus-bench", ["--bin", "sqlite"]);
    sqlite
        .args([
            "--rounds",
            sqlite_rounds,
            "--messages",
            sqlite_messages,
            "--single",
            sqlite_single,
            "--out",
        ])
        .arg(&sqlite_json);
    if let Err(e) = step(
        &format!(
            "SQLite interleaved rounds ({sqlite_rounds} rounds of {sqlite_messages} 1 KiB messages)"
        ),
        sqlite,
    ) {
        failures.push(e);
    }

    // The console's dead-letter views over a large store: 1 000 000
    // letters over 1 000 signatures (seeded once into the scratch
    // directory and reused), 40 warm requests per view and filter.
    let console_json = target.join("bench-console.json");
    let (c_letters, c_signatures, c_requests) = if quick {
        ("20000", "100", "10")
    } else {
        ("1000000", "1000", "40")
    };
    let mut console = bench_run("bus-console", ["--example", "console_scale"]);
    console
        .arg(target.join(format!("bench-scratch/console-{c_letters}")))
        .args([c_letters, c_signatures, c_requests])
        .arg(&console_json);
    if let Err(e) = step(
        &format!("console DLQ views ({c_letters} letters over {c_signatures} signatures)"),
        console,
    ) {
        failures.push(e);
    }

    // The async goals: async subscribers beside a hand-written tokio
    // consumer, interleaved rounds of both workloads.
    let async_json = target.join("bench-async.json");
    let (async_rounds, async_n, async_timer_n) = if quick {
        ("3", "20000", "5000")
    } else {
        ("15", "200000", "20000")
    };
    let mut asynchronous = bench_run("bus-bench", ["--bin", "async_rounds"]);
    asynchronous
        .args(["--rounds", async_rounds, "--messages", async_n])
        .args(["--timer-messages", async_timer_n, "--out"])
        .arg(&async_json);
    if let Err(e) = step(
        &format!(
            "async rounds ({async_rounds} rounds: {async_n} trivial calls, {async_timer_n} 20 ms timers)"
        ),
        asynchronous,
    ) {
        failures.push(e);
    }

    report::write(
        &goals,
        &Run {
            quick,
            started,
            t0,
            load_before,
            target: &target,
            rss: &rss_json,
            ratios: &ratios_json,
            dlq: &dlq_json,
            idle: &idle_json,
            nats: &nats_json,
            sqlite: &sqlite_json,
            console: &console_json,
            asynchronous: &async_json,
        },
    )?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// The `benches/*.rs` targets of a crate directory, by name.
fn bench_targets(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("benches"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    names
}
