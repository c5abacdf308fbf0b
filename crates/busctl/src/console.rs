//! `busctl console`: the console over a data directory, without a running
//! bus. It shows and works the dead-letter queue: replays are only marked
//! (`replay_requested`), and the next bus running on the directory delivers
//! them to the groups that failed them, as after `busctl dlq replay`.

use bus::console::{Console, ConsoleConfig, Token, TokenError};
use bus::dlq::DlqFile;
use bus::health::{HealthMonitor, HealthServer, HttpError, HttpOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// The audit file in the data directory (the bus's console writes the same).
pub const AUDIT_FILE: &str = "console-audit.jsonl";

/// `busctl console` arguments. The operator token is read from
/// `BUS_CONSOLE_TOKEN`, `BUS_CONSOLE_TOKEN_FILE` or `--token-file`, never
/// from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleArgs {
    /// The bus data directory holding dlq.sqlite.
    #[arg(long, default_value = bus::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Serve the console on this address (loopback unless
    /// `--allow-remote`).
    #[arg(long, default_value = "127.0.0.1:9898")]
    pub http: String,
    /// A file whose first line is the operator token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Another host name the console answers to (repeatable).
    #[arg(long = "allow-host")]
    pub allow_hosts: Vec<String>,
    /// Allow a non-loopback `--http` address.
    #[arg(long)]
    pub allow_remote: bool,
}

/// `busctl console` failed to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// The dead-letter queue could not be opened.
    #[error("{0}")]
    Dlq(#[from] bus::dlq::DlqError),
    /// The token could not be read.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// The endpoint could not start.
    #[error("{0}")]
    Http(#[from] HttpError),
}

/// Starts the console on `args` and returns the running server.
pub fn start(args: &ConsoleArgs) -> Result<HealthServer, ConsoleError> {
    let dlq = DlqFile::open_read_write(&args.data_dir)?;
    let mut config = ConsoleConfig::default();
    config.token = Token::from_env_or_file(args.token_file.as_deref())?;
    config
        .allowed_hosts
        .extend(args.allow_hosts.iter().cloned());
    config.audit_file = Some(args.data_dir.join(AUDIT_FILE));
    let console = Console::builder(config).dlq(Arc::new(dlq)).build();
    let mut options = HttpOptions::default();
    options.allow_remote = args.allow_remote;
    Ok(HealthServer::start_with_app(
        args.http.as_str(),
        HealthMonitor::new(),
        options,
        Arc::new(console),
    )?)
}

/// Serves until the process is stopped (SIGINT, SIGTERM).
pub fn run(args: &ConsoleArgs) -> Result<(), ConsoleError> {
    let token = Token::from_env_or_file(args.token_file.as_deref())?;
    let server = start(args)?;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "console: http://{}/ on {} (actions {})",
        server.local_addr(),
        args.data_dir.display(),
        if token.is_some() {
            "need the operator token"
        } else {
            "off: no operator token"
        }
    );
    let _ = err.flush();
    drop(err);
    // Nothing to flush at exit: every audit line is written before its
    // answer, and the store commits each action.
    loop {
        std::thread::park();
    }
}
