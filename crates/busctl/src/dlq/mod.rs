//! The `busctl dlq ...` subcommands, on bus-dlq's query API.
//!
//! Mount [`DlqCommand`] in a clap parser and call [`run`]. Every command
//! takes `--data-dir` (default `./bus-data`) and all but `export`, whose
//! output is JSON lines anyway, take `--json`; the selecting ones take the
//! [`FilterArgs`]. They work beside a running bus: SQLite lets this process
//! read and update the file while the bus writes to it. `replay` and `purge`
//! refuse to act on every letter unless given `--all`. Long work shows
//! progress on standard error when it is a terminal.

mod args;
mod change;
mod deliver;
mod escape;
mod output;
mod render;

pub use args::{DataDirArgs, FilterArgs, StoreArgs};
pub use deliver::DeliverArgs;

/// The most characters of an input an error message repeats.
const MAX_ECHO: usize = 200;

/// `s` itself when it has at most `max_chars` characters; else its first
/// `max_chars` characters and how long the whole was, so a long argument
/// never ends up whole in an error message.
fn excerpt(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_owned(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &s[..end], s.len()),
    }
}

use bus_core::Topic;
use bus_dlq::{DlqError, DlqFile, DlqQuery, Filter, LetterState, VerifyReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
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
    /// Ask the running bus to re-publish the selected letters: marks them
    /// `replay_requested`; a bus running on the same data dir re-publishes
    /// them at its next replay poll (`replay_poll_interval`). With
    /// `--deliver` on a durable transport, busctl publishes them itself.
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
        /// Required to replay with no filter at all.
        #[arg(long)]
        all: bool,
        /// Show what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Publish now rather than mark for a running bus.
        #[command(flatten)]
        deliver: DeliverArgs,
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
    /// Write the selected letters as JSON lines (payloads included: text
    /// when UTF-8, else base64). The output is JSON whatever the options, so
    /// there is no `--json`.
    Export {
        /// Where the store is.
        #[command(flatten)]
        store: DataDirArgs,
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
    /// A command that changes letters was given no filter: it would act on
    /// every letter, which takes `--all`.
    #[error(
        "{command} with no filter would act on every letter; add a filter \
         (--topic, --id, --signature, --state, ...) or pass --all to mean it"
    )]
    NoFilter {
        /// The command (`replay`, `purge`).
        command: &'static str,
    },
    /// `replay --deliver` on the memory transport, whose queues live in the
    /// application's process: busctl cannot reach them.
    #[error(
        "--deliver needs a durable transport (--transport nats): on the memory \
         transport only the application's own bus can deliver; without \
         --deliver the letters are marked and its replay poller delivers them"
    )]
    DeliverNeedsDurableTransport,
    /// `replay --deliver` could not reach the transport.
    #[error("cannot connect to {url}: {reason}")]
    Transport {
        /// The server.
        url: String,
        /// Why.
        reason: String,
    },
    /// `replay --deliver`: some publishes were refused (those letters are
    /// `replay_failed`, with the error; the rest were replayed).
    #[error("{failed} of {selected} letters could not be delivered (now replay_failed)")]
    DeliverFailed {
        /// Letters whose publish failed.
        failed: usize,
        /// Letters selected.
        selected: u64,
    },
}

fn json(out: &mut dyn Write, v: &impl serde::Serialize) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, v).map_err(|e| CliError::Io(e.into()))?;
    writeln!(out)?;
    Ok(())
}

/// Opens the store for a command that changes it (replay, purge): one
/// connection, every commit synced, none of the running bus's threads and
/// no preallocated write-ahead log.
fn open(store: &StoreArgs) -> Result<DlqFile, CliError> {
    Ok(DlqFile::open_read_write(&store.data_dir)?)
}

/// Opens the store for a command that only reads it: nothing is written,
/// created or migrated (see [`DlqFile::open_read_only`]), so it works on a
/// read-only directory and beside a running bus.
fn open_to_read(store: &StoreArgs) -> Result<DlqFile, CliError> {
    Ok(DlqFile::open_read_only(&store.data_dir)?)
}

