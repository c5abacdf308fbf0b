use crate::{Classification, ErrorCategory, HandlerError, Severity};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::SystemTime;
use uuid::Uuid;

/// The record of one failure: what failed, how it was classified, where, and
/// what recovery did about it. Serialized as one JSON object (the error log,
/// the DLQ and health all read it).
///
/// ```
/// use bus_errors::{Classification, ErrorCategory, ErrorReport, HandlerError};
///
/// let err = HandlerError::from(std::io::Error::other("db down"));
/// let report = ErrorReport::from_error(&err, Classification::of(ErrorCategory::Connection), "orders")
///     .with_topic("orders.created")
///     .with_context("db", "primary");
/// let json = serde_json::to_string(&report).unwrap();
/// let back: ErrorReport = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, report);
/// assert_eq!(back.error_type, "std::io::error::Error");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorReport {
    /// Unique id of this report.
    pub id: Uuid,
    /// When the failure was seen (RFC 3339 in JSON).
    #[serde(with = "humantime_serde")]
    pub timestamp: SystemTime,
    /// What kind of failure.
    pub category: ErrorCategory,
    /// How bad.
    pub severity: Severity,
    /// The component that failed (a subscriber, the transport, the DLQ).
    pub component: String,
    /// The error's message.
    pub message: String,
    /// The Rust type name of the error (informational; never used to classify).
    pub error_type: String,
    /// The messages of the error's sources, outermost first, without the error itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_chain: Vec<String>,
    /// A captured backtrace, when one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtrace: Option<String>,
    /// Free-form context; truncated and redacted by a [`Sanitizer`](crate::Sanitizer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, String>,
    /// The topic of the message being handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The id of the message being handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<Uuid>,
    /// The correlation id of the message being handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// Which delivery attempt failed (1 for the first).
    pub attempt: u32,
    /// How many retries had already been scheduled for this message.
    pub retry_count: u32,
    /// Whether a recovery (retry, reconnect, fallback) was attempted.
    pub recovery_attempted: bool,
    /// Whether it worked: `None` while unknown (a retry is pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_successful: Option<bool>,
    /// What recovery decided and why (`"retry in 2s: CONNECTION attempt 1 of 3"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_action: Option<String>,
}

impl ErrorReport {
    /// A report with a fresh id and the current time.
    pub fn new(
        class: Classification,
        component: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            timestamp: SystemTime::now(),
            category: class.category,
            severity: class.severity,
            component: component.into(),
            message: message.into(),
            error_type: String::new(),
            source_chain: Vec::new(),
            backtrace: None,
            context: BTreeMap::new(),
            topic: None,
            message_id: None,
            correlation_id: None,
            attempt: 1,
            retry_count: 0,
            recovery_attempted: false,
            recovery_successful: None,
            recovery_action: None,
        }
    }

    /// A report describing `err`: its message, type name and source chain.
    pub fn from_error(
        err: &HandlerError,
        class: Classification,
        component: impl Into<String>,
    ) -> Self {
        let mut chain = err.chain();
        let message = if chain.is_empty() {
            err.to_string()
        } else {
            chain.remove(0)
        };
        let mut r = Self::new(class, component, message);
        r.error_type = err.type_name().to_owned();
        r.source_chain = chain;
        if let Some(p) = err.downcast_ref::<crate::PanicError>() {
            if let Some(at) = &p.location {
                r.context.insert("panic.location".to_owned(), at.clone());
            }
            r.backtrace.clone_from(&p.backtrace);
        }
        r
    }

    /// Starts a builder; the same as [`ErrorReport::new`] followed by `with_*` calls.
    pub fn builder(
        class: Classification,
        component: impl Into<String>,
        message: impl Into<String>,
    ) -> ErrorReportBuilder {
        ErrorReportBuilder(Self::new(class, component, message))
    }

    /// The category and severity together.
    pub fn classification(&self) -> Classification {
        Classification::new(self.category, self.severity)
    }

    /// Sets the topic.
    #[must_use]
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Sets the message id.
    #[must_use]
    pub fn with_message_id(mut self, id: Uuid) -> Self {
        self.message_id = Some(id);
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Adds one context entry.
    #[must_use]
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.insert(key.into(), value.into());
        self
    }

    /// Sets the attempt number.
    #[must_use]
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Captures a backtrace of the current thread (costly; for debugging).
    #[must_use]
    pub fn with_backtrace(mut self) -> Self {
        self.backtrace = Some(std::backtrace::Backtrace::force_capture().to_string());
        self
    }

    /// Records what recovery decided.
    pub fn record_recovery(
        &mut self,
        attempted: bool,
        successful: Option<bool>,
        action: impl Into<String>,
    ) {
        self.recovery_attempted = attempted;
        self.recovery_successful = successful;
        self.recovery_action = Some(action.into());
    }
}

/// Builds an [`ErrorReport`] step by step.
#[derive(Debug, Clone)]
#[must_use]
pub struct ErrorReportBuilder(ErrorReport);

impl ErrorReportBuilder {
    /// Sets the topic.
    pub fn topic(self, topic: impl Into<String>) -> Self {
        Self(self.0.with_topic(topic))
    }
    /// Sets the message id.
    pub fn message_id(self, id: Uuid) -> Self {
        Self(self.0.with_message_id(id))
    }
    /// Adds a context entry.
    pub fn context(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        Self(self.0.with_context(key, value))
    }
    /// Sets the error type name.
    pub fn error_type(mut self, name: impl Into<String>) -> Self {
        self.0.error_type = name.into();
        self
    }
    /// Sets the attempt number.
    pub fn attempt(self, attempt: u32) -> Self {
        Self(self.0.with_attempt(attempt))
    }
    /// Finishes the report.
    pub fn build(self) -> ErrorReport {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_survives_a_json_round_trip() {
        let mut r = ErrorReport::new(Classification::of(ErrorCategory::Timeout), "c", "m")
            .with_topic("a.b")
            .with_message_id(Uuid::now_v7())
            .with_correlation_id("corr")
            .with_context("k", "v")
            .with_attempt(3)
            .with_backtrace();
        r.error_type = "T".into();
        r.source_chain = vec!["inner".into()];
        r.retry_count = 2;
        r.record_recovery(true, Some(false), "dead-lettered");
        let back: ErrorReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn from_error_splits_message_and_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer failed")]
        struct Outer(#[source] std::io::Error);
        let e = HandlerError::from(Outer(std::io::Error::other("disk gone")));
        let r = ErrorReport::from_error(&e, Classification::FALLBACK, "x");
        assert_eq!(r.message, "outer failed");
        assert_eq!(r.source_chain, vec!["disk gone".to_owned()]);
        assert!(r.error_type.ends_with("Outer"));
    }

    #[test]
    fn timestamp_is_rfc3339_text() {
        let r = ErrorReport::new(Classification::FALLBACK, "c", "m");
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        let ts = v["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
    }
}
