//! The bench report: reads what the measuring programs wrote (criterion's
//! `estimates.json` files and each program's own `target/bench-*.json`),
//! judges the headline figures against `xtask/goals.toml`, and writes
//! `target/bench-report.json` and `docs/benchmarks.md`.

mod async_rounds;
mod console;
mod goals;
mod markdown;
mod nats;
mod ratios;
mod sqlite;

pub(crate) use goals::Goals;

use crate::root;
use serde::{Serialize, Serializer};
use serde_json::Value;
use std::path::Path;
use std::time::{Instant, SystemTime};

/// One `cargo xtask bench` run: when it started and where its results files are.
#[derive(Debug)]
pub(crate) struct Run<'a> {
    pub(crate) quick: bool,
    pub(crate) started: SystemTime,
    pub(crate) t0: Instant,
    pub(crate) load_before: String,
    pub(crate) target: &'a Path,
    pub(crate) rss: &'a Path,
    pub(crate) ratios: &'a Path,
    pub(crate) dlq: &'a Path,
    pub(crate) idle: &'a Path,
    pub(crate) nats: &'a Path,
    pub(crate) sqlite: &'a Path,
    pub(crate) console: &'a Path,
    pub(crate) asynchronous: &'a Path,
}

/// Collects the run's results, judges them and writes both reports.
pub(crate) fn write(goals: &Goals, run: &Run<'_>) -> Result<(), String> {
    let target = run.target;
    let mut results = Vec::new();
    bench_collect(&target.join("criterion"), run.started, &mut results);
    results.sort_by(|a, b| a.id.cmp(&b.id));
    // A results file written by this run (a stale one from an earlier run is ignored).
    let read_fresh = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|m| m >= run.started)
            .then(|| read_json(p))
            .flatten()
    };
    let latency = read_fresh(&target.join("bench-latency.json"));
    let rss = read_fresh(run.rss);
    let rounds = Rounds {
        breaker: read_fresh(&target.join("bench-breaker-ratios.json")),
        throughput: read_fresh(run.ratios),
        dlq: read_fresh(run.dlq),
        // Written by bus-health's `http` bench (a criterion run).
        http: read_fresh(&target.join("bench-http.json")),
        idle: read_fresh(run.idle),
        nats: read_fresh(run.nats),
        sqlite: read_fresh(run.sqlite),
        console: read_fresh(run.console),
        asynchronous: read_fresh(run.asynchronous),
    };
    let machine = Machine::probe(
        run.quick,
        run.load_before.clone(),
        run.t0.elapsed().as_secs_f64(),
    );
    let ratios = ratios::bench_ratios(goals, &results, &rounds, latency.as_ref(), rss.as_ref())?;

    let report = bench_json(&machine, &results, &ratios, latency.as_ref(), rss.as_ref())?;
    let report_path = target.join("bench-report.json");
    std::fs::write(&report_path, report)
        .map_err(|e| format!("cannot write {}: {e}", report_path.display()))?;
    let md = markdown::bench_markdown(
        &machine,
        &results,
        &ratios,
        latency.as_ref(),
        rss.as_ref(),
        &markdown::Sections {
            nats: rounds.nats.as_ref(),
            sqlite: rounds.sqlite.as_ref(),
            asynchronous: rounds.asynchronous.as_ref(),
        },
    );
    let md_path = root().join("docs/benchmarks.md");
    std::fs::create_dir_all(root().join("docs")).map_err(|e| e.to_string())?;
    std::fs::write(&md_path, md).map_err(|e| format!("cannot write {}: {e}", md_path.display()))?;
    eprintln!(
        "bench: {} results, report {} and {} in {:.0}s",
        results.len(),
        report_path.display(),
        md_path.display(),
        run.t0.elapsed().as_secs_f64()
    );
    for r in &ratios {
        eprintln!("    {:<48} {:>12}  {}", r.name, r.shown, r.verdict());
    }
    Ok(())
}

/// A JSON file's value; `None` when it is missing or does not parse (a
/// measuring program that died mid-write leaves no figure, not an error).
fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The value under `key` in `v`, or in the first object nested in it that
/// has one: the results files place their figures at different depths (the
/// latency bench's under `variants`), and a key names one figure per file.
pub(super) fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(key)
        .or_else(|| obj.values().find_map(|child| field(child, key)))
}

/// The number under `key` (see [`field`]).
pub(super) fn number(v: Option<&Value>, key: &str) -> Option<f64> {
    field(v?, key)?.as_f64()
}

