//! The console's dead-letter views at scale (`target/bench-console.json`,
//! written by `crates/bus-console/examples/console_scale.rs`): the p95
//! server time of the groups view and of one page of letters, unfiltered
//! and with each single filter.

use super::goals::Goal;
use super::{Ratio, field, number};
use serde_json::Value;

/// One goal line per view and filter, in the file's order.
pub(super) fn ratios(goal: &Goal, json: Option<&Value>) -> Vec<Ratio> {
    let Some(json) = json else {
        return Vec::new();
    };
    let letters = number(Some(json), "letters").unwrap_or(0.0);
    let signatures = number(Some(json), "signatures").unwrap_or(0.0);
    let Some(Value::Object(views)) = field(json, "views") else {
        return Vec::new();
    };
    views
        .iter()
        .filter_map(|(name, v)| {
            let p95 = number(Some(v), "p95_ms")?;
            let p50 = number(Some(v), "p50_ms").unwrap_or(0.0);
            let (view, filter) = name.split_once('/').unwrap_or((name, ""));
            let view = if view == "groups" { "DLQ groups view" } else { "one page of letters" };
            Some(Ratio {
                name: format!(
                    "console {view}, {filter}, {letters:.0} letters / {signatures:.0} signatures (p95 server time; p50 {p50:.1} ms)"
                ),
                value: p95,
                shown: format!("{p95:.1} ms"),
                goal: goal.shown.clone(),
                pass: Some(goal.met(p95)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::goals::Goals;

    #[test]
    fn each_view_is_one_line_judged_by_its_p95() {
        let goals = Goals::load().expect("xtask/goals.toml parses");
        let goal = goals.get("console_dlq_views").expect("the goal");
        let json: Value = serde_json::from_str(
            r#"{ "letters": 1000000, "signatures": 1000, "views": {
                 "groups/unfiltered": { "p50_ms": 90.0, "p95_ms": 120.0 },
                 "letters_page/topic": { "p50_ms": 300.0, "p95_ms": 450.0 } } }"#,
        )
        .expect("valid JSON");
        let lines = ratios(goal, Some(&json));
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0]
                .name
                .contains("groups view, unfiltered, 1000000 letters")
        );
        assert_eq!(lines[0].pass, Some(true));
        assert_eq!(lines[1].pass, Some(false));
        assert_eq!(lines[1].shown, "450.0 ms");
        assert!(ratios(goal, None).is_empty());
    }
}
