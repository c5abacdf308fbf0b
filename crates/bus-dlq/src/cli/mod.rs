//! The `busctl dlq ...` subcommands (feature `cli`).
//!
//! Mount [`DlqCommand`] in a clap parser and call [`run`]. Every command
//! takes `--data-dir` (default `./bus-data`) and `--json`; the selecting ones
//! take the [`FilterArgs`]. They work beside a running bus: SQLite lets this
//! process read and update the file while the bus writes to it.

mod args;
mod render;

pub use args::{FilterArgs, StoreArgs};

use crate::{DlqConfig, DlqError, DlqQuery, Durability, Filter, LetterState, SqliteDlq};
use bus_core::Topic;
use indicatif::{ProgressBar, ProgressDrawTarget};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// A `busctl dlq` subcommand.
#[derive(Debug, clap::Subcommand)]
#[non_exhaustive]
pub enum DlqCommand {
    /// List dead letters.
    List {
        /// Where the store is, how to print.
        #[command(flatten)]
        store: StoreArgs,
        /// Which letters.
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Show one letter in full: envelope, error report, history.
    Show {
        /// Where the store is, how to print.
        #[command(flatten)]
        store: StoreArgs,
        /// The letter id.
        id: uuid::Uuid,
    },
    /// Failures grouped by signature (error type + normalized message + component).
    Groups {
        /// Where the store is, how to print.
        #[command(flatten)]
        store: StoreArgs,
        /// Which letters.
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Ask the running bus to re-publish the selected letters.
    Replay {
        /// Where the store is, how to print.
        #[command(flatten)]
        store: StoreArgs,
        /// Which letters.
        #[command(flatten)]
        filter: FilterArgs,
        /// Re-publish to this topic instead of each letter's own.
        #[arg(long)]
        to: Option<String>,
        /// Show what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete the selected letters.
    Purge {
        /// Where the store is, how to print.
        #[command(flatten)]
        store: StoreArgs,
        /// Which letters.
        #[command(flatten)]
        filter: FilterArgs,
        /// Only letters dead-lettered longer ago than this (`30d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Only replayed letters whose replay is older than this (the audit period).
        #[arg(long, value_parser = humantime::parse_duration)]
        replayed_older_than: Option<Duration>,
        /// Required to purge with no filter at all.
        #[arg(long)]
        all: bool,
        /// Show what would be deleted, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Counts by topic, category, reason and state.
    Stats {
        /// Where the store is, how to print.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Run SQLite's integrity check and decode every row.
    Verify {
        /// Where the store is, how to print.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write the selected letters as JSON lines (payloads included).
    Export {
        /// Where the store is, how to print.
        #[command(flatten)]
        store: StoreArgs,
        /// Which letters.
        #[command(flatten)]
        filter: FilterArgs,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Read letters written by `export` (existing ids are left alone).
    Import {
        /// Where the store is, how to print.
        #[command(flatten)]
        store: StoreArgs,
        /// The JSONL file.
        input: PathBuf,
    },
}

/// A `busctl dlq` command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The store failed.
    #[error(transparent)]
    Dlq(#[from] DlqError),
    /// Writing the output failed.
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
    /// The arguments do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// `verify` found problems (its report was printed).
    #[error("verify found {0} problem(s)")]
    VerifyFailed(usize),
}

fn json(out: &mut dyn Write, v: &impl serde::Serialize) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, v).map_err(|e| CliError::Io(e.into()))?;
    writeln!(out)?;
    Ok(())
}

/// Opens the store for a command that changes it (replay, purge), with the
/// default `Full` durability.
fn open(store: &StoreArgs) -> Result<SqliteDlq, CliError> {
    Ok(SqliteDlq::open_existing(DlqConfig::new(&store.data_dir))?)
}

/// Opens the store for a command that only reads it, under `Normal`: a
/// `Full` open would first fill the write-ahead log with up to 32 MiB of
/// zeros and sync it, under the write lock, and start a syncer thread, which
/// an operator looking into a running service's queue should not do to it.
/// The one commit such a command may make, folding letters the service
/// staged, is atomic under either: lost in a crash, it leaves them staged.
fn open_to_read(store: &StoreArgs) -> Result<SqliteDlq, CliError> {
    Ok(SqliteDlq::open_existing(
        DlqConfig::new(&store.data_dir).with_durability(Durability::Normal),
    )?)
}

fn progress(len: u64) -> ProgressBar {
    // Drawn on standard error, and only when it is a terminal.
    ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
}

/// Runs one command, writing its output to `out`.
pub fn run(cmd: DlqCommand, out: &mut dyn Write) -> Result<(), CliError> {
    let now = SystemTime::now();
    match cmd {
        DlqCommand::List { store, filter } => {
            let letters = open_to_read(&store)?.list(&filter.to_filter(now)?)?;
            if store.json {
                json(out, &letters)
            } else {
                render::list(out, &letters)
            }
        }
        DlqCommand::Show { store, id } => {
            let dlq = open_to_read(&store)?;
            let Some(letter) = dlq.get(id)? else {
                return Err(CliError::Usage(format!("no letter {id}")));
            };
            if store.json {
                json(out, &letter)
            } else {
                render::show(out, &letter)
            }
        }
        DlqCommand::Groups { store, filter } => {
            let groups = open_to_read(&store)?.groups(&filter.to_filter(now)?)?;
            if store.json {
                json(out, &groups)
            } else {
                render::groups(out, &groups)
            }
        }
        DlqCommand::Replay {
            store,
            filter,
            to,
            dry_run,
        } => {
            let target = to
                .map(|t| Topic::new(&t).map_err(|e| CliError::Usage(format!("--to: {e}"))))
                .transpose()?;
            replay(
                out,
                &store,
                &filter.to_filter(now)?,
                target.as_ref(),
                dry_run,
            )
        }
        DlqCommand::Purge {
            store,
            filter,
            older_than,
            replayed_older_than,
            all,
            dry_run,
        } => {
            let mut f = filter.to_filter(now)?;
            if let Some(age) = older_than {
                f.until = Some(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH));
            }
            if let Some(age) = replayed_older_than {
                f.state = Some(LetterState::Replayed);
                f.replayed_before = Some(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH));
            }
            if f == Filter::all() && !all {
                return Err(CliError::Usage(
                    "purge with no filter would delete every letter; pass --all to mean it".into(),
                ));
            }
            purge(out, &store, &f, dry_run)
        }
        DlqCommand::Stats { store } => {
            let stats = open_to_read(&store)?.stats()?;
            if store.json {
                json(out, &stats)
            } else {
                render::stats(out, &stats)
            }
        }
        DlqCommand::Verify { store } => {
            let report = open_to_read(&store)?.verify()?;
            if store.json {
                json(out, &report)?;
            } else {
                render::verify(out, &report)?;
            }
            match report.is_ok() {
                true => Ok(()),
                false => Err(CliError::VerifyFailed(
                    report.bad_rows.len()
                        + usize::from(report.integrity != ["ok"])
                        + usize::from(report.totals_mismatch.is_some()),
                )),
            }
        }
        DlqCommand::Export {
            store,
            filter,
            output,
        } => {
            let dlq = open_to_read(&store)?;
            let f = filter.to_filter(now)?;
            let Some(path) = output else {
                // The letters are the output.
                dlq.export_jsonl(&f, out)?;
                return Ok(());
            };
            let bar = progress(dlq.count(&f)?);
            let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
            let n = dlq.export_jsonl(&f, &mut bar.wrap_write(&mut file))?;
            file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            bar.finish_and_clear();
            summary(
                out,
                &store,
                "exported",
                n,
                &format!("to {}", path.display()),
            )
        }
        DlqCommand::Import { store, input } => {
            let dlq = SqliteDlq::open(DlqConfig::new(&store.data_dir))?;
            let file = std::fs::File::open(&input)?;
            let bar = progress(file.metadata()?.len());
            let mut reader = std::io::BufReader::new(bar.wrap_read(file));
            let report = dlq.import_jsonl(&mut reader)?;
            bar.finish_and_clear();
            if store.json {
                json(out, &report)
            } else {
                writeln!(
                    out,
                    "read {} letters: {} imported, {} already present",
                    report.read, report.inserted, report.existing
                )?;
                Ok(())
            }
        }
    }
}

fn summary(
    out: &mut dyn Write,
    store: &StoreArgs,
    verb: &str,
    n: u64,
    rest: &str,
) -> Result<(), CliError> {
    if store.json {
        json(out, &serde_json::json!({ verb: n }))
    } else {
        writeln!(out, "{verb} {n} letters {rest}")?;
        Ok(())
    }
}

fn replay(
    out: &mut dyn Write,
    store: &StoreArgs,
    filter: &Filter,
    target: Option<&Topic>,
    dry_run: bool,
) -> Result<(), CliError> {
    let dlq = open(store)?;
    let mut f = filter.clone();
    f.state = Some(LetterState::Dead);
    if filter.state.is_some_and(|s| s != LetterState::Dead) {
        return Err(CliError::Usage("only dead letters can be replayed".into()));
    }
    let letters = dlq.list(&f)?;
    let ids: Vec<_> = letters.iter().map(|l| l.id).collect();
    // The letters listed are the ones marked (one read of the selection);
    // the running bus re-publishes them.
    let marked = if dry_run {
        0
    } else {
        dlq.request_replay_ids(&ids, target)?
    };
    if store.json {
        return json(
            out,
            &serde_json::json!({
                "dry_run": dry_run,
                "selected": ids,
                "marked": marked,
                "target": target.map(Topic::as_str),
                "note": "the running bus re-publishes letters in state replay_requested",
            }),
        );
    }
    if dry_run {
        writeln!(
            out,
            "dry run: would request replay of {} letters",
            ids.len()
        )?;
        render::list(out, &letters)?;
    } else {
        writeln!(
            out,
            "requested replay of {marked} letters{}; the running bus picks them up and re-publishes them \
             (they show as `replayed` once it has)",
            target.map(|t| format!(" to {t}")).unwrap_or_default()
        )?;
    }
    Ok(())
}

fn purge(
    out: &mut dyn Write,
    store: &StoreArgs,
    filter: &Filter,
    dry_run: bool,
) -> Result<(), CliError> {
    let dlq = open(store)?;
    let letters = dlq.list(filter)?;
    let mut deleted = 0_u64;
    if !dry_run {
        let bar = progress(letters.len() as u64);
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