/// One criterion result (`new/estimates.json` + `new/benchmark.json`).
#[derive(Debug)]
pub(super) struct BenchResult {
    pub(super) id: String,
    pub(super) group: String,
    pub(super) function: String,
    pub(super) mean_ns: f64,
    pub(super) median_ns: f64,
    /// Elements (or bytes, with `unit` "B") per iteration, if declared.
    pub(super) per_iter: Option<(f64, &'static str)>,
}

impl BenchResult {
    /// Elements (or bytes) per second.
    pub(super) fn rate(&self) -> Option<(f64, &'static str)> {
        self.per_iter
            .map(|(n, unit)| (n / (self.mean_ns * 1e-9), unit))
    }

    /// Reads one criterion `new/` directory's two files.
    fn read(estimates: &Value, meta: &Value) -> Option<Self> {
        let point = |outer: &str| estimates.get(outer)?.get("point_estimate")?.as_f64();
        let text = |key: &str| meta.get(key)?.as_str().map(str::to_owned);
        let mean_ns = point("mean")?;
        let id = text("full_id")?;
        let per_iter = meta.get("throughput").and_then(|t| {
            t.get("Elements")
                .and_then(Value::as_f64)
                .map(|n| (n, "elem"))
                .or_else(|| t.get("Bytes").and_then(Value::as_f64).map(|n| (n, "B")))
        });
        Some(Self {
            group: text("group_id").unwrap_or_default(),
            function: text("function_id").unwrap_or_else(|| id.clone()),
            id,
            mean_ns,
            median_ns: point("median").unwrap_or(mean_ns),
            per_iter,
        })
    }
}

/// Collects every `new/estimates.json` under `dir` written since `since`.
fn bench_collect(dir: &Path, since: SystemTime, out: &mut Vec<BenchResult>) {
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
            let meta = read_json(&path.join("benchmark.json")).unwrap_or(Value::Null);
            let est = read_json(&estimates).unwrap_or(Value::Null);
            if let Some(r) = BenchResult::read(&est, &meta) {
                out.push(r);
            }
        } else {
            bench_collect(&path, since, out);
        }
    }
}

fn whole<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(v.round() as u64)
}

