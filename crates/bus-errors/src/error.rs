use crate::{Classify, ErrorCategory, Severity};
use std::error::Error;
use std::fmt;
use std::time::Duration;

type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// The error a handler returns: any error type, boxed, with its type name kept
/// for the report.
///
/// Like `anyhow::Error` it does not implement [`Error`] itself, so that `?`
/// converts every error type into it. Classification looks at the boxed value
/// by type (see [`Classifier`](crate::Classifier)).
///
/// ```
/// use bus_errors::{ErrorCategory, HandlerError, Severity};
///
/// fn parse(bytes: &[u8]) -> Result<u32, HandlerError> {
///     let text = std::str::from_utf8(bytes)?;
///     Ok(text.trim().parse::<u32>()?)
/// }
/// assert!(parse(b"12").is_ok());
/// let err = parse(b"x").unwrap_err();
/// assert_eq!(err.type_name(), "core::num::error::ParseIntError");
///
/// // An ad-hoc error with an explicit class:
/// let err = HandlerError::msg("inventory service said no")
///     .with_class(ErrorCategory::Connection, Severity::High);
/// assert_eq!(err.to_string(), "inventory service said no");
/// ```
pub struct HandlerError {
    error: BoxError,
    type_name: &'static str,
}

impl HandlerError {
    /// An error carrying only a message (classified as the fallback,
    /// MESSAGE_PROCESSING / MEDIUM, unless given a class).
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            error: Box::new(MessageError(message.to_string())),
            type_name: "bus_errors::HandlerError",
        }
    }

    /// Wraps an already boxed error. Its type name is not known, so the report
    /// says `dyn Error`.
    pub fn from_boxed(error: BoxError) -> Self {
        Self {
            error,
            type_name: "dyn std::error::Error",
        }
    }

    /// Attaches an explicit category and severity, which every classifier
    /// honours before its own rules.
    pub fn with_class(self, category: ErrorCategory, severity: Severity) -> Self {
        let type_name = self.type_name;
        Self {
            error: Box::new(Classified {
                category,
                severity,
                source: self.error,
            }),
            type_name,
        }
    }

    /// The wrapped error, for classification and source-chain walking.
    pub fn as_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.error
    }

    /// The Rust type name of the original error (for reports, not for
    /// classification).
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Tries to view the original error as `E` (looking through a
    /// [`Classified`] wrapper).
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        if let Some(e) = self.error.downcast_ref::<E>() {
            return Some(e);
        }
        self.error
            .downcast_ref::<Classified>()
            .and_then(|c| c.source.downcast_ref::<E>())
    }

    /// The messages of the error and each of its sources, outermost first.
    pub fn chain(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur: Option<&(dyn Error + 'static)> = Some(self.as_error());
        while let Some(e) = cur {
            // A Classified wrapper displays as its source; skip it to avoid repeating.
            if e.downcast_ref::<Classified>().is_none() {
                out.push(e.to_string());
            }
            cur = e.source();
        }
        out
    }

    /// Unwraps into the boxed error.
    pub fn into_inner(self) -> BoxError {
        self.error
    }
}

impl<E: Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self {
            error: Box::new(error),
            type_name: std::any::type_name::<E>(),
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("type", &self.type_name)
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

#[derive(Debug)]
struct MessageError(String);

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for MessageError {}

/// An error with an explicit class attached (see [`HandlerError::with_class`]).
/// Displays as the wrapped error.
#[derive(Debug)]
pub struct Classified {
    /// The category stated for the error.
    pub category: ErrorCategory,
    /// The severity stated for the error.
    pub severity: Severity,
    source: BoxError,
}

impl Classified {
    /// Wraps `source` with an explicit class.
    pub fn new(category: ErrorCategory, severity: Severity, source: impl Into<BoxError>) -> Self {
        Self {
            category,
            severity,
            source: source.into(),
        }
    }
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl Error for Classified {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

impl Classify for Classified {
    fn category(&self) -> ErrorCategory {
        self.category
    }
    fn severity(&self) -> Severity {
        self.severity
    }
}

/// A handler panicked; the panic was caught and turned into this error.
/// Classified MESSAGE_PROCESSING / HIGH.
///
/// The location and backtrace are known only when the panic hook of
/// [`install_panic_hook`](crate::install_panic_hook) is installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("handler panicked{}: {message}", at(.location))]
#[non_exhaustive]
pub struct PanicError {
    /// The panic payload if it was a string, else a placeholder.
    pub message: String,
    /// `file:line:column` of the panic.
    pub location: Option<String>,
    /// The backtrace captured at the panic (`RUST_BACKTRACE` decides).
    pub backtrace: Option<String>,
}

fn at(location: &Option<String>) -> String {
    location
        .as_ref()
        .map_or_else(String::new, |l| format!(" at {l}"))
}

impl PanicError {
    /// A panic error with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            location: None,
            backtrace: None,
        }
    }

    /// Builds the error from a payload returned by `std::panic::catch_unwind`,
    /// on the thread that caught it: with the hook installed, the location
    /// and backtrace of that thread's latest panic come along.
    pub fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "<non-string panic payload>".to_owned()
        };
        let site = crate::panic::take_site();
        Self {
            message,
            location: site.as_ref().and_then(|s| s.location.clone()),
            backtrace: site.and_then(|s| s.backtrace),
        }
    }
}

impl Classify for PanicError {
    fn category(&self) -> ErrorCategory {
        ErrorCategory::MessageProcessing
    }
    fn severity(&self) -> Severity {
        Severity::High
    }
}

/// An operation ran past its deadline. Handlers return it when they give up
/// waiting; classified TIMEOUT / MEDIUM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} timed out after {elapsed:?} (deadline {deadline:?})")]
pub struct TimeoutError {
    /// What timed out.
    pub operation: String,
    /// How long it ran.
    pub elapsed: Duration,
    /// The deadline it had.
    pub deadline: Duration,
}

impl Classify for TimeoutError {
    fn category(&self) -> ErrorCategory {
        ErrorCategory::Timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_mark_converts_any_error_and_keeps_its_type_name() {
        fn f() -> Result<(), HandlerError> {
            let _: u8 = "300".parse()?;
            Ok(())
        }
        let e = f().unwrap_err();
        assert_eq!(e.type_name(), "core::num::error::ParseIntError");
        assert!(e.downcast_ref::<std::num::ParseIntError>().is_some());
    }

    #[test]
    fn with_class_keeps_display_type_and_downcast() {
        let e = HandlerError::from(std::io::Error::other("boom"))
            .with_class(ErrorCategory::Timeout, Severity::Low);
        assert_eq!(e.to_string(), "boom");
        assert_eq!(e.type_name(), "std::io::error::Error");
        assert!(e.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(e.chain(), vec!["boom".to_owned()]);
    }

    #[test]
    fn panic_payloads_of_both_string_kinds_are_read() {
        let r = std::panic::catch_unwind(|| panic!("static"));
        assert_eq!(PanicError::from_payload(&*r.unwrap_err()).message, "static");
        let r = std::panic::catch_unwind(|| panic!("formatted {}", 7));
        assert_eq!(
            PanicError::from_payload(&*r.unwrap_err()).message,
            "formatted 7"
        );
        let r = std::panic::catch_unwind(|| std::panic::panic_any(42_u8));
        assert_eq!(
            PanicError::from_payload(&*r.unwrap_err()).message,
            "<non-string panic payload>"
        );
    }
}
