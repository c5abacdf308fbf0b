//! [`Config`]: every setting of an assembled bus, from a TOML or JSON file
//! or from code, validated with errors that name the bad key and value, and
//! the types of its sections.
//!
//! It is the one configuration of the bus: the settings of the pipeline
//! itself (payload limit, publish timeout, poll interval, what to do with
//! unrouted publishes) are fields of it like those of every component.

mod alerts;
mod console;

pub use bus_core::Unrouted;
#[cfg(feature = "console")]
pub use console::ConsoleSection;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::config_logger::LoggerSection;

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "./bus-data";

/// Every setting of the assembled bus. Each field has a default (listed
/// in `docs/tuning.md`); a file only names what it changes. Unknown keys are rejected.
///
/// ```
/// let cfg = bus::Config::from_toml_str(r#"
///     data_dir = "/var/lib/orders-bus"
///     publish_timeout = "250ms"
///
///     [breaker]
///     consecutive_failures = 3
///     wait_in_open = "30s"
///
///     [dlq]
///     durability = "normal"
/// "#).unwrap();
/// assert_eq!(cfg.publish_timeout, std::time::Duration::from_millis(250));
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Where the DLQ, the error log and the health snapshot live (default `./bus-data`).
    pub data_dir: PathBuf,
    /// Largest payload accepted, in bytes (default 1 MiB).
    pub max_payload_bytes: usize,
    /// How long `publish` may wait for room in a full queue (default 1 s).
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How long a worker waits in a transport that cannot wake it (NATS)
    /// before it checks for shutdown again; also the pause after a
    /// transport error (default 50 ms). Memory-transport workers do not
    /// poll: an idle one sleeps until a message, a due retry or a stop.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a subscriber pauses after the dead-letter store refused a
    /// write; its message is redelivered after this delay (default 1 s).
    #[serde(with = "humantime_serde")]
    pub dlq_retry_delay: Duration,
    /// Publishes to a topic nobody subscribes to: `"reject"` (the default:
    /// the publisher gets [`PublishError::NoSubscribers`](crate::PublishError::NoSubscribers)
    /// and keeps the message) or `"discard"` (accepted, logged and counted
    /// in `discarded_by_policy`).
    pub unrouted: Unrouted,
    /// `false` gives the plain bus: no breakers, no retries (every failure
    /// goes straight to the dead-letter queue). Default `true`.
    pub error_handling: bool,
    /// How often the running bus picks up replays requested with
    /// `busctl dlq replay` (default 1 s; zero switches the poller off).
    #[serde(with = "humantime_serde")]
    pub replay_poll_interval: Duration,
    /// How often `<data-dir>/health.json` is rewritten while the bus runs
    /// (default 10 s; zero writes it only at shutdown). A process that is
    /// killed leaves the last one written.
    #[cfg(feature = "health")]
    #[serde(with = "humantime_serde")]
    pub health_snapshot_interval: Duration,
    /// Default configuration of every subscriber's circuit breaker.
    #[cfg(feature = "breaker")]
    pub breaker: bus_breaker::BreakerConfig,
    /// Retry policies per category, topic and subscriber, and the budget.
    #[cfg(feature = "recovery")]
    pub recovery: bus_recovery::RecoveryConfig,
    /// The dead-letter queue.
    pub dlq: DlqSection,
    /// The error log.
    pub logger: LoggerSection,
    /// Health judgement.
    #[cfg(feature = "health")]
    pub health: bus_health::HealthConfig,
    /// Where alerts go besides the `tracing` log.
    #[cfg(feature = "health")]
    pub alerts: AlertsSection,
    /// Serve `/healthz`, `/metrics` and the console here (loopback
    /// only), if set.
    pub http: Option<String>,
    /// The console on the `http` endpoint: token file, allowed hosts.
    #[cfg(feature = "console")]
    pub console: ConsoleSection,
    /// The `[nats]` section: settings of the NATS JetStream transport
    /// (`bus_nats::NatsConfig`: url, stream limits, `allow_message_loss`, ...),
    /// for programs that build one from the configuration file. The
    /// application's tokio runtime, which the file cannot name, goes in
    /// with `NatsConfig::with_runtime` before connecting.
    #[cfg(feature = "nats")]
    pub nats: bus_nats::NatsConfig,
    /// The `[sqlite]` section: when present, the bus runs on the durable
    /// SQLite transport at `<data_dir>/queue.sqlite` with these settings
    /// (`bus_sqlite::SqliteConfig`: durability, lease, poll interval, ...;
    /// an empty `[sqlite]` takes the defaults). Absent: the memory transport.
    #[cfg(feature = "sqlite")]
    pub sqlite: Option<bus_sqlite::SqliteConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            max_payload_bytes: 1024 * 1024,
            publish_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(50),
            dlq_retry_delay: Duration::from_secs(1),
            unrouted: Unrouted::Reject,
            error_handling: true,
            replay_poll_interval: Duration::from_secs(1),
            #[cfg(feature = "health")]
            health_snapshot_interval: Duration::from_secs(10),
            #[cfg(feature = "breaker")]
            breaker: bus_breaker::BreakerConfig::default(),
            #[cfg(feature = "recovery")]
            recovery: bus_recovery::RecoveryConfig::default(),
            dlq: DlqSection::default(),
            logger: LoggerSection::default(),
            #[cfg(feature = "health")]
            health: bus_health::HealthConfig::default(),
            #[cfg(feature = "health")]
            alerts: AlertsSection::default(),
            http: None,
            #[cfg(feature = "console")]
            console: ConsoleSection::default(),
            #[cfg(feature = "nats")]
            nats: bus_nats::NatsConfig::default(),
            #[cfg(feature = "sqlite")]
            sqlite: None,
        }
    }
}

