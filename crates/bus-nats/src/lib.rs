//! The bus over NATS JetStream.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
