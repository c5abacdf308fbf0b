//! The two bus configurations every bench compares, and a failing handler.

use bus_breaker::{BreakerConfig, BreakerRegistry};
use bus_core::{
    Bus, BusConfig, Envelope, Handler, MemoryDeadLetters, Message, NoGuard, NoObserver, NoRetry,
    NoSink, PublishError, ShutdownReport, Topic,
};
use bus_dlq::{DlqConfig, Durability, SqliteDlq};
use bus_errors::ErrorCategory;
use bus_health::HealthMonitor;
use bus_logger::{ErrorLogger, LoggerConfig};
use bus_recovery::{Backoff, Exhausted, Recovery, RetryPolicy};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The topic every bench publishes to.
pub const TOPIC: &str = "bench.orders";

/// Payload size of every benchmark message, allocated per message.
pub const PAYLOAD_BYTES: usize = 64;

/// A fresh 64-byte payload carrying `seq` in bytes `8..16` (bytes `0..8` are
/// free for a send timestamp).
pub fn payload(seq: u64) -> Vec<u8> {
    let mut p = vec![0xAB_u8; PAYLOAD_BYTES];
    p[8..16].copy_from_slice(&seq.to_le_bytes());
    p
}

fn seq_of(payload: &[u8]) -> u64 {
    payload
        .get(8..16)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

/// The error a failing bench handler returns. Its type is unknown to the
/// default classifier, so it is classified MESSAGE_PROCESSING / MEDIUM.
#[derive(Debug)]
pub struct BenchError(pub u64);

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bench handler failed on message {}", self.0)
    }
}

impl std::error::Error for BenchError {}

/// Which messages a bench handler fails: the ones whose sequence number is a
/// multiple of `n` (0: none, 1: all, 10: 10 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailEvery(pub u64);

impl FailEvery {
    /// Whether the message with `seq` fails on its first attempt.
    pub fn fails(self, seq: u64) -> bool {
        self.0 != 0 && seq.is_multiple_of(self.0)
    }

    /// A handler counting every call in `calls`, failing per `self` on a
    /// message's first attempt only (a retry succeeds).
    pub fn handler(self, calls: Arc<AtomicU64>) -> impl Handler {
        move |m: &Message<'_>| -> Result<(), BenchError> {
            calls.fetch_add(1, Ordering::Relaxed);
            // The payload is read only when some message may fail: with
            // `FailEvery(0)` the handler does what the raw baseline's
            // consumer does (count the message, touch no payload byte), so
            // a ratio against that baseline compares like with like.
            if m.attempt == 1 && self.0 != 0 {
                let seq = seq_of(&m.payload);
                if self.fails(seq) {
                    return Err(BenchError(seq));
                }
            }
            Ok(())
        }
    }
}

/// What the recovery policy of the error-handling-on bus does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnRecovery {
    /// `Recovery::default()`: the seed's per-category table (1 s backoffs).
    #[default]
    Default,
    /// Every category dead-letters at the first failure (failure-path benches).
    DeadLetterAtOnce,
    /// Every category retries once with zero delay, then dead-letters; no
    /// retry budget (the RSS run's "errors" phase).
    RetryOnceNoDelay,
}

/// Options of [`Fixture::on`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct OnOptions {
    /// The recovery policy.
    pub recovery: OnRecovery,
    /// Breakers that count every call but never open (failure-path benches:
    /// with 100 % failures a default breaker would park everything for 60 s).
    pub never_trip: bool,
}

impl OnOptions {
    /// Dead-letter at once, breakers that never open: the failure-path setup.
    pub fn failing() -> Self {
        Self {
            recovery: OnRecovery::DeadLetterAtOnce,
            never_trip: true,
        }
    }

