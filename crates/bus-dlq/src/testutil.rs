//! Letters for unit tests.

use bus_core::{DeadLetter, DeadLetterReason, Envelope, Topic};
use bus_errors::{Classification, ErrorCategory, ErrorReport};

/// A letter on `topic` whose error message is `message` followed by `n`.
pub(crate) fn letter(topic: &str, message: &str, n: u32) -> DeadLetter {
    let env = Envelope::new(
        Topic::new(topic).unwrap(),
        format!("payload {n}").into_bytes(),
    );
    let report = ErrorReport::new(
        Classification::of(ErrorCategory::MessageProcessing),
        "comp",
        format!("{message} {n}"),
    );
    DeadLetter::new(env, report, DeadLetterReason::RetriesExhausted, "comp", "g")
}
