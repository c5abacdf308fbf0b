//! Lock-free circuit breakers with Resilience4j semantics, per component.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
