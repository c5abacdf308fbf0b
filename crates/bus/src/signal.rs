//! Opt-in graceful shutdown on SIGTERM and SIGINT (feature `signal`, Unix).
//!
//! A library must not take over a process's signals unasked, so nothing here
//! runs until [`ShutdownSignals::install`] is called. From then on:
//!
//! - the first SIGTERM or SIGINT is recorded and wakes
//!   [`wait`](ShutdownSignals::wait) (the process keeps running, so the
//!   caller can stop taking work and call [`Bus::shutdown`]: drain within a
//!   deadline, dead-letter what remains with reason `shutdown`, write the
//!   health snapshot);
//! - a second one exits the process at once with code 128 + the signal
//!   number, after saying on stderr that it did not drain and, for a bus
//!   given to [`watch`](ShutdownSignals::watch), how many deliveries were
//!   still in flight (those are neither acked nor dead-lettered).
//!
//! [`Bus::shutdown_on_signal`] does both steps for a program whose main
//! thread has nothing else to do:
//!
//! ```no_run
//! use bus::signal::ShutdownSignals;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let signals = ShutdownSignals::install()?;
//! let bus = bus::Bus::builder().build()?;
//! // ... subscribers and publishers ...
//! let (signal, report) = bus.shutdown_on_signal(&signals, Duration::from_secs(10));
//! eprintln!("stopped by {signal}: {} dead-lettered at shutdown", report.dead_lettered_at_shutdown);
//! # Ok(()) }
//! ```
//!
//! A program with its own loop polls [`received`](ShutdownSignals::received)
//! instead, stops its publishers, then shuts the bus down:
//!
//! ```
//! use bus::signal::ShutdownSignals;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let signals = ShutdownSignals::install()?;
//! let bus = bus::Bus::builder().data_dir(dir.path()).build()?;
//! signals.watch(&bus);
//! bus.subscriber("billing")
//!     .topic("orders.created")
//!     .start(|_: &bus::Message<'_>| Ok::<(), std::io::Error>(()))?;
//! for n in 0..3 {
//!     if signals.received().is_some() {
//!         break;
//!     }
//!     bus.publish("orders.created", format!("order {n}").into_bytes())?;
//! }
//! let report = bus.shutdown(Duration::from_secs(5));
//! assert!(report.stats.invariant_holds());
//! # Ok(()) }
//! ```

use crate::facade::Bus;
use bus_core::ShutdownReport;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A shutdown signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// SIGTERM: a service manager, `kill`, `timeout`.
    Terminate,
    /// SIGINT: Ctrl-C.
    Interrupt,
}

impl Signal {
    fn from_raw(n: i32) -> Option<Self> {
        match n {
            SIGTERM => Some(Self::Terminate),
            SIGINT => Some(Self::Interrupt),
            _ => None,
        }
    }

    /// The signal's number.
    pub fn number(self) -> i32 {
        match self {
            Self::Terminate => SIGTERM,
            Self::Interrupt => SIGINT,
        }
    }

    /// The conventional exit code of a process ended by this signal
    /// (128 + its number: 143 for SIGTERM, 130 for SIGINT).
    pub fn exit_code(self) -> u8 {
        // Both numbers are below 16.
        128 + self.number() as u8
    }

    /// `"SIGTERM"` or `"SIGINT"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the signal handlers could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// Registering the handlers for SIGTERM and SIGINT failed.
    #[error("cannot install handlers for SIGTERM and SIGINT: {0}")]
    Install(#[source] std::io::Error),
    /// The thread that receives the signals could not be started.
    #[error("cannot start the signal thread: {0}")]
    Spawn(#[source] std::io::Error),
}

#[derive(Default)]
struct State {
    first: Option<Signal>,
    watched: Option<bus_core::Bus>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    arrived: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// SIGTERM and SIGINT, caught for a graceful shutdown (see the
/// [module docs](self)).
///
/// Keep it for as long as the process should answer signals this way;
/// dropping it stops listening, and once no `ShutdownSignals` is left a
/// SIGTERM or SIGINT ends the process again, as it did before any was
/// installed (never ignored).
pub struct ShutdownSignals {
    shared: Arc<Shared>,
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ShutdownSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownSignals")
            .field("received", &self.received())
            .finish_non_exhaustive()
    }
}

impl ShutdownSignals {
    /// Catches SIGTERM and SIGINT from now on: they no longer end the
    /// process by themselves. The first is recorded; a second one exits at
    /// once (see the [module docs](self)).
    pub fn install() -> Result<Self, SignalError> {
        Defaults::get()?.listener_added();
        let result = Self::listen();
        if result.is_err() {
            Defaults::get()?.listener_removed();
        }
        result
    }

    fn listen() -> Result<Self, SignalError> {
        let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(SignalError::Install)?;
        let handle = signals.handle();
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("bus-signals".into())
                .spawn(move || {
                    for raw in signals.forever() {
                        if let Some(signal) = Signal::from_raw(raw) {
                            on_signal(&shared, signal);
                        }
                    }
                })
        };
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                handle.close();
                return Err(SignalError::Spawn(e));
            }
        };
        Ok(Self {
            shared,
            handle,
            thread: Some(thread),
        })
    }

    /// The first signal received, if any (does not block).
    pub fn received(&self) -> Option<Signal> {
        self.shared.lock().first
    }

    /// Blocks until the first signal arrives (returns at once if it
    /// already has).
    pub fn wait(&self) -> Signal {
        let mut state = self.shared.lock();
        loop {
            if let Some(signal) = state.first {
                return signal;
            }
            state = self
                .shared
                .arrived
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Blocks until the first signal arrives or `timeout` passes.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Signal> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if state.first.is_some() {
                return state.first;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .shared
                .arrived
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Names `bus` in the message a second signal prints before the
    /// process exits: how many of its deliveries were still in flight.
    pub fn watch(&self, bus: &Bus) {
        self.shared.lock().watched = Some(bus.core().clone());
    }
}

impl Drop for ShutdownSignals {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(defaults) = Defaults::get() {
            defaults.listener_removed();
        }
    }
}

/// signal-hook never removes a handler it registered: without this, a
/// process that dropped its last `ShutdownSignals` would ignore SIGTERM and
/// SIGINT for the rest of its life. One process-wide action per signal runs
/// the default (termination) whenever no `ShutdownSignals` listens.
struct Defaults {
    /// `true` while no `ShutdownSignals` is alive: the signal terminates.
    terminate: Arc<AtomicBool>,
    listeners: Mutex<usize>,
}

impl Defaults {
    fn get() -> Result<&'static Defaults, SignalError> {
        static DEFAULTS: OnceLock<Result<Defaults, String>> = OnceLock::new();
        DEFAULTS
            .get_or_init(|| {
                let terminate = Arc::new(AtomicBool::new(true));
                for signal in [SIGTERM, SIGINT] {
                    signal_hook::flag::register_conditional_default(signal, Arc::clone(&terminate))
                        .map_err(|e| e.to_string())?;
                }
                Ok(Defaults {
                    terminate,
                    listeners: Mutex::new(0),
                })
            })
            .as_ref()
            .map_err(|e| SignalError::Install(std::io::Error::other(e.clone())))
    }

    fn listener_added(&self) {
        let mut n = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *n += 1;
        self.terminate.store(false, Ordering::SeqCst);
    }

    fn listener_removed(&self) {
        let mut n = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.terminate.store(true, Ordering::SeqCst);
        }
    }
}

