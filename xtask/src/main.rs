//! `cargo xtask <task>`: the project's automation, in plain Rust.
//!
//! - `validate`: what CI runs. fmt check, clippy `-D warnings`, every test
//!   (unit, integration, doctests), `cargo doc` with broken links denied, and
//!   the loom models.
//! - `bench [--quick]`: the criterion benches, then `target/bench-report.json`.
//! - `soak`: the long no-loss fault-injection run.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    let result = match task {
        "validate" => validate(rest),
        "bench" => bench(rest),
        "soak" => soak(rest),
        _ => {
            eprintln!("usage: cargo xtask <validate|bench [--quick]|soak>");
            return if task == "help" || task == "--help" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a step, printing its name and duration; fails on a non-zero status.
fn step(name: &str, mut cmd: Command) -> Result<(), String> {
    eprintln!("==> {name}");
    let started = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{name}: could not start: {e}"))?;
    eprintln!(
        "    {name}: {} in {:.1}s",
        if status.success() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("step `{name}` failed ({status})"))
    }
}

fn validate(_args: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    step("fmt --check", fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step("clippy -D warnings", clippy)?;

    // Unit, integration, example and doc tests in one build (benches are
    // compiled by clippy above and run by `cargo xtask bench`).
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    step("tests and doctests", test)?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    step("doc (broken links denied)", doc)?;

    if root().join("crates/bus-breaker/tests/loom.rs").exists() {
        let mut loom = cargo();
        loom.args(["test", "-p", "bus-breaker", "--release", "--test", "loom"])
            .env("RUSTFLAGS", "--cfg bus_loom")
            .env("CARGO_TARGET_DIR", root().join("target/loom"));
        step("loom models", loom)?;
    }
    eprintln!(
        "validate: all steps passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

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
fn bench(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
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

    // The DLQ goals (#5), in interleaved rounds as well.
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

    let mut results = Vec::new();
    bench_collect(&target.join("criterion"), started, &mut results);
    results.sort_by(|a, b| a.id.cmp(&b.id));
    // A results file written by this run (a stale one from an earlier run is ignored).
    let read_fresh = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|m| m >= started)
            .then(|| std::fs::read_to_string(p).ok())
            .flatten()
    };
    let latency = read_fresh(&target.join("bench-latency.json"));
    let rss = read_fresh(&rss_json);
    let interleaved = read_fresh(&ratios_json);
    let breaker = read_fresh(&target.join("bench-breaker-ratios.json"));
    let dlq_rounds = read_fresh(&dlq_json);
    let machine = Machine::probe(quick, load_before, t0.elapsed().as_secs_f64());
    let ratios = bench_ratios(
        &results,
        Rounds {
            breaker: breaker.as_deref(),
            throughput: interleaved.as_deref(),
            dlq: dlq_rounds.as_deref(),
        },
        latency.as_deref(),
        rss.as_deref(),
    );

    let report = bench_json(
        &machine,
        &results,
        &ratios,
        latency.as_deref(),
        rss.as_deref(),
    );
    let report_path = target.join("bench-report.json");
    std::fs::write(&report_path, report)
        .map_err(|e| format!("cannot write {}: {e}", report_path.display()))?;
    let md = bench_markdown(
        &machine,
        &results,
        &ratios,
        latency.as_deref(),
        rss.as_deref(),
    );
    let md_path = root().join("docs/benchmarks.md");
    std::fs::create_dir_all(root().join("docs")).map_err(|e| e.to_string())?;
    std::fs::write(&md_path, md).map_err(|e| format!("cannot write {}: {e}", md_path.display()))?;
    eprintln!(
        "bench: {} results, report {} and {} in {:.0}s",
        results.len(),
        report_path.display(),
        md_path.display(),
        t0.elapsed().as_secs_f64()
    );
    for r in &ratios {
        eprintln!("    {:<48} {:>12}  {}", r.name, r.shown, r.verdict());
    }
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

/// One criterion result (`new/estimates.json` + `new/benchmark.json`).
#[derive(Debug)]
struct BenchResult {
    id: String,
    group: String,
    function: String,
    mean_ns: f64,
    median_ns: f64,
    /// Elements (or bytes, with `unit` "B") per iteration, if declared.
    per_iter: Option<(f64, &'static str)>,
}

impl BenchResult {
    /// Elements (or bytes) per second.
    fn rate(&self) -> Option<(f64, &'static str)> {
        self.per_iter
            .map(|(n, unit)| (n / (self.mean_ns * 1e-9), unit))
    }
}

/// Collects every `new/estimates.json` under `dir` written since `since`.
fn bench_collect(dir: &Path, since: std::time::SystemTime, out: &mut Vec<BenchResult>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let estimates = path.join("estimates.json");
        if path.file_name().is_some_and(|n| n == "new") && estimates.is_file() {
            let fresh = std::fs::metadata(&estimates)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= since);
            if !fresh {
                continue;
            }
            let est = std::fs::read_to_string(&estimates).unwrap_or_default();
            let meta = std::fs::read_to_string(path.join("benchmark.json")).unwrap_or_default();
            let num = |outer: &str| {
                json_field(&est, outer)
                    .and_then(|v| json_field(v, "point_estimate"))
                    .and_then(json_number)
            };
            let (Some(mean_ns), Some(id)) = (num("mean"), json_string(&meta, "full_id")) else {
                continue;
            };
            let per_iter = json_field(&meta, "throughput").and_then(|t| {
                json_field(t, "Elements")
                    .and_then(json_number)
                    .map(|n| (n, "elem"))
                    .or_else(|| {
                        json_field(t, "Bytes")
                            .and_then(json_number)
                            .map(|n| (n, "B"))
                    })
            });
            out.push(BenchResult {
                group: json_string(&meta, "group_id").unwrap_or_default(),
                function: json_string(&meta, "function_id").unwrap_or_else(|| id.clone()),
                id,
                mean_ns,
                median_ns: num("median").unwrap_or(mean_ns),
                per_iter,
            });
        } else {
            bench_collect(&path, since, out);
        }
    }
}

/// The text right after `"key":` (whitespace skipped), searching from the start.
fn json_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\"");
    let at = text.find(&pat)? + pat.len();
    let rest = text[at..].trim_start().strip_prefix(':')?;
    Some(rest.trim_start())
}

