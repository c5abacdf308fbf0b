//! Where the bus's `tracing` events go when busctl runs it: stderr, as text
//! or JSON lines, filtered by `RUST_LOG` or by `-v` / `-q`.
//!
//! By default warnings and errors show (breaker transitions, alerts, a
//! store that refuses writes, a log that cannot be written). The report of
//! each failed delivery is an event too (target `bus_logger::report`); those
//! stay in the error log unless asked for with `-v`, as a run with injected
//! failures makes thousands of them.

use clap::{ArgAction, Args, ValueEnum};
use indicatif::ProgressBar;
use std::io::Write;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock, PoisonError};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The logging flags, accepted before or after the subcommand.
#[derive(Debug, Clone, Args)]
pub(crate) struct LogArgs {
    /// More on stderr: -v info (and each failed delivery's report), -vv
    /// debug, -vvv trace. `RUST_LOG` (for example `warn,bus_nats=debug`)
    /// overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Less on stderr: -q errors only, -qq nothing.
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
    /// How log lines on stderr are written.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

/// Text for people, JSON (one object per line) for log collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

impl LogArgs {
    /// The filter `RUST_LOG` gives, or else the flags.
    fn filter(&self) -> Result<Targets, String> {
        if let Ok(spec) = std::env::var("RUST_LOG")
            && !spec.trim().is_empty()
        {
            return Targets::from_str(&spec).map_err(|e| format!("RUST_LOG={spec:?}: {e}"));
        }
        Ok(self.default_filter())
    }

    fn default_filter(&self) -> Targets {
        let (all, reports) = match (self.quiet, self.verbose) {
            (q, _) if q >= 2 => (LevelFilter::OFF, LevelFilter::OFF),
            (1, _) => (LevelFilter::ERROR, LevelFilter::OFF),
            (_, 0) => (LevelFilter::WARN, LevelFilter::OFF),
            (_, 1) => (LevelFilter::INFO, LevelFilter::INFO),
            (_, 2) => (LevelFilter::DEBUG, LevelFilter::DEBUG),
            _ => (LevelFilter::TRACE, LevelFilter::TRACE),
        };
        Targets::new()
            .with_default(all)
            .with_target(bus::logger::REPORT_TARGET, reports)
    }

    /// Installs the subscriber for the whole process.
    pub(crate) fn init(&self) -> Result<(), String> {
        let filter = self.filter()?;
        let registry = tracing_subscriber::registry().with(filter);
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(Stderr)
            .with_ansi(false);
        let done = match self.log_format {
            LogFormat::Text => registry.with(fmt).try_init(),
            LogFormat::Json => registry.with(fmt.json()).try_init(),
        };
        done.map_err(|e| format!("could not install the log subscriber: {e}"))
    }
}

/// The progress bar drawn on stderr while the demo runs, if any: log lines
/// are written with it lifted, so neither garbles the other.
static BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

/// Routes log lines around `bar` until [`release_bar`] is called.
pub(crate) fn hold_bar(bar: &ProgressBar) {
    if !bar.is_hidden() {
        *BAR.get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(bar.clone());
    }
}

/// Stops routing log lines around the progress bar.
pub(crate) fn release_bar() {
    if let Some(b) = BAR.get() {
        b.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

struct Stderr;

/// One log line, written to stderr in one piece when dropped.
struct Line(Vec<u8>);

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(256))
    }
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let write = || {
            let _ = std::io::stderr().lock().write_all(&self.0);
        };
        let bar = BAR
            .get()
            .and_then(|b| b.lock().unwrap_or_else(PoisonError::into_inner).clone());
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use tracing::Level;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    fn enabled(args: &[&str], target: &str, level: Level) -> bool {
        let cli =
            Cli::try_parse_from(std::iter::once("busctl").chain(args.iter().copied())).unwrap();
        cli.log.default_filter().would_enable(target, &level)
    }

    #[test]
    fn warnings_show_by_default_and_per_delivery_reports_only_when_asked() {
        assert!(enabled(&[], "bus::builder", Level::WARN));
        assert!(!enabled(&[], "bus::builder", Level::INFO));
        assert!(!enabled(&[], bus::logger::REPORT_TARGET, Level::ERROR));
        assert!(enabled(&["-v"], bus::logger::REPORT_TARGET, Level::WARN));
        assert!(enabled(&["-v"], "bus_nats::settle", Level::INFO));
        assert!(enabled(&["-vv"], "bus_nats::settle", Level::DEBUG));
        assert!(!enabled(&["-q"], "bus::builder", Level::WARN));
        assert!(enabled(&["-q"], "bus_dlq::sqlite", Level::ERROR));
        assert!(!enabled(&["-qq"], "bus_dlq::sqlite", Level::ERROR));
        assert!(Cli::try_parse_from(["busctl", "-v", "-q"]).is_err());
    }
}