/// A progress bar of `len` steps, drawn on standard error and only when it
/// is a terminal (never in a pipe, a log file or a test).
fn progress(len: u64, unit: Unit) -> ProgressBar {
    let style = match unit {
        Unit::Letters => "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} letters ({eta})",
        Unit::Bytes => "{elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes} ({eta})",
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(style) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// What a progress bar counts.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Letters,
    Bytes,
}

/// A spinner with `msg` for work that has no steps to count, drawn like
/// [`progress`].
fn spinner(msg: &'static str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_message(msg);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Runs one command, writing its output to `out`.
///
/// When `out` is closed by its reader (`busctl dlq list | head -1`: the
/// write fails with [`BrokenPipe`](std::io::ErrorKind::BrokenPipe)), the
/// command stops quietly and returns `Ok`, as a shell filter does; what it
/// changed before that (a replay's marks) stays changed.
pub fn run(cmd: DlqCommand, out: &mut dyn Write) -> Result<(), CliError> {
    let mut out = output::Output::new(out);
    match execute(cmd, &mut out) {
        Err(_) if out.closed() => Ok(()),
        done => done,
    }
}

fn execute(cmd: DlqCommand, out: &mut dyn Write) -> Result<(), CliError> {
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
            // `--limit` and `--offset` page the groups, not the letters
            // grouped: every matching letter counts in its group.
            let f = filter.to_filter(now)?;
            let groups: Vec<_> = open_to_read(&store)?
                .groups(&f.unpaged())?
                .into_iter()
                .skip(f.offset)
                .take(f.limit.unwrap_or(usize::MAX))
                .collect();
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
            all,
            dry_run,
            deliver,
        } => {
            let target = to
                .map(|t| Topic::new(&t).map_err(|e| CliError::Usage(format!("--to: {e}"))))
                .transpose()?;
            let f = filter.to_filter(now)?;
            if f == Filter::all() && !all {
                return Err(CliError::NoFilter { command: "replay" });
            }
            change::replay(out, &store, &f, target.as_ref(), dry_run, &deliver)
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
                return Err(CliError::NoFilter { command: "purge" });
            }
            change::purge(out, &store, &f, dry_run)
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
            let report = match open_to_read(&store) {
                Ok(dlq) => {
                    let bar = spinner("verifying");
                    let report = dlq.verify();
                    bar.finish_and_clear();
                    report?
                }
                // Damage in the log can be why the file does not open as a
                // store (the commit that created the schema): say so.
                Err(CliError::Dlq(e @ (DlqError::NotAStore { .. } | DlqError::Corrupt(_)))) => {
                    match DlqFile::inspect_wal(&store.data_dir)? {
                        Some(damage) => VerifyReport::unopened(&e, damage),
                        None => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e),
            };
            if store.json {
                json(out, &report)?;
            } else {
                render::verify(out, &report)?;
            }
            match report.problems() {
                0 => Ok(()),
                n => Err(CliError::VerifyFailed(n)),
            }
        }
        DlqCommand::Export {
            store,
            filter,
            output,
        } => {
            let dlq = DlqFile::open_read_only(&store.data_dir)?;
            let f = filter.to_filter(now)?;
            let bar = match output {
                // The letters go to the terminal: a bar would draw over them.
                None if std::io::stdout().is_terminal() => ProgressBar::hidden(),
                _ => progress(dlq.count(&f)?, Unit::Letters),
            };
            let mut counted = |n: u64| bar.set_position(n);
            let Some(path) = output else {
                // The letters are the output.
                let mut buffered = std::io::BufWriter::with_capacity(1 << 16, out);
                dlq.export_jsonl_with_progress(&f, &mut buffered, &mut counted)?;
                buffered.flush()?;
                bar.finish_and_clear();
                return Ok(());
            };
            let mut file =
                std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(&path)?);
            let n = dlq.export_jsonl_with_progress(&f, &mut file, &mut counted)?;
            file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            bar.finish_and_clear();
            writeln!(out, "exported {n} letters to {}", path.display())?;
            Ok(())
        }
        DlqCommand::Import { store, input } => {
            let dlq = DlqFile::create_or_open(&store.data_dir)?;
            let file = std::fs::File::open(&input)?;
            let bar = progress(file.metadata()?.len(), Unit::Bytes);
            let mut reader = std::io::BufReader::with_capacity(1 << 16, bar.wrap_read(file));
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
