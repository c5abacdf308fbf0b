//! Striped counters: one copy of a set of atomics per stripe of threads, each
//! copy on its own cache lines, so threads counting at once (publishers and
//! workers) never write a shared cache line; readers sum the stripes. Used
//! wherever the hot path counts: the bus's ledger, breaker windows, health
//! counters.
//!
//! A thread claims a stripe of its own the first time it asks, and gives it
//! back when it exits. Up to `STRIPES - SHARED_STRIPES` threads at once own
//! one; the owner is then its stripe's only writer and counts with a plain
//! load and store ([`Writer::add`]), no locked instruction. Threads beyond
//! that are dealt out in turn over the last `SHARED_STRIPES` stripes and
//! count with atomic read-modify-writes, so a bus with many publishers
//! spreads them over several cache lines instead of piling them on one.

use crate::prim::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;

/// Stripes per [`Striped`]: enough that threads rarely share one.
#[cfg(not(bus_loom))]
pub const STRIPES: usize = 16;
/// Stripes kept for threads that find every other stripe owned.
#[cfg(not(bus_loom))]
const SHARED_STRIPES: usize = 4;

// A model runs at most four threads: one owned stripe and one shared are
// enough to reach every path (an owner, two sharers at once, a stripe
// handed on), and fewer cells keep loom's state space small.
/// Stripes per [`Striped`].
#[cfg(bus_loom)]
pub const STRIPES: usize = 2;
#[cfg(bus_loom)]
const SHARED_STRIPES: usize = 1;

/// The first shared stripe; the ones before it are owned.
const SHARED: usize = STRIPES - SHARED_STRIPES;

/// Who owns which stripe.
struct Registry {
    /// Threads given a shared stripe so far: the next one gets the next stripe.
    sharers: AtomicUsize,
    /// Bit `i` set: stripe `i` is owned by a live thread.
    owned: AtomicU32,
}

#[cfg(not(bus_loom))]
type RegistryRef = &'static Registry;

#[cfg(not(bus_loom))]
static REGISTRY: Registry = Registry {
    sharers: AtomicUsize::new(0),
    owned: AtomicU32::new(0),
};

#[cfg(not(bus_loom))]
fn registry() -> RegistryRef {
    &REGISTRY
}

// Loom's atomics cannot be built in a const, and each execution of a model
// needs fresh ones: its lazy statics are both. A claim holds its own
// reference because loom runs a thread's thread-local destructors after
// its joiner has moved on, possibly past the end of the execution, when
// the lazy statics are already gone.
#[cfg(bus_loom)]
type RegistryRef = std::sync::Arc<Registry>;

#[cfg(bus_loom)]
loom::lazy_static! {
    static ref REGISTRY: RegistryRef = std::sync::Arc::new(Registry {
        sharers: AtomicUsize::new(0),
        owned: AtomicU32::new(0),
    });
}

#[cfg(bus_loom)]
fn registry() -> RegistryRef {
    std::sync::Arc::clone(&REGISTRY)
}

struct Claim {
    index: usize,
    exclusive: bool,
    registry: RegistryRef,
}

impl Claim {
    // Under bus_loom there is one shared stripe.
    #[cfg_attr(bus_loom, allow(clippy::modulo_one))]
    fn take() -> Self {
        let registry = registry();
        let mut owned = registry.owned.load(Ordering::Acquire);
        loop {
            let free = !owned & ((1 << SHARED) - 1);
            if free == 0 {
                return Self {
                    index: SHARED
                        + registry.sharers.fetch_add(1, Ordering::Relaxed) % SHARED_STRIPES,
                    exclusive: false,
                    registry,
                };
            }
            let bit = free.trailing_zeros();
            // Acquire: the previous owner's last counts are visible before
            // this thread adds to them.
            match registry.owned.compare_exchange_weak(
                owned,
                owned | (1 << bit),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Self {
                        index: bit as usize,
                        exclusive: true,
                        registry,
                    };
                }
                Err(now) => owned = now,
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.exclusive {
            // Release: this thread's counts are visible to the next owner.
            self.registry
                .owned
                .fetch_and(!(1 << self.index), Ordering::Release);
        }
    }
}

#[cfg(not(bus_loom))]
std::thread_local! {
    static CLAIM: Claim = Claim::take();
}

#[cfg(bus_loom)]
loom::thread_local! {
    static CLAIM: Claim = Claim::take();
}

/// How the calling thread may write its stripe. It stays on that thread:
///
/// ```compile_fail
/// use bus_sync::stripe::Striped;
/// use bus_sync::prim::atomic::AtomicU64;
///
/// let hits = std::sync::Arc::new(Striped::new(|| AtomicU64::new(0)));
/// let (_, writer) = hits.mine();
/// // An owner's plain stores from another thread would lose counts.
/// std::thread::spawn(move || drop(writer));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Writer {
    exclusive: bool,
    /// Not `Send`: an exclusive writer stores without a locked instruction,
    /// which is only sound on the thread that owns the stripe.
    _here: std::marker::PhantomData<*const ()>,
}

impl Writer {
    fn new(exclusive: bool) -> Self {
        Self {
            exclusive,
            _here: std::marker::PhantomData,
        }
    }

    /// A writer for a cell any thread may write at once: it always uses
    /// atomic read-modify-writes.
    pub fn shared() -> Self {
        Self::new(false)
    }

