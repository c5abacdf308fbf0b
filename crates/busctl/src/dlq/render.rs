//! Text output of the subcommands.

use super::CliError;
use super::escape::{escape_controls, printable_bytes};
use bus_dlq::{FailureGroup, LetterSummary, Stats, StoredLetter, VerifyReport};
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

/// The widest a `list` topic column gets; longer topics end in `…`.
const TOPIC_WIDTH: usize = 40;

/// The widest a `list` error column gets.
const ERROR_WIDTH: usize = 80;

/// One table cell: control characters escaped (a letter's text is
/// anyone's), at most `max` characters.
fn cell(s: &str, max: usize) -> String {
    clip(&escape_controls(s, false), max)
}

/// Each column as wide as its widest cell (header included), so a long
/// topic or state never shifts the columns after it.
pub(super) fn list(out: &mut dyn Write, letters: &[LetterSummary]) -> Result<(), CliError> {
    let header = [
        "ID",
        "DEAD-LETTERED",
        "TOPIC",
        "CATEGORY",
        "STATE",
        "TRY",
        "ERROR",
    ];
    let rows: Vec<[String; 7]> = letters
        .iter()
        .map(|l| {
            [
                l.id.to_string(),
                time(l.dead_lettered_at),
                cell(&l.topic, TOPIC_WIDTH),
                l.category.as_str().to_owned(),
                l.state.as_str().to_owned(),
                l.attempts.to_string(),
                cell(
                    &match &l.replay_refusal {
                        Some(r) => format!("replay refused: {}", r.reason),
                        None => format!("{}: {}", l.error_type, l.error_message),
                    },
                    ERROR_WIDTH,
                ),
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: [&str; 7]| -> std::io::Result<()> {
        let [id, at, topic, category, state, tries, error] = cells;
        writeln!(
            out,
            "{id:<w0$}  {at:<w1$}  {topic:<w2$}  {category:<w3$}  {state:<w4$}  {tries:>w5$}  {error}",
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4],
            w5 = width[5],
        )
    };
    line(out, header)?;
    for row in &rows {
        line(out, std::array::from_fn(|i| row[i].as_str()))?;
    }
    writeln!(out, "{} letters", letters.len())?;
    Ok(())
}

/// A letter's text for one line of `show`.
fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    escape_controls(s, false)
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
    if let Some(r) = &s.replay_refusal {
        writeln!(
            out,
            "replay      refused {} time(s), last at {}{}: {}",
            r.attempts,
            time(r.at),
            r.retry_at
                .map(|t| format!(", tried again at {}", time(t)))
                .unwrap_or_default(),
            esc(&r.reason)
        )?;
    }
    writeln!(out, "reason      {}", esc(&l.reason.to_string()))?;
    writeln!(
        out,
        "component   {} (group {})",
        esc(&l.component),
        esc(&l.group)
    )?;
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
        writeln!(out, "correlation {}", esc(c))?;
    }
    for (k, v) in &e.headers {
        writeln!(out, "header      {}: {}", esc(k), esc(v))?;
    }
    writeln!(
        out,
        "error       [{} / {}] {}: {}",
        r.category.as_str(),
        r.severity.as_str(),
        esc(&r.error_type),
        esc(&r.message)
    )?;
    for cause in &r.source_chain {
        writeln!(out, "  caused by {}", esc(cause))?;
    }
    for h in &e.history {
        writeln!(
            out,
            "attempt {:>3} {} {} [{}] {}: {} -> {}",
            h.attempt,
            time(h.at),
            esc(&h.component),
            h.category.as_str(),
            esc(&h.error_type),
            esc(&h.message),
            esc(&h.decision)
        )?;
    }
    writeln!(
        out,
        "payload     {} bytes{}",
        e.payload.len(),
        e.content_type
            .as_ref()
            .map(|c| format!(" ({})", esc(c)))
            .unwrap_or_default()
    )?;
    // Escaped, not decoded lossily: a payload's control bytes could drive
    // the terminal, and bytes that are not UTF-8 are shown, not replaced.
    writeln!(out, "{}", clip(&printable_bytes(&e.payload), 2000))?;
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
            cell(&g.component, 16),
            esc(&g.error_type),
            cell(&g.sample_message, 60),
            esc(&g.topics.iter().cloned().collect::<Vec<_>>().join(", "))
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
        ("replay refusal", &s.by_replay_refusal),
    ] {
        if map.is_empty() {
            continue;
        }
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
    if let Some(n) = r.groups_mismatch {
        writeln!(
            out,
            "failure-group counts: {n} rows disagree with the letters table \
             (the groups view reads them)"
        )?;
    }
    if let Some(w) = &r.wal_damage {
        writeln!(out, "{w}")?;
    }
    writeln!(out, "{}", if r.is_ok() { "OK" } else { "PROBLEMS FOUND" })?;
    Ok(())
}
