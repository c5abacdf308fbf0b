//! How a [`SqliteTransport`](crate::SqliteTransport) is opened.

use bus_dlq::Durability;
use std::path::PathBuf;
use std::time::Duration;

/// The name of the queue database inside the data directory.
pub const QUEUE_FILE_NAME: &str = "queue.sqlite";

/// Options for [`SqliteTransport::open`](crate::SqliteTransport::open).
///
/// ```
/// use bus_sqlite::{Durability, SqliteConfig};
/// use std::time::Duration;
///
/// let config = SqliteConfig::new("/var/lib/app/bus")
///     .with_durability(Durability::Normal)
///     .with_lease(Duration::from_secs(60));
/// assert_eq!(config.db_path().file_name().unwrap(), "queue.sqlite");
/// ```
///
/// In a configuration file (the facade's `[sqlite]` section) every field
/// but `data_dir` may be set; the directory is the bus's own:
///
/// ```
/// let c: bus_sqlite::SqliteConfig = serde_json::from_str(
///     r#"{ "durability": "normal", "lease": "1m", "prefetch": 8 }"#,
/// ).unwrap();
/// assert_eq!(c.lease, std::time::Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The directory holding `queue.sqlite` and its owners' lock files
    /// (created if missing, mode 0700). Not read from a file.
    #[serde(skip)]
    pub data_dir: PathBuf,
    /// What a confirmed publish promises (`Full` by default: fsynced).
    pub durability: Durability,
    /// How long a delivery stays leased to its consumer before another may
    /// take it (a live owner's lease; a dead owner's return at the next open).
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often an idle consumer looks for messages written by another
    /// process (messages of this process wake it at once).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The most operations (publishes, leases, acks) committed in one
    /// transaction.
    pub max_batch: usize,
    /// Deliveries a subscription leases at once, ahead of its consumer.
    /// Also the most a kill can hand out twice per subscription.
    pub prefetch: usize,
}

impl Default for SqliteConfig {
    /// The defaults of [`new`](Self::new) with no directory yet (the
    /// facade sets its data directory).
    fn default() -> Self {
        Self::new(PathBuf::new())
    }
}

impl SqliteConfig {
    /// Defaults for `data_dir`: `Full` durability, 30 s leases, a 200 ms
    /// poll for other processes, batches of up to 1024, prefetch 32.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            durability: Durability::Full,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            max_batch: 1024,
            prefetch: 32,
        }
    }

    /// Sets the durability.
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the lease (at least 1 ms).
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(1));
        self
    }

    /// Sets the poll interval for other processes' messages.
    #[must_use]
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(1));
        self
    }

    /// Sets the largest group-commit batch (at least 1).
    #[must_use]
    pub fn with_max_batch(mut self, max: usize) -> Self {
        self.max_batch = max.max(1);
        self
    }

    /// Sets how many deliveries a subscription leases at once (at least 1).
    #[must_use]
    pub fn with_prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// The queue database's path.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(QUEUE_FILE_NAME)
    }

    /// The directory of the owners' lock files.
    pub(crate) fn owners_dir(&self) -> PathBuf {
        self.data_dir.join("queue.owners")
    }
}