fn on_signal(shared: &Shared, signal: Signal) {
    let mut state = shared.lock();
    let Some(first) = state.first else {
        state.first = Some(signal);
        shared.arrived.notify_all();
        return;
    };
    let at_risk = state.watched.as_ref().map(|b| b.stats().in_flight());
    drop(state);
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "{signal} after {first}: exiting at once without draining"
    );
    let _ = match at_risk {
        Some(n) => writeln!(
            err,
            "; {n} deliveries still in flight may be lost (neither acked nor dead-lettered)"
        ),
        None => writeln!(err, "; messages still in flight may be lost"),
    };
    let _ = err.flush();
    std::process::exit(i32::from(signal.exit_code()));
}

impl Bus {
    /// Blocks until SIGTERM or SIGINT, then [shuts down](Bus::shutdown) with
    /// `drain` as the deadline: what is not settled by then is dead-lettered
    /// with reason `shutdown`. A second signal during the drain exits the
    /// process at once (see [`ShutdownSignals`]). Publishes made once the
    /// drain has begun are refused (the publisher keeps the message).
    pub fn shutdown_on_signal(
        &self,
        signals: &ShutdownSignals,
        drain: Duration,
    ) -> (Signal, ShutdownReport) {
        signals.watch(self);
        let signal = signals.wait();
        (signal, self.shutdown(drain))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signal_names_numbers_and_exit_codes() {
        assert_eq!(Signal::Terminate.to_string(), "SIGTERM");
        assert_eq!(Signal::Interrupt.name(), "SIGINT");
        assert_eq!(Signal::Terminate.exit_code(), 143);
        assert_eq!(Signal::Interrupt.exit_code(), 130);
        assert_eq!(Signal::from_raw(SIGTERM), Some(Signal::Terminate));
        assert_eq!(Signal::from_raw(9), None);
    }

    /// Run in a child process (it ends by a signal): installs, drops,
    /// installs again and survives a SIGTERM, then drops the last one and
    /// raises SIGTERM, which must end the process.
    #[test]
    fn a_signal_after_the_last_listener_is_dropped_ends_the_process() {
        use std::os::unix::process::ExitStatusExt;
        if std::env::var_os("BUS_SIGNAL_CHILD").is_some() {
            drop(ShutdownSignals::install().unwrap());
            let again = ShutdownSignals::install().unwrap();
            signal_hook::low_level::raise(SIGTERM).unwrap();
            assert_eq!(
                again.wait_timeout(Duration::from_secs(10)),
                Some(Signal::Terminate)
            );
            println!("survived while listening");
            std::io::stdout().flush().unwrap();
            drop(again);
            signal_hook::low_level::raise(SIGTERM).unwrap();
            // Not reached when the default action ran.
            std::thread::sleep(Duration::from_secs(5));
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "signal::tests::a_signal_after_the_last_listener_is_dropped_ends_the_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BUS_SIGNAL_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("survived while listening"), "{stdout}");
        assert_eq!(
            out.status.signal(),
            Some(SIGTERM),
            "{:?}: {stdout} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_first_signal_wakes_a_waiter_and_the_process_survives_it() {
        let signals = ShutdownSignals::install().unwrap();
        assert_eq!(signals.received(), None);
        assert_eq!(signals.wait_timeout(Duration::from_millis(1)), None);
        signal_hook::low_level::raise(SIGTERM).unwrap();
        assert_eq!(
            signals.wait_timeout(Duration::from_secs(10)),
            Some(Signal::Terminate)
        );
        assert_eq!(signals.wait(), Signal::Terminate);
        assert_eq!(signals.received(), Some(Signal::Terminate));
    }
}
