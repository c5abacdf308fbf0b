//! The tokio runner: an async subscriber's calls are tasks on a runtime,
//! at most its in-flight limit at once, each driven through the same
//! [`Pipeline`] as a thread worker's. A bridge thread per subscription
//! waits in the transport and hands deliveries to a dispatcher task.

use super::pipeline::{Called, Pipeline};
use super::{StopHook, SubscribeError, SubscriberBuilder, SubscriptionHandle};
use crate::runtime::{AsyncHandler, BRIDGE_DEPTH, DEFAULT_IN_FLIGHT, OwnedMessage, bridge};
use crate::{Delivery, Permit};
use bus_errors::{HandlerError, TimeoutError};
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::Poll;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

/// An async subscriber's settings, kept on its builder.
#[derive(Debug, Clone)]
pub(super) struct AsyncOptions {
    runtime: Option<Handle>,
    in_flight: usize,
    timeout: Option<Duration>,
}

impl Default for AsyncOptions {
    fn default() -> Self {
        Self {
            runtime: None,
            in_flight: DEFAULT_IN_FLIGHT,
            timeout: None,
        }
    }
}

/// Where a runner is in its stop: it only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    /// Take no more messages; let the calls in flight finish.
    Stopping,
    /// Cancel the calls in flight.
    Cancel,
}

impl SubscriberBuilder<'_> {
    /// The tokio runtime an async subscriber's calls run on (with its
    /// timer enabled: deadlines use it). Default: a runtime of two worker
    /// threads that the subscriber owns.
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.asynchronous.runtime = Some(handle);
        self
    }

    /// At most `n` calls of an async subscriber in flight at once (default
    /// [`DEFAULT_IN_FLIGHT`]; at least 1), over all its workers.
    pub fn in_flight(mut self, n: usize) -> Self {
        self.asynchronous.in_flight = n.max(1);
        self
    }

    /// A deadline for each call of an async handler, on top of the
    /// recovery policy's (the shorter wins): a call still running then is
    /// cancelled and fails as a TIMEOUT. Default: only the policy's.
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.asynchronous.timeout = Some(timeout);
        self
    }

    /// Starts an async subscriber: each worker (default 1) is one bridge
    /// thread fetching from the transport; the handler's calls are tasks
    /// on the runtime. See [`crate::runtime`].
    pub fn start_async(
        mut self,
        handler: impl AsyncHandler,
    ) -> Result<SubscriptionHandle, SubscribeError> {
        let options = std::mem::take(&mut self.asynchronous);
        let (handle, owned) = match options.runtime {
            Some(handle) => (handle, None),
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(format!("bus-rt-{}", self.component))
                    .enable_time()
                    .build()?;
                (rt.handle().clone(), Some(Arc::new(rt)))
            }
        };
        let handler = Arc::new(handler);
        let limit = Arc::new(Semaphore::new(options.in_flight));
        let timeout = options.timeout;
        self.launch(|pipe, sub, _, name| {
            let (tx, rx) = mpsc::channel(BRIDGE_DEPTH);
            let (phase_tx, phase_rx) = watch::channel(Phase::Running);
            pipe.subscriber
                .hooks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(StopHook(Box::new(move |cancel| {
                    let to = if cancel {
                        Phase::Cancel
                    } else {
                        Phase::Stopping
                    };
                    phase_tx.send_if_modified(|p| {
                        let later = to > *p;
                        if later {
                            *p = to;
                        }
                        later
                    });
                })));
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let dispatcher = Dispatcher {
                pipe: Arc::clone(&pipe),
                handler: Arc::clone(&handler),
                limit: Arc::clone(&limit),
                timeout,
            };
            let owned = owned.clone();
            let handle = handle.clone();
            std::thread::Builder::new().name(name).spawn(move || {
                handle.spawn(async move {
                    dispatcher.run(rx, phase_rx).await;
                    drop(done_tx);
                });
                let poll = pipe.shared.config.poll_interval;
                let stopped = || pipe.subscriber.stop.load(Ordering::Acquire);
                bridge(sub, &tx, poll, stopped, |d| pipe.unstarted(d));
                drop(tx);
                // This thread stands for the whole runner in the
                // subscriber's list: it ends when the dispatcher has
                // settled every call (or its runtime dropped it).
                let _ = done_rx.recv();
                drop(owned);
            })
        })
    }
}

/// Takes deliveries from the bridge and starts a task per call, within
/// the in-flight limit.
struct Dispatcher<H> {
    pipe: Arc<Pipeline>,
    handler: Arc<H>,
    limit: Arc<Semaphore>,
    timeout: Option<Duration>,
}

