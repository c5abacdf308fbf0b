//! The commands of `busctl` that other code and tests drive in process:
//! [`dlq`], the `busctl dlq ...` subcommands (clap, with progress bars from
//! indicatif), and [`transport`], how busctl reaches a transport. They live
//! here rather than in bus-dlq so that users of the dead-letter queue do not
//! compile a command line.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod console;
pub mod dlq;
pub mod queue;
pub mod transport;
