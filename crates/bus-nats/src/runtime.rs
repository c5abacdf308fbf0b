//! Where the client runs: on a tokio runtime the transport builds, or on
//! the application's; connecting on either, and waiting for the runtime
//! from synchronous code without ever blocking a thread it needs.

use crate::config::NatsConfig;
use crate::error::NatsError;
use crate::state::{Counters, Outages};
use crate::transport::{NatsTransport, lock, other};
use bus_core::TransportError;
use std::future::Future;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;
use tokio::runtime::Handle;

/// Runs `fut` on `handle`'s runtime and waits at most `timeout` for it,
/// from any thread, never blocking a thread that runtime needs:
///
/// * a plain thread blocks on it;
/// * a multi-thread runtime's thread (a task, its `block_on`) blocks on it
///   after handing its worker's other tasks to another thread
///   (`block_in_place`), so the runtime, whichever it is, keeps running;
/// * a current-thread runtime's thread waits on a channel for a task on
///   `handle`, when that is another runtime, which runs on its own
///   threads. When it is the same runtime nothing can run it while this
///   thread waits: [`NatsError::WouldBlock`] at once.
pub(crate) fn wait_on<F>(
    handle: &Handle,
    driver: Option<ThreadId>,
    timeout: Duration,
    fut: F,
) -> Result<F::Output, TransportError>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let timed = async move { tokio::time::timeout(timeout, fut).await.ok() };
    let out = match Handle::try_current() {
        Err(_) => handle.block_on(timed),
        Ok(current) if current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            off_worker(|| handle.block_on(timed))
        }
        Ok(_) if drives(handle, driver) => {
            return Err(TransportError::Other(Box::new(NatsError::WouldBlock)));
        }
        Ok(_) => {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            handle.spawn(async move {
                let _ = tx.send(timed.await);
            });
            rx.recv_timeout(timeout).ok().flatten()
        }
    };
    out.ok_or(TransportError::Timeout(timeout))
}

/// The name of the threads of the runtime a transport builds for itself
/// when it is given none ([`NatsConfig::runtime`]).
pub const RUNTIME_THREAD_NAME: &str = "bus-nats";

/// Runs `f`, which may block, without holding up a multi-thread
/// runtime's other tasks when called on one of its workers.
pub(crate) fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Whether the calling thread drives `handle`'s current-thread runtime
/// (`driver`, when known; else any thread in its context might), so it
/// must never wait for that runtime.
pub(crate) fn drives(handle: &Handle, driver: Option<ThreadId>) -> bool {
    handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
        && Handle::try_current().is_ok_and(|h| h.id() == handle.id())
        && driver.is_none_or(|d| d == std::thread::current().id())
}

