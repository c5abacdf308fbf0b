//! A 1 ms ticker task that shows whether a tokio runtime stalls: each gap
//! between its ticks, less the time the OS kept its thread off a core.
//!
//! A loaded machine's scheduler may hold any thread back for tens of
//! milliseconds; a call that blocks the runtime, or a runtime its tasks
//! starve, shows as sleeping or running time of the thread itself, which
//! [`Gap::stalled`] keeps.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::time::Duration;
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
//! let stop = Arc::new(AtomicBool::new(false));
//! let gaps = rt.block_on(async {
//!     let ticker = tokio::spawn(bus_test::ticker::tick_until(Arc::clone(&stop)));
//!     tokio::time::sleep(Duration::from_millis(20)).await;
//!     stop.store(true, Ordering::SeqCst);
//!     ticker.await.unwrap()
//! });
//! assert!(!gaps.is_empty());
//! assert!(bus_test::ticker::worst(&gaps).stalled() < Duration::from_secs(1));
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One interval between two ticks of [`tick_until`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// As the wall clock measured it.
    pub wall: Duration,
    /// How much of it the ticker's thread spent runnable but waiting for a
    /// core.
    pub preempted: Duration,
}

impl Gap {
    /// The part of the gap the runtime itself is answerable for.
    pub fn stalled(&self) -> Duration {
        self.wall.saturating_sub(self.preempted)
    }
}

/// Ticks every millisecond until `stop` is set, recording each gap.
pub async fn tick_until(stop: Arc<AtomicBool>) -> Vec<Gap> {
    let mut gaps = Vec::new();
    let (mut last, mut waited) = (Instant::now(), runqueue_wait());
    loop {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let (now, wait) = (Instant::now(), runqueue_wait());
        let preempted = match (waited, wait) {
            (Some(before), Some(after)) => after.saturating_sub(before),
            _ => Duration::ZERO,
        };
        gaps.push(Gap {
            wall: now - last,
            preempted,
        });
        (last, waited) = (now, wait);
        if stop.load(Ordering::SeqCst) {
            return gaps;
        }
    }
}

/// The gap with the longest stall.
///
/// # Panics
///
/// If `gaps` is empty.
pub fn worst(gaps: &[Gap]) -> Gap {
    *gaps
        .iter()
        .max_by_key(|g| g.stalled())
        .expect("the ticker ticked at least once")
}

/// How long this thread has waited on a run queue (runnable, not running)
/// since it started: the second field of Linux's
/// `/proc/thread-self/schedstat`, in nanoseconds. `None` where the kernel
/// does not keep it; gaps are then judged on the wall clock alone.
pub fn runqueue_wait() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}
