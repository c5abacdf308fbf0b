//! The vocabulary every other bus crate speaks when something goes wrong.
//!
//! A failure is described by an [`ErrorCategory`] (what kind of failure: one of
//! eight) and a [`Severity`] (how bad: one of four). Both are decided by type,
//! never by matching on a type's name: an error type states its own class by
//! implementing [`Classify`], and the [`DefaultClassifier`] knows the standard
//! library's and `serde_json`'s errors. Anything unknown falls back to
//! [`ErrorCategory::MessageProcessing`] / [`Severity::Medium`].
//!
//! An [`ErrorReport`] is the record of one failure that travels to the log, the
//! health monitor and the dead-letter queue. [`Sanitizer`] truncates and redacts
//! its context before it leaves the process.
//!
//! ```
//! use bus_errors::{Classifier, Classify, DefaultClassifier, ErrorCategory, ErrorContext, HandlerError, Severity};
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("card declined")]
//! struct Declined;
//!
//! impl Classify for Declined {
//!     fn category(&self) -> ErrorCategory { ErrorCategory::MessageProcessing }
//!     fn severity(&self) -> Severity { Severity::Low }
//! }
//!
//! let classifier = DefaultClassifier::builder().with::<Declined>().build();
//! let err = HandlerError::from(Declined);
//! let class = classifier.classify(err.as_error(), &ErrorContext::new("payments"));
//! assert_eq!(class.category, ErrorCategory::MessageProcessing);
//! assert_eq!(class.severity, Severity::Low);
//!
//! let io = HandlerError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
//! let class = classifier.classify(io.as_error(), &ErrorContext::new("payments"));
//! assert_eq!(class.category, ErrorCategory::Connection);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod category;
mod classify;
mod error;
mod panic;
mod report;
mod sanitize;

pub use category::{ErrorCategory, ParseNameError, Severity};
pub use classify::{
    Classification, Classifier, Classify, DefaultClassifier, DefaultClassifierBuilder, ErrorContext,
};
pub use error::{Classified, HandlerError, PanicError, TimeoutError};
pub use panic::install_panic_hook;
pub use report::{ErrorReport, ErrorReportBuilder};
pub use sanitize::Sanitizer;
