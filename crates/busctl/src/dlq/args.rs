//! Arguments shared by the subcommands.

use super::CliError;
use bus_dlq::{Filter, LetterState};
use bus_errors::ErrorCategory;
use std::path::PathBuf;
use std::time::SystemTime;

/// Where the store is and how to print.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The bus data directory holding dlq.sqlite.
    #[arg(long, default_value = "./bus-data")]
    pub data_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Where the store is, for a command whose output is JSON whatever the
/// options (`export`).
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArgs {
    /// The bus data directory holding dlq.sqlite.
    #[arg(long, default_value = "./bus-data")]
    pub data_dir: PathBuf,
}

/// Which letters to act on.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only these letter ids (repeatable).
    #[arg(long = "id")]
    pub ids: Vec<uuid::Uuid>,
    /// Only this topic.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only this category (`CONNECTION`, `timeout`, ...).
    #[arg(long)]
    pub category: Option<ErrorCategory>,
    /// Only this component (subscriber).
    #[arg(long)]
    pub component: Option<String>,
    /// Dead-lettered at or after: an RFC 3339 time or an age such as `2h`.
    #[arg(long)]
    pub since: Option<String>,
    /// Dead-lettered before: an RFC 3339 time or an age such as `2h`.
    #[arg(long)]
    pub until: Option<String>,
    /// Text in the error message (ASCII case-insensitive).
    #[arg(long)]
    pub text: Option<String>,
    /// Only this failure signature (see `groups`).
    #[arg(long)]
    pub signature: Option<String>,
    /// Only this state: dead, replay_requested, replayed.
    #[arg(long)]
    pub state: Option<LetterState>,
    /// At most this many letters (`groups`: this many groups).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Skip this many letters first (`groups`: this many groups).
    #[arg(long, default_value_t = 0)]
    pub offset: usize,
}

/// An RFC 3339 time, or an age before `now`.
fn parse_time(arg: &str, value: &str, now: SystemTime) -> Result<SystemTime, CliError> {
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        return Ok(t);
    }
    humantime::parse_duration(value)
        .map(|age| now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH))
        .map_err(|_| {
            CliError::Usage(format!(
                "--{arg} {:?}: expected an RFC 3339 time (2024-05-01T10:00:00Z) or an age (2h, 7d)",
                super::excerpt(value, super::MAX_ECHO)
            ))
        })
}

impl FilterArgs {
    /// The filter these arguments describe; ages count back from `now`.
    pub fn to_filter(&self, now: SystemTime) -> Result<Filter, CliError> {
        let mut f = Filter::all()
            .ids(self.ids.iter().copied())
            .offset(self.offset);
        f.topic.clone_from(&self.topic);
        f.category = self.category;
        f.component.clone_from(&self.component);
        f.text.clone_from(&self.text);
        f.signature.clone_from(&self.signature);
        f.state = self.state;
        f.limit = self.limit;
        f.since = self
            .since
            .as_deref()
            .map(|v| parse_time("since", v, now))
            .transpose()?;
        f.until = self
            .until
            .as_deref()
            .map(|v| parse_time("until", v, now))
            .transpose()?;
        Ok(f)
    }
}
