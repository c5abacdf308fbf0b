//! The demo's publisher threads: started with `std::thread::Builder` so a
//! thread limit is an error, not a panic, and stoppable on a signal.

use super::outcome::DemoError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// Running publisher threads and the flag that stops them.
#[derive(Debug)]
pub(crate) struct Publishers {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// Starts a thread; the seam the tests use to refuse one.
pub(crate) type Spawn<'a> =
    dyn FnMut(usize, Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>> + 'a;

/// Starts threads with `std::thread::Builder`, named `publisher-<i>`.
pub(crate) fn os_threads(
    i: usize,
    body: Box<dyn FnOnce() + Send>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("publisher-{i}"))
        .spawn(body)
}

impl Publishers {
    /// Starts `n` threads running `body(stop)`; `body` returns when its work
    /// is done or `stop` is set. If a thread cannot be started, the ones
    /// already running are stopped and joined and the error says so.
    pub(crate) fn start<F>(n: usize, spawn: &mut Spawn<'_>, body: F) -> Result<Self, DemoError>
    where
        F: Fn(&AtomicBool) + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let body = Arc::new(body);
        let mut started = Self {
            threads: Vec::with_capacity(n),
            stop,
        };
        for i in 0..n {
            let (body, stop) = (Arc::clone(&body), Arc::clone(&started.stop));
            match spawn(i, Box::new(move || body(&stop))) {
                Ok(t) => started.threads.push(t),
                Err(source) => {
                    let count = started.threads.len();
                    // Their panics, if any, matter less than the spawn error.
                    let _ = started.stop_and_join();
                    return Err(DemoError::SpawnPublisher {
                        failed: i + 1,
                        wanted: n,
                        started: count,
                        source,
                    });
                }
            }
        }
        Ok(started)
    }

    /// Asks every thread to stop after its current publish.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether any thread is still running.
    pub(crate) fn running(&self) -> bool {
        self.threads.iter().any(|t| !t.is_finished())
    }

    /// Waits for every thread.
    pub(crate) fn join(self) -> Result<(), DemoError> {
        let mut result = Ok(());
        for t in self.threads {
            if t.join().is_err() {
                result = Err(DemoError::PublisherPanicked);
            }
        }
        result
    }

    fn stop_and_join(self) -> Result<(), DemoError> {
        self.stop();
        self.join()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_refused_thread_is_an_error_and_the_started_ones_are_joined() {
        let exited = Arc::new(AtomicUsize::new(0));
        let mut spawn = |i: usize, body: Box<dyn FnOnce() + Send>| {
            if i == 3 {
                Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "Resource temporarily unavailable",
                ))
            } else {
                os_threads(i, body)
            }
        };
        let counter = Arc::clone(&exited);
        let err = Publishers::start(10, &mut spawn, move |stop: &AtomicBool| {
            // Runs until told to stop, like a --duration publisher.
            while !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(std::time::Duration::from_millis(1));
            }
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                DemoError::SpawnPublisher {
                    failed: 4,
                    wanted: 10,
                    started: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        // start returned only after joining the three it had started.
        assert_eq!(exited.load(Ordering::Relaxed), 3);
        let msg = err.to_string();
        assert!(
            msg.contains("thread 4 of 10") && msg.contains("Resource temporarily unavailable"),
            "{msg}"
        );
    }

    #[test]
    fn stop_ends_every_thread() {
        let p = Publishers::start(4, &mut os_threads, |stop: &AtomicBool| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::park_timeout(std::time::Duration::from_millis(1));
            }
        })
        .unwrap();
        assert!(p.running());
        p.stop();
        p.join().unwrap();
    }
}
