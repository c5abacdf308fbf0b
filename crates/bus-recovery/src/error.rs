//! Configuration errors.

/// A configuration value was rejected. Names the offending key (a dotted path
/// such as `categories.CONNECTION.backoff.factor`) and the value found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is outside its allowed range.
    #[error("invalid value for `{key}`: {value} ({expected})")]
    Invalid {
        /// The dotted path of the key.
        key: String,
        /// The value found, as text.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        key: impl Into<String>,
        value: impl std::fmt::Debug,
        expected: &'static str,
    ) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            value: format!("{value:?}"),
            expected,
        }
    }

    /// Prefixes the key with `prefix.` (used when a nested value fails).
    pub(crate) fn within(self, prefix: &str) -> Self {
        match self {
            ConfigError::Invalid {
                key,
                value,
                expected,
            } => ConfigError::Invalid {
                key: format!("{prefix}.{key}"),
                value,
                expected,
            },
        }
    }

    /// The dotted path of the rejected key.
    pub fn key(&self) -> &str {
        match self {
            ConfigError::Invalid { key, .. } => key,
        }
    }
}
