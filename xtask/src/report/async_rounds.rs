//! The async rounds (`target/bench-async.json`, written by
//! `crates/bus-bench/src/bin/async_rounds.rs`): async subscribers on tokio
//! beside a hand-written tokio consumer with the same in-flight limit.

use super::goals::Goal;
use super::{Ratio, field, fmt_rate, number, quartiles_of};
use serde_json::Value;

/// The workloads, with how the report names each.
const WORKLOADS: [(&str, &str); 2] = [
    ("trivial", "trivial async handlers"),
    ("timer", "handlers awaiting a 20 ms timer"),
];

/// "N messages, L in flight, T threads": how a workload ran.
fn how(json: &Value, workload: &str) -> String {
    let n = |key: &str| number(Some(json), &format!("{workload}/{key}")).unwrap_or(0.0);
    format!(
        "{:.0} rounds of {:.0}, {:.0} in flight, {:.0} threads in the process",
        number(Some(json), "rounds").unwrap_or(0.0),
        n("messages"),
        n("in_flight"),
        n("threads")
    )
}

/// One goal line per workload: the bus (error handling on) over the
/// baseline, median of the per-round ratios, judged by `trivial` and
/// `timer` respectively.
pub(super) fn ratios(trivial: &Goal, timer: &Goal, json: Option<&Value>) -> Vec<Ratio> {
    let Some(json) = json else {
        return Vec::new();
    };
    WORKLOADS
        .iter()
        .zip([trivial, timer])
        .filter_map(|(&(key, name), goal)| {
            let q = quartiles_of(Some(json), &format!("{key}/on_base"))?;
            Some(Ratio::percent(
                &format!(
                    "async subscriber (error handling on) / hand-written tokio consumer, {name}"
                ),
                &how(json, key),
                &q,
                goal,
            ))
        })
        .collect()
}

/// The "Async handlers on tokio" section of `docs/benchmarks.md`.
pub(super) fn markdown(json: Option<&Value>) -> String {
    let mut s = String::from("\n## Async handlers on tokio\n\n");
    let Some(json) = json else {
        s.push_str("No results: the async rounds did not run or did not finish.\n");
        return s;
    };
    s.push_str("From `crates/bus-bench/src/bin/async_rounds.rs`: one publisher thread, one runtime of two worker threads, the memory transport. The baseline is a hand-written consumer: the subscription awaited through `AsyncSubscription`, then per message an owned semaphore permit (the same in-flight limit) and a task running the handler inside `catch_unwind` and a timeout. The bus runs the same handler as an async subscriber with the same limit and a handler timeout. Every round runs the three once, in a rotating order; rates are medians over rounds, ratios the medians of the per-round ratios. Threads: the most seen in the process at the end of a batch (all three variants' subscriptions, the runtime, the publisher, the fixtures' own threads).\n\n");
    s.push_str("| workload | baseline | bus off | bus on | off / baseline | on / baseline | threads |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for (key, name) in WORKLOADS {
        let rate = |who: &str| {
            quartiles_of(Some(json), &format!("{key}/{who}_rate"))
                .map_or("-".to_owned(), |q| fmt_rate(q.median, "msg"))
        };
        let ratio = |pair: &str| {
            quartiles_of(Some(json), &format!("{key}/{pair}")).map_or("-".to_owned(), |q| {
                format!(
                    "{:.1} % ({:.1}-{:.1} %)",
                    q.median * 100.0,
                    q.p25 * 100.0,
                    q.p75 * 100.0
                )
            })
        };
        let threads = field(json, &format!("{key}/threads"))
            .and_then(Value::as_u64)
            .map_or("-".to_owned(), |t| t.to_string());
        s.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {threads} |\n",
            rate("base"),
            rate("off"),
            rate("on"),
            ratio("off_base"),
            ratio("on_base"),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::goals::Goals;

    fn sample() -> Value {
        serde_json::from_str(
            r#"{ "rounds": 15, "runtime_workers": 2,
                 "trivial/on_base": { "median": 0.85, "p25": 0.80, "p75": 0.90 },
                 "trivial/off_base": { "median": 0.95, "p25": 0.90, "p75": 1.00 },
                 "trivial/base_rate": { "median": 400000.0, "p25": 390000.0, "p75": 410000.0 },
                 "trivial/in_flight": 64, "trivial/messages": 200000, "trivial/threads": 12,
                 "timer/on_base": { "median": 0.88, "p25": 0.86, "p75": 0.90 },
                 "timer/in_flight": 1000, "timer/messages": 20000, "timer/threads": 13 }"#,
        )
        .expect("valid JSON")
    }

    #[test]
    fn a_line_per_workload_judged_by_its_own_goal() {
        let goals = Goals::load().expect("xtask/goals.toml parses");
        let trivial = goals.get("async_trivial_vs_tokio").expect("goal");
        let timer = goals.get("async_timers_vs_tokio").expect("goal");
        let lines = ratios(trivial, timer, Some(&sample()));
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(lines[0].name.contains("trivial async handlers"));
        assert!(
            lines[0].name.contains("64 in flight, 12 threads"),
            "{}",
            lines[0].name
        );
        assert_eq!(
            (lines[0].shown.as_str(), lines[0].pass),
            ("85.0 %", Some(true))
        );
        assert!(lines[1].name.contains("1000 in flight, 13 threads"));
        assert_eq!(lines[1].pass, Some(false), "88 % is under the 90 % goal");
        assert!(ratios(trivial, timer, None).is_empty());
    }

    #[test]
    fn the_table_shows_rates_ratios_and_threads() {
        let md = markdown(Some(&sample()));
        assert!(
            md.contains("| trivial async handlers | 400.0 Kmsg/s | - | - | 95.0 % (90.0-100.0 %) | 85.0 % (80.0-90.0 %) | 12 |"),
            "{md}"
        );
        assert!(md.contains("| handlers awaiting a 20 ms timer |"), "{md}");
        assert!(markdown(None).contains("No results"));
    }
}
