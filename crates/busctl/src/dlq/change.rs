//! The commands that change the store: `replay` (mark, or deliver on a
//! durable transport) and `purge`.

use super::{
    CliError, DeliverArgs, StoreArgs, Unit, deliver, json, open, open_to_read, progress, render,
    spinner,
};
use bus_core::Topic;
use bus_dlq::{DlqQuery, Filter, LetterState};
use std::io::Write;

pub(super) fn replay(
    out: &mut dyn Write,
    store: &StoreArgs,
    filter: &Filter,
    target: Option<&Topic>,
    dry_run: bool,
    how: &DeliverArgs,
) -> Result<(), CliError> {
    if filter
        .state
        .is_some_and(|s| !LetterState::REPLAYABLE.contains(&s))
    {
        return Err(CliError::Usage(
            "only dead and replay_failed letters can be replayed".into(),
        ));
    }
    let mut f = filter.clone();
    // Unless told otherwise, dead letters (a failed replay is replayed again
    // only when asked for by `--state replay_failed`, once its cause is fixed).
    f.state = Some(filter.state.unwrap_or(LetterState::Dead));
    if dry_run {
        // A dry run only reads.
        let letters = open_to_read(store)?.list(&f)?;
        if store.json {
            let ids: Vec<_> = letters.iter().map(|l| l.id).collect();
            return json(
                out,
                &serde_json::json!({
                    "dry_run": true,
                    "selected": ids,
                    "marked": 0,
                    "target": target.map(Topic::as_str),
                }),
            );
        }
        writeln!(
            out,
            "dry run: would request replay of {} letters",
            letters.len()
        )?;
        return render::list(out, &letters);
    }
    if how.deliver {
        return deliver::deliver(out, store, &f, target, how);
    }
    let dlq = open(store)?;
    // One statement marks the whole selection, however large.
    let bar = spinner("marking");
    let marked = dlq.request_replay(&f, target);
    bar.finish_and_clear();
    let marked = marked?;
    if store.json {
        return json(
            out,
            &serde_json::json!({
                "dry_run": false,
                "marked": marked,
                "target": target.map(Topic::as_str),
                "note": REPLAY_NOTE,
            }),
        );
    }
    writeln!(
        out,
        "requested replay of {marked} letters{} (marked replay_requested).",
        target.map(|t| format!(" to {t}")).unwrap_or_default()
    )?;
    if marked > 0 {
        writeln!(out, "{REPLAY_NOTE}")?;
    }
    Ok(())
}

/// What marking a replay does and does not do: busctl has no handlers, so
/// only a bus running on the same data dir can deliver (on the memory
/// transport, the application's own).
const REPLAY_NOTE: &str = "Nothing is delivered yet: a bus running on this data dir picks \
     them up within its replay_poll_interval (1 s by default), re-publishes them and \
     marks them replayed. Until one runs, they wait in the store; busctl itself \
     delivers nothing (over NATS, --deliver --transport nats publishes them now).";

pub(super) fn purge(
    out: &mut dyn Write,
    store: &StoreArgs,
    filter: &Filter,
    dry_run: bool,
) -> Result<(), CliError> {
    let dlq = if dry_run {
        open_to_read(store)?
    } else {
        open(store)?
    };
    let letters = dlq.list(filter)?;
    let mut deleted = 0_u64;
    if !dry_run {
        let bar = progress(letters.len() as u64, Unit::Letters);
        let ids: Vec<_> = letters.iter().map(|l| l.id).collect();
        for chunk in ids.chunks(256) {
            deleted += dlq.delete(chunk)? as u64;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
    }
    if store.json {
        let ids: Vec<_> = letters.iter().map(|l| l.id).collect();
        return json(
            out,
            &serde_json::json!({ "dry_run": dry_run, "selected": ids, "deleted": deleted }),
        );
    }
    if dry_run {
        writeln!(out, "dry run: would delete {} letters", letters.len())?;
        render::list(out, &letters)
    } else {
        writeln!(out, "deleted {deleted} letters")?;
        Ok(())
    }
}
