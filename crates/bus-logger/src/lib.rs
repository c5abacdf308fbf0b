//! Structured JSONL error log with size rotation, bounded history and a metrics snapshot.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
