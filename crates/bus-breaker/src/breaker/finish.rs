//! How a permitted call's end is recorded: counted in the window, judged
//! against the thresholds, and the transitions it causes, published to the
//! listeners.

use super::*;

impl CircuitBreaker {
    /// Records how a call permitted in `(kind, generation)` ended.
    #[inline]
    pub(crate) fn finish(&self, kind: CircuitState, generation: u64, verdict: Verdict) {
        // The common case, kept inline: a fast success while the window is
        // full of fast successes and no failure run is counting. It would
        // write nothing, so it need not even check whether it is stale.
        if let Verdict::Success(elapsed) = verdict
            && matches!(kind, CircuitState::Closed | CircuitState::MetricsOnly)
            && !self.is_slow(elapsed)
            && self.window.settled_clean()
            && self.consecutive.load(Ordering::Relaxed) == 0
        {
            return;
        }
        self.finish_recorded(kind, generation, verdict);
    }

    #[inline(never)]
    fn finish_recorded(&self, kind: CircuitState, generation: u64, verdict: Verdict) {
        match kind {
            CircuitState::Closed | CircuitState::MetricsOnly => {
                self.finish_closed(kind, generation, verdict)
            }
            CircuitState::HalfOpen => self.finish_probe(generation, verdict),
            _ => {}
        }
    }

    #[inline]
    fn is_slow(&self, elapsed: Option<Duration>) -> bool {
        match (self.slow_nanos, elapsed) {
            (Some(limit), Some(e)) => saturating_nanos(e) >= limit,
            _ => false,
        }
    }

