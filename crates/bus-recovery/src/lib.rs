//! Retries that help, never a retry storm, never a sleeping worker.
//!
//! This crate decides what the bus does with a failed delivery. [`Recovery`]
//! implements [`bus_core::RecoveryPolicy`]: for each failure it picks the
//! [`RetryPolicy`] of the failure's category (or of the topic or subscriber,
//! when overridden), and answers with a [`Decision`](bus_core::Decision):
//! `Retry { after }` or `Reconnect { after }` (the pipeline schedules the
//! redelivery on the transport; nothing sleeps), `DeadLetter`, `Escalate`,
//! or, only where configured, `Discard`.
//!
//! - [`Backoff`]: constant, linear or exponential delays with none, full,
//!   equal or decorrelated [`Jitter`], deterministic under a seeded RNG.
//! - [`RetryPolicy::for_category`]: the defaults table, per category.
//! - [`RetryBudget`]: retries may add at most 20% (by default) of the
//!   successful traffic plus a small floor; the excess goes to the
//!   dead-letter queue as `RetryBudgetExhausted`.
//! - [`AdaptiveDeadlines`]: TIMEOUT failures grow a subscriber's handler
//!   deadline x1.5 up to a cap; successes shrink it back.
//! - [`FallbackCodec`]: a SERIALIZATION failure is transcoded once with the
//!   topic's fallback codec and retried; after that it is poison.
//!
//! ```
//! use bus_core::time::ManualClock;
//! use bus_core::{Decision, Envelope, Failure, RecoveryPolicy, Topic};
//! use bus_core::dlq::DeadLetterReason;
//! use bus_errors::{Classification, ErrorCategory, ErrorReport};
//! use bus_recovery::{Backoff, Recovery, RetryPolicy};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let recovery = Recovery::builder()
//!     .seed(7)
//!     .clock(Arc::new(ManualClock::new()))
//!     .topic("payments", None, RetryPolicy::new(1, Backoff::constant(Duration::from_millis(50))))
//!     .build()?;
//!
//! let report = ErrorReport::new(Classification::of(ErrorCategory::MessageProcessing), "billing", "db down");
//! let mut env = Envelope::new(Topic::new("orders").unwrap(), &b"{}"[..]);
//! // Default MESSAGE_PROCESSING policy: 2 retries, 1 s then 2 s, then dead-letter.
//! let mut decisions = Vec::new();
//! let mut note = None;
//! loop {
//!     let resolution = recovery.decide(&Failure::new(&report, &env, "billing", Duration::ZERO));
//!     // What the pipeline does: apply the rewrite (none here), record the note.
//!     let (d, why) = resolution.apply(&mut env);
//!     note = Some(why);
//!     decisions.push(d.clone());
//!     if !matches!(d, Decision::Retry { .. }) { break; }
//!     env.attempt += 1; // what the pipeline does before redelivery
//! }
//! assert_eq!(decisions, [
//!     Decision::Retry { after: Duration::from_secs(1) },
//!     Decision::Retry { after: Duration::from_secs(2) },
//!     Decision::DeadLetter { reason: DeadLetterReason::RetriesExhausted },
//! ]);
//! assert!(note.unwrap().starts_with("MESSAGE_PROCESSING attempt 3 of 3"));
//! # Ok::<(), bus_recovery::ConfigError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
mod budget;
mod builder;
mod codec;
mod config;
mod error;
mod policy;
mod recovery;
mod timeout;

pub use backoff::{Backoff, Curve, Jitter, Schedule};
pub use budget::{BudgetConfig, RetryBudget};
pub use builder::RecoveryBuilder;
pub use codec::{CodecFn, FALLBACK_HEADER, FallbackCodec, FallbackCodecs};
pub use config::{RecoveryConfig, ScopeConfig};
pub use error::ConfigError;
pub use policy::{Exhausted, RetryPolicy, RetryPredicate, Strategy};
pub use recovery::{DELAY_HEADER, PolicySource, Recovery};
pub use timeout::{AdaptiveDeadlines, DeadlineConfig};

#[cfg(test)]
mod tests {
    fn _obj_safe(_: Box<dyn bus_core::RecoveryPolicy>) {}
    fn _is_policy(r: crate::Recovery) -> Box<dyn bus_core::RecoveryPolicy> {
        Box::new(r)
    }
}
