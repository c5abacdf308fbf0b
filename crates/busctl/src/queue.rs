//! `busctl queue`: the SQLite transport's queues in a data directory
//! (pending messages per group, the oldest one's age, the group's ledger),
//! read without writing; and dropping a group nobody subscribes to.

use std::io::Write;
use std::path::PathBuf;

/// The `busctl queue ...` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// Every group of `<data-dir>/queue.sqlite`: pending (ready, delayed,
    /// leased), the oldest pending message's age, and the ledger kept
    /// across every process that ran on it.
    Show {
        /// The bus data directory holding queue.sqlite.
        #[arg(long, default_value = bus::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Deletes a group and the messages it still holds; refused while a
    /// live process subscribes to it.
    Drop {
        /// The bus data directory holding queue.sqlite.
        #[arg(long, default_value = bus::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// The group's topic.
        #[arg(long)]
        topic: String,
        /// The group.
        #[arg(long)]
        group: String,
    },
}

/// Runs a `busctl queue` command, writing to `out`.
pub fn run(cmd: QueueCommand, out: &mut dyn Write) -> Result<(), Box<dyn std::error::Error>> {
    match cmd {
        QueueCommand::Show { data_dir, json } => {
            let groups = bus::sqlite::inspect(&data_dir)?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&groups)?)?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<24} {:<16} {:>9} {:>9} {:>9} {:>9} {:>12} {:>10} {:>10} {:>10} {:>8} ledger",
                "TOPIC",
                "GROUP",
                "PENDING",
                "READY",
                "DELAYED",
                "LEASED",
                "OLDEST",
                "PUBLISHED",
                "ACKED",
                "TERMINATED",
                "EVICTED"
            )?;
            for g in &groups {
                let oldest = g.oldest_pending_age.map_or_else(
                    || "-".to_owned(),
                    |a| {
                        humantime::format_duration(std::time::Duration::from_secs(a.as_secs()))
                            .to_string()
                    },
                );
                writeln!(
                    out,
                    "{:<24} {:<16} {:>9} {:>9} {:>9} {:>9} {:>12} {:>10} {:>10} {:>10} {:>8} {}",
                    g.topic,
                    g.group,
                    g.pending(),
                    g.ready,
                    g.delayed,
                    g.leased,
                    oldest,
                    g.published,
                    g.acked,
                    g.terminated,
                    g.evicted,
                    if g.balances() {
                        "balances"
                    } else {
                        "DOES NOT BALANCE"
                    }
                )?;
            }
            Ok(())
        }
        QueueCommand::Drop {
            data_dir,
            topic,
            group,
        } => {
            let n = bus::sqlite::drop_group(&data_dir, &topic, &group)?;
            writeln!(
                out,
                "dropped group {group:?} of {topic} with {n} pending messages"
            )?;
            Ok(())
        }
    }
}