fn json_number(value: &str) -> Option<f64> {
    let end = value
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(value.len());
    value[..end].parse().ok()
}

fn json_string(text: &str, key: &str) -> Option<String> {
    let v = json_field(text, key)?.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Where and when the benches ran.
#[derive(Debug)]
struct Machine {
    date: String,
    cpu: String,
    logical_cpus: usize,
    memory: String,
    kernel: String,
    rustc: String,
    commit: String,
    load_before: String,
    load_after: String,
    quick: bool,
    seconds: f64,
}

impl Machine {
    fn probe(quick: bool, load_before: String, seconds: f64) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let line = |key: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        };
        let mut cpu = line("model name").unwrap_or_else(|| "unknown CPU".into());
        if let Some(mhz) = line("cpu MHz") {
            cpu.push_str(&format!(" @ {mhz} MHz"));
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
            .unwrap_or_else(|| "unknown".into());
        let output = |cmd: &str, args: &[&str]| {
            Command::new(cmd)
                .args(args)
                .current_dir(root())
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_else(|| "unknown".into())
        };
        let first3 = |s: String| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        Self {
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            cpu,
            logical_cpus: std::thread::available_parallelism().map_or(0, usize::from),
            memory,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
            rustc: output("rustc", &["-V"]),
            commit: output("git", &["rev-parse", "--short", "HEAD"]),
            load_before: first3(load_before),
            load_after: first3(std::fs::read_to_string("/proc/loadavg").unwrap_or_default()),
            quick,
            seconds,
        }
    }
}

/// A headline ratio and its goal.
#[derive(Debug)]
struct Ratio {
    name: String,
    value: f64,
    shown: String,
    goal: &'static str,
    pass: Option<bool>,
}

