//! The tokio runner: an async subscriber's calls are tasks on a runtime,
//! at most its in-flight limit at once, each driven through the same
//! [`Pipeline`] as a thread worker's. A runner per subscription takes the
//! guard's permit and an in-flight place, waits in the transport, and
//! spawns each call onto the runtime. The runner is itself a task where
//! the subscription can be polled ([`Subscription::can_poll`]); otherwise
//! it is a thread waiting in the blocking
//! [`next`](crate::Subscription::next).
//!
//! [`Subscription::can_poll`]: crate::Subscription::can_poll

use super::pipeline::{Called, Pipeline};
use super::slots::{Slot, Slots};
use super::subscriber::{Finished, Finishing, Worker};
use super::{StopHook, SubscribeError, SubscriberBuilder, SubscriptionHandle};
use crate::runtime::{AsyncHandler, DEFAULT_IN_FLIGHT, OwnedMessage};
use crate::time::SystemClock;
use crate::{Delivery, Permit, TransportError};
use bus_errors::{HandlerError, TimeoutError};
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};
use tracing::Instrument;

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

    /// Starts an async subscriber: each worker (default 1) is one runner
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
                (rt.handle().clone(), Some(Arc::new(OwnedRuntime(Some(rt)))))
            }
        };
        let handler = Arc::new(handler);
        let slots = Arc::new(Slots::new(options.in_flight));
        let timeout = options.timeout;
        self.launch(|pipe, sub, wakeable, name| {
            let calls = Arc::new(Mutex::new(Calls::default()));
            let cancel = Arc::clone(&calls);
            pipe.subscriber
                .hooks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(StopHook(Box::new(move |cancelling| {
                    if cancelling {
                        let mut calls = lock(&cancel);
                        calls.cancelled = true;
                        calls.started.iter().for_each(AbortHandle::abort);
                    }
                })));
            let polled = sub.can_poll();
            let stop = Arc::new(Notify::new());
            if polled {
                let notify = Arc::clone(&stop);
                // The runtime the subscriber made, if any, lives as long
                // as the subscriber: its runner task must not shut it down
                // from inside.
                let owned = owned.clone();
                lock(&pipe.subscriber.hooks).push(StopHook(Box::new(move |cancelling| {
                    let _ = &owned;
                    if !cancelling {
                        notify.notify_waiters();
                    }
                })));
            }
            let runner = Runner {
                pipe,
                sub,
                handler: Arc::clone(&handler),
                slots: Arc::clone(&slots),
                calls,
                handle: handle.clone(),
                timeout,
            };
            if polled {
                let finished = Arc::new(Finished::default());
                let finishing = Finishing(Arc::clone(&finished));
                handle.spawn(async move {
                    let _finishing = finishing;
                    runner.run_polled(stop).await;
                });
                return Ok(Worker::Task(finished));
            }
            let owned = owned.clone();
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    runner.run(wakeable);
                    // Dropped here, off its own threads, once every call is done.
                    drop(owned);
                })
                .map(Worker::Thread)
        })
    }
}

/// A runtime the subscriber made for itself. Shut down without waiting
/// when the last runner is done with it (or when the start failed):
/// dropping a runtime blocks, which panics where blocking is not allowed,
/// such as a caller's async code.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The calls a runner started and has not seen finished, for a cancel to
/// abort; once cancelled, every call started later is aborted at once.
#[derive(Default)]
struct Calls {
    started: Vec<AbortHandle>,
    cancelled: bool,
}

/// One subscription's runner thread: it takes the guard's permit and an
/// in-flight place before it fetches, as a thread worker takes the permit
/// (an open breaker or a full limit leaves the messages in the transport),
/// and starts each call as a task on the runtime.
struct Runner<H> {
    pipe: Arc<Pipeline>,
    sub: Box<dyn crate::Subscription>,
    handler: Arc<H>,
    slots: Arc<Slots>,
    /// Only this thread and the cancel take this lock, never the runtime.
    calls: Arc<Mutex<Calls>>,
    handle: Handle,
    timeout: Option<Duration>,
}

impl<H: AsyncHandler> Runner<H> {
    /// Starts the call of `delivery` as a task on the runtime.
    fn start(&self, delivery: Delivery, permit: Permit, slot: Slot) -> JoinHandle<()> {
        let call = InFlight {
            pipe: Arc::clone(&self.pipe),
            delivery: Some(delivery),
            permit: Some(permit),
            _slot: slot,
        };
        let task = self
            .handle
            .spawn(call.run(Arc::clone(&self.handler), self.timeout));
        let started = task.abort_handle();
        let mut calls = lock(&self.calls);
        // Pruned once it holds twice the limit: a sweep per `limit` calls,
        // not one per call.
        if calls.started.len() >= 2 * self.slots.limit {
            calls.started.retain(|c| !c.is_finished());
        }
        // Started as a cancel came: it goes too.
        if calls.cancelled {
            started.abort();
        }
        calls.started.push(started);
        task
    }

