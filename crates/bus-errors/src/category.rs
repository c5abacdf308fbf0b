use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What kind of failure happened. The eight categories of the original
/// requirements; recovery policies and circuit breakers decide by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCategory {
    /// A peer or broker could not be reached, or the connection broke.
    Connection,
    /// The handler failed on this message (the default for unknown errors).
    MessageProcessing,
    /// The payload could not be encoded or decoded.
    Serialization,
    /// A queue was full.
    QueueOverflow,
    /// Something took longer than its deadline.
    Timeout,
    /// Credentials were missing, wrong or not allowed.
    Authentication,
    /// Memory, disk, file handles or a quota ran out.
    ResourceExhaustion,
    /// The configuration is wrong; retrying will not help.
    Configuration,
}

impl ErrorCategory {
    /// Every category, in declaration order. Useful for tables and metrics.
    pub const ALL: [ErrorCategory; 8] = [
        ErrorCategory::Connection,
        ErrorCategory::MessageProcessing,
        ErrorCategory::Serialization,
        ErrorCategory::QueueOverflow,
        ErrorCategory::Timeout,
        ErrorCategory::Authentication,
        ErrorCategory::ResourceExhaustion,
        ErrorCategory::Configuration,
    ];

    /// The stable name used in logs, metrics labels and the DLQ
    /// (`"CONNECTION"`, `"MESSAGE_PROCESSING"`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Connection => "CONNECTION",
            ErrorCategory::MessageProcessing => "MESSAGE_PROCESSING",
            ErrorCategory::Serialization => "SERIALIZATION",
            ErrorCategory::QueueOverflow => "QUEUE_OVERFLOW",
            ErrorCategory::Timeout => "TIMEOUT",
            ErrorCategory::Authentication => "AUTHENTICATION",
            ErrorCategory::ResourceExhaustion => "RESOURCE_EXHAUSTION",
            ErrorCategory::Configuration => "CONFIGURATION",
        }
    }

    /// The severity a failure of this category has when nothing more specific
    /// is known.
    pub const fn default_severity(self) -> Severity {
        match self {
            ErrorCategory::MessageProcessing
            | ErrorCategory::Serialization
            | ErrorCategory::Timeout => Severity::Medium,
            ErrorCategory::Connection
            | ErrorCategory::QueueOverflow
            | ErrorCategory::Authentication => Severity::High,
            ErrorCategory::ResourceExhaustion | ErrorCategory::Configuration => Severity::Critical,
        }
    }

    /// A dense index in `0..8`, for per-category counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when a string names no category or severity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}; expected one of {expected}")]
pub struct ParseNameError {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

impl FromStr for ErrorCategory {
    type Err = ParseNameError;

    /// Accepts the stable names case-insensitively, with `-` or `_`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_uppercase().replace('-', "_");
        ErrorCategory::ALL
            .into_iter()
            .find(|c| c.as_str() == norm)
            .ok_or_else(|| ParseNameError {
                kind: "error category",
                value: s.to_owned(),
                expected: "CONNECTION, MESSAGE_PROCESSING, SERIALIZATION, QUEUE_OVERFLOW, TIMEOUT, \
                       AUTHENTICATION, RESOURCE_EXHAUSTION, CONFIGURATION",
            })
    }
}

/// How bad a failure is. Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    /// Expected now and then; informational.
    Low,
    /// A failure worth a warning.
    Medium,
    /// A failure that needs attention.
    High,
    /// A failure that is escalated to an operator.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The stable name (`"LOW"`, `"MEDIUM"`, `"HIGH"`, `"CRITICAL"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }

    /// A dense index in `0..4`.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_uppercase();
        Severity::ALL
            .into_iter()
            .find(|c| c.as_str() == norm)
            .ok_or_else(|| ParseNameError {
                kind: "severity",
                value: s.to_owned(),
                expected: "LOW, MEDIUM, HIGH, CRITICAL",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for c in ErrorCategory::ALL {
            assert_eq!(c.as_str().parse::<ErrorCategory>(), Ok(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCategory>(&json).unwrap(), c);
        }
        for s in Severity::ALL {
            assert_eq!(s.as_str().to_lowercase().parse::<Severity>(), Ok(s));
        }
        assert_eq!(
            "queue-overflow".parse::<ErrorCategory>(),
            Ok(ErrorCategory::QueueOverflow)
        );
        assert!("nonsense".parse::<ErrorCategory>().is_err());
    }

    #[test]
    fn indices_are_dense_and_severity_is_ordered() {
        for (i, c) in ErrorCategory::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        assert!(Severity::Low < Severity::Medium && Severity::High < Severity::Critical);
    }
}
