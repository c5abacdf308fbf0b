//! `busctl dlq replay --deliver`: on a durable transport busctl publishes
//! the letters itself, so a replay needs no bus running on the data dir.

use super::{CliError, StoreArgs, json, open};
use crate::transport::{TransportKind, nats_config};
use bus_core::{PublishError, Topic, Transport};
use bus_dlq::{DlqQuery, Filter, LetterId, LetterState, ReplayRefusal, replay_envelope};
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

/// How `replay` reaches the bus.
#[derive(Debug, Clone, clap::Args)]
pub struct DeliverArgs {
    /// Publish the letters now instead of marking them for a running bus:
    /// each goes to the group that failed it (or to every group of `--to`)
    /// and is marked replayed, or replay_failed with the error. Needs a
    /// durable transport (`--transport nats`).
    #[arg(long)]
    pub deliver: bool,
    /// The transport `--deliver` publishes on.
    #[arg(long, value_enum, default_value_t = TransportKind::Memory, requires = "deliver")]
    pub transport: TransportKind,
    /// The NATS server for `--transport nats` (default: `url` of the
    /// configuration's `[nats]` section, nats://127.0.0.1:4222).
    #[arg(long, requires = "deliver")]
    pub nats_url: Option<String>,
    /// A bus configuration file: its `[nats]` section and `publish_timeout`
    /// apply (default: the built-in defaults).
    #[arg(long, requires = "deliver")]
    pub config: Option<PathBuf>,
}

/// What a delivering replay did.
#[derive(Debug, Default, serde::Serialize)]
struct Delivered {
    selected: u64,
    replayed: u64,
    failed: Vec<Failed>,
}

#[derive(Debug, serde::Serialize)]
struct Failed {
    id: LetterId,
    reason: String,
}

/// Publishes every letter `filter` selects on the transport of `how`.
pub(super) fn deliver(
    out: &mut dyn Write,
    store: &StoreArgs,
    filter: &Filter,
    target: Option<&Topic>,
    how: &DeliverArgs,
) -> Result<(), CliError> {
    let transport = connect(store, how)?;
    let dlq = open(store)?;
    let mut ids = Vec::new();
    dlq.walk(filter, &mut |page| {
        ids.extend(page.iter().map(|l| l.id));
        Ok(true)
    })?;
    let mut done = Delivered {
        selected: ids.len() as u64,
        ..Delivered::default()
    };
    let (nats, timeout) = transport;
    let bar = super::progress(done.selected, super::Unit::Letters);
    for id in ids {
        bar.inc(1);
        let Some(stored) = dlq.get(id)? else { continue };
        let to = target.or(stored.replay_topic.as_ref());
        let env = replay_envelope(&stored.letter, to);
        // The group that failed it, unless sent elsewhere: a destination
        // named by the operator is a new publish to every group there.
        let published = match to {
            Some(_) => nats.publish(env, timeout),
            None => nats.publish_to_group(&stored.letter.group, env, timeout),
        };
        let from = LetterState::REPLAYABLE;
        match published {
            Ok(_) => {
                dlq.set_state(
                    &[id],
                    &from,
                    LetterState::Replayed,
                    Some(SystemTime::now()),
                    to,
                )?;
                done.replayed += 1;
            }
            Err(error) => {
                refuse(&dlq, id, &from, to, &error)?;
                done.failed.push(Failed {
                    id,
                    reason: error.to_string(),
                });
            }
        }
    }
    bar.finish_and_clear();
    // Settles and publishes still buffered in the client go out.
    nats.close();
    report(out, store, target, &done)
}

fn connect(
    store: &StoreArgs,
    how: &DeliverArgs,
) -> Result<(bus_nats::NatsTransport, std::time::Duration), CliError> {
    if how.transport == TransportKind::Memory {
        return Err(CliError::DeliverNeedsDurableTransport);
    }
    let cfg = match &how.config {
        Some(path) => {
            bus::Config::from_file(path).map_err(|e| CliError::Usage(format!("--config: {e}")))?
        }
        None => bus::Config::default(),
    };
    let nats = nats_config(cfg.nats, how.nats_url.as_deref(), &store.data_dir)?;
    let url = nats.url.clone();
    let transport = bus_nats::NatsTransport::connect(nats).map_err(|e| CliError::Transport {
        url,
        reason: e.to_string(),
    })?;
    Ok((transport, cfg.publish_timeout))
}

/// Records a refused publish on the letter: `replay_failed` with the error,
/// as the bus's replay poller records one it refuses for good.
fn refuse(
    dlq: &bus_dlq::DlqFile,
    id: LetterId,
    from: &[LetterState],
    to: Option<&Topic>,
    error: &PublishError,
) -> Result<(), CliError> {
    let now = SystemTime::now();
    // A refusal is recorded on a requested replay: request it, then refuse
    // it. A bus poller that takes it in between publishes it, which is what
    // was asked for.
    dlq.set_state(&[id], from, LetterState::ReplayRequested, None, to)?;
    let refusal = ReplayRefusal::new(&error.to_string(), 1, now, None);
    dlq.refuse_replay(id, &refusal, LetterState::ReplayFailed)?;
    Ok(())
}

fn report(
    out: &mut dyn Write,
    store: &StoreArgs,
    target: Option<&Topic>,
    done: &Delivered,
) -> Result<(), CliError> {
    if store.json {
        json(out, done)?;
    } else {
        writeln!(
            out,
            "replayed {} of {} letters{} (published, marked replayed).",
            done.replayed,
            done.selected,
            target.map(|t| format!(" to {t}")).unwrap_or_default()
        )?;
        for f in &done.failed {
            writeln!(out, "  {} failed: {}", f.id, f.reason)?;
        }
    }
    match done.failed.len() {
        0 => Ok(()),
        n => Err(CliError::DeliverFailed {
            failed: n,
            selected: done.selected,
        }),
    }
}
