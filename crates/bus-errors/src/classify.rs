use crate::{Classified, ErrorCategory, PanicError, Severity, TimeoutError};
use serde::{Deserialize, Serialize};
use std::error::Error;
use std::fmt;
use std::io;
use std::sync::Arc;

/// Implemented by error types that know their own class. Register the type
/// with [`DefaultClassifierBuilder::with`] so the classifier finds it by
/// downcasting (anywhere in the source chain).
pub trait Classify {
    /// The category of this error.
    fn category(&self) -> ErrorCategory;
    /// The severity; defaults to the category's default.
    fn severity(&self) -> Severity {
        self.category().default_severity()
    }
}

/// A category and a severity: the verdict of a [`Classifier`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Classification {
    /// What kind of failure.
    pub category: ErrorCategory,
    /// How bad.
    pub severity: Severity,
}

impl Classification {
    /// A classification with an explicit severity.
    pub const fn new(category: ErrorCategory, severity: Severity) -> Self {
        Self { category, severity }
    }

    /// A classification with the category's default severity.
    pub const fn of(category: ErrorCategory) -> Self {
        Self {
            category,
            severity: category.default_severity(),
        }
    }

    /// The fallback for errors nobody recognizes: MESSAGE_PROCESSING / MEDIUM.
    pub const FALLBACK: Classification =
        Classification::new(ErrorCategory::MessageProcessing, Severity::Medium);

    fn from_classify(c: &dyn Classify) -> Self {
        Self {
            category: c.category(),
            severity: c.severity(),
        }
    }
}

/// Where an error happened, as far as a classifier may care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorContext<'a> {
    /// The component (subscriber, transport, store) that failed.
    pub component: &'a str,
    /// The topic of the message being handled, if any.
    pub topic: Option<&'a str>,
    /// Which delivery attempt failed (1 for the first).
    pub attempt: u32,
}

impl<'a> ErrorContext<'a> {
    /// A context naming only the component.
    pub fn new(component: &'a str) -> Self {
        Self {
            component,
            topic: None,
            attempt: 1,
        }
    }

    /// Sets the topic.
    pub fn with_topic(mut self, topic: &'a str) -> Self {
        self.topic = Some(topic);
        self
    }

    /// Sets the attempt number.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }
}