    /// Adds `n` to `cell`: a plain load and store when this thread owns the
    /// stripe, an atomic add when it shares it.
    #[inline]
    pub fn add(self, cell: &AtomicU64, n: u64) {
        if self.exclusive {
            cell.store(
                cell.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            cell.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Replaces `cell`'s value `v` with `f(v)` (`None`: leave it), as one
    /// step for the stripe's owner, as a compare-and-swap loop when shared.
    #[inline]
    pub fn update(self, cell: &AtomicU64, f: impl FnMut(u64) -> Option<u64>) {
        let mut f = f;
        if self.exclusive {
            if let Some(v) = f(cell.load(Ordering::Relaxed)) {
                cell.store(v, Ordering::Relaxed);
            }
        } else {
            let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, f);
        }
    }
}

/// The calling thread's stripe, looked up once and handed to several
/// [`Striped::get`] calls: code that counts into a few striped structures
/// per event pays for one thread-local lookup instead of one each. A thread
/// exiting (its thread-locals already gone) gets the shared stripe.
///
/// ```
/// use bus_sync::stripe::{Stripe, Striped};
/// use bus_sync::prim::atomic::{AtomicU64, Ordering::Relaxed};
///
/// let (hits, misses) = (Striped::new(|| AtomicU64::new(0)), Striped::new(|| AtomicU64::new(0)));
/// let me = Stripe::current();
/// let (h, w) = hits.get(me);
/// w.add(h, 2);
/// let (m, w) = misses.get(me);
/// w.add(m, 1);
/// assert_eq!(hits.iter().map(|c| c.load(Relaxed)).sum::<u64>(), 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stripe {
    index: usize,
    /// Not `Send`, and so neither is the stripe: each thread looks up its own.
    writer: Writer,
}

impl Stripe {
    /// The calling thread's stripe.
    #[inline]
    pub fn current() -> Self {
        let (index, exclusive) = CLAIM
            .try_with(|c| (c.index, c.exclusive))
            .unwrap_or((SHARED, false));
        Self {
            index,
            writer: Writer::new(exclusive),
        }
    }
}

/// This thread's stripe number, below [`STRIPES`]: the same for its whole
/// life, except while it exits (its thread-locals gone), when it is the
/// shared stripe. For callers that count with atomic read-modify-writes only.
///
/// ```
/// let a = bus_sync::stripe::index();
/// assert_eq!(a, bus_sync::stripe::index());
/// assert!(a < bus_sync::stripe::STRIPES);
/// ```
#[inline]
pub fn index() -> usize {
    Stripe::current().index
}

/// [`STRIPES`] copies of `T`, each cache-padded.
///
/// ```
/// use bus_sync::stripe::Striped;
/// use bus_sync::prim::atomic::{AtomicU64, Ordering::Relaxed};
///
/// let hits = Striped::new(|| AtomicU64::new(0));
/// let (mine, writer) = hits.mine();
/// writer.add(mine, 1);
/// assert_eq!(hits.iter().map(|c| c.load(Relaxed)).sum::<u64>(), 1);
/// ```
#[derive(Debug)]
pub struct Striped<T>(Box<[CachePadded<T>]>);

impl<T> Striped<T> {
    /// [`STRIPES`] copies, each made by `make`.
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        Self((0..STRIPES).map(|_| CachePadded::new(make())).collect())
    }

    /// The calling thread's copy, and how to write it.
    #[inline]
    pub fn mine(&self) -> (&T, Writer) {
        self.get(Stripe::current())
    }

    /// The copy of `stripe` (the calling thread's, from [`Stripe::current`]),
    /// and how to write it.
    #[inline]
    pub fn get(&self, stripe: Stripe) -> (&T, Writer) {
        // `index < STRIPES == self.0.len()`.
        (&self.0[stripe.index], stripe.writer)
    }

    /// Every copy, for readers to combine.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|c| &**c)
    }
}

#[cfg(all(test, not(bus_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// More threads than stripes, all counting at once, some exiting and
    /// handing their stripe on: every count lands.
    #[test]
    fn owners_and_sharers_lose_no_count() {
        let hits = Arc::new(Striped::new(|| AtomicU64::new(0)));
        let threads = STRIPES * 2;
        let per = 20_000_u64;
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let hits = Arc::clone(&hits);
                std::thread::spawn(move || {
                    for _ in 0..per {
                        let (cell, w) = hits.mine();
                        w.add(cell, 1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Later threads reuse stripes freed by exited ones.
        for _ in 0..4 {
            let hits = Arc::clone(&hits);
            std::thread::spawn(move || {
                let (cell, w) = hits.mine();
                w.update(cell, |v| Some(v + 1));
            })
            .join()
            .unwrap();
        }
        let total: u64 = hits.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert_eq!(total, threads as u64 * per + 4);
    }

    /// Threads beyond the owned stripes are spread over the shared ones,
    /// not piled on one.
    #[test]
    fn threads_past_the_owned_stripes_spread_over_the_shared_ones() {
        let threads = 40;
        let all_in = Arc::new(std::sync::Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let all_in = Arc::clone(&all_in);
                std::thread::spawn(move || {
                    let mine = index();
                    // Every thread holds its stripe until all have one.
                    all_in.wait();
                    mine
                })
            })
            .collect();
        let mut per_stripe = [0_usize; STRIPES];
        for h in handles {
            per_stripe[h.join().unwrap()] += 1;
        }
        // At most 40 sharers over SHARED_STRIPES stripes, dealt in turn
        // (other tests' threads take turns too, hence the slack of 2).
        let most = per_stripe.iter().max().copied().unwrap_or(0);
        assert!(
            most <= threads.div_ceil(SHARED_STRIPES) + 2,
            "{most} threads on one stripe: {per_stripe:?}"
        );
    }

    #[test]
    fn a_thread_keeps_its_stripe() {
        std::thread::spawn(|| {
            let (a, b) = (index(), index());
            assert_eq!(a, b);
            assert!(a < STRIPES);
        })
        .join()
        .unwrap();
    }
}
