//! Async handlers, async publishing and an async wait for deliveries, on a
//! tokio runtime (the `tokio` feature).
//!
//! An async subscriber runs the same pipeline as a thread worker (guard,
//! handler, classify, sanitize, sink, observe, decide, settle), written
//! once; what differs is only who calls the handler. Its calls are tasks on
//! a runtime the application hands in
//! ([`SubscriberBuilder::runtime`](crate::SubscriberBuilder::runtime)) or
//! on one the subscriber owns, at most
//! [`in_flight`](crate::SubscriberBuilder::in_flight) at once (default
//! [`DEFAULT_IN_FLIGHT`]): a thousand slow calls in flight cost a thousand
//! tasks, not a thousand threads.
//!
//! ```
//! use bus_core::Bus;
//! use bus_core::runtime::OwnedMessage;
//! use std::time::Duration;
//!
//! let rt = tokio::runtime::Builder::new_multi_thread()
//!     .worker_threads(2)
//!     .enable_time()
//!     .build()
//!     .unwrap();
//! let bus = Bus::builder().build();
//! bus.subscriber("billing")
//!     .topic("orders.created")
//!     .runtime(rt.handle().clone())
//!     .start_async(|msg: OwnedMessage| async move {
//!         // A call to a remote service would be awaited here.
//!         tokio::time::sleep(Duration::from_millis(1)).await;
//!         std::str::from_utf8(&msg.payload).map(|_| ())
//!     })
//!     .unwrap();
//! rt.block_on(async {
//!     bus.publish_async("orders.created", &b"{\"id\":1}"[..]).await.unwrap();
//! });
//! let report = bus.shutdown(Duration::from_secs(5));
//! assert!(report.drained);
//! assert_eq!(report.stats.acked, 1);
//! ```

use crate::{Delivery, Envelope, Message, Subscription, TransportError};
use bus_errors::HandlerError;
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc;

/// How many calls an async subscriber runs at once unless told otherwise.
pub const DEFAULT_IN_FLIGHT: usize = 64;

/// Deliveries an [`AsyncSubscription`]'s bridge fetches ahead of its
/// reader: enough that a fast stream crosses threads in batches, few
/// enough that a reader that stops holds back little.
const BRIDGE_DEPTH: usize = 16;

/// A message as an async handler gets it: it owns a copy of its envelope,
/// so the handler's future can keep it across awaits (a [`Message`]
/// borrows the delivery). Dereferences to [`Envelope`].
#[derive(Debug, Clone)]
pub struct OwnedMessage {
    envelope: Envelope,
    component: Arc<str>,
    deadline: Option<Duration>,
}

impl OwnedMessage {
    /// Wraps an envelope for a handler (the pipeline does this; tests may too).
    pub fn new(envelope: Envelope, component: Arc<str>, deadline: Option<Duration>) -> Self {
        Self {
            envelope,
            component,
            deadline,
        }
    }

    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Takes the envelope out.
    pub fn into_envelope(self) -> Envelope {
        self.envelope
    }

    /// The subscriber this delivery is for.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// How long the call may take: the recovery policy's deadline (grown
    /// after timeouts) or the subscriber's own
    /// [`handler_timeout`](crate::SubscriberBuilder::handler_timeout),
    /// whichever is shorter. The runner enforces it with the runtime's
    /// timers: a call still running then is cancelled and fails as a
    /// TIMEOUT.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The same message as a synchronous handler sees it, to reuse one.
    pub fn as_message(&self) -> Message<'_> {
        Message::new(&self.envelope, &self.component, self.deadline)
    }
}

impl Deref for OwnedMessage {
    type Target = Envelope;
    fn deref(&self) -> &Envelope {
        &self.envelope
    }
}

/// Handles messages of an async subscription. Any `Fn(OwnedMessage) ->
/// Fut` where `Fut: Future<Output = Result<(), E>> + Send + 'static` and
/// `E: Into<HandlerError>` is one.
///
/// ```
/// use bus_core::runtime::{AsyncHandler, OwnedMessage};
///
/// fn takes_handler(_: impl AsyncHandler) {}
/// takes_handler(|msg: OwnedMessage| async move {
///     std::str::from_utf8(&msg.payload).map(|_| ())
/// });
/// ```
pub trait AsyncHandler: Send + Sync + 'static {
    /// Starts handling one message. A returned error is classified and
    /// recovered; a panic, in this call or in the future, is caught and
    /// treated as a MESSAGE_PROCESSING / HIGH error.
    fn call(
        &self,
        msg: OwnedMessage,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'static;
}

