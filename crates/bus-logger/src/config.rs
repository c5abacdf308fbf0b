//! [`LoggerConfig`]: sizes, bounds, intervals and the clock.

use bus_core::time::{SharedClock, system_clock};
use std::time::Duration;

/// The settings of an [`ErrorLogger`](crate::ErrorLogger). Start from
/// [`LoggerConfig::default`] and change what you need with the `with_*` methods.
///
/// ```
/// use bus_logger::LoggerConfig;
/// use std::time::Duration;
///
/// let config = LoggerConfig::default()
///     .with_max_file_bytes(1024 * 1024)
///     .with_keep_files(3)
///     .with_metrics_interval(Duration::from_secs(30));
/// assert_eq!(config.keep_files, 3);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoggerConfig {
    /// Rotate `errors.jsonl` before a line would make it larger than this
    /// (default 10 MiB). A single line longer than this gets a file of its own:
    /// lines are never split.
    pub max_file_bytes: u64,
    /// How many rotated files to keep besides the current one (default 5):
    /// `errors.1.jsonl` (newest) to `errors.{keep}.jsonl` (oldest). Older ones are removed.
    pub keep_files: usize,
    /// Capacity of the channel to the writer thread (default 8192 reports).
    /// When it is full, [`record`](crate::ErrorLogger) sheds the file line and
    /// counts it in [`LogCounters::log_dropped`](crate::LogCounters::log_dropped).
    pub channel_capacity: usize,
    /// How many recent reports the in-memory history keeps (default 1000).
    pub history_len: usize,
    /// How many distinct components are counted by name (default 256); the
    /// rest are counted under [`OTHER_COMPONENT`](crate::OTHER_COMPONENT).
    pub max_components: usize,
    /// The metrics snapshot file is rewritten at most once per this interval
    /// (default 10 s), and only when something changed.
    pub metrics_interval: Duration,
    /// The time source for statistics windows and the snapshot interval.
    pub clock: SharedClock,
}

impl Default for LoggerConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 10 * 1024 * 1024,
            keep_files: 5,
            channel_capacity: 8192,
            history_len: 1000,
            max_components: 256,
            metrics_interval: Duration::from_secs(10),
            clock: system_clock(),
        }
    }
}

impl LoggerConfig {
    /// Sets [`max_file_bytes`](Self::max_file_bytes).
    #[must_use]
    pub fn with_max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// Sets [`keep_files`](Self::keep_files).
    #[must_use]
    pub fn with_keep_files(mut self, keep: usize) -> Self {
        self.keep_files = keep;
        self
    }

    /// Sets [`channel_capacity`](Self::channel_capacity).
    #[must_use]
    pub fn with_channel_capacity(mut self, capacity: usize) -> Self {
        self.channel_capacity = capacity;
        self
    }

    /// Sets [`history_len`](Self::history_len).
    #[must_use]
    pub fn with_history_len(mut self, len: usize) -> Self {
        self.history_len = len;
        self
    }

    /// Sets [`max_components`](Self::max_components).
    #[must_use]
    pub fn with_max_components(mut self, max: usize) -> Self {
        self.max_components = max;
        self
    }

    /// Sets [`metrics_interval`](Self::metrics_interval).
    #[must_use]
    pub fn with_metrics_interval(mut self, interval: Duration) -> Self {
        self.metrics_interval = interval;
        self
    }

    /// Sets the [`clock`](Self::clock) (a `ManualClock` in tests).
    #[must_use]
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.max_file_bytes == 0 {
            return Err("max_file_bytes must be above 0");
        }
        if self.channel_capacity == 0 {
            return Err("channel_capacity must be above 0");
        }
        if self.metrics_interval.is_zero() {
            return Err("metrics_interval must be above 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = LoggerConfig::default();
        assert_eq!(c.max_file_bytes, 10 * 1024 * 1024);
        assert_eq!(c.keep_files, 5);
        assert_eq!(c.history_len, 1000);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn zero_sizes_are_refused() {
        assert!(
            LoggerConfig::default()
                .with_max_file_bytes(0)
                .validate()
                .is_err()
        );
        assert!(
            LoggerConfig::default()
                .with_channel_capacity(0)
                .validate()
                .is_err()
        );
        assert!(
            LoggerConfig::default()
                .with_metrics_interval(Duration::ZERO)
                .validate()
                .is_err()
        );
    }
}
