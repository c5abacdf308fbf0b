//! A crash-safe dead-letter queue on SQLite, with inspect, group, replay and
//! purge.
//!
//! [`SqliteDlq`] implements bus-core's [`DeadLetterStore`]: each letter is one
//! row of `<data-dir>/dlq.sqlite` (WAL mode, files 0600) holding the whole
//! envelope (payload as a BLOB), the last error report and the attempt
//! history, and `push` returns `Ok` only once its row is committed with the
//! configured [`Durability`]. Concurrent pushes share one commit (group
//! commit). [`MemoryDlq`] is the same thing without a disk.
//!
//! Both stores answer the [`DlqQuery`] API: list with a [`Filter`], get,
//! [`stats`](DlqQuery::stats), failures grouped by [`signature`]
//! ([`groups`](DlqQuery::groups)), replay, purge, and JSONL export/import.
//! The `busctl dlq ...` commands are built on this API in the busctl crate. The
//! on-disk schema is described in `docs/formats.md` at the repository root.
//!
//! ```
//! use bus_core::{DeadLetter, DeadLetterReason, DeadLetterStore, Envelope, Topic};
//! use bus_errors::{Classification, ErrorCategory, ErrorReport};
//! use bus_dlq::{DlqConfig, DlqQuery, Filter, LetterState, SqliteDlq};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
//!
//! let env = Envelope::new(Topic::new("orders.created").unwrap(), &b"{\"id\":7}"[..]);
//! let report = ErrorReport::new(Classification::of(ErrorCategory::Connection), "billing", "db 10.0.0.7 down");
//! let letter = DeadLetter::new(env, report, DeadLetterReason::RetriesExhausted, "billing", "billing");
//! let id = dlq.push(&letter).unwrap(); // durable once this returns
//!
//! assert_eq!(dlq.get(id).unwrap().unwrap().letter, letter);
//! assert_eq!(dlq.groups(&Filter::all()).unwrap()[0].count, 1);
//!
//! // Fix the cause, then replay: re-published, then marked replayed.
//! let mut bus = Vec::new();
//! let report = dlq
//!     .replay(&Filter::all().topic("orders.created"), None, &mut |env| { bus.push(env); Ok(()) })
//!     .unwrap();
//! assert_eq!(report.replayed, vec![id]);
//! assert_eq!(bus[0].attempt, 1);
//! assert_eq!(dlq.count(&Filter::all().state(LetterState::Replayed)).unwrap(), 1);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod jsonl;
mod memory;
mod query;
mod record;
mod replay;
mod signature;
mod sqlite;
#[cfg(test)]
mod testutil;
mod text;

pub use bus_core::{DeadLetter, DeadLetterStore, DlqError, LetterId};
pub use config::{DB_FILE_NAME, DlqConfig, Durability};
pub use memory::MemoryDlq;
pub use query::{DlqQuery, FailureGroup, Filter, ImportReport, ReplayReport, Stats};
pub use record::{
    LetterState, LetterSummary, ReplayRefusal, StoredLetter, UnknownState, letter_signature,
};
pub use replay::{ORIGINAL_ID_HEADER, REPLAYED_FROM_HEADER, replay_envelope};
pub use signature::{normalize_message, signature};
pub use sqlite::{
    BadRow, DlqFile, SqliteDlq, TotalsMismatch, VerifyReport, WalDamage, open_synced_wal,
};
