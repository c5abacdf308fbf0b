//! Which deliveries of an earlier process's work this open handed out,
//! each counted once: sequence numbers kept as merged ranges, so a backlog
//! taken in order costs a few entries, not one per message.

use std::collections::BTreeMap;

/// A set of row numbers as disjoint ranges `start -> end` (inclusive).
#[derive(Debug, Default)]
pub(crate) struct SeqSet {
    ranges: BTreeMap<i64, i64>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; false if it was there already.
    pub(crate) fn insert(&mut self, seq: i64) -> bool {
        let below = self.ranges.range(..=seq).next_back().map(|(s, e)| (*s, *e));
        if let Some((_, end)) = below
            && end >= seq
        {
            return false;
        }
        let mut start = seq;
        let mut end = seq;
        if let Some((s, e)) = below
            && e + 1 == seq
        {
            start = s;
        }
        if let Some(&e) = self.ranges.get(&(seq + 1)) {
            self.ranges.remove(&(seq + 1));
            end = e;
        }
        self.ranges.insert(start, end);
        self.len += 1;
        true
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::SeqSet;

    #[test]
    fn each_number_counts_once_and_neighbours_merge() {
        let mut s = SeqSet::default();
        for seq in [5, 7, 6, 1, 2, 9] {
            assert!(s.insert(seq));
        }
        for seq in [5, 6, 7, 1, 9] {
            assert!(!s.insert(seq), "{seq} again");
        }
        assert_eq!(s.len(), 6);
        assert_eq!(s.ranges.len(), 3, "{:?}", s.ranges); // 1-2, 5-7, 9
    }
}
