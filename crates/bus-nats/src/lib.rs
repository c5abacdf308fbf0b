//! The bus across processes and machines: a [`bus_core::Transport`] over NATS
//! JetStream, and a [`bus_core::DeadLetterStore`] on a JetStream stream.
//!
//! The same handlers, classification, breakers, retry policies, dead-letter
//! queue and health that run over the in-process transport run over
//! [`NatsTransport`] unchanged: build the [`Bus`](bus_core::Bus) with it.
//! Messages are durable in the server; a consumer process that dies loses
//! nothing (its unsettled deliveries are redelivered after `ack_wait`).
//!
//! ```no_run
//! use bus_core::{Bus, Message, SimpleRetry};
//! use bus_nats::{NatsConfig, NatsDlq, NatsTransport};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let nats = NatsTransport::connect(NatsConfig::new("nats://127.0.0.1:4222"))?;
//! let dlq = Arc::new(NatsDlq::default_for(&nats)?);
//! nats.set_dead_letters(dlq.clone()); // the MaxDeliver backstop writes here too
//! let bus = Bus::builder()
//!     .transport(Arc::new(nats))
//!     .dead_letters(dlq)
//!     .recovery(Arc::new(SimpleRetry::default()))
//!     .build();
//! bus.subscriber("billing")
//!     .topic("orders.created")
//!     .start(|msg: &Message<'_>| -> Result<(), std::io::Error> {
//!         println!("{} bytes", msg.payload.len());
//!         Ok(())
//!     })?;
//! bus.publish("orders.created", &b"{\"id\":1}"[..])?;
//! bus.shutdown(Duration::from_secs(5));
//! # Ok(())
//! # }
//! ```
//!
//! How the bus maps onto JetStream:
//!
//! | bus | JetStream |
//! |---|---|
//! | topic `orders.created` | subject `bus.orders.created` in stream `BUS_orders` (limits retention, discard new, no max age: nothing unsettled is deleted) |
//! | consumer group | durable pull consumer, explicit ack, filtered on the topic |
//! | envelope id | `Nats-Msg-Id` (publish de-duplication; a publish whose PubAck was lost is resent with it) |
//! | redelivery of a settled message | settled again by stream sequence, never handled twice |
//! | envelope metadata | headers (see the table in `codec`) |
//! | `ack` / `nak(delay)` / `term` / `in_progress` | `+ACK` / `-NAK {"delay":…}` / `+TERM` (confirmed by the server, pipelined: a settle returns at once) / `+WPI` |
//! | attempt | the delivery count |
//! | retries exhausted in a dead process | `MaxDeliver` advisory → dead letter |
//! | queue depth | consumer `num_pending + num_ack_pending`, capacity `max_ack_pending` |
//!
//! The delay of a retry goes on the nak: JetStream's consumer `BackOff`
//! applies only to ack timeouts. For a permanent failure the bus writes the
//! dead letter durably first and terms the message only then, so a term'd
//! message never vanishes unrecorded.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backstop;
mod codec;
mod config;
mod dlq;
mod error;
mod runtime;
mod settle;
mod state;
mod subscription;
mod transport;

pub use codec::to_headers;
pub use config::{Discard, NatsConfig, Storage};
pub use dlq::NatsDlq;
pub use error::NatsError;
pub use runtime::RUNTIME_THREAD_NAME;
pub use state::{ConnectionState, NatsStats};
pub use transport::{ConsumerStatus, NatsTransport};

/// The async client, re-exported for administration through
/// [`NatsTransport::jetstream`].
pub use async_nats;
