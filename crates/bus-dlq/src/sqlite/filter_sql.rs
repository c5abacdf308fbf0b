//! [`Filter`] compiled to a SQL `WHERE` clause: the same conditions as
//! [`Filter::matches`], checked against it by a conformance test.

use crate::query::Filter;
use crate::record::{LetterState, to_nanos};
use rusqlite::types::Value;

/// The clause (never empty: `1` when nothing narrows) and its parameters.
/// Ignores `limit` and `offset`.
pub(super) fn compile(f: &Filter) -> (String, Vec<Value>) {
    let mut parts: Vec<String> = vec!["1".into()];
    let mut params = Vec::new();
    let text = |s: &str| Value::Text(s.to_owned());
    if !f.ids.is_empty() {
        parts.push(format!("id IN ({})", vec!["?"; f.ids.len()].join(", ")));
        params.extend(f.ids.iter().map(|i| Value::Text(i.to_string())));
    }
    let mut eq = |col: &str, v: Option<Value>| {
        if let Some(v) = v {
            parts.push(format!("{col} = ?"));
            params.push(v);
        }
    };
    eq("topic", f.topic.as_deref().map(text));
    eq("category", f.category.map(|c| text(c.as_str())));
    eq("component", f.component.as_deref().map(text));
    eq("signature", f.signature.as_deref().map(text));
    // Not indexed: the reason lives in `summary_json`.
    eq(
        "json_extract(summary_json, '$.reason')",
        f.reason.as_deref().map(text),
    );
    eq("state", f.state.map(|s| text(s.as_str())));
    if f.state.is_some_and(|s| s != LetterState::Dead) {
        // The exact condition of the partial index `letters_state_active`:
        // SQLite uses that index only when the query says it.
        parts.push("state <> 'dead'".into());
    }
    let mut cmp = |cond: &str, v: Option<std::time::SystemTime>| {
        if let Some(t) = v {
            parts.push(cond.to_owned());
            params.push(Value::Integer(to_nanos(t)));
        }
    };
    cmp("dead_lettered_at >= ?", f.since);
    cmp("dead_lettered_at < ?", f.until);
    cmp("replayed_at < ?", f.replayed_before);
    if let Some(t) = &f.text {
        // SQLite's lower() folds ASCII only, like the Rust side.
        parts.push("instr(lower(error_message), ?) > 0".into());
        params.push(Value::Text(t.to_ascii_lowercase()));
    }
    (parts.join(" AND "), params)
}
