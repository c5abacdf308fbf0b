//! Health status over sliding windows, Prometheus export, an HTTP endpoint and alerts.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