    /// The runner as a task, over a subscription that can be polled: no
    /// thread waits for deliveries, and stop wakes it through `stop`.
    async fn run_polled(mut self, stop: Arc<Notify>) {
        let pipe = Arc::clone(&self.pipe);
        let poll = pipe.shared.config.poll_interval;
        let stopped = || pipe.subscriber.stop.load(Ordering::Acquire);
        let mut running: Vec<JoinHandle<()>> = Vec::new();
        while !stopped() {
            if let Some(left) = pipe.subscriber.paused_for() {
                or_stop(&stop, &stopped, tokio::time::sleep(left)).await;
                continue;
            }
            if or_stop(&stop, &stopped, self.slots.take_async())
                .await
                .is_none()
            {
                break;
            }
            let slot = Slot(Arc::clone(&self.slots));
            let permit = match pipe.admit() {
                Ok(permit) => permit,
                Err(rejected) => {
                    drop(slot);
                    let wait = rejected.retry_after.max(Duration::from_millis(1));
                    or_stop(&stop, &stopped, tokio::time::sleep(wait)).await;
                    continue;
                }
            };
            let sub = &mut self.sub;
            match or_stop(&stop, &stopped, poll_fn(|cx| sub.poll_next(cx))).await {
                Some(Ok(delivery)) => {
                    if running.len() >= 2 * self.slots.limit {
                        running.retain(|c| !c.is_finished());
                    }
                    running.push(self.start(delivery, permit, slot));
                }
                None | Some(Err(TransportError::Closed)) => {
                    pipe.release(permit);
                    break;
                }
                Some(Err(error)) => {
                    pipe.release(permit);
                    tracing::warn!(%error, component = %pipe.component, "transport error while receiving");
                    or_stop(&stop, &stopped, tokio::time::sleep(poll)).await;
                }
            }
        }
        // As the thread runner: it stands for its calls until they end.
        for call in running {
            let _ = call.await;
        }
    }

    fn run(mut self, wakeable: bool) {
        let pipe = Arc::clone(&self.pipe);
        let poll = pipe.shared.config.poll_interval;
        let idle_wait = if wakeable { Duration::MAX } else { poll };
        let stopped = || pipe.subscriber.stop.load(Ordering::Acquire);
        while !stopped() {
            if let Some(left) = pipe.subscriber.paused_for() {
                pipe.pause(&SystemClock, left);
                continue;
            }
            if !self.slots.take(stopped) {
                break;
            }
            let slot = Slot(Arc::clone(&self.slots));
            let permit = match pipe.admit() {
                Ok(permit) => permit,
                Err(rejected) => {
                    drop(slot);
                    let clock = Arc::clone(&pipe.shared.plugs.clock);
                    pipe.pause(&*clock, rejected.retry_after.max(Duration::from_millis(1)));
                    continue;
                }
            };
            match self.sub.next(idle_wait) {
                Ok(Some(delivery)) => {
                    self.start(delivery, permit, slot);
                }
                Ok(None) => pipe.release(permit),
                Err(TransportError::Closed) => {
                    pipe.release(permit);
                    break;
                }
                Err(error) => {
                    pipe.release(permit);
                    tracing::warn!(%error, component = %pipe.component, "transport error while receiving");
                    pipe.pause(&SystemClock, poll);
                }
            }
        }
        // Stopped: the calls in flight run on until they end or a cancel
        // aborts them (the runtime then drops them, which settles their
        // deliveries). This thread stands for them in the subscriber's
        // list, so it ends only when none is left.
        loop {
            let mut calls = lock(&self.calls);
            calls.started.retain(|c| !c.is_finished());
            if calls.started.is_empty() {
                break;
            }
            drop(calls);
            std::thread::park_timeout(Duration::from_millis(1));
        }
    }
}

/// Runs `fut` until it ends (`Some`) or the subscriber is stopped (`None`).
async fn or_stop<T>(
    stop: &Notify,
    stopped: &impl Fn() -> bool,
    fut: impl Future<Output = T>,
) -> Option<T> {
    let mut fut = pin!(fut);
    loop {
        let mut notified = pin!(stop.notified());
        // Registered before the flag is read: a stop between the two
        // still wakes this wait.
        notified.as_mut().enable();
        if stopped() {
            return None;
        }
        tokio::select! {
            biased;
            out = &mut fut => return Some(out),
            () = &mut notified => {}
        }
    }
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
    _slot: Slot,
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
        let span = self.pipe.span(delivery);
        let started = self.pipe.start();
        let called = call(&*handler, msg, deadline)
            .instrument(span.clone())
            .await;
        let (Some(permit), mut slot) = (self.permit.take(), self.delivery.take()) else {
            return;
        };
        let pipe = &*self.pipe;
        let _in_span = span.enter();
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
    // Each poll runs in the message's conversation: what the handler
    // publishes continues it, whichever thread the poll runs on.
    let (id, correlation) = (msg.envelope().id, msg.envelope().correlation_id.clone());
    let fut = {
        let _conversation = crate::trace::handling_ids(id, correlation.as_deref());
        catch_unwind(AssertUnwindSafe(|| handler.call(msg)))?
    };
    let mut fut = pin!(fut);
    let caught = poll_fn(move |cx| {
        match catch_unwind(AssertUnwindSafe(|| {
            let _conversation = crate::trace::handling_ids(id, correlation.as_deref());
            fut.as_mut().poll(cx)
        })) {
            Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    });
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
