//! [`NatsError`]: what the server refused, typed, carried inside
//! [`TransportError::Other`](bus_core::TransportError::Other).

use bus_errors::{Classify, ErrorCategory};

/// A refusal by the server or by the transport's own checks.
///
/// Publish errors carry it as `PublishError::Transport { source:
/// TransportError::Other(..) }`; find it with `downcast_ref::<NatsError>()`.
///
/// ```
/// use bus_errors::{Classify, ErrorCategory};
/// use bus_nats::NatsError;
///
/// let e = NatsError::Refused { code: 10077, description: "maximum bytes exceeded".into() };
/// assert_eq!(e.category(), ErrorCategory::ResourceExhaustion);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// JetStream refused to store a published message: nothing was stored
    /// and the publisher keeps it. A stream at its `max_bytes` or
    /// `max_msgs` under `discard = new`, or a server out of storage, is a
    /// RESOURCE_EXHAUSTION refusal.
    #[error("the server refused to store the message: {description} (JetStream error {code})")]
    Refused {
        /// The JetStream error code (10077 stream store failed, 10047
        /// storage resources exceeded, ...).
        code: u64,
        /// The server's words.
        description: String,
    },
    /// A stream the bus uses is configured so the server may delete
    /// messages nobody has settled yet, and the configuration does not
    /// accept that (`allow_message_loss`).
    #[error(
        "stream {stream} may drop unsettled messages ({why}); refusing it (set allow_message_loss = true to accept and count the losses)"
    )]
    LossyStream {
        /// The stream.
        stream: String,
        /// Which of its settings allows the loss.
        why: String,
    },
    /// A subscription chose a per-subscriber queue bound (a capacity or an
    /// overflow policy, with any value). JetStream keeps a
    /// group's messages in the stream, not in a queue of the subscriber:
    /// what bounds a group is `max_ack_pending` (delivered, unsettled), and
    /// a publish never waits for, nor is refused by, a full subscriber.
    /// Refused rather than ignored, so no one counts on a bound that is not
    /// there.
    #[error(
        "group {group}: NATS has no per-subscriber queue, so capacity {capacity} and overflow {overflow:?} cannot apply; leave them at their defaults (JetStream bounds a group by max_ack_pending = {max_ack_pending}, the [nats] setting)"
    )]
    NoQueueBound {
        /// The group.
        group: String,
        /// The capacity asked for.
        capacity: usize,
        /// The overflow policy asked for.
        overflow: bus_core::OverflowPolicy,
        /// The bound JetStream applies instead.
        max_ack_pending: usize,
    },
    /// A synchronous method of the transport was called on the thread of
    /// the current-thread runtime the transport runs on
    /// ([`NatsConfig::with_runtime`](crate::NatsConfig::with_runtime)):
    /// waiting there for the runtime would wait forever, so it was not
    /// done. Call it from another thread, or use the async API.
    #[error(
        "a synchronous call would block the current-thread runtime the NATS transport runs on; call it from another thread"
    )]
    WouldBlock,
}

impl NatsError {
    pub(crate) fn refused(e: &async_nats::jetstream::Error) -> Self {
        let description = e.to_string();
        NatsError::Refused {
            code: e.error_code().0,
            description,
        }
    }

    /// Whether a broker limit caused the refusal.
    pub fn is_resource_exhaustion(&self) -> bool {
        self.category() == ErrorCategory::ResourceExhaustion
    }
}

impl Classify for NatsError {
    fn category(&self) -> ErrorCategory {
        match self {
            // Store failed (max_bytes / max_msgs under discard new),
            // storage or resources exhausted on the server.
            NatsError::Refused {
                code: 10077 | 10047 | 10023,
                ..
            } => ErrorCategory::ResourceExhaustion,
            NatsError::Refused { .. }
            | NatsError::LossyStream { .. }
            | NatsError::NoQueueBound { .. }
            | NatsError::WouldBlock => ErrorCategory::Configuration,
        }
    }
}