    /// Sets the recovery policy.
    #[must_use]
    pub fn recovery(mut self, recovery: OnRecovery) -> Self {
        self.recovery = recovery;
        self
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A bus plus the components behind it, shut down on drop.
#[derive(Debug)]
pub struct Fixture {
    /// The bus.
    pub bus: Bus,
    /// The error logger (error handling on only).
    pub logger: Option<Arc<ErrorLogger>>,
    /// The health monitor (error handling on only).
    pub health: Option<Arc<HealthMonitor>>,
    /// The SQLite dead-letter queue (error handling on only).
    pub dlq: Option<Arc<SqliteDlq>>,
    topic: Topic,
    _dir: Option<tempfile::TempDir>,
}

fn config() -> BusConfig {
    let mut c = BusConfig::default();
    // Never reject a bench message because a slow consumer kept the queue full.
    c.publish_timeout = Duration::from_secs(60);
    c
}

impl Fixture {
    /// Error handling off: `NoGuard`, `NoRetry`, `MemoryDeadLetters`, `NoSink`, `NoObserver`.
    pub fn off() -> Self {
        let bus = Bus::builder()
            .guards(Arc::new(NoGuard))
            .recovery(Arc::new(NoRetry))
            .dead_letters(Arc::new(MemoryDeadLetters::new()))
            .error_sink(Arc::new(NoSink))
            .observer(Arc::new(NoObserver))
            .config(config())
            .build();
        Self::wrap(bus, None, None, None, None)
    }

    /// Error handling on: breakers, recovery, SQLite DLQ (`Durability::Normal`)
    /// and error logger in a scratch directory under the target directory,
    /// health monitor.
    pub fn on(options: OnOptions) -> Result<Self, BoxError> {
        let base = crate::target_dir().join("bench-scratch");
        std::fs::create_dir_all(&base)?;
        let dir = tempfile::tempdir_in(base)?;
        let breaker = if options.never_trip {
            BreakerConfig::builder()
                .consecutive_failures(None)
                .failure_rate_threshold(None)
                .build()?
        } else {
            BreakerConfig::default()
        };
        let recovery = match options.recovery {
            OnRecovery::Default => Recovery::default(),
            OnRecovery::DeadLetterAtOnce => ErrorCategory::ALL
                .iter()
                .fold(Recovery::builder(), |b, &c| {
                    b.category(c, RetryPolicy::never(Exhausted::DeadLetter))
                })
                .build()?,
            OnRecovery::RetryOnceNoDelay => ErrorCategory::ALL
                .iter()
                .fold(Recovery::builder().no_budget(), |b, &c| {
                    b.category(c, RetryPolicy::new(1, Backoff::constant(Duration::ZERO)))
                })
                .build()?,
        };
        let dlq = Arc::new(SqliteDlq::open(
            DlqConfig::new(dir.path().join("dlq")).with_durability(Durability::Normal),
        )?);
        let logger = Arc::new(ErrorLogger::open(dir.path(), LoggerConfig::default())?);
        let health = Arc::new(HealthMonitor::new());
        let bus = Bus::builder()
            .guards(Arc::new(BreakerRegistry::new(breaker)?))
            .recovery(Arc::new(recovery))
            .dead_letters(Arc::clone(&dlq) as _)
            .error_sink(Arc::clone(&logger) as _)
            .observer(Arc::clone(&health) as _)
            .config(config())
            .build();
        Ok(Self::wrap(
            bus,
            Some(logger),
            Some(health),
            Some(dlq),
            Some(dir),
        ))
    }

    fn wrap(
        bus: Bus,
        logger: Option<Arc<ErrorLogger>>,
        health: Option<Arc<HealthMonitor>>,
        dlq: Option<Arc<SqliteDlq>>,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        Self {
            bus,
            logger,
            health,
            dlq,
            topic: Topic::new(TOPIC).unwrap_or_else(|e| unreachable!("{TOPIC} is valid: {e}")),
            _dir: dir,
        }
    }

    /// Publishes a fresh 64-byte payload for `seq` to [`TOPIC`]; a refused
    /// publish (full queue) is retried with the same message, so every call
    /// ends with the message accepted.
    pub fn publish(&self, seq: u64) {
        self.publish_payload(payload(seq));
    }

    /// Publishes `payload` to [`TOPIC`], retrying while the queue is full.
    pub fn publish_payload(&self, payload: Vec<u8>) {
        // The topic is validated once and cloned, as the raw baseline does.
        let mut env = Envelope::new(self.topic.clone(), payload);
        loop {
            match self.bus.publish_envelope(env) {
                Ok(_) => break,
                Err(e @ PublishError::QueueFull { .. }) => match e.into_envelope() {
                    Some(back) => env = back,
                    None => return,
                },
                Err(_) => return,
            }
        }
    }

    /// Waits until `acked + dead_lettered + discarded` reaches `target`;
    /// `false` on timeout. Polls every 20 µs.
    pub fn wait_settled(&self, target: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.bus.stats();
            if s.acked + s.dead_lettered + s.discarded_by_policy >= target {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    /// Waits until the bus's own ledger has nothing in flight (every
    /// accepted copy acked, dead-lettered or discarded); `false` on timeout.
    /// The ledger, not a count kept by the publishers: a shared counter
    /// bumped per publish would be a locked instruction on the publisher's
    /// thread that the raw baseline does not pay. Polls every 20 µs.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.bus.stats().in_flight() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        true
    }

    /// Shuts the bus down (also done on drop).
    pub fn shutdown(&self) -> ShutdownReport {
        self.bus.shutdown(Duration::from_secs(30))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fx: &Fixture, fail: FailEvery, n: u64) -> Arc<AtomicU64> {
        let calls = Arc::new(AtomicU64::new(0));
        fx.bus
            .subscriber("bench")
            .topic(TOPIC)
            .start(fail.handler(Arc::clone(&calls)))
            .unwrap();
        for seq in 0..n {
            fx.publish(seq);
        }
        assert!(fx.wait_settled(n, Duration::from_secs(30)));
        calls
    }

    #[test]
    fn fail_every_selects_multiples() {
        assert!(!FailEvery(0).fails(0));
        assert!(FailEvery(1).fails(7));
        assert_eq!((0..100).filter(|&s| FailEvery(10).fails(s)).count(), 10);
        assert_eq!(seq_of(&payload(0xDEAD_BEEF)), 0xDEAD_BEEF);
        assert_eq!(payload(1).len(), PAYLOAD_BYTES);
    }

    #[test]
    fn off_dead_letters_failures_in_memory() {
        let fx = Fixture::off();
        run(&fx, FailEvery(10), 100);
        let s = fx.shutdown().stats;
        assert_eq!((s.acked, s.dead_lettered, s.failed), (90, 10, 10));
        assert!(s.invariant_holds());
    }

    #[test]
    fn on_failing_dead_letters_to_sqlite_and_logs() {
        let fx = Fixture::on(OnOptions::failing()).unwrap();
        run(&fx, FailEvery(1), 50);
        let s = fx.shutdown().stats;
        assert_eq!((s.acked, s.dead_lettered, s.parked), (0, 50, 0));
        use bus_dlq::{DlqQuery, Filter};
        let dlq = fx.dlq.as_ref().unwrap();
        assert_eq!(dlq.count(&Filter::all()).unwrap(), 50);
        assert_eq!(fx.logger.as_ref().unwrap().statistics().total, 50);
        assert_eq!(
            fx.health.as_ref().unwrap().report().totals.dead_lettered,
            50
        );
    }

    #[test]
    fn on_retry_once_recovers_every_failure() {
        let fx = Fixture::on(OnOptions::failing().recovery(OnRecovery::RetryOnceNoDelay)).unwrap();
        let calls = run(&fx, FailEvery(1), 40);
        let s = fx.shutdown().stats;
        assert_eq!((s.acked, s.dead_lettered, s.retried), (40, 0, 40));
        assert_eq!(calls.load(Ordering::Relaxed), 80);
    }
}