impl Ratio {
    fn verdict(&self) -> &'static str {
        match self.pass {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "- (inconclusive or no goal)",
        }
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn fmt_rate(rate: f64, unit: &str) -> String {
    if rate >= 1e6 {
        format!("{:.2} M{unit}/s", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1} K{unit}/s", rate / 1e3)
    } else {
        format!("{rate:.0} {unit}/s")
    }
}

/// A figure measured in interleaved rounds: its median and quartiles.
#[derive(Debug, Clone, Copy)]
struct Quartiles {
    p25: f64,
    median: f64,
    p75: f64,
}

/// The `{"median": m, "p25": a, "p75": b}` object under `key` in a bench's
/// results file (every interleaved-rounds figure is written so).
fn quartiles_of(json: Option<&str>, key: &str) -> Option<Quartiles> {
    let obj = json_field(json?, key)?;
    let f = |name| json_field(obj, name).and_then(json_number);
    Some(Quartiles {
        p25: f("p25")?,
        median: f("median")?,
        p75: f("p75")?,
    })
}

/// The results files of the interleaved-rounds measurements.
struct Rounds<'a> {
    breaker: Option<&'a str>,
    throughput: Option<&'a str>,
    dlq: Option<&'a str>,
}

/// The headline ratios against the issue's goals.
fn bench_ratios(
    results: &[BenchResult],
    rounds: Rounds<'_>,
    latency: Option<&str>,
    rss: Option<&str>,
) -> Vec<Ratio> {
    let Rounds {
        breaker,
        throughput: interleaved,
        dlq,
    } = rounds;
    let mean = |id: &str| results.iter().find(|r| r.id == id).map(|r| r.mean_ns);
    let mut out = Vec::new();
    let mut push = |name: &str,
                    value: Option<f64>,
                    shown: &dyn Fn(f64) -> String,
                    goal,
                    pass: &dyn Fn(f64) -> Option<bool>| {
        if let Some(v) = value {
            out.push(Ratio {
                name: name.to_owned(),
                value: v,
                shown: shown(v),
                goal,
                pass: pass(v),
            });
        }
    };
    let pct = |v: f64| format!("{:.1} %", v * 100.0);
    // Observer overhead per event (issue #7): criterion's median.
    let median_of = |id: &str| results.iter().find(|r| r.id == id).map(|r| r.median_ns);
    for (event, threads) in [
        ("acked", "1-thread"),
        ("failed", "1-thread"),
        ("acked", "2-threads"),
        ("failed", "2-threads"),
    ] {
        push(
            &format!("HealthMonitor::on_event {event}, {threads} (median)"),
            median_of(&format!("on_event/{event}/{threads}")),
            &|v| format!("{v:.1} ns"),
            "< 50 ns",
            &|v| Some(v < 50.0),
        );
    }
    // Breaker goals (issue #3), from the breaker bench's interleaved rounds.
    let brk = |key: &str| json_field(breaker?, key).and_then(json_number);
    let times = |v: f64| format!("{v:.2}x");
    for (peer, threads) in [
        ("recloser", "1_thread"),
        ("failsafe", "1_thread"),
        ("recloser", "2_threads"),
        ("failsafe", "2_threads"),
    ] {
        push(
            &format!(
                "breaker call_ok time / {peer}, {} (median of rounds)",
                threads.replace('_', " ")
            ),
            brk(&format!("vs_{peer}_{threads}")),
            &times,
            "< 1x",
            &|v| Some(v < 1.0),
        );
    }
    // Two threads against one: the raw 2/1 ratios carry what this shared
    // machine charges any second busy thread (the per-thread control shows
    // it), so the goal ("no shared cache line written") is judged on the
    // shared breaker's per-call time on two threads over the same code with
    // a breaker per thread, measured back to back in each round. Met when
    // its median is at most 1x, or within the noise floor: the upper
    // quartile of the same ratio on one thread, where the two workloads are
    // identical.
    push(
        "breaker call_ok per call, 2 threads / 1 thread (slowest thread; median of rounds)",
        brk("bus-breaker_two_over_one"),
        &times,
        "-",
        &|_| None,
    );
    push(
        "control: a breaker per thread, 2 threads / 1 thread (slowest thread)",
        brk("bus-breaker-per-thread_two_over_one"),
        &times,
        "-",
        &|_| None,
    );
    let noise = quartiles_of(breaker, "bus-breaker_sharing_1_thread").map(|q| q.p75);
    for (key, label, goal) in [
        (
            "sharing_1_thread",
            "1 thread, identical workloads: the noise floor",
            false,
        ),
        ("sharing_2_threads", "2 threads, slowest thread", true),
        (
            "sharing_2_threads_mean",
            "2 threads, mean of the threads",
            false,
        ),
    ] {
        let q = quartiles_of(breaker, &format!("bus-breaker_{key}"));
        let shown = |v: f64| match q {
            Some(q) => format!("{v:.3}x (p25-p75 {:.3}-{:.3})", q.p25, q.p75),
            None => format!("{v:.3}x"),
        };
        push(
            &format!("breaker shared by the threads / a breaker per thread, per call ({label})"),
            q.map(|q| q.median),
            &shown,
            if goal {
                "<= 1x or the noise floor's p75"
            } else {
                "-"
            },
            &|v| goal.then(|| v <= 1.0 || noise.is_some_and(|n| v <= n)),
        );
    }
    let tput = |a: &str, b: &str| Some(mean(b)? / mean(a)?); // throughput of a relative to b
    // Medians and quartiles over interleaved rounds (bench-ratios.json).
    let spread = |key: &str| {
        quartiles_of(interleaved, key).map(|q| {
            format!(
                "median of rounds; p25-p75 {:.1}-{:.1} %",
                q.p25 * 100.0,
                q.p75 * 100.0
            )
        })
    };
    for (topology, pair, label, goal) in [
        (
            "1to1",
            "on_raw",
            "bus on / raw crossbeam",
            Some((0.80, ">= 80 %")),
        ),
        ("4to1", "on_raw", "bus on / raw crossbeam", None),
        ("1to4", "on_raw", "bus on / raw crossbeam", None),
        ("1to1", "off_raw", "bus off / raw crossbeam", None),
        (
            "1to1",
            "on_off",
            "bus on / bus off",
            Some((0.95, ">= 95 %")),
        ),
        (
            "4to1",
            "on_off",
            "bus on / bus off",
            Some((0.95, ">= 95 %")),
        ),
        (
            "1to4",
            "on_off",
            "bus on / bus off",
            Some((0.95, ">= 95 %")),
        ),
    ] {
        let key = format!("{topology}/{pair}");
        let note = spread(&key).unwrap_or_default();
        push(
            &format!("{label}, {topology} ({note})"),
            quartiles_of(interleaved, &key).map(|q| q.median),
            &pct,
            goal.map_or("-", |(_, shown)| shown),
            &|v| goal.map(|(g, _)| v >= g),
        );
    }
    let lat = |variant: &str, field: &str| {
        json_field(latency?, variant)
            .and_then(|v| json_field(v, field))
            .and_then(json_number)
    };
    let us = |v: f64| fmt_ns(v);
    // The per-round differences (median over interleaved rounds); a result
    // file from before the rounds has only the pooled p99s, and says so.
    for (key, bus, base, vs, goal) in [
        (
            "added_p99_on_raw_ns",
            "bus_on",
            "raw_crossbeam",
            "raw",
            true,
        ),
        ("added_p99_on_off_ns", "bus_on", "bus_off", "bus off", false),
    ] {
        let per_round = quartiles_of(latency, key).map(|q| q.median);
        let (value, how, pooled) = match per_round {
            Some(v) => (Some(v), "median of per-round differences", false),
            None => (
                (|| Some(lat(bus, "p99_ns")? - lat(base, "p99_ns")?))(),
                "pooled p99s",
                true,
            ),
        };
        push(
            &format!("added p99 latency, bus on - {vs} ({how})"),
            value,
            &us,
            if goal { "< 10 µs" } else { "-" },
            // Per-round differences may be negative (the bus's spinning
            // consumer answers sooner than crossbeam's parked one). A negative
            // pooled difference only says the baseline's single run stalled
            // (a noisy machine), which settles nothing.
            &|v| {
                goal.then_some(())
                    .and((!pooled || v >= 0.0).then_some(v < 10_000.0))
            },
        );
    }
    push(
        "one failed message (memory DLQ)",
        mean("error_path/one_failure/memory_dlq"),
        &us,
        "< 5 µs",
        &|v| Some(v < 5_000.0),
    );
    push(
        "one failed message (SQLite DLQ, Normal)",
        mean("error_path/one_failure/sqlite_normal"),
        &us,
        "< 5 µs",
        &|v| Some(v < 5_000.0),
    );
    // The DLQ goals (#5) from interleaved rounds; criterion's separate
    // stretches beside them, for the absolute rates.
    let around = |key: &str| {
        quartiles_of(dlq, key)
            .map(|q| format!("median of rounds; p25-p75 {:.2}-{:.2}", q.p25, q.p75))
            .unwrap_or_default()
    };
    push(
        &format!(
            "DLQ 4 pushers Full (push_then) / write+fdatasync per 256 ({})",
            around("pipelined_over_per_256")
        ),
        quartiles_of(dlq, "pipelined_over_per_256").map(|q| q.median),
        &pct,
        ">= 50 %",
        &|v| Some(v >= 0.50),
    );
    push(
        &format!(
            "DLQ 1 pusher Full, time / write+fdatasync per record ({})",
            around("single_over_per_record")
        ),
        quartiles_of(dlq, "single_over_per_record").map(|q| q.median),
        &times,
        "<= 2x",
        &|v| Some(v <= 2.0),
    );
    // (label, a, b, as a time ratio): the throughput of a relative to b.
    for (label, a, b, time) in [
        (
            "DLQ 4 pushers Full (push_then) / write+fdatasync per 256 (criterion)",
            "dlq_1KiB/full_4_pushers_pipelined",
            "dlq_1KiB/baseline_write_fdatasync_per_256",
            false,
        ),
        (
            "DLQ 4 blocking pushers Full / write+fdatasync per 256 (criterion)",
            "dlq_1KiB/full_4_pushers",
            "dlq_1KiB/baseline_write_fdatasync_per_256",
            false,
        ),
        (
            "DLQ 1 pusher Full, time / write+fdatasync per record (criterion)",
            "dlq_1KiB/baseline_write_fdatasync_per_record",
            "dlq_1KiB/full_1_pusher",
            true,
        ),
    ] {
        let shown: &dyn Fn(f64) -> String = if time { &times } else { &pct };
        push(label, tput(a, b), shown, "-", &|_| None);
    }
    push(
        "bus on, 10 % failing / 0 % failing",
        tput(
            "error_path/throughput/bus_on_fail_10pct",
            "error_path/throughput/bus_on_fail_0pct",
        ),
        &pct,
        "-",
        &|_| None,
    );
    push(
        "bus on, 100 % failing / 0 % failing",
        tput(
            "error_path/throughput/bus_on_fail_100pct",
            "error_path/throughput/bus_on_fail_0pct",
        ),
        &pct,
        "-",
        &|_| None,
    );
    let kib = |field: &str| json_field(rss?, field).and_then(json_number);
    let mib = |v: f64| format!("{:.1} MiB", v / 1024.0);
    let n = kib("messages").unwrap_or(0.0);
    let (e_name, d_name) = if n >= 1e6 {
        (
            "peak RSS after 1 M errors",
            "peak RSS after 1 M dead letters",
        )
    } else {
        (
            "peak RSS after the errors run (see messages)",
            "peak RSS after the dead-letter run",
        )
    };
    push(
        e_name,
        kib("after_errors_peak_kib"),
        &mib,
        "< 50 MiB",
        &|v| Some(v < 50.0 * 1024.0),
    );
    push(
        d_name,
        kib("after_dead_letters_peak_kib"),
        &mib,
        "< 50 MiB",
        &|v| Some(v < 50.0 * 1024.0),
    );
    out
}

