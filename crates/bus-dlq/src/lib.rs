//! A crash-safe dead-letter queue on SQLite with inspect, replay and purge.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
