//! Wall-clock time: lease deadlines and retry due times are stored in the
//! file and must mean the same after a restart, so they are wall-clock
//! milliseconds, read through a [`WallClock`] that tests can move by hand.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait WallClock: Send + Sync + Debug {
    /// Milliseconds since the Unix epoch, now.
    fn now_ms(&self) -> i64;
}

/// A shareable wall clock.
pub type SharedWallClock = Arc<dyn WallClock>;

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemWallClock;

impl WallClock for SystemWallClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A wall clock that moves only when told to (tests).
///
/// ```
/// use bus_sqlite::{ManualWallClock, WallClock};
/// use std::time::Duration;
///
/// let clock = ManualWallClock::at(1_000);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now_ms(), 3_000);
/// ```
#[derive(Debug, Default)]
pub struct ManualWallClock(AtomicI64);

impl ManualWallClock {
    /// A clock reading `ms` milliseconds since the epoch.
    pub fn at(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl WallClock for ManualWallClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
