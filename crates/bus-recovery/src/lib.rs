//! Retry with backoff and jitter, per-category recovery strategies and a retry budget; scheduled, never slept.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