    fn finish_closed(&self, kind: CircuitState, generation: u64, verdict: Verdict) {
        let w = Word::unpack(self.state.load(Ordering::Acquire));
        if w.generation != generation {
            return; // stale: the window it belonged to is gone
        }
        let mark = match verdict {
            Verdict::Ignored => return,
            Verdict::Success(e) if self.is_slow(e) => Mark::SlowSuccess,
            Verdict::Success(_) => Mark::Success,
            Verdict::Failure(e) if self.is_slow(e) => Mark::SlowFailure,
            Verdict::Failure(_) => Mark::Failure,
        };
        let failed = matches!(mark, Mark::Failure | Mark::SlowFailure);
        let consecutive = if failed {
            self.consecutive
                .fetch_add(1, Ordering::AcqRel)
                .saturating_add(1)
        } else {
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Release);
            }
            0
        };
        let now = if self.window.needs_time() {
            self.now()
        } else {
            0
        };
        let dirty = self.window.record(mark, now);
        if kind != CircuitState::Closed || !dirty {
            return;
        }
        let by_run = self
            .config
            .consecutive_failures
            .is_some_and(|n| consecutive >= n);
        if by_run || self.rates_trip(self.window.counts(now)) {
            self.transition(Some(w), CircuitState::Open, self.now());
        }
    }

    fn rates_trip(&self, c: Counts) -> bool {
        let minimum = match self.config.window {
            SlidingWindow::Count { size } => self.config.minimum_calls.min(size),
            SlidingWindow::Time { .. } => self.config.minimum_calls,
        };
        if c.calls == 0 || c.calls < u64::from(minimum) {
            return false;
        }
        let failing = self
            .config
            .failure_rate_threshold
            .is_some_and(|t| rate(c.failures, c.calls).is_some_and(|r| r >= t));
        let slow = self.slow_nanos.is_some()
            && rate(c.slow, c.calls).is_some_and(|r| r >= self.config.slow_call_rate_threshold);
        failing || slow
    }

    fn finish_probe(&self, generation: u64, verdict: Verdict) {
        let w = Word::unpack(self.state.load(Ordering::Acquire));
        if w.kind != CircuitState::HalfOpen || w.generation != generation {
            return; // stale probe
        }
        let (failed, slow) = match verdict {
            Verdict::Ignored => return self.release(generation),
            Verdict::Success(e) => (false, self.is_slow(e)),
            Verdict::Failure(e) => (true, self.is_slow(e)),
        };
        let tag = Probes::tag_of(generation);
        let Ok(prev) = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                let mut p = Probes::unpack(cur);
                if p.tag != tag {
                    if (tag.wrapping_sub(p.tag) as i16) < 0 {
                        return None; // a newer episode owns the word
                    }
                    p = Probes {
                        tag,
                        ..Probes::default()
                    };
                }
                p.reported += 1;
                p.failed += u16::from(failed);
                p.slow += u16::from(slow);
                Some(p.pack())
            })
        else {
            return;
        };
        let mut p = Probes::unpack(prev);
        if p.tag != tag {
            p = Probes {
                tag,
                ..Probes::default()
            };
        }
        let reported = u64::from(p.reported) + 1;
        let now = self.now();
        if reported < u64::from(self.config.permitted_calls_in_half_open) {
            if now >= self.deadline.load(Ordering::Acquire) {
                self.transition(Some(w), CircuitState::Open, now);
            }
            return;
        }
        let probes = Counts {
            calls: reported,
            failures: u64::from(p.failed) + u64::from(failed),
            slow: u64::from(p.slow) + u64::from(slow),
        };
        let failing = match self.config.failure_rate_threshold {
            Some(t) => rate(probes.failures, probes.calls).is_some_and(|r| r >= t),
            None => probes.failures > 0,
        };
        let slow = self.slow_nanos.is_some()
            && rate(probes.slow, probes.calls)
                .is_some_and(|r| r >= self.config.slow_call_rate_threshold);
        let to = if failing || slow {
            CircuitState::Open
        } else {
            CircuitState::Closed
        };
        self.transition(Some(w), to, now);
    }

    /// Gives a half-open probe slot back (ignored or dropped probe).
    pub(crate) fn release(&self, generation: u64) {
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |raw| {
                let w = Word::unpack(raw);
                (w.kind == CircuitState::HalfOpen && w.generation == generation && w.admitted > 0)
                    .then(|| {
                        Word {
                            admitted: w.admitted - 1,
                            ..w
                        }
                        .pack()
                    })
            });
    }

    /// Moves to `to`. With `expect`, only if the state is still that kind and
    /// generation (otherwise another thread already moved it: returns false).
    pub(super) fn transition(&self, expect: Option<Word>, to: CircuitState, now: u64) -> bool {
        let mut trips_in_row = self
            .transition
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cur = Word::unpack(self.state.load(Ordering::Acquire));
        if let Some(e) = expect {
            if cur.kind != e.kind || cur.generation != e.generation {
                return false;
            }
        }
        let mut open_for = None;
        match to {
            CircuitState::Open => {
                *trips_in_row = trips_in_row.saturating_add(1);
                let wait = self.config.open_wait(*trips_in_row);
                open_for = Some(wait);
                self.deadline.store(
                    now.saturating_add(saturating_nanos(wait)),
                    Ordering::Release,
                );
                self.trips.fetch_add(1, Ordering::Relaxed);
            }
            CircuitState::HalfOpen => {
                let max = saturating_nanos(self.config.max_wait_in_half_open);
                self.deadline
                    .store(now.saturating_add(max), Ordering::Release);
            }
            CircuitState::Closed | CircuitState::MetricsOnly => {
                if to == CircuitState::Closed {
                    *trips_in_row = 0;
                }
                self.window.reset();
                self.consecutive.store(0, Ordering::Release);
            }
            _ => {}
        }
        self.since.store(now, Ordering::Release);
        let next = cur.next(to);
        // Only probe admission changes the word without the lock, and only
        // its `admitted` field: swap is safe.
        self.state.swap(next.pack(), Ordering::AcqRel);
        let t = Transition {
            component: self.name.clone(),
            from: cur.kind,
            to,
            generation: next.generation,
            open_for,
        };
        self.listeners.notify(&t);
        if let Some(shared) = &self.shared_listeners {
            shared.notify(&t);
        }
        true
    }
}