/// The `[dlq]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DlqSection {
    /// `"full"` (fsync every commit, the default) or `"normal"` (survives a
    /// process crash, not a power loss).
    #[cfg(feature = "dlq")]
    pub durability: bus_dlq::Durability,
    /// The most letters kept; a push beyond it fails and pauses the subscriber.
    pub max_letters: Option<u64>,
    /// The most bytes kept.
    pub max_bytes: Option<u64>,
}

/// The `[alerts]` section: where health alerts go besides the `tracing` log
/// (which always gets them).
///
/// ```
/// let cfg = bus::Config::from_toml_str(r#"
///     [alerts]
///     command = ["/usr/local/bin/page-oncall", "--team", "payments"]
///     webhook = "http://127.0.0.1:9093/alerts"
///     timeout = "3s"
/// "#).unwrap();
/// assert_eq!(cfg.alerts.command.as_ref().map(Vec::len), Some(3));
/// ```
#[cfg(feature = "health")]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AlertsSection {
    /// A command run for each alert, program first, with the alert as JSON
    /// on its standard input ([`bus_health::CommandAlertSink`]).
    pub command: Option<Vec<String>>,
    /// An `http://` URL each alert is POSTed to as JSON
    /// ([`bus_health::WebhookAlertSink`]).
    pub webhook: Option<String>,
    /// How long one delivery may take (defaults: 10 s for the command, 5 s
    /// for the webhook).
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// A configuration could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The extension is neither `.toml` nor `.json`.
    #[error("{path}: unknown configuration format (use a .toml or .json file)")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The text is not valid TOML or JSON, or has an unknown key or a value
    /// of the wrong type.
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        /// The file name, or `<toml>` / `<json>` for a string.
        origin: String,
        /// 1-based line of the error (0 if unknown).
        line: usize,
        /// 1-based column of the error (0 if unknown).
        column: usize,
        /// What is wrong (names the unknown key).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid value for `{key}`: {value} (expected {expected})")]
    Invalid {
        /// The dotted key, e.g. `breaker.failure_rate_threshold`.
        key: String,
        /// The value found.
        value: String,
        /// What would be accepted.
        expected: String,
    },
}

