//! Which transport a busctl command talks to, and the NATS streams busctl
//! names after a data directory.

use std::path::Path;

/// Which transport carries the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportKind {
    /// In-process queues (the embedded default).
    Memory,
    /// NATS JetStream (`--nats-url`): durable streams, across processes.
    Nats,
    /// SQLite (`<data-dir>/queue.sqlite`): durable, embedded; what a killed
    /// run left is handled by the next run on the same data dir.
    Sqlite,
}

/// The NATS settings busctl uses on `data_dir`: `base` (a configuration's
/// `[nats]` section) with its `url` replaced by `url` when given, and
/// stream and subject names of busctl's own (`<stream_prefix>_DEMO_<hash>`,
/// `<subject_prefix>-demo-<hash>`, see
/// [`NatsConfig::scoped_to_dir`](bus_nats::NatsConfig::scoped_to_dir)).
/// `busctl demo` runs its bus on these streams and `busctl dlq replay
/// --deliver` publishes into them, so both reach the same groups, and runs
/// on other data directories never see them.
///
/// ```
/// let dir = std::env::temp_dir().join("busctl-doc-nats-config");
/// let c = busctl::transport::nats_config(Default::default(), Some("nats://h:1"), &dir).unwrap();
/// assert_eq!(c.url, "nats://h:1");
/// assert!(c.stream_prefix.starts_with("BUS_DEMO_"));
/// ```
pub fn nats_config(
    mut base: bus_nats::NatsConfig,
    url: Option<&str>,
    data_dir: &Path,
) -> std::io::Result<bus_nats::NatsConfig> {
    if let Some(url) = url {
        base.url = url.to_owned();
    }
    base.stream_prefix = format!("{}_DEMO", base.stream_prefix);
    base.subject_prefix = format!("{}-demo", base.subject_prefix);
    base.scoped_to_dir(data_dir)
}