/// Decides the category and severity of an error, by type.
///
/// Implementations must not panic and should be cheap: the bus calls this once
/// per failed delivery on the worker thread.
pub trait Classifier: Send + Sync {
    /// Classifies `err` raised in `ctx`.
    fn classify(&self, err: &(dyn Error + 'static), ctx: &ErrorContext<'_>) -> Classification;
}

impl<T: Classifier + ?Sized> Classifier for &T {
    fn classify(&self, err: &(dyn Error + 'static), ctx: &ErrorContext<'_>) -> Classification {
        (**self).classify(err, ctx)
    }
}

impl<T: Classifier + ?Sized> Classifier for Arc<T> {
    fn classify(&self, err: &(dyn Error + 'static), ctx: &ErrorContext<'_>) -> Classification {
        (**self).classify(err, ctx)
    }
}

impl<T: Classifier + ?Sized> Classifier for Box<T> {
    fn classify(&self, err: &(dyn Error + 'static), ctx: &ErrorContext<'_>) -> Classification {
        (**self).classify(err, ctx)
    }
}

type Rule = Arc<dyn Fn(&(dyn Error + 'static)) -> Option<Classification> + Send + Sync>;

/// The classifier the bus uses unless told otherwise.
///
/// For each error in the source chain, outermost first, it tries in order:
/// an explicit [`Classified`] wrapper; the types and rules registered on the
/// builder; the built-in rules ([`PanicError`], [`TimeoutError`],
/// `std::io::Error` by [`io::ErrorKind`], `serde_json::Error` by its
/// category, UTF-8 errors, `TryReserveError`, `VarError`, `AddrParseError`,
/// `RecvTimeoutError`). The first match wins; if none matches anywhere in the
/// chain the fallback (MESSAGE_PROCESSING / MEDIUM unless configured) applies.
#[derive(Clone)]
pub struct DefaultClassifier {
    rules: Vec<Rule>,
    fallback: Classification,
}

impl fmt::Debug for DefaultClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultClassifier")
            .field("rules", &self.rules.len())
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl Default for DefaultClassifier {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl DefaultClassifier {
    /// Starts a builder with the built-in rules.
    pub fn builder() -> DefaultClassifierBuilder {
        DefaultClassifierBuilder {
            rules: Vec::new(),
            fallback: Classification::FALLBACK,
        }
    }

    fn classify_one(&self, e: &(dyn Error + 'static)) -> Option<Classification> {
        if let Some(c) = e.downcast_ref::<Classified>() {
            return Some(Classification::from_classify(c));
        }
        for rule in &self.rules {
            if let Some(c) = rule(e) {
                return Some(c);
            }
        }
        builtin(e)
    }
}

impl Classifier for DefaultClassifier {
    fn classify(&self, err: &(dyn Error + 'static), _ctx: &ErrorContext<'_>) -> Classification {
        let mut cur = Some(err);
        // Bounded: a pathological cyclic source chain must not hang a worker.
        for _ in 0..64 {
            let Some(e) = cur else { break };
            if let Some(c) = self.classify_one(e) {
                return c;
            }
            cur = e.source();
        }
        self.fallback
    }
}

/// Builds a [`DefaultClassifier`].
#[must_use]
pub struct DefaultClassifierBuilder {
    rules: Vec<Rule>,
    fallback: Classification,
}

impl fmt::Debug for DefaultClassifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultClassifierBuilder")
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl DefaultClassifierBuilder {
    /// Recognizes errors of type `E` by their own [`Classify`] impl.
    pub fn with<E: Error + Classify + 'static>(mut self) -> Self {
        self.rules.push(Arc::new(|e| {
            e.downcast_ref::<E>()
                .map(|e| Classification::from_classify(e))
        }));
        self
    }

    /// Classifies every error of type `E` as `class` (for foreign types that
    /// cannot implement [`Classify`]).
    pub fn map<E: Error + 'static>(mut self, class: Classification) -> Self {
        self.rules
            .push(Arc::new(move |e| e.downcast_ref::<E>().map(|_| class)));
        self
    }

    /// Adds a rule for errors of type `E` that looks at the value.
    pub fn rule<E, F>(mut self, f: F) -> Self
    where
        E: Error + 'static,
        F: Fn(&E) -> Option<Classification> + Send + Sync + 'static,
    {
        self.rules
            .push(Arc::new(move |e| e.downcast_ref::<E>().and_then(&f)));
        self
    }

    /// Sets the class of errors nothing recognizes.
    pub fn fallback(mut self, class: Classification) -> Self {
        self.fallback = class;
        self
    }

    /// Finishes the classifier.
    pub fn build(self) -> DefaultClassifier {
        DefaultClassifier {
            rules: self.rules,
            fallback: self.fallback,
        }
    }
}

fn builtin(e: &(dyn Error + 'static)) -> Option<Classification> {
    use Classification as C;
    use ErrorCategory as Cat;
    if let Some(p) = e.downcast_ref::<PanicError>() {
        return Some(C::from_classify(p));
    }
    if let Some(t) = e.downcast_ref::<TimeoutError>() {
        return Some(C::from_classify(t));
    }
    if let Some(io) = e.downcast_ref::<io::Error>() {
        return Some(classify_io(io));
    }
    if let Some(j) = e.downcast_ref::<serde_json::Error>() {
        return Some(match j.classify() {
            serde_json::error::Category::Io => j
                .io_error_kind()
                .map(|k| classify_io_kind(k, None))
                .unwrap_or(C::of(Cat::Serialization)),
            _ => C::of(Cat::Serialization),
        });
    }
    if e.is::<std::str::Utf8Error>() || e.is::<std::string::FromUtf8Error>() {
        return Some(C::of(Cat::Serialization));
    }
    if e.is::<std::collections::TryReserveError>() {
        return Some(C::new(Cat::ResourceExhaustion, Severity::Critical));
    }
    if e.is::<std::env::VarError>() || e.is::<std::net::AddrParseError>() {
        return Some(C::new(Cat::Configuration, Severity::High));
    }
    if let Some(r) = e.downcast_ref::<std::sync::mpsc::RecvTimeoutError>() {
        return Some(match r {
            std::sync::mpsc::RecvTimeoutError::Timeout => C::of(Cat::Timeout),
            std::sync::mpsc::RecvTimeoutError::Disconnected => C::of(Cat::Connection),
        });
    }
    None
}

fn classify_io(e: &io::Error) -> Classification {
    // ENOSPC / EDQUOT are reported as their own kinds on recent Rust; the raw
    // codes are checked too so that older std and other platforms agree.
    classify_io_kind(e.kind(), e.raw_os_error())
}

fn classify_io_kind(kind: io::ErrorKind, raw: Option<i32>) -> Classification {
    use Classification as C;
    use ErrorCategory as Cat;
    use io::ErrorKind as K;
    const ENOSPC: i32 = 28;
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const EDQUOT: i32 = 122;
    if matches!(raw, Some(ENOSPC | EMFILE | ENFILE | EDQUOT)) {
        return C::new(Cat::ResourceExhaustion, Severity::Critical);
    }
    match kind {
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::BrokenPipe
        | K::AddrInUse
        | K::AddrNotAvailable
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown => C::of(Cat::Connection),
        K::TimedOut | K::WouldBlock => C::of(Cat::Timeout),
        K::PermissionDenied => C::of(Cat::Authentication),
        K::InvalidData | K::UnexpectedEof => C::of(Cat::Serialization),
        K::OutOfMemory | K::StorageFull | K::QuotaExceeded | K::FileTooLarge => {
            C::new(Cat::ResourceExhaustion, Severity::Critical)
        }
        K::Unsupported => C::new(Cat::Configuration, Severity::High),
        _ => Classification::FALLBACK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HandlerError;
    use rstest::rstest;

    fn class_of(e: HandlerError) -> Classification {
        DefaultClassifier::default().classify(e.as_error(), &ErrorContext::new("t"))
    }

    #[rstest]
    #[case(io::ErrorKind::ConnectionRefused, ErrorCategory::Connection)]
    #[case(io::ErrorKind::ConnectionReset, ErrorCategory::Connection)]
    #[case(io::ErrorKind::BrokenPipe, ErrorCategory::Connection)]
    #[case(io::ErrorKind::TimedOut, ErrorCategory::Timeout)]
    #[case(io::ErrorKind::WouldBlock, ErrorCategory::Timeout)]
    #[case(io::ErrorKind::PermissionDenied, ErrorCategory::Authentication)]
    #[case(io::ErrorKind::InvalidData, ErrorCategory::Serialization)]
    #[case(io::ErrorKind::UnexpectedEof, ErrorCategory::Serialization)]
    #[case(io::ErrorKind::OutOfMemory, ErrorCategory::ResourceExhaustion)]
    #[case(io::ErrorKind::StorageFull, ErrorCategory::ResourceExhaustion)]
    #[case(io::ErrorKind::Unsupported, ErrorCategory::Configuration)]
    #[case(io::ErrorKind::NotFound, ErrorCategory::MessageProcessing)]
    fn io_errors_are_classified_by_kind(
        #[case] kind: io::ErrorKind,
        #[case] expected: ErrorCategory,
    ) {
        assert_eq!(class_of(io::Error::from(kind).into()).category, expected);
    }

    #[test]
    fn raw_enospc_is_resource_exhaustion_even_without_a_kind() {
        let c = class_of(io::Error::from_raw_os_error(28).into());
        assert_eq!(
            c,
            Classification::new(ErrorCategory::ResourceExhaustion, Severity::Critical)
        );
    }

    #[test]
    fn serde_json_errors_are_serialization() {
        let err = serde_json::from_str::<u32>("{").unwrap_err();
        assert_eq!(class_of(err.into()).category, ErrorCategory::Serialization);
    }

    #[test]
    fn utf8_and_panics_and_timeouts_have_builtin_rules() {
        let utf8 = String::from_utf8(vec![0xff]).unwrap_err();
        assert_eq!(class_of(utf8.into()).category, ErrorCategory::Serialization);
        let p = PanicError::new("x");
        assert_eq!(
            class_of(p.into()),
            Classification::new(ErrorCategory::MessageProcessing, Severity::High)
        );
        let t = TimeoutError {
            operation: "db".into(),
            elapsed: Default::default(),
            deadline: Default::default(),
        };
        assert_eq!(class_of(t.into()).category, ErrorCategory::Timeout);
    }

    #[test]
    fn unknown_errors_fall_back_to_message_processing_medium() {
        #[derive(Debug, thiserror::Error)]
        #[error("mystery")]
        struct Mystery;
        assert_eq!(class_of(Mystery.into()), Classification::FALLBACK);
        assert_eq!(
            class_of(HandlerError::msg("plain")),
            Classification::FALLBACK
        );
    }

    #[test]
    fn registered_types_are_found_deep_in_the_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("auth")]
        struct AuthFailed;
        impl Classify for AuthFailed {
            fn category(&self) -> ErrorCategory {
                ErrorCategory::Authentication
            }
        }
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] AuthFailed);

        let c = DefaultClassifier::builder().with::<AuthFailed>().build();
        let got = c.classify(
            HandlerError::from(Outer(AuthFailed)).as_error(),
            &ErrorContext::new("x"),
        );
        assert_eq!(
            got,
            Classification::new(ErrorCategory::Authentication, Severity::High)
        );
        // Without registration the same error is unknown.
        assert_eq!(class_of(Outer(AuthFailed).into()), Classification::FALLBACK);
    }

    #[test]
    fn explicit_class_beats_builtin_rules_and_rules_see_values() {
        let e = HandlerError::from(io::Error::from(io::ErrorKind::TimedOut))
            .with_class(ErrorCategory::Configuration, Severity::Low);
        assert_eq!(
            class_of(e),
            Classification::new(ErrorCategory::Configuration, Severity::Low)
        );

        let c = DefaultClassifier::builder()
            .rule::<io::Error, _>(|e| {
                (e.kind() == io::ErrorKind::NotFound)
                    .then_some(Classification::of(ErrorCategory::Configuration))
            })
            .fallback(Classification::new(
                ErrorCategory::MessageProcessing,
                Severity::Low,
            ))
            .build();
        let nf = HandlerError::from(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(
            c.classify(nf.as_error(), &ErrorContext::new("x")).category,
            ErrorCategory::Configuration
        );
        let other = HandlerError::msg("?");
        assert_eq!(
            c.classify(other.as_error(), &ErrorContext::new("x"))
                .severity,
            Severity::Low
        );
    }
}