impl NatsTransport {
    /// Connects to the server of `config`, waiting at most its
    /// `connect_timeout`. Once connected, a lost connection is
    /// re-established in the background with exponential backoff, forever.
    ///
    /// A configuration whose streams may drop unsettled messages is refused
    /// first, with [`NatsError::LossyStream`] inside
    /// [`TransportError::Other`] (see [`NatsConfig::validate`]); so is, at
    /// the first publish or subscribe, such a stream found on the server.
    pub fn connect(config: NatsConfig) -> Result<NatsTransport, TransportError> {
        config
            .validate()
            .map_err(|e| TransportError::Other(Box::new(e)))?;
        let (rt, handle) = match config.runtime.clone() {
            Some(handle) => (None, handle),
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(RUNTIME_THREAD_NAME)
                    .enable_all()
                    .build()
                    .map_err(|e| TransportError::Other(Box::new(e)))?;
                let handle = rt.handle().clone();
                (Some(rt), handle)
            }
        };
        let counters = Arc::new(Counters::default());
        let link = Arc::new(tokio::sync::Notify::new());
        let opts = Self::options(&config, &counters, &link);
        let (url, timeout) = (config.url.clone(), config.connect_timeout);
        let client = wait_on(
            &handle,
            None,
            timeout,
            async move { opts.connect(url).await },
        )?
        .map_err(|e| TransportError::Disconnected(e.to_string()))?;
        Ok(Self::assemble(config, rt, handle, client, counters, link))
    }

    /// [`connect`](Self::connect) from async code: the transport runs on
    /// the runtime of [`NatsConfig::runtime`], or else on the runtime this
    /// is awaited on, and makes none of its own. The connection is awaited,
    /// never blocked on, so this works on a current-thread runtime too.
    ///
    /// ```no_run
    /// use bus_nats::{NatsConfig, NatsTransport};
    ///
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// rt.block_on(async {
    ///     let nats = NatsTransport::connect_async(NatsConfig::new("nats://127.0.0.1:4222"))
    ///         .await
    ///         .unwrap();
    ///     assert!(!nats.owns_runtime());
    /// });
    /// ```
    pub async fn connect_async(mut config: NatsConfig) -> Result<NatsTransport, TransportError> {
        config
            .validate()
            .map_err(|e| TransportError::Other(Box::new(e)))?;
        let handle = config.runtime.clone().unwrap_or_else(Handle::current);
        config.runtime = Some(handle.clone());
        let counters = Arc::new(Counters::default());
        let link = Arc::new(tokio::sync::Notify::new());
        let opts = Self::options(&config, &counters, &link);
        let (url, timeout) = (config.url.clone(), config.connect_timeout);
        // Spawned on the transport's runtime, which may not be this one:
        // the client's own tasks must start there.
        let client = handle
            .spawn(async move { tokio::time::timeout(timeout, opts.connect(url)).await })
            .await
            .map_err(other)?
            .map_err(|_| TransportError::Timeout(timeout))?
            .map_err(|e| TransportError::Disconnected(e.to_string()))?;
        let transport = Self::assemble(config, None, handle, client, counters, link);
        // Awaited on the transport's runtime, this is polled by the thread
        // driving it.
        if transport.inner.on_runtime() {
            transport.inner.note_driver();
        }
        Ok(transport)
    }

    /// The client's options: reconnects forever with a growing delay, and
    /// counts connects and outages.
    fn options(
        config: &NatsConfig,
        counters: &Arc<Counters>,
        link: &Arc<tokio::sync::Notify>,
    ) -> async_nats::ConnectOptions {
        let c2 = Arc::clone(counters);
        let l2 = Arc::clone(link);
        let (min, max) = (config.reconnect_min_delay, config.reconnect_max_delay);
        let mut opts = async_nats::ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.request_timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| {
                let shift = u32::try_from(attempts.min(16)).unwrap_or(16);
                min.saturating_mul(1_u32 << shift).min(max)
            })
            .event_callback(move |event| {
                let c = Arc::clone(&c2);
                let link = Arc::clone(&l2);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            Counters::inc(&c.connects);
                            Outages::restored(&c.outages);
                            link.notify_waiters();
                        }
                        async_nats::Event::Disconnected => {
                            Counters::inc(&c.disconnects);
                            Outages::lost(&c.outages);
                        }
                        _ => {}
                    }
                }
            });
        if let Some(name) = &config.name {
            opts = opts.name(name);
        }
        opts.client_capacity(config.max_publishes_in_flight.max(2048))
    }

    /// Whether the transport built its own runtime (no
    /// [`NatsConfig::runtime`] was given): its threads are named
    /// [`RUNTIME_THREAD_NAME`].
    ///
    /// ```no_run
    /// use bus_nats::{NatsConfig, NatsTransport};
    ///
    /// let nats = NatsTransport::connect(NatsConfig::new("nats://127.0.0.1:4222")).unwrap();
    /// assert!(nats.owns_runtime());
    /// ```
    pub fn owns_runtime(&self) -> bool {
        lock(&self.inner.rt).is_some()
    }
}
