//! `busctl`: run the demo, work the dead-letter queue, read the health report.
//!
//! ```text
//! busctl demo [--messages N | --duration 30s] [--fail-rate F] [--poison-rate F]
//!             [--panic-rate F] [--seed S] [--json] [--http 127.0.0.1:9898] [--data-dir D]
//! busctl dlq list|show|groups|replay|purge|stats|verify|export|import ...
//! busctl queue show|drop ...
//! busctl health [--data-dir D] [--json]
//! busctl console [--data-dir D] [--http 127.0.0.1:9898] [--token-file F] [--allow-host H]
//! ```
//!
//! Every command takes `-v` / `-q` and `--log-format text|json` for the
//! bus's log lines on stderr (`RUST_LOG` overrides).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod demo;
mod log;

use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Operate the message bus.
#[derive(Debug, Parser)]
#[command(name = "busctl", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    log: log::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run publishers and subscribers on embedded defaults with injected
    /// failures, then print a summary.
    Demo(demo::DemoArgs),
    /// Inspect, group, replay and purge dead letters.
    Dlq {
        #[command(subcommand)]
        cmd: busctl::dlq::DlqCommand,
    },
    /// The SQLite transport's queues in a data directory: pending per
    /// group, the oldest pending age, the ledger; drop a group.
    Queue {
        #[command(subcommand)]
        cmd: busctl::queue::QueueCommand,
    },
    /// Serve the console over a data directory, without a running bus:
    /// dead-letter views, replay marking and purge.
    Console(busctl::console::ConsoleArgs),
    /// Print the last health snapshot a bus wrote (`<data-dir>/health.json`).
    Health {
        /// The bus data directory.
        #[arg(long, default_value = bus::config::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.log.init() {
        eprintln!("busctl: {e}");
        return ExitCode::FAILURE;
    }
    let result: Result<(), Box<dyn std::error::Error>> = match cli.cmd {
        Cmd::Demo(args) => demo::run(args),
        Cmd::Dlq { cmd } => {
            let mut out = std::io::stdout().lock();
            busctl::dlq::run(cmd, &mut out).map_err(Into::into)
        }
        Cmd::Queue { cmd } => busctl::queue::run(cmd, &mut std::io::stdout().lock()),
        Cmd::Health { data_dir, json } => health(&data_dir, json),
        Cmd::Console(args) => busctl::console::run(&args).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("busctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn health(data_dir: &std::path::Path, json: bool) -> Result<(), Box<dyn std::error::Error>> {
    let report = bus::health::read_snapshot(data_dir)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        write!(out, "{}", report.render_table())?;
    }
    Ok(())
}
