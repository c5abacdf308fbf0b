//! The SQLite rounds (`target/bench-sqlite.json`, written by
//! `crates/bus-bench/src/bin/sqlite/`): the transport beside a hand-written
//! rusqlite program, and a lone publisher beside write + fdatasync.

use super::goals::Goal;
use super::{Ratio, field, fmt_rate, number, quartiles_of};
use serde_json::Value;

fn how(json: &Value) -> String {
    let n = |key: &str| number(Some(json), key).unwrap_or(0.0);
    format!(
        "{:.0} rounds of {:.0} × {:.0} B, {:.0} publishers × {:.0} in flight, lease {:.0}",
        n("rounds"),
        n("messages"),
        n("payload_bytes"),
        n("publishers"),
        n("window"),
        n("lease")
    )
}

/// The two goal lines: transport over hand-written, and one publisher
/// over write + fdatasync per record.
pub(super) fn ratios(pipelined: &Goal, single: &Goal, json: Option<&Value>) -> Vec<Ratio> {
    let Some(json) = json else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(q) = quartiles_of(Some(json), "bus_over_raw") {
        out.push(Ratio::percent(
            "bus-sqlite / hand-written rusqlite, Durability::Full",
            &how(json),
            &q,
            pipelined,
        ));
    }
    if let Some(q) = quartiles_of(Some(json), "single_over_baseline") {
        out.push(Ratio {
            name: format!(
                "bus-sqlite one publisher, publish / write+fdatasync per record ({:.0} publishes; median of rounds; p25-p75 {:.2}-{:.2}x)",
                number(Some(json), "single").unwrap_or(0.0),
                q.p25,
                q.p75
            ),
            value: q.median,
            shown: format!("{:.2}x", q.median),
            goal: single.shown.clone(),
            pass: Some(single.met(q.median)),
        });
    }
    out
}

/// The "SQLite transport" section of `docs/benchmarks.md`.
pub(super) fn markdown(json: Option<&Value>) -> String {
    let mut s = String::from("\n## SQLite transport\n\n");
    let Some(json) = json else {
        s.push_str("No results: the SQLite rounds did not run or did not finish.\n");
        return s;
    };
    let n = |key: &str| number(Some(json), key).unwrap_or(0.0);
    s.push_str(&format!(
        "From `crates/bus-bench/src/bin/sqlite/`: {}. Rates are medians over rounds; ratios are medians of the per-round ratios.\n\n",
        how(json)
    ));
    s.push_str("| measure | hand-written rusqlite / baseline | bus-sqlite |\n|---|---:|---:|\n");
    s.push_str(&format!(
        "| publish + consume + ack, Full | {} | {} |\n",
        fmt_rate(n("raw_rate"), "msg"),
        fmt_rate(n("bus_rate"), "msg")
    ));
    s.push_str(&format!(
        "| one publisher, time per message, Full | {:.0} µs (write + fdatasync) | {:.0} µs |\n",
        n("baseline_us"),
        n("single_us")
    ));
    if field(json, "bus_over_raw").is_none() {
        s.push_str("\n(no ratio recorded)\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::goals::Goals;

    #[test]
    fn both_lines_are_judged_on_their_medians() {
        let json: Value = serde_json::from_str(
            r#"{ "rounds": 5, "messages": 100000, "single": 1000, "payload_bytes": 1024,
                 "publishers": 4, "window": 256, "lease": 256,
                 "bus_rate": 60000.0, "raw_rate": 80000.0,
                 "bus_over_raw": { "median": 0.75, "p25": 0.7, "p75": 0.8 },
                 "single_us": 900.0, "baseline_us": 600.0,
                 "single_over_baseline": { "median": 1.5, "p25": 1.4, "p75": 1.6 } }"#,
        )
        .expect("JSON");
        let goals = Goals::load().expect("goals");
        let (p, s) = (
            goals.get("sqlite_vs_raw").expect("goal"),
            goals.get("sqlite_single_publish").expect("goal"),
        );
        let lines = ratios(p, s, Some(&json));
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].shown.as_str(), lines[0].pass),
            ("75.0 %", Some(true))
        );
        assert_eq!(
            (lines[1].shown.as_str(), lines[1].pass),
            ("1.50x", Some(true))
        );
        assert!(ratios(p, s, None).is_empty());
        let md = markdown(Some(&json));
        assert!(md.contains("80.0 Kmsg/s") && md.contains("900 µs"), "{md}");
    }
}