impl<F, Fut, E> AsyncHandler for F
where
    F: Fn(OwnedMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<HandlerError>,
{
    fn call(
        &self,
        msg: OwnedMessage,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send + 'static {
        let fut = self(msg);
        async move { fut.await.map_err(Into::into) }
    }
}

/// A [`Subscription`] waited on without blocking a runtime thread. One
/// that can be polled ([`Subscription::can_poll`], NATS) is polled
/// directly by [`next`](Self::next); for the others (memory, bus-sqlite)
/// a bridge thread waits in the transport's blocking
/// [`next`](Subscription::next) and hands deliveries over a bounded
/// channel. Dropping it stops the bridge; deliveries it had fetched are
/// dropped unsettled, so the transport redelivers them.
///
/// ```
/// use bus_core::memory::MemoryTransport;
/// use bus_core::runtime::AsyncSubscription;
/// use bus_core::{Envelope, SubscribeOptions, Topic, Transport};
/// use std::time::Duration;
///
/// let transport = MemoryTransport::new();
/// let topic = Topic::new("orders").unwrap();
/// let sub = transport.subscribe(&topic, &SubscribeOptions::group("billing")).unwrap();
/// let mut sub = AsyncSubscription::new(sub, Duration::from_millis(50)).unwrap();
/// transport.publish(Envelope::new(topic, &b"{}"[..]), Duration::ZERO).unwrap();
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// let delivery = rt.block_on(sub.next()).expect("one delivery");
/// delivery.ack();
/// ```
#[derive(Debug)]
pub struct AsyncSubscription(Waiting);

enum Waiting {
    Polled(Box<dyn Subscription>),
    Bridged {
        rx: mpsc::Receiver<Delivery>,
        stop: Arc<AtomicBool>,
        wake: Option<crate::Wake>,
        bridge: Option<JoinHandle<()>>,
    },
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiting::Polled(_) => "Polled",
            Waiting::Bridged { .. } => "Bridged",
        })
    }
}

impl AsyncSubscription {
    /// Waits on `sub`: polled if it can be, else through a bridge thread.
    /// `poll`: how long each wait of the bridge in a transport that cannot
    /// be woken lasts before it checks whether it should stop.
    pub fn new(sub: Box<dyn Subscription>, poll: Duration) -> std::io::Result<Self> {
        if sub.can_poll() {
            return Ok(Self(Waiting::Polled(sub)));
        }
        let (tx, rx) = mpsc::channel(BRIDGE_DEPTH);
        let stop = Arc::new(AtomicBool::new(false));
        let wake = sub.waker();
        let flag = Arc::clone(&stop);
        let bridge = std::thread::Builder::new()
            .name("bus-bridge".into())
            .spawn(move || bridge(sub, &tx, poll, || flag.load(Ordering::Acquire), drop))?;
        Ok(Self(Waiting::Bridged {
            rx,
            stop,
            wake,
            bridge: Some(bridge),
        }))
    }

    /// Whether a bridge thread waits for this subscription (it cannot be
    /// polled).
    pub fn bridged(&self) -> bool {
        matches!(self.0, Waiting::Bridged { .. })
    }

    /// The next delivery; `None` once the transport is closed. Errors of
    /// a polled subscription other than its close are logged and waited
    /// through, as the bridge does, 100 ms apart.
    pub async fn next(&mut self) -> Option<Delivery> {
        match &mut self.0 {
            Waiting::Bridged { rx, .. } => rx.recv().await,
            Waiting::Polled(sub) => loop {
                match std::future::poll_fn(|cx| sub.poll_next(cx)).await {
                    Ok(d) => return Some(d),
                    Err(TransportError::Closed) => return None,
                    Err(error) => {
                        tracing::warn!(%error, "transport error while receiving");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            },
        }
    }
}

/// How long a polled [`AsyncSubscription`] waits after a transport error
/// before it polls again (a connection coming back).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

impl Drop for AsyncSubscription {
    fn drop(&mut self) {
        let Waiting::Bridged {
            rx,
            stop,
            wake,
            bridge,
        } = &mut self.0
        else {
            return;
        };
        stop.store(true, Ordering::Release);
        rx.close();
        if let Some(w) = wake {
            w.wake();
        }
        if let Some(b) = bridge.take() {
            b.thread().unpark();
        }
    }
}

/// The bridge's loop: fetch from `sub`, hand over to `tx`, until `stopped`
/// says so, the receiver is gone or the transport closes. A delivery the
/// receiver can no longer take goes to `orphan`.
fn bridge(
    mut sub: Box<dyn Subscription>,
    tx: &mpsc::Sender<Delivery>,
    poll: Duration,
    stopped: impl Fn() -> bool,
    orphan: impl Fn(Delivery),
) {
    let wait = if sub.waker().is_some() {
        Duration::MAX
    } else {
        poll
    };
    while !stopped() && !tx.is_closed() {
        match sub.next(wait) {
            Ok(Some(d)) => {
                if let Err(mpsc::error::SendError(d)) = tx.blocking_send(d) {
                    orphan(d);
                    break;
                }
            }
            Ok(None) => {}
            Err(TransportError::Closed) => break,
            Err(error) => {
                tracing::warn!(%error, "transport error while receiving");
                std::thread::park_timeout(poll);
            }
        }
    }
}