fn bench_json(
    m: &Machine,
    results: &[BenchResult],
    ratios: &[Ratio],
    latency: Option<&str>,
    rss: Option<&str>,
) -> String {
    let mut s = String::from("{\n");
    s.push_str(&format!(
        "  \"machine\": {{\"date\": {}, \"cpu\": {}, \"logical_cpus\": {}, \"memory\": {}, \"kernel\": {}, \"rustc\": {}, \"commit\": {}, \"load_before\": {}, \"load_after\": {}, \"quick\": {}, \"seconds\": {:.0}}},\n",
        json_escape(&m.date), json_escape(&m.cpu), m.logical_cpus, json_escape(&m.memory),
        json_escape(&m.kernel), json_escape(&m.rustc), json_escape(&m.commit),
        json_escape(&m.load_before), json_escape(&m.load_after), m.quick, m.seconds
    ));
    s.push_str("  \"ratios\": [\n");
    let rows: Vec<String> = ratios
        .iter()
        .map(|r| {
            format!(
                "    {{\"name\": {}, \"value\": {}, \"shown\": {}, \"goal\": {}, \"met\": {}}}",
                json_escape(&r.name),
                r.value,
                json_escape(&r.shown),
                json_escape(r.goal),
                r.pass.map_or("null".to_owned(), |p| p.to_string())
            )
        })
        .collect();
    s.push_str(&rows.join(",\n"));
    s.push_str("\n  ],\n  \"benchmarks\": [\n");
    let rows: Vec<String> = results
        .iter()
        .map(|r| {
            let rate = r.rate().map_or("null".to_owned(), |(v, _)| format!("{v:.1}"));
            let unit = r.per_iter.map_or("null".to_owned(), |(_, u)| json_escape(u));
            format!(
                "    {{\"id\": {}, \"mean_ns\": {:.1}, \"median_ns\": {:.1}, \"per_second\": {rate}, \"unit\": {unit}}}",
                json_escape(&r.id), r.mean_ns, r.median_ns
            )
        })
        .collect();
    s.push_str(&rows.join(",\n"));
    s.push_str("\n  ],\n");
    s.push_str(&format!(
        "  \"latency\": {},\n",
        latency.map_or("null", str::trim)
    ));
    s.push_str(&format!(
        "  \"rss\": {}\n}}\n",
        rss.map_or("null", str::trim)
    ));
    s
}

