//! A sliding window's cell: a count tagged with the tick of the bucket it
//! counts for, both in one atomic word (`tag << 32 | count`), so a slot of
//! the ring reused for a newer tick restarts itself on its first write. No
//! lock, no sweep of stale buckets, and no lost count: the restart and the
//! increment are one step (a plain load and store for a stripe's owner, a
//! compare-and-swap loop for a shared cell).

use crate::prim::atomic::{AtomicU64, Ordering::Relaxed};
use crate::stripe::Writer;

const COUNT_MASK: u64 = 0xFFFF_FFFF;

/// One cell of a windowed counter. Tags are ticks cut to 32 bits and
/// compared with wrapping arithmetic: a cell is newer than a write when its
/// tag is ahead by less than 2^31 ticks.
///
/// ```
/// use bus_sync::{TaggedCount, Writer};
///
/// let cell = TaggedCount::new();
/// cell.add(Writer::shared(), 7, 2);
/// cell.add(Writer::shared(), 7, 1);
/// assert_eq!(cell.read(7), 3);
/// cell.add(Writer::shared(), 11, 1); // the slot reused for tick 11
/// assert_eq!((cell.read(7), cell.read(11)), (0, 1));
/// cell.add(Writer::shared(), 7, 5); // a late write: out of the window
/// assert_eq!(cell.read(11), 1);
/// ```
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct TaggedCount(AtomicU64);

impl TaggedCount {
    /// The most a cell counts for one tag; it saturates there rather than
    /// carry into the tag.
    pub const MAX: u64 = COUNT_MASK;

    /// An empty cell (tag 0, count 0).
    pub fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Adds `n` for tick `tag`, through `writer` (the stripe's, or
    /// [`Writer::shared`]): restarts the cell at `n` when it holds an older
    /// tag, leaves it alone when it holds a newer one (the write is out of
    /// the window).
    #[inline]
    pub fn add(&self, writer: Writer, tag: u32, n: u64) {
        let n = n.min(COUNT_MASK);
        writer.update(&self.0, |cur| {
            let cur_tag = (cur >> 32) as u32;
            if cur_tag == tag {
                // Saturated cells stay saturated.
                let count = cur & COUNT_MASK;
                (count != COUNT_MASK).then(|| (cur - count) | (count + n).min(COUNT_MASK))
            } else if (cur_tag.wrapping_sub(tag) as i32) > 0 {
                None
            } else {
                Some((u64::from(tag) << 32) | n)
            }
        });
    }

    /// The count for tick `tag`: 0 if the cell holds another tick.
    #[inline]
    pub fn read(&self, tag: u32) -> u64 {
        let v = self.0.load(Relaxed);
        if (v >> 32) as u32 == tag {
            v & COUNT_MASK
        } else {
            0
        }
    }
}