impl ConfigError {
    /// The dotted key of an [`Invalid`](ConfigError::Invalid) value.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    fn invalid(key: impl Into<String>, value: impl ToString, expected: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

impl Config {
    /// Reads a `.toml` or `.json` file (by extension) and validates it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let origin = path.display().to_string();
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("toml") => parse_toml(&text, &origin),
            Some(e) if e.eq_ignore_ascii_case("json") => parse_json(&text, &origin),
            _ => Err(ConfigError::UnknownFormat {
                path: path.to_owned(),
            }),
        }
    }

    /// Parses TOML text and validates it.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        parse_toml(text, "<toml>")
    }

    /// Parses JSON text and validates it.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        parse_json(text, "<json>")
    }

    /// Checks every value; the error names the first bad key and its value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("data_dir", "\"\"", "a directory path"));
        }
        if self.max_payload_bytes == 0 {
            return Err(ConfigError::invalid(
                "max_payload_bytes",
                0,
                "at least 1 byte",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(ConfigError::invalid(
                "poll_interval",
                "0s",
                "longer than zero",
            ));
        }
        if self.logger.max_file_bytes < 1024 {
            return Err(ConfigError::invalid(
                "logger.max_file_bytes",
                self.logger.max_file_bytes,
                "at least 1024 bytes",
            ));
        }
        if self.dlq.max_letters == Some(0) {
            return Err(ConfigError::invalid(
                "dlq.max_letters",
                0,
                "at least 1, or absent for no bound",
            ));
        }
        if self.dlq.max_bytes == Some(0) {
            return Err(ConfigError::invalid(
                "dlq.max_bytes",
                0,
                "at least 1, or absent for no bound",
            ));
        }
        if let Some(addr) = &self.http
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::invalid(
                "http",
                format!("{addr:?}"),
                "a socket address such as 127.0.0.1:9898",
            ));
        }
        #[cfg(feature = "breaker")]
        self.validate_breaker()?;
        #[cfg(feature = "recovery")]
        self.recovery.validate().map_err(recovery_error)?;
        #[cfg(feature = "health")]
        self.alerts.sinks()?;
        #[cfg(feature = "health")]
        self.health.validate().map_err(|e| match e {
            bus_health::ConfigError::Invalid { key, value, reason } => {
                ConfigError::invalid(format!("health.{key}"), value, reason)
            }
            other => ConfigError::invalid("health", "?", other.to_string()),
        })?;
        Ok(())
    }

    /// The settings of the pipeline (`bus-core`), derived from this file's.
    pub(crate) fn core(&self) -> bus_core::BusConfig {
        let mut core = bus_core::BusConfig::default();
        core.max_payload_bytes = self.max_payload_bytes;
        core.publish_timeout = self.publish_timeout;
        core.poll_interval = self.poll_interval;
        core.dlq_retry_delay = self.dlq_retry_delay;
        core.unrouted = self.unrouted;
        core
    }

    #[cfg(feature = "breaker")]
    fn validate_breaker(&self) -> Result<(), ConfigError> {
        self.breaker.validate().map_err(|e| self.breaker_error(e))
    }

    /// A breaker configuration error, named by its `breaker.*` key and value.
    #[cfg(feature = "breaker")]
    pub(crate) fn breaker_error(&self, e: bus_breaker::ConfigError) -> ConfigError {
        use bus_breaker::ConfigError as B;
        match e {
            B::Percentage { field, value } => ConfigError::invalid(
                format!("breaker.{field}"),
                value,
                "a percentage in (0, 100]",
            ),
            B::OutOfRange { field, reason } => {
                let value = serde_json::to_value(&self.breaker)
                    .ok()
                    .and_then(|v| lookup(&v, field))
                    .unwrap_or_else(|| "?".to_owned());
                ConfigError::invalid(format!("breaker.{field}"), value, reason)
            }
            other => ConfigError::invalid("breaker", "?", other.to_string()),
        }
    }
}

/// A recovery configuration error, named by its `recovery.*` key.
#[cfg(feature = "recovery")]
pub(crate) fn recovery_error(e: bus_recovery::ConfigError) -> ConfigError {
    match e {
        bus_recovery::ConfigError::Invalid {
            key,
            value,
            expected,
        } => ConfigError::invalid(format!("recovery.{key}"), value, expected),
        other => ConfigError::invalid("recovery", "?", other.to_string()),
    }
}

// The value at a dotted path of a serialized section, as text.
#[cfg(feature = "breaker")]
fn lookup(v: &serde_json::Value, dotted: &str) -> Option<String> {
    let mut cur = v;
    for part in dotted.split('.') {
        cur = cur.get(part)?;
    }
    Some(match cur {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn parse_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let cfg: Config = toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_col(text, span.start))
            .unwrap_or((0, 0));
        ConfigError::Parse {
            origin: origin.to_owned(),
            line,
            column,
            message: e.message().to_owned(),
        }
    })?;
    cfg.validate()?;
    Ok(cfg)
}

fn parse_json(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let cfg: Config = serde_json::from_str(text).map_err(|e| ConfigError::Parse {
        origin: origin.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    cfg.validate()?;
    Ok(cfg)
}

// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc", 3), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
    }
}