impl<H: AsyncHandler> Dispatcher<H> {
    async fn run(self, mut rx: mpsc::Receiver<Delivery>, mut phase: watch::Receiver<Phase>) {
        let mut calls = JoinSet::new();
        loop {
            while calls.try_join_next().is_some() {}
            let slot = tokio::select! {
                biased;
                () = reached(&mut phase, Phase::Stopping) => break,
                slot = Arc::clone(&self.limit).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            if let Some(left) = self.pipe.subscriber.paused_for() {
                if !self.wait(&mut phase, left).await {
                    break;
                }
                continue;
            }
            let permit = match self.pipe.admit() {
                Ok(permit) => permit,
                Err(rejected) => {
                    let left = rejected.retry_after.max(Duration::from_millis(1));
                    if !self.wait(&mut phase, left).await {
                        break;
                    }
                    continue;
                }
            };
            let delivery = tokio::select! {
                biased;
                () = reached(&mut phase, Phase::Stopping) => None,
                d = rx.recv() => d,
            };
            let Some(delivery) = delivery else {
                self.pipe.release(permit);
                break;
            };
            let call = InFlight {
                pipe: Arc::clone(&self.pipe),
                delivery: Some(delivery),
                permit: Some(permit),
                _slot: slot,
            };
            calls.spawn(call.run(Arc::clone(&self.handler), self.timeout));
        }
        // Fetched and never started: settled without a call.
        rx.close();
        while let Ok(d) = rx.try_recv() {
            self.pipe.unstarted(d);
        }
        loop {
            tokio::select! {
                biased;
                () = reached(&mut phase, Phase::Cancel) => {
                    calls.abort_all();
                    while calls.join_next().await.is_some() {}
                    break;
                }
                next = calls.join_next() => if next.is_none() {
                    break;
                },
            }
        }
    }

    /// Waits `d` unless a stop comes first (then `false`).
    async fn wait(&self, phase: &mut watch::Receiver<Phase>, d: Duration) -> bool {
        tokio::select! {
            biased;
            () = reached(phase, Phase::Stopping) => false,
            () = tokio::time::sleep(d) => true,
        }
    }
}

/// Resolves once the runner's phase is `at` or later (or its stop hook is
/// gone with its subscriber).
async fn reached(phase: &mut watch::Receiver<Phase>, at: Phase) {
    let _ = phase.wait_for(|p| *p >= at).await.map(drop);
}

/// One call in flight: owns the delivery and the guard's permit until the
/// pipeline settles them. Dropped before that (the call cancelled at a
/// deadline or by its runtime), it hands the permit back unused, so a
/// half-open probe slot never leaks, and settles the delivery as never
/// started.
struct InFlight {
    pipe: Arc<Pipeline>,
    delivery: Option<Delivery>,
    permit: Option<Permit>,
    /// The in-flight place this call holds.
    _slot: OwnedSemaphorePermit,
}

impl InFlight {
    async fn run<H: AsyncHandler>(mut self, handler: Arc<H>, timeout: Option<Duration>) {
        let Some(delivery) = &self.delivery else {
            return;
        };
        let deadline = match (self.pipe.deadline(), timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let msg = OwnedMessage::new(
            delivery.envelope().clone(),
            Arc::clone(&self.pipe.component),
            deadline,
        );
        let started = self.pipe.start();
        let called = call(&*handler, msg, deadline).await;
        let (Some(permit), mut slot) = (self.permit.take(), self.delivery.take()) else {
            return;
        };
        let pipe = &*self.pipe;
        // Plugs are user code: one that panics must not take the runtime's
        // thread down with it. The delivery, dropped unsettled in the
        // unwind, is redelivered.
        if catch_unwind(AssertUnwindSafe(|| {
            pipe.complete(&mut slot, permit, called, started);
        }))
        .is_err()
        {
            tracing::error!(component = %pipe.component, "a bus plug panicked; the delivery will be redelivered");
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.pipe.release(permit);
        }
        if let Some(delivery) = self.delivery.take() {
            self.pipe.unstarted(delivery);
        }
    }
}

/// Runs one call of `handler`, catching a panic in the call or in any poll
/// of its future, bounded by `deadline` on the runtime's timer.
async fn call<H: AsyncHandler>(
    handler: &H,
    msg: OwnedMessage,
    deadline: Option<Duration>,
) -> Called {
    let fut = catch_unwind(AssertUnwindSafe(|| handler.call(msg)))?;
    let mut fut = pin!(fut);
    let caught =
        poll_fn(
            move |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
                Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
                Ok(Poll::Pending) => Poll::Pending,
                Err(payload) => Poll::Ready(Err(payload)),
            },
        );
    match deadline {
        None => caught.await,
        Some(d) => match tokio::time::timeout(d, caught).await {
            Ok(called) => called,
            Err(_) => Ok(Err(HandlerError::from(TimeoutError {
                operation: "async handler".to_owned(),
                elapsed: d,
                deadline: d,
            }))),
        },
    }
}

impl super::Bus {
    /// [`shutdown`](Self::shutdown) from async code: the wait runs on the
    /// runtime's blocking pool, so the runtime's own threads (a
    /// current-thread runtime's one) stay free to cancel and settle the
    /// calls in flight.
    pub async fn shutdown_async(&self, timeout: Duration) -> super::ShutdownReport {
        let bus = self.clone();
        match tokio::task::spawn_blocking(move || bus.shutdown(timeout)).await {
            Ok(report) => report,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}
