//! Handlers: what a subscriber runs for each message.

use crate::Envelope;
use bus_errors::HandlerError;
use std::ops::Deref;
use std::time::Duration;

/// A message as a handler sees it: the envelope plus delivery context.
/// Dereferences to [`Envelope`].
#[derive(Debug)]
pub struct Message<'a> {
    envelope: &'a Envelope,
    component: &'a str,
    deadline: Option<Duration>,
}

impl<'a> Message<'a> {
    /// Wraps an envelope for a handler (the pipeline does this; tests may too).
    pub fn new(envelope: &'a Envelope, component: &'a str, deadline: Option<Duration>) -> Self {
        Self {
            envelope,
            component,
            deadline,
        }
    }

    /// The envelope.
    pub fn envelope(&self) -> &'a Envelope {
        self.envelope
    }

    /// The subscriber this delivery is for.
    pub fn component(&self) -> &'a str {
        self.component
    }

    /// How long the handler should take at most, if the recovery policy sets a
    /// deadline (the TIMEOUT strategy grows it after timeouts). A handler that
    /// gives up should return a [`TimeoutError`](bus_errors::TimeoutError).
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }
}

impl Deref for Message<'_> {
    type Target = Envelope;
    fn deref(&self) -> &Envelope {
        self.envelope
    }
}

/// Handles messages of a subscription. Any `Fn(&Message) -> Result<(), E>`
/// where `E: Into<HandlerError>` is a handler.
///
/// ```
/// use bus_core::{Handler, Message};
/// use bus_errors::HandlerError;
///
/// fn takes_handler(_: impl Handler) {}
/// takes_handler(|msg: &Message<'_>| -> Result<(), std::str::Utf8Error> {
///     let _text = std::str::from_utf8(&msg.payload)?;
///     Ok(())
/// });
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Handles one message. A returned error is classified and recovered;
    /// a panic is caught and treated as a MESSAGE_PROCESSING / HIGH error.
    fn handle(&self, msg: &Message<'_>) -> Result<(), HandlerError>;
}

impl<F, E> Handler for F
where
    F: Fn(&Message<'_>) -> Result<(), E> + Send + Sync + 'static,
    E: Into<HandlerError>,
{
    fn handle(&self, msg: &Message<'_>) -> Result<(), HandlerError> {
        self(msg).map_err(Into::into)
    }
}
