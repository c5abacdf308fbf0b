//! The open connections: at most `max` at once, what each is doing, and a
//! write side that gives up on a client that stops reading.
//!
//! A connection is idle when it has no response to send: it waits for a
//! request (hyper's header-read timeout bounds that wait) or has sent part
//! of one. At the cap the longest-idle connection is closed to admit a new
//! one, so idle clients cannot lock others out. A connection whose response
//! write is stuck is not idle; the write timeout bounds it instead.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Sleep;

/// The open connections of one server.
pub(crate) struct Connections {
    max: usize,
    epoch: Instant,
    slots: Mutex<Slots>,
    /// Signalled when a connection closes or may have turned idle.
    changed: Arc<Notify>,
}

#[derive(Default)]
struct Slots {
    next_id: u64,
    open: HashMap<u64, Slot>,
}

struct Slot {
    activity: Arc<Activity>,
    abort: AbortHandle,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connections {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            epoch: Instant::now(),
            slots: Mutex::new(Slots::default()),
            changed: Arc::new(Notify::new()),
        })
    }

    /// Returns once a new connection may be served: at once below the cap;
    /// at the cap after closing the longest-idle connection, or, when none
    /// is idle, after one closes or turns idle.
    pub(crate) async fn admit(&self) {
        while !self.try_admit() {
            // A signal sent between the check and this wait is kept as a
            // permit (only this loop waits), so none is missed.
            self.changed.notified().await;
        }
    }

    fn try_admit(&self) -> bool {
        let mut slots = lock(&self.slots);
        if slots.open.len() < self.max {
            return true;
        }
        let longest_idle = slots
            .open
            .iter()
            .filter_map(|(id, slot)| Some((slot.activity.idle_since()?, *id)))
            .min();
        let Some((_, id)) = longest_idle else {
            return false;
        };
        if let Some(slot) = slots.open.remove(&id) {
            // Dropping the task drops the connection and closes its socket.
            slot.abort.abort();
            tracing::debug!("bus-health: closed the longest-idle connection to admit a new one");
        }
        true
    }

    /// Registers a connection and returns its activity record and the
    /// guard that unregisters it; [`attach`](Self::attach) then ties it to
    /// the task that serves it.
    pub(crate) fn open(self: &Arc<Self>) -> (Arc<Activity>, Registration) {
        let activity = Arc::new(Activity {
            in_flight: AtomicU32::new(0),
            write_stalled: AtomicBool::new(false),
            last_active: AtomicU64::new(0),
            epoch: self.epoch,
            changed: Arc::clone(&self.changed),
        });
        activity.touch();
        let id = {
            let mut slots = lock(&self.slots);
            slots.next_id += 1;
            slots.next_id
        };
        let registration = Registration {
            connections: Arc::clone(self),
            id,
        };
        (activity, registration)
    }

    /// Counts the connection `id` ([`Registration::id`]), served by the
    /// task `abort` stops.
    pub(crate) fn attach(&self, id: u64, activity: Arc<Activity>, abort: AbortHandle) {
        lock(&self.slots).open.insert(id, Slot { activity, abort });
    }
}

/// Unregisters its connection when the task serving it ends or is dropped.
pub(crate) struct Registration {
    connections: Arc<Connections>,
    id: u64,
}

impl Registration {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.connections.slots).open.remove(&self.id);
        self.connections.changed.notify_one();
    }
}

/// What one connection is doing, for choosing which to close at the cap.
pub(crate) struct Activity {
    /// Responses made and not yet handed to hyper whole.
    in_flight: AtomicU32,
    /// A response write is waiting for the client to read.
    write_stalled: AtomicBool,
    /// Nanoseconds after `epoch` of the last byte read or written.
    last_active: AtomicU64,
    epoch: Instant,
    changed: Arc<Notify>,
}

impl Activity {
    fn touch(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_active.store(nanos, Ordering::Relaxed);
    }

    /// When it was last active, if it is idle now.
    fn idle_since(&self) -> Option<u64> {
        let idle = self.in_flight.load(Ordering::Relaxed) == 0
            && !self.write_stalled.load(Ordering::Relaxed);
        idle.then(|| self.last_active.load(Ordering::Relaxed))
    }

    /// Marks a response in the making until the returned guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    fn set_write_stalled(&self, stalled: bool) {
        self.write_stalled.store(stalled, Ordering::Relaxed);
        if !stalled {
            self.changed.notify_one();
        }
    }
}

/// A response in the making on its connection (see [`Activity::busy`]).
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
        self.0.changed.notify_one();
    }
}

/// A TCP stream that records activity and fails a write that has made no
/// progress for `write_timeout` (hyper has no write timeout of its own).
pub(crate) struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
    write_timeout: Duration,
    /// Running while a write waits for the client.
    stall: Option<Pin<Box<Sleep>>>,
}

impl Tracked {
    pub(crate) fn new(stream: TcpStream, activity: Arc<Activity>, write_timeout: Duration) -> Self {
        Self {
            stream,
            activity,
            write_timeout,
            stall: None,
        }
    }

    fn after_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if r.is_ready() {
            if self.stall.take().is_some() {
                self.activity.set_write_stalled(false);
            }
            self.activity.touch();
            return r;
        }
        if self.stall.is_none() {
            self.activity.set_write_stalled(true);
        }
        let timeout = self.write_timeout;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing of the response within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.after_write(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.after_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_flush(cx);
        this.after_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.after_write(cx, r)
    }
}