/// `v` rounded to one decimal, as the report has always written times.
fn tenths(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Where and when the benches ran.
#[derive(Debug, Serialize)]
pub(super) struct Machine {
    pub(super) date: String,
    pub(super) cpu: String,
    pub(super) logical_cpus: usize,
    pub(super) memory: String,
    pub(super) kernel: String,
    pub(super) rustc: String,
    pub(super) commit: String,
    pub(super) load_before: String,
    pub(super) load_after: String,
    pub(super) quick: bool,
    #[serde(serialize_with = "whole")]
    pub(super) seconds: f64,
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
            std::process::Command::new(cmd)
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
#[derive(Debug, Serialize)]
pub(super) struct Ratio {
    pub(super) name: String,
    pub(super) value: f64,
    pub(super) shown: String,
    /// The goal as the report writes it (`shown` in `xtask/goals.toml`), or "-".
    pub(super) goal: String,
    #[serde(rename = "met")]
    pub(super) pass: Option<bool>,
}

impl Ratio {
    /// A fraction judged by `goal`, shown in percent, its name ending with
    /// `how` and the rounds' spread: `{what} ({how}; median of rounds;
    /// p25-p75 a-b %)`.
    pub(super) fn percent(what: &str, how: &str, q: &Quartiles, goal: &goals::Goal) -> Self {
        Self {
            name: format!(
                "{what} ({how}; median of rounds; p25-p75 {:.1}-{:.1} %)",
                q.p25 * 100.0,
                q.p75 * 100.0
            ),
            value: q.median,
            shown: format!("{:.1} %", q.median * 100.0),
            goal: goal.shown.clone(),
            pass: Some(goal.met(q.median)),
        }
    }

    pub(super) fn verdict(&self) -> &'static str {
        match self.pass {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "- (inconclusive or no goal)",
        }
    }
}

pub(super) fn fmt_ns(ns: f64) -> String {
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

pub(super) fn fmt_rate(rate: f64, unit: &str) -> String {
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
pub(super) struct Quartiles {
    pub(super) p25: f64,
    pub(super) median: f64,
    pub(super) p75: f64,
}

/// The `{"median": m, "p25": a, "p75": b}` object under `key` in a bench's
/// results file (every interleaved-rounds figure is written so).
pub(super) fn quartiles_of(json: Option<&Value>, key: &str) -> Option<Quartiles> {
    let obj = field(json?, key)?;
    let f = |name| obj.get(name)?.as_f64();
    Some(Quartiles {
        p25: f("p25")?,
        median: f("median")?,
        p75: f("p75")?,
    })
}

/// The results files of the interleaved-rounds measurements.
#[derive(Debug)]
pub(super) struct Rounds {
    pub(super) breaker: Option<Value>,
    pub(super) throughput: Option<Value>,
    pub(super) dlq: Option<Value>,
    /// `/healthz` latency under a hostile crowd (bench-http.json).
    pub(super) http: Option<Value>,
    pub(super) idle: Option<Value>,
    /// The bus over NATS beside raw async-nats (bench-nats.json).
    pub(super) nats: Option<Value>,
    /// bus-sqlite beside hand-written rusqlite (bench-sqlite.json).
    pub(super) sqlite: Option<Value>,
    /// The console's DLQ views at scale (bench-console.json).
    pub(super) console: Option<Value>,
    /// Async subscribers beside a hand-written tokio consumer
    /// (bench-async.json).
    pub(super) asynchronous: Option<Value>,
}

/// `target/bench-report.json`: the machine, the judged figures, every
/// criterion result, and the latency and RSS files as they were written.
fn bench_json(
    m: &Machine,
    results: &[BenchResult],
    ratios: &[Ratio],
    latency: Option<&Value>,
    rss: Option<&Value>,
) -> Result<String, String> {
    #[derive(Serialize)]
    struct Row<'a> {
        id: &'a str,
        mean_ns: f64,
        median_ns: f64,
        per_second: Option<f64>,
        unit: Option<&'static str>,
    }
    #[derive(Serialize)]
    struct Report<'a> {
        machine: &'a Machine,
        ratios: &'a [Ratio],
        benchmarks: Vec<Row<'a>>,
        latency: Option<&'a Value>,
        rss: Option<&'a Value>,
    }
    let benchmarks = results
        .iter()
        .map(|r| Row {
            id: &r.id,
            mean_ns: tenths(r.mean_ns),
            median_ns: tenths(r.median_ns),
            per_second: r.rate().map(|(v, _)| tenths(v)),
            unit: r.per_iter.map(|(_, u)| u),
        })
        .collect();
    let report = Report {
        machine: m,
        ratios,
        benchmarks,
        latency,
        rss,
    };
    let mut s = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quartiles_of_reads_a_rounds_object_and_nothing_else() {
        let json: Value = serde_json::from_str(
            r#"{ "1to1/on_raw": { "median": 0.5, "p25": 0.4, "p75": 0.6 }, "rounds": 15 }"#,
        )
        .expect("valid JSON");
        let q = quartiles_of(Some(&json), "1to1/on_raw").expect("an object of quartiles");
        assert_eq!((q.p25, q.median, q.p75), (0.4, 0.5, 0.6));
        assert!(
            quartiles_of(Some(&json), "rounds").is_none(),
            "a bare number"
        );
        assert!(quartiles_of(Some(&json), "missing").is_none());
        assert!(quartiles_of(None, "1to1/on_raw").is_none());
    }

    #[test]
    fn a_field_is_found_at_the_top_or_nested_once() {
        let latency = json!({
            "interval_ns": 20000,
            "variants": { "bus_on": { "p99_ns": 7.0 }, "added_p99_on_raw_ns": { "median": 3.0 } }
        });
        assert_eq!(number(Some(&latency), "interval_ns"), Some(20000.0));
        assert_eq!(number(field(&latency, "bus_on"), "p99_ns"), Some(7.0));
        assert_eq!(
            quartiles_of(Some(&latency), "added_p99_on_raw_ns").map(|q| q.median),
            None,
            "no quartiles without p25 and p75"
        );
        assert_eq!(number(Some(&latency), "absent"), None);
    }

    #[test]
    fn a_criterion_result_is_read_from_its_two_files() {
        let est =
            json!({ "mean": { "point_estimate": 120.5 }, "median": { "point_estimate": 118.0 } });
        let meta = json!({
            "group_id": "error_path", "function_id": "one_failure", "full_id": "error_path/one_failure",
            "throughput": { "Elements": 1000 }
        });
        let r = BenchResult::read(&est, &meta).expect("a result");
        assert_eq!(r.id, "error_path/one_failure");
        assert_eq!((r.mean_ns, r.median_ns), (120.5, 118.0));
        assert_eq!(r.per_iter, Some((1000.0, "elem")));
        assert!(BenchResult::read(&json!({}), &meta).is_none(), "no mean");
    }

    #[test]
    fn the_report_keeps_its_fields_in_order() {
        let m = Machine::probe(true, String::new(), 1.6);
        let ratios = [Ratio {
            name: "x".into(),
            value: 0.5,
            shown: "50.0 %".into(),
            goal: ">= 95 %".into(),
            pass: Some(false),
        }];
        let text = bench_json(&m, &[], &ratios, None, None).expect("serialises");
        let v: Value = serde_json::from_str(&text).expect("parses back");
        assert_eq!(v["machine"]["seconds"], json!(2));
        assert_eq!(v["ratios"][0]["met"], json!(false));
        let order: Vec<usize> = [
            "\"machine\"",
            "\"ratios\"",
            "\"benchmarks\"",
            "\"latency\"",
            "\"rss\"",
        ]
        .iter()
        .map(|k| text.find(k).expect("every section"))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }
}
