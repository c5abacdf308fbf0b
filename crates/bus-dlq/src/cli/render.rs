//! Text output of the subcommands.

use super::CliError;
use crate::{FailureGroup, LetterSummary, Stats, StoredLetter, VerifyReport};
use std::io::Write;
use std::time::SystemTime;

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(n.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

pub(super) fn list(out: &mut dyn Write, letters: &[LetterSummary]) -> Result<(), CliError> {
    writeln!(
        out,
        "{:<36}  {:<20}  {:<24}  {:<16}  {:<8}  {:>3}  ERROR",
        "ID", "DEAD-LETTERED", "TOPIC", "CATEGORY", "STATE", "TRY"
    )?;
    for l in letters {
        writeln!(
            out,
            "{:<36}  {:<20}  {:<24}  {:<16}  {:<8}  {:>3}  {}",
            l.id,
            time(l.dead_lettered_at),
            clip(&l.topic, 24),
            l.category.as_str(),
            l.state.as_str(),
            l.attempts,
            clip(&format!("{}: {}", l.error_type, l.error_message), 80)
        )?;
    }
    writeln!(out, "{} letters", letters.len())?;
    Ok(())
}

pub(super) fn show(out: &mut dyn Write, s: &StoredLetter) -> Result<(), CliError> {
    let l = &s.letter;
    let e = &l.envelope;
    let r = &l.report;
    writeln!(out, "letter      {}", l.id)?;
    writeln!(
        out,
        "state       {}{}",
        s.state,
        s.replayed_at
            .map(|t| format!(" at {}", time(t)))
            .unwrap_or_default()
    )?;
    writeln!(out, "reason      {}", l.reason)?;
    writeln!(out, "component   {} (group {})", l.component, l.group)?;
    writeln!(out, "dead at     {}", time(l.dead_lettered_at))?;
    writeln!(out, "signature   {}", s.signature)?;
    writeln!(
        out,
        "message     {} on {} (attempt {}, priority {})",
        e.id,
        e.topic,
        e.attempt,
        e.priority.as_str()
    )?;
    if let Some(c) = &e.correlation_id {
        writeln!(out, "correlation {c}")?;
    }
    for (k, v) in &e.headers {
        writeln!(out, "header      {k}: {v}")?;
    }
    writeln!(
        out,
        "error       [{} / {}] {}: {}",
        r.category.as_str(),
        r.severity.as_str(),
        r.error_type,
        r.message
    )?;
    for cause in &r.source_chain {
        writeln!(out, "  caused by {cause}")?;
    }
    for h in &e.history {
        writeln!(
            out,
            "attempt {:>3} {} {} [{}] {}: {} -> {}",
            h.attempt,
            time(h.at),
            h.component,
            h.category.as_str(),
            h.error_type,
            h.message,
            h.decision
        )?;
    }
    let text = String::from_utf8_lossy(&e.payload);
    writeln!(
        out,
        "payload     {} bytes{}",
        e.payload.len(),
        e.content_type
            .as_ref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default()
    )?;
    writeln!(out, "{}", clip(&text, 2000))?;
    Ok(())
}

pub(super) fn groups(out: &mut dyn Write, groups: &[FailureGroup]) -> Result<(), CliError> {
    writeln!(
        out,
        "{:<16}  {:>6}  {:<20}  {:<20}  {:<16}  SAMPLE",
        "SIGNATURE", "COUNT", "FIRST", "LAST", "COMPONENT"
    )?;
    for g in groups {
        writeln!(
            out,
            "{:<16}  {:>6}  {:<20}  {:<20}  {:<16}  {}: {} (topics: {})",
            g.signature,
            g.count,
            time(g.first_seen),
            time(g.last_seen),
            clip(&g.component, 16),
            g.error_type,
            clip(&g.sample_message, 60),
            g.topics.iter().cloned().collect::<Vec<_>>().join(", ")
        )?;
    }
    Ok(())
}

pub(super) fn stats(out: &mut dyn Write, s: &Stats) -> Result<(), CliError> {
    writeln!(
        out,
        "{} letters, {} payload bytes",
        s.total, s.payload_bytes
    )?;
    for (title, map) in [
        ("state", &s.by_state),
        ("category", &s.by_category),
        ("reason", &s.by_reason),
        ("topic", &s.by_topic),
    ] {
        writeln!(out, "by {title}:")?;
        for (k, v) in map {
            writeln!(out, "  {k:<32} {v}")?;
        }
    }
    Ok(())
}

pub(super) fn verify(out: &mut dyn Write, r: &VerifyReport) -> Result<(), CliError> {
    writeln!(out, "integrity check: {}", r.integrity.join("; "))?;
    writeln!(
        out,
        "rows checked: {}, bad rows: {}",
        r.rows_checked,
        r.bad_rows.len()
    )?;
    for b in &r.bad_rows {
        writeln!(out, "  {}: {}", b.id, b.error)?;
    }
    if let Some(t) = &r.totals_mismatch {
        writeln!(
            out,
            "totals record {} letters ({} bytes), the letters table holds {} ({} bytes)",
            t.recorded_letters, t.recorded_bytes, t.counted_letters, t.counted_bytes
        )?;
    }
    writeln!(out, "{}", if r.is_ok() { "OK" } else { "PROBLEMS FOUND" })?;
    Ok(())
}
