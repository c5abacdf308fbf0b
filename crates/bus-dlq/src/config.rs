//! How a [`SqliteDlq`](crate::SqliteDlq) is opened: durability and bounds.

use std::path::PathBuf;

/// The name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "dlq.sqlite";

/// What a successful `push` promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Durability {
    /// The commit is fsynced before `push` answers (an `fdatasync` of the
    /// WAL that started after the commit, run beside the writer): the
    /// letter survives a process crash and a power loss. The default.
    #[default]
    Full,
    /// The commit reaches the operating system (`synchronous=NORMAL` in WAL
    /// mode): the letter survives a process crash, but a power loss may lose
    /// the last commits.
    Normal,
}

/// Options for [`SqliteDlq::open`](crate::SqliteDlq::open).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DlqConfig {
    /// The directory holding `dlq.sqlite` (created if missing, mode 0700).
    pub data_dir: PathBuf,
    /// What `push` promises.
    pub durability: Durability,
    /// The most letters kept (every state, replayed ones included); `None`
    /// for no bound. A push beyond it fails with `DlqError::Full`.
    pub max_letters: Option<u64>,
    /// The most bytes kept (payload plus JSON columns); `None` for no bound.
    pub max_bytes: Option<u64>,
    /// The most letters committed in one group-commit transaction.
    pub max_batch: usize,
}

impl DlqConfig {
    /// Defaults for `data_dir`: `Full` durability, no bounds, batches of up to 1024.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            durability: Durability::Full,
            max_letters: None,
            max_bytes: None,
            max_batch: 1024,
        }
    }

    /// Sets the durability.
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Bounds the number of letters.
    #[must_use]
    pub fn with_max_letters(mut self, max: u64) -> Self {
        self.max_letters = Some(max);
        self
    }

    /// Bounds the stored bytes.
    #[must_use]
    pub fn with_max_bytes(mut self, max: u64) -> Self {
        self.max_bytes = Some(max);
        self
    }

    /// Sets the largest group-commit batch (at least 1).
    #[must_use]
    pub fn with_max_batch(mut self, max: usize) -> Self {
        self.max_batch = max.max(1);
        self
    }

    /// The database file: `<data_dir>/dlq.sqlite`.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE_NAME)
    }
}