/// The baseline a result is compared with in its group's table.
fn bench_baseline<'a>(r: &BenchResult, group: &[&'a BenchResult]) -> Option<&'a BenchResult> {
    let by_fn = |f: &str| group.iter().copied().find(|b| b.function == f);
    if r.group == "error_path/throughput" {
        let prefix = r.function.split("_fail_").next()?;
        return by_fn(&format!("{prefix}_fail_0pct"));
    }
    by_fn("raw_crossbeam")
        .or_else(|| by_fn("one_success"))
        .or_else(|| {
            group
                .iter()
                .copied()
                .find(|b| b.function.contains("baseline"))
        })
}

fn bench_markdown(
    m: &Machine,
    results: &[BenchResult],
    ratios: &[Ratio],
    latency: Option<&str>,
    rss: Option<&str>,
) -> String {
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str("Generated by `cargo xtask bench");
    s.push_str(if m.quick { " --quick`" } else { "`" });
    s.push_str(" (do not edit by hand; the method is in each bench's module docs, `crates/*/benches/*.rs`).\n");
    s.push_str("Every ratio compares results of the same run, in the same process where it is a ratio of one bench file.\n");
    s.push_str("The throughput ratios (bus on / raw, bus off / raw, bus on / bus off) come from `crates/bus-bench/src/bin/ratios.rs`: raw, off and on run one after the other in every round, in a rotating order, and the result is the median of the per-round ratios (the quartiles beside it). Criterion's throughput tables below measure each variant in its own stretch of time, so on this shared machine their ratios can swing by half; read them for absolute rates, not for ratios.\n\n");
    s.push_str("## Machine\n\n| | |\n|---|---|\n");
    for (k, v) in [
        ("date", m.date.clone()),
        ("commit", m.commit.clone()),
        ("CPU", m.cpu.clone()),
        ("logical CPUs (nproc)", m.logical_cpus.to_string()),
        ("memory", m.memory.clone()),
        ("kernel", m.kernel.clone()),
        ("rustc", m.rustc.clone()),
        (
            "load average before / after",
            format!("{} / {}", m.load_before, m.load_after),
        ),
        (
            "mode",
            if m.quick {
                "--quick (short warm-up and measurement, fewer messages)".into()
            } else {
                "full".to_owned()
            },
        ),
        ("wall time", format!("{:.0} s", m.seconds)),
    ] {
        s.push_str(&format!("| {k} | {v} |\n"));
    }
    s.push_str("\n## Goals\n\n| measure | result | goal | |\n|---|---:|---|---|\n");
    for r in ratios {
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.name,
            r.shown,
            r.goal,
            r.verdict()
        ));
    }
    if let Some(lat) = latency {
        s.push_str("\n## Latency (publish to handler, paced)\n\n");
        let interval = json_field(lat, "interval_ns")
            .and_then(json_number)
            .unwrap_or(0.0);
        let n = json_field(lat, "messages")
            .and_then(json_number)
            .unwrap_or(0.0);
        s.push_str(&format!(
            "One message every {}, {n:.0} recorded messages per variant (HDR histogram), in interleaved rounds; the table pools the rounds, the goal line above takes the median of the per-round p99 differences.\n\n",
            fmt_ns(interval)
        ));
        s.push_str("| variant | p50 | p99 | p99.9 | max | mean | p99 added vs raw |\n|---|---:|---:|---:|---:|---:|---:|\n");
        let raw_p99 = json_field(lat, "raw_crossbeam")
            .and_then(|v| json_field(v, "p99_ns"))
            .and_then(json_number);
        for variant in ["raw_crossbeam", "bus_off", "bus_on"] {
            let Some(v) = json_field(lat, variant) else {
                continue;
            };
            let f = |k: &str| json_field(v, k).and_then(json_number).unwrap_or(0.0);
            let added = raw_p99.map_or("-".to_owned(), |r| fmt_ns(f("p99_ns") - r));
            s.push_str(&format!(
                "| {variant} | {} | {} | {} | {} | {} | {added} |\n",
                fmt_ns(f("p50_ns")),
                fmt_ns(f("p99_ns")),
                fmt_ns(f("p999_ns")),
                fmt_ns(f("max_ns")),
                fmt_ns(f("mean_ns"))
            ));
        }
    }
    if let Some(rss) = rss {
        s.push_str("\n## Memory (bus with error handling on)\n\n| measure | value |\n|---|---:|\n");
        for (label, key, kib) in [
            ("messages per phase", "messages", false),
            ("peak RSS before the runs", "baseline_peak_kib", true),
            (
                "peak RSS after the errors phase",
                "after_errors_peak_kib",
                true,
            ),
            ("errors phase wall time (s)", "errors_seconds", false),
            ("error logger history kept", "logger_history_len", false),
            (
                "peak RSS after the dead-letter phase",
                "after_dead_letters_peak_kib",
                true,
            ),
            (
                "dead-letter phase wall time (s)",
                "dead_letters_seconds",
                false,
            ),
            ("letters on disk (SQLite)", "dlq_rows", false),
        ] {
            let Some(v) = json_field(rss, key).and_then(json_number) else {
                continue;
            };
            let shown = if kib {
                format!("{:.1} MiB", v / 1024.0)
            } else {
                format!("{v}")
            };
            s.push_str(&format!("| {label} | {shown} |\n"));
        }
    }
    s.push_str("\n## All criterion results\n\nMean time per iteration; for throughput groups one iteration moves the stated number of messages. \"vs baseline\": throughput as a percentage of the baseline's, or time as a multiple of the baseline's.\n");
    let mut groups: Vec<&str> = results.iter().map(|r| r.group.as_str()).collect();
    groups.dedup();
    for g in groups {
        let members: Vec<&BenchResult> = results.iter().filter(|r| r.group == g).collect();
        s.push_str(&format!(
            "\n### {g}\n\n| benchmark | time | throughput | vs baseline |\n|---|---:|---:|---:|\n"
        ));
        for r in &members {
            let rate = r.rate().map_or("-".to_owned(), |(v, u)| fmt_rate(v, u));
            let vs = match bench_baseline(r, &members) {
                Some(b) if b.id == r.id => "baseline".to_owned(),
                Some(b) if r.per_iter.is_some() => {
                    format!("{:.1} %", b.mean_ns / r.mean_ns * 100.0)
                }
                Some(b) => format!("{:.2}x", r.mean_ns / b.mean_ns),
                None => "-".to_owned(),
            };
            s.push_str(&format!(
                "| {} | {} | {rate} | {vs} |\n",
                r.function,
                fmt_ns(r.mean_ns)
            ));
        }
    }
    s
}

fn soak(_args: &[String]) -> Result<(), String> {
    let mut s = cargo();
    s.args([
        "test",
        "--release",
        "-p",
        "bus",
        "--test",
        "soak",
        "--",
        "--nocapture",
    ])
    .env("BUS_SOAK", "1");
    step("soak", s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_of_reads_a_rounds_object_and_nothing_else() {
        let json = r#"{ "1to1/on_raw": { "median": 0.5, "p25": 0.4, "p75": 0.6 }, "rounds": 15 }"#;
        let q = quartiles_of(Some(json), "1to1/on_raw").expect("an object of quartiles");
        assert_eq!((q.p25, q.median, q.p75), (0.4, 0.5, 0.6));
        assert!(
            quartiles_of(Some(json), "rounds").is_none(),
            "a bare number"
        );
        assert!(quartiles_of(Some(json), "missing").is_none());
        assert!(quartiles_of(None, "1to1/on_raw").is_none());
    }
}
