//! The console a bus mounts on its `http` endpoint (feature `console`).

use crate::builder::BuildError;
use crate::config::Config;
use crate::facade::Parts;
use bus_console::{Console, ConsoleConfig, Token};

/// The file each console action appends its audit line to, in the data
/// directory.
pub(crate) const AUDIT_FILE: &str = "console-audit.jsonl";

/// The console over this bus's dead-letter queue and breakers, with the
/// token from the environment or the `[console]` token file.
pub(crate) fn for_bus(parts: &Parts, config: &Config) -> Result<Console, BuildError> {
    let mut c = ConsoleConfig::default();
    c.token = Token::from_env_or_file(config.console.token_file.as_deref())?;
    c.allowed_hosts
        .extend(config.console.allowed_hosts.iter().cloned());
    c.audit_file = Some(parts.data_dir.join(AUDIT_FILE));
    let mut b = Console::builder(c).bus_attached(true);
    if let Some(dlq) = &parts.dlq {
        b = b.dlq(dlq.clone());
    }
    if let Some(breakers) = &parts.breakers {
        b = b.breakers(breakers.clone());
    }
    Ok(b.build())
}
