//! Striped counters: one copy of a set of atomics per stripe of threads, each
//! copy on its own cache lines. A thread writes only its own stripe, so
//! threads counting at once (publishers and workers) never write a shared
//! cache line; readers sum the stripes. Used wherever the hot path counts:
//! breaker windows, health counters.

use crossbeam_utils::CachePadded;

/// Stripes per [`Striped`]: enough that threads rarely share one.
pub const STRIPES: usize = 16;

/// This thread's stripe number, fixed for its life: threads are numbered in
/// the order they first ask, so up to [`STRIPES`] threads get a stripe each.
///
/// ```
/// let a = bus_core::stripe::index();
/// assert_eq!(a, bus_core::stripe::index());
/// assert!(a < bus_core::stripe::STRIPES);
/// ```
#[inline]
pub fn index() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    INDEX.with(|i| *i)
}

/// [`STRIPES`] copies of `T`, each cache-padded.
///
/// ```
/// use bus_core::stripe::Striped;
/// use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
///
/// let hits = Striped::new(|| AtomicU64::new(0));
/// hits.mine().fetch_add(1, Relaxed);
/// assert_eq!(hits.iter().map(|c| c.load(Relaxed)).sum::<u64>(), 1);
/// ```
#[derive(Debug)]
pub struct Striped<T>(Box<[CachePadded<T>]>);

impl<T> Striped<T> {
    /// [`STRIPES`] copies, each made by `make`.
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        Self((0..STRIPES).map(|_| CachePadded::new(make())).collect())
    }

    /// The calling thread's copy.
    #[inline]
    pub fn mine(&self) -> &T {
        &self.0[index() % self.0.len()]
    }

    /// Every copy, for readers to combine.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|c| &**c)
    }
}
