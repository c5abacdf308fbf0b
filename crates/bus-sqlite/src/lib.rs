//! A durable embedded transport: the bus on a SQLite file, so that nothing
//! confirmed is lost when the process dies.
//!
//! [`SqliteTransport`] implements bus-core's [`Transport`](bus_core::Transport)
//! over `<data-dir>/queue.sqlite` (WAL mode, files 0600). A publish is
//! confirmed once its transaction is committed with the configured
//! [`Durability`] (`Full`, the default, fsyncs it: it survives a power loss;
//! `Normal` survives a process crash). Publishes from every publisher share
//! commits (group commit), which is what makes the confirm API fast.
//! Deliveries are leased to the process that took them, until a deadline:
//! if it dies, the next open of the file hands them out again, so delivery
//! is at least once and the duplicates a kill causes are at most what was
//! leased at that moment. Retries scheduled with a delay are stored with
//! their due time and fire after a restart; attempt counts and history
//! survive with the message.
//!
//! ```
//! use bus_core::{Envelope, SubscribeOptions, Topic, Transport};
//! use bus_sqlite::{SqliteConfig, SqliteTransport};
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let transport = SqliteTransport::open(SqliteConfig::new(dir.path())).unwrap();
//! let topic = Topic::new("orders").unwrap();
//! let mut sub = transport.subscribe(&topic, &SubscribeOptions::group("billing")).unwrap();
//! transport.publish(Envelope::new(topic, &b"hi"[..]), Duration::from_secs(5)).unwrap();
//! let delivery = sub.next(Duration::from_secs(5)).unwrap().unwrap();
//! delivery.ack(); // the row leaves the file with the next commit
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
mod config;
mod error;
mod group;
mod inspect;
mod owner;
mod resumed;
mod row;
mod schema;
mod shared;
mod subscription;
mod transport;
mod writer;

pub use bus_dlq::Durability;
pub use clock::{ManualWallClock, SharedWallClock, SystemWallClock, WallClock};
pub use config::{QUEUE_FILE_NAME, SqliteConfig};
pub use error::SqliteError;
pub use inspect::{GroupReport, drop_group, inspect};
pub use transport::SqliteTransport;
