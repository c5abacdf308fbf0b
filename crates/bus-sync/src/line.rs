//! A mutex that starts a cache line, for state that one short critical
//! section after another passes between two cores (a queue's lanes and
//! counts): with std's Linux mutex (a 4-byte futex word and a poison flag
//! before the data) the data starts [`DATA_OFFSET`] bytes into the lock's
//! line, so the fields a caller lays out first travel with the lock word
//! instead of on lines of their own. Elsewhere (macOS: a boxed pthread
//! mutex) the lock is larger and the layout is a best effort.
//!
//! Always std's mutex, also under `bus_loom`: it is waited on with std's
//! `Condvar`, and its point is layout, not ordering.

use crossbeam_utils::CachePadded;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Where the data starts in the lock's line, on Linux and Android, 64-bit.
pub const DATA_OFFSET: usize = 8;

/// A cache-padded std mutex whose guarded data follows the lock word on the
/// same line.
///
/// ```
/// let m = bus_sync::line::LineMutex::new(5_u32);
/// *m.lock() += 1;
/// assert_eq!(*m.lock(), 6);
/// ```
#[derive(Debug, Default)]
pub struct LineMutex<T>(CachePadded<Mutex<T>>);

impl<T> LineMutex<T> {
    /// A mutex guarding `value`.
    pub fn new(value: T) -> Self {
        Self(CachePadded::new(Mutex::new(value)))
    }

    /// Locks it. A panic while it was held does not poison it: callers keep
    /// their critical sections free of half-done updates instead.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The address of the line the lock starts, to check a caller's layout
    /// against.
    pub fn line_addr(&self) -> usize {
        (&raw const *self.0).addr()
    }
}

#[cfg(all(
    test,
    any(target_os = "linux", target_os = "android"),
    target_pointer_width = "64"
))]
mod tests {
    use super::*;

    #[test]
    fn the_data_follows_the_lock_word_on_its_line() {
        let m = LineMutex::new([0_u64; 4]);
        assert_eq!(m.line_addr() % 64, 0, "the lock starts a line");
        let data = (&raw const *m.lock()).addr();
        assert_eq!(data - m.line_addr(), DATA_OFFSET);
    }
}
