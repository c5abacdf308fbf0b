//! The NATS rounds (`target/bench-nats.json`, written by
//! `crates/bus-bench/src/bin/nats/`): the bus over NATS beside raw
//! async-nats with the same number of PubAcks in flight, per window.

use super::goals::Goal;
use super::{Ratio, field, fmt_rate, number, quartiles_of};
use serde_json::Value;

/// The windows the file gives figures for (`windows`), in its order.
fn windows(json: &Value) -> Vec<u64> {
    field(json, "windows")
        .and_then(Value::as_array)
        .map(|ws| ws.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// What the bus runs at `window`, and what the raw program does there.
fn label(window: u64) -> (String, String) {
    if window == 1 {
        ("Bus::publish".into(), "each PubAck awaited".into())
    } else {
        (
            format!("Publisher, window {window}"),
            format!("{window} PubAcks in flight"),
        )
    }
}

/// "R rounds of N × 1024 B, prefetch P": how the figures were taken.
fn how(json: &Value) -> String {
    let n = |key: &str| number(Some(json), key).unwrap_or(0.0);
    format!(
        "{:.0} rounds of {:.0} × {:.0} B, prefetch {:.0}",
        n("rounds"),
        n("messages"),
        n("payload_bytes"),
        n("prefetch")
    )
}

/// One goal line per window the bus was measured at: bus/raw, median of
/// the per-round ratios.
pub(super) fn ratios(goal: &Goal, json: Option<&Value>) -> Vec<Ratio> {
    let Some(json) = json else {
        return Vec::new();
    };
    windows(json)
        .into_iter()
        .filter_map(|w| {
            let q = quartiles_of(Some(json), &format!("window_{w}/bus_over_raw"))?;
            let (bus, raw) = label(w);
            Some(Ratio::percent(
                &format!("bus over NATS / raw async-nats, {bus} / {raw}"),
                &how(json),
                &q,
                goal,
            ))
        })
        .collect()
}

/// The "Bus over NATS" section of `docs/benchmarks.md`: every window's
/// rates and ratio, or why there are none.
pub(super) fn markdown(json: Option<&Value>) -> String {
    let mut s = String::from("\n## Bus over NATS\n\n");
    let Some(json) = json else {
        s.push_str("No results: the NATS rounds did not run or did not finish.\n");
        return s;
    };
    if let Some(why) = field(json, "skipped").and_then(Value::as_str) {
        s.push_str(&format!("Skipped: {why}.\n"));
        return s;
    }
    let text = |key: &str| field(json, key).and_then(Value::as_str).unwrap_or("?");
    s.push_str(&format!(
        "From `crates/bus-bench/src/bin/nats/`: publish + consume + ack through nats-server {} ({} storage), {} messages. Every round runs every mode once in a rotating order, each on a fresh stream and durable consumer made by the transport; the raw async-nats program sends the bus's headers (`Nats-Msg-Id` included), pulls in the same batches and double-acks each message ({}), as the transport does. Rates are medians over rounds; the ratio is the median of the per-round ratios.\n\n",
        text("server"),
        text("storage"),
        how(json),
        text("raw_settle"),
    ));
    s.push_str("| PubAcks in flight | raw async-nats | bus over NATS | bus / raw (p25-p75) |\n|---:|---:|---:|---:|\n");
    for w in windows(json) {
        let rate = |who: &str| {
            quartiles_of(Some(json), &format!("window_{w}/{who}_rate"))
                .map_or("-".to_owned(), |q| fmt_rate(q.median, "msg"))
        };
        let ratio = quartiles_of(Some(json), &format!("window_{w}/bus_over_raw")).map_or(
            "- (not measured)".to_owned(),
            |q| {
                format!(
                    "{:.1} % ({:.1}-{:.1} %)",
                    q.median * 100.0,
                    q.p25 * 100.0,
                    q.p75 * 100.0
                )
            },
        );
        let (bus, _) = label(w);
        s.push_str(&format!(
            "| {w} | {} | {} ({bus}) | {ratio} |\n",
            rate("raw"),
            rate("bus")
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
            r#"{ "rounds": 5, "messages": 50000, "payload_bytes": 1024, "server": "2.9.10",
                 "storage": "file", "prefetch": 8, "raw_settle": "awaited",
                 "windows": [1, 16, 256], "bus_windows": [1],
                 "window_1/raw_rate": { "median": 8000.0, "p25": 7900.0, "p75": 8100.0 },
                 "window_1/bus_rate": { "median": 6000.0, "p25": 5900.0, "p75": 6100.0 },
                 "window_1/bus_over_raw": { "median": 0.75, "p25": 0.70, "p75": 0.80 },
                 "window_16/raw_rate": { "median": 40000.0, "p25": 39000.0, "p75": 41000.0 } }"#,
        )
        .expect("valid JSON")
    }

    #[test]
    fn a_line_per_window_the_bus_ran_at_judged_on_the_median() {
        let goals = Goals::load().expect("xtask/goals.toml parses");
        let goal = goals.get("nats_bus_vs_raw").expect("the NATS goal");
        let lines = ratios(goal, Some(&sample()));
        assert_eq!(lines.len(), 1, "{lines:#?}");
        let l = &lines[0];
        assert!(
            l.name.contains("Bus::publish / each PubAck awaited"),
            "{}",
            l.name
        );
        assert!(l.name.contains("5 rounds of 50000 × 1024 B"), "{}", l.name);
        assert!(l.name.contains("p25-p75 70.0-80.0 %"), "{}", l.name);
        assert_eq!((l.shown.as_str(), l.pass), ("75.0 %", Some(false)));
        assert!(ratios(goal, None).is_empty());
    }

    #[test]
    fn the_table_shows_each_window_with_what_was_measured() {
        let md = markdown(Some(&sample()));
        assert!(md.contains("nats-server 2.9.10 (file storage)"), "{md}");
        assert!(
            md.contains("| 1 | 8.0 Kmsg/s | 6.0 Kmsg/s (Bus::publish) | 75.0 % (70.0-80.0 %) |"),
            "{md}"
        );
        assert!(
            md.contains("| 16 | 40.0 Kmsg/s | - (Publisher, window 16) | - (not measured) |"),
            "{md}"
        );
        let skipped: Value =
            serde_json::from_str(r#"{ "skipped": "nats-server not reachable" }"#).expect("JSON");
        assert!(markdown(Some(&skipped)).contains("Skipped: nats-server not reachable."));
        assert!(markdown(None).contains("No results"));
    }
}
