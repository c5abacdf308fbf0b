//! The `[logger]` section of [`Config`](crate::Config).

use serde::{Deserialize, Serialize};

/// The `[logger]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LoggerSection {
    /// Rotate `errors.jsonl` at this size (default 10 MiB).
    pub max_file_bytes: u64,
    /// Rotated files kept (default 5).
    pub keep_files: usize,
    /// Reports kept in memory (default 1000).
    pub history_len: usize,
}

impl Default for LoggerSection {
    fn default() -> Self {
        Self {
            max_file_bytes: 10 * 1024 * 1024,
            keep_files: 5,
            history_len: 1000,
        }
    }
}
