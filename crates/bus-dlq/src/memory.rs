//! [`MemoryDlq`]: the same store and query API, in memory.

use crate::query::{DlqQuery, Filter};
use crate::record::{LetterState, LetterSummary, ReplayRefusal, StoredLetter};
use bus_core::{DeadLetter, DeadLetterStore, DlqError, LetterId, Topic};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

/// A dead-letter store in memory, with the full [`DlqQuery`] API: for tests
/// and for users who do not want disk. Letters are lost when the process ends.
///
/// ```
/// use bus_core::{DeadLetter, DeadLetterReason, DeadLetterStore, Envelope, Topic};
/// use bus_errors::{Classification, ErrorCategory, ErrorReport};
/// use bus_dlq::{DlqQuery, Filter, MemoryDlq};
///
/// let dlq = MemoryDlq::new();
/// let env = Envelope::new(Topic::new("orders").unwrap(), &b"{}"[..]);
/// let report = ErrorReport::new(Classification::of(ErrorCategory::Timeout), "billing", "took 31s");
/// let letter = DeadLetter::new(env, report, DeadLetterReason::RetriesExhausted, "billing", "g");
/// dlq.push(&letter).unwrap();
/// assert_eq!(dlq.count(&Filter::all().topic("orders")).unwrap(), 1);
/// ```
#[derive(Debug, Default)]
pub struct MemoryDlq {
    letters: Mutex<BTreeMap<LetterId, StoredLetter>>,
    max_letters: Option<u64>,
}

impl MemoryDlq {
    /// An empty, unbounded store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store holding at most `max` letters.
    pub fn bounded(max: u64) -> Self {
        Self {
            letters: Mutex::default(),
            max_letters: Some(max),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<LetterId, StoredLetter>> {
        self.letters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl DeadLetterStore for MemoryDlq {
    fn push(&self, letter: &DeadLetter) -> Result<LetterId, DlqError> {
        let mut map = self.lock();
        if map.contains_key(&letter.id) {
            return Ok(letter.id);
        }
        if let Some(max) = self.max_letters
            && map.len() as u64 >= max
        {
            return Err(DlqError::Full(format!("{max} letters stored, the limit")));
        }
        map.insert(letter.id, StoredLetter::new(letter.clone()));
        Ok(letter.id)
    }
}

impl DlqQuery for MemoryDlq {
    fn scan(
        &self,
        filter: &Filter,
        after: Option<LetterId>,
        max: usize,
    ) -> Result<Vec<LetterSummary>, DlqError> {
        let map = self.lock();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(map
            .range((lower, Bound::Unbounded))
            .map(|(_, s)| s.summary())
            .filter(|s| filter.matches(s))
            .take(max)
            .collect())
    }

    fn get(&self, id: LetterId) -> Result<Option<StoredLetter>, DlqError> {
        Ok(self.lock().get(&id).cloned())
    }

    fn set_state(
        &self,
        ids: &[LetterId],
        from: &[LetterState],
        to: LetterState,
        replayed_at: Option<SystemTime>,
        replay_topic: Option<&Topic>,
    ) -> Result<usize, DlqError> {
        let mut map = self.lock();
        let mut n = 0;
        for id in ids {
            if let Some(s) = map.get_mut(id).filter(|s| from.contains(&s.state)) {
                s.state = to;
                s.replayed_at = replayed_at;
                s.replay_topic = replay_topic.cloned();
                s.replay_refusal = None;
                n += 1;
            }
        }
        Ok(n)
    }

    fn refuse_replay(
        &self,
        id: LetterId,
        refusal: &ReplayRefusal,
        to: LetterState,
    ) -> Result<bool, DlqError> {
        let mut map = self.lock();
        Ok(map
            .get_mut(&id)
            .filter(|s| s.state == LetterState::ReplayRequested)
            .map(|s| {
                s.state = to;
                s.replay_refusal = Some(refusal.clone());
            })
            .is_some())
    }

    fn delete(&self, ids: &[LetterId]) -> Result<usize, DlqError> {
        let mut map = self.lock();
        Ok(ids.iter().filter(|id| map.remove(id).is_some()).count())
    }

    fn insert(&self, letters: &[StoredLetter]) -> Result<usize, DlqError> {
        let mut map = self.lock();
        let mut n = 0;
        for l in letters {
            if let std::collections::btree_map::Entry::Vacant(e) = map.entry(l.letter.id) {
                e.insert(l.clone());
                n += 1;
            }
        }
        Ok(n)
    }
}
