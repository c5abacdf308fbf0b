//! The `[console]` section: how the console on the `http` endpoint is
//! secured. The operator token itself never sits in the configuration:
//! it comes from `BUS_CONSOLE_TOKEN`, or from the file named by
//! `BUS_CONSOLE_TOKEN_FILE` or by `token_file` here.

#![cfg(feature = "console")]

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The `[console]` section.
///
/// ```
/// let cfg = bus::Config::from_toml_str(r#"
///     http = "127.0.0.1:9898"
///
///     [console]
///     token_file = "/etc/bus/console-token"
///     allowed_hosts = ["bus.internal"]
/// "#).unwrap();
/// assert_eq!(cfg.console.allowed_hosts, ["bus.internal"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ConsoleSection {
    /// A file whose first line is the operator token (used when
    /// `BUS_CONSOLE_TOKEN` and `BUS_CONSOLE_TOKEN_FILE` are unset).
    /// Without a token every console action is refused.
    pub token_file: Option<PathBuf>,
    /// Host names the console answers to besides `localhost`,
    /// `127.0.0.1` and `[::1]` (the `Host` header is checked against
    /// them, which stops DNS rebinding).
    pub allowed_hosts: Vec<String>,
}
