//! The replay poller: how `busctl dlq replay` (which only marks letters
//! `replay_requested` in the SQLite file) reaches a running bus.
//!
//! A replay is a new publish, counted like any other: accepted, or
//! `rejected_at_publish` when the bus refuses it (the letter stays in the
//! store, so the invariant holds exactly). A refusal is recorded on the
//! letter, where `busctl dlq list`, `show` and `stats` show it, and the
//! letter leaves the head of the queue so it can never block the replays
//! behind it:
//!
//! A letter goes back to the consumer group whose handler failed it, not
//! to every group of the topic (the others settled it already); a letter
//! the operator sent to another topic goes to every group of that topic.
//!
//! - a refusal that will not pass by itself (no subscriber for the topic,
//!   the letter's group no longer subscribing, a payload over the limit, an
//!   invalid topic) moves it to `replay_failed`:
//!   it is refused, and counted, once; the operator fixes the cause and
//!   requests the replay again;
//! - one that may pass (a full queue, a broker outage) keeps it
//!   `replay_requested`, due again after a backoff that doubles with each
//!   refusal (1 s up to 5 min), so it is counted once per attempt and the
//!   attempts thin out.

use bus_core::{PublishError, TransportError};
use bus_dlq::{DlqQuery, LetterState, ReplayRefusal, SqliteDlq, replay_envelope};
use crossbeam_channel::{Sender, bounded};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// Letters taken per poll.
const BATCH: usize = 256;

/// The wait before retrying a replay refused for the first time; doubled
/// with each further refusal, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between two attempts of a replay refused for a reason
/// that may pass.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A background thread that republishes requested replays.
#[derive(Debug)]
pub(crate) struct ReplayPoller {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl ReplayPoller {
    pub(crate) fn start(
        bus: bus_core::Bus,
        dlq: Arc<SqliteDlq>,
        every: Duration,
    ) -> std::io::Result<Self> {
        let (stop, rx) = bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("bus-dlq-replay".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = rx.recv_timeout(every)
                {
                    if !poll_once(&bus, &*dlq, SystemTime::now()) {
                        break;
                    }
                }
            })?;
        Ok(Self { stop, thread })
    }

    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Whether the bus will refuse `error` again however long one waits:
/// `Some(true)` for a permanent refusal, `Some(false)` for one that may
/// pass, `None` when the bus is closed (stop polling).
fn permanent(error: &PublishError) -> Option<bool> {
    match error {
        PublishError::Closed { .. } => None,
        PublishError::InvalidTopic { .. }
        | PublishError::PayloadTooLarge { .. }
        | PublishError::NoSubscribers { .. }
        | PublishError::NoSuchGroup { .. }
        | PublishError::Transport {
            source: TransportError::Unsupported(_),
            ..
        } => Some(true),
        // A full queue drains; a broker comes back. Variants added later
        // are retried rather than given up on.
        _ => Some(false),
    }
}

/// The wait after the `attempts`-th refusal in a row.
fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// Republishes up to one batch of the replays due at `now`; `false` once
/// the bus is closed.
pub(crate) fn poll_once(bus: &bus_core::Bus, dlq: &dyn DlqQuery, now: SystemTime) -> bool {
    let letters = match dlq.take_replay_requests(BATCH, now) {
        Ok(l) => l,
        Err(error) => {
            tracing::warn!(%error, "cannot read replay requests from the dead-letter queue");
            return true;
        }
    };
    let mut done = Vec::with_capacity(letters.len());
    let mut open = true;
    for stored in letters {
        let env = replay_envelope(&stored.letter, stored.replay_topic.as_ref());
        // Only the group whose handler failed the message gets it again: the
        // topic's other groups settled it already. A destination the
        // operator named is a new publish, to every group of that topic.
        let published = if stored.replay_topic.is_some() {
            bus.publish_envelope(env)
        } else {
            bus.publish_to_group(&stored.letter.group, env)
        };
        let error = match published {
            Ok(_) => {
                done.push(stored.letter.id);
                continue;
            }
            Err(error) => error,
        };
        let Some(permanent) = permanent(&error) else {
            open = false;
            break;
        };
        let attempts = stored
            .replay_refusal
            .as_ref()
            .map_or(1, |r| r.attempts.saturating_add(1));
        let (to, retry_at) = if permanent {
            (LetterState::ReplayFailed, None)
        } else {
            (LetterState::ReplayRequested, Some(now + backoff(attempts)))
        };
        let refusal = ReplayRefusal::new(&error.to_string(), attempts, now, retry_at);
        tracing::warn!(
            letter = %stored.letter.id,
            reason = %refusal.reason,
            attempts,
            permanent,
            "replay refused by the bus"
        );
        if let Err(error) = dlq.refuse_replay(stored.letter.id, &refusal, to) {
            tracing::error!(letter = %stored.letter.id, %error, "a refused replay could not be recorded");
        }
    }
    if !done.is_empty() {
        if let Err(error) = dlq.mark_replayed(&done) {
            // Published but not marked: a later poll would publish them again
            // (at-least-once). Say so loudly.
            tracing::error!(%error, count = done.len(), "replayed letters could not be marked replayed");
        } else {
            tracing::info!(count = done.len(), "replayed dead letters");
        }
    }
    open
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use bus_core::Message;
    use bus_dlq::{DlqConfig, Filter, StoredLetter};
    use bus_errors::{Classification, ErrorCategory, ErrorReport};

    fn letter(topic: &str, payload: usize) -> StoredLetter {
        letter_of("ok", topic, payload)
    }

    /// A replay-requested letter that `group`'s handler failed.
    fn letter_of(group: &str, topic: &str, payload: usize) -> StoredLetter {
        let env =
            bus_core::Envelope::new(bus_core::Topic::new(topic).unwrap(), vec![7_u8; payload]);
        let report = ErrorReport::new(Classification::of(ErrorCategory::Timeout), "svc", "slow");
        let mut s = StoredLetter::new(bus_core::DeadLetter::new(
            env,
            report,
            bus_core::DeadLetterReason::RetriesExhausted,
            group,
            group,
        ));
        s.state = LetterState::ReplayRequested;
        s
    }

    fn bus_with_subscriber(topic: &str, max_payload: usize) -> bus_core::Bus {
        let mut config = bus_core::BusConfig::default();
        config.max_payload_bytes = max_payload;
        let bus = bus_core::Bus::builder().config(config).build();
        bus.subscriber("ok")
            .topic(topic)
            .start(|_m: &Message<'_>| -> Result<(), std::io::Error> { Ok(()) })
            .unwrap();
        bus
    }

    #[test]
    fn refused_replays_fail_once_with_their_reason_and_never_block_later_ones() {
        let bus = bus_with_subscriber("ok", 1024);
        let dir = tempfile::tempdir().unwrap();
        let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
        // More refusals than one poll takes, ahead of a replay that works:
        // no subscriber for the first 300, the next one too large.
        let mut refused: Vec<_> = (0..300).map(|_| letter("nobody.listens", 8)).collect();
        refused.push(letter("ok", 4096));
        let good = letter("ok", 8);
        let mut all = refused.clone();
        all.push(good.clone());
        dlq.insert(&all).unwrap();

        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        for poll in 0..5 {
            assert!(poll_once(&bus, &dlq, now + Duration::from_secs(poll)));
        }
        let stats = bus.stats();
        assert_eq!(
            stats.accepted, 1,
            "the replay behind the refused ones went out"
        );
        assert_eq!(
            stats.rejected_at_publish, 301,
            "each refused replay counted once, not once per poll"
        );
        assert_eq!(
            dlq.get(good.letter.id).unwrap().unwrap().state,
            LetterState::Replayed
        );
        assert_eq!(
            dlq.count(&Filter::all().state(LetterState::ReplayFailed))
                .unwrap(),
            301
        );
        let no_sub = dlq.get(refused[0].letter.id).unwrap().unwrap();
        let why = no_sub.replay_refusal.unwrap();
        assert!(
            why.reason.contains("subscribes to topic nobody.listens"),
            "{}",
            why.reason
        );
        assert_eq!((why.attempts, why.retry_at), (1, None));
        let big = dlq.get(refused[300].letter.id).unwrap().unwrap();
        assert!(
            big.replay_refusal
                .unwrap()
                .reason
                .contains("exceeds the limit"),
            "the reason is kept"
        );
        // Requested again once the cause is fixed, it is due at once.
        assert_eq!(
            dlq.request_replay(
                &Filter::all().state(LetterState::ReplayFailed).limit(1),
                None
            )
            .unwrap(),
            1
        );
        assert_eq!(dlq.take_replay_requests(10, now).unwrap().len(), 1);
        // Counted exactly: the shutdown report waits for the one replay's ack.
        bus_test::assert_invariant(&bus.shutdown(Duration::from_secs(30)).stats);
    }

    #[test]
    fn a_transient_refusal_is_retried_after_its_backoff_not_at_every_poll() {
        let bus = bus_core::Bus::builder().build();
        // One subscriber whose handler waits for the gate, with room for
        // one message and no waiting: a full queue refuses at once.
        let (gate, gate_rx) = crossbeam_channel::bounded::<()>(0);
        let (started, handling) = crossbeam_channel::unbounded::<()>();
        bus.subscriber("ok")
            .topic("ok")
            .capacity(1)
            .overflow(bus_core::OverflowPolicy::Reject)
            .start(move |_m: &Message<'_>| -> Result<(), std::io::Error> {
                let _ = started.send(());
                let _ = gate_rx.recv();
                Ok(())
            })
            .unwrap();
        // One message in the handler, then the queue filled behind it.
        bus.publish("ok", &b"first"[..]).unwrap();
        handling.recv_timeout(Duration::from_secs(30)).unwrap();
        while bus.publish("ok", &b"filler"[..]).is_ok() {}
        let filled = bus.stats();

        let dir = tempfile::tempdir().unwrap();
        let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
        let waiting = letter("ok", 8);
        dlq.insert(std::slice::from_ref(&waiting)).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(poll_once(&bus, &dlq, now));
        let refused = dlq.get(waiting.letter.id).unwrap().unwrap();
        assert_eq!(refused.state, LetterState::ReplayRequested);
        let why = refused.replay_refusal.unwrap();
        assert!(why.reason.contains("is full"), "{}", why.reason);
        assert_eq!(why.attempts, 1);
        assert_eq!(why.retry_at, Some(now + FIRST_BACKOFF));
        assert_eq!(
            bus.stats().rejected_at_publish,
            filled.rejected_at_publish + 1
        );

        // Polls before the backoff ends publish nothing and count nothing.
        for ms in [1, 500, 999] {
            assert!(poll_once(&bus, &dlq, now + Duration::from_millis(ms)));
        }
        assert_eq!(bus.stats().published, filled.published + 1);

        // The queue drains; at its time the replay goes out.
        drop(gate);
        assert!(
            bus_test::wait_until(Duration::from_secs(30), || bus.stats().acked
                == filled.accepted),
            "the queue never drained"
        );
        assert!(poll_once(&bus, &dlq, now + FIRST_BACKOFF));
        let done = dlq.get(waiting.letter.id).unwrap().unwrap();
        assert_eq!(done.state, LetterState::Replayed);
        assert_eq!(done.replay_refusal, None);
        assert_eq!(bus.stats().accepted, filled.accepted + 1);
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(40), MAX_BACKOFF);
        drop(bus.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn a_replay_goes_only_to_the_group_that_failed_it() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let bus = bus_core::Bus::builder().build();
        let seen: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::default()).collect();
        for (group, count) in ["billing", "audit"].into_iter().zip(&seen) {
            let count = Arc::clone(count);
            bus.subscriber(group)
                .topic("orders.created")
                .start(move |_m: &Message<'_>| -> Result<(), std::io::Error> {
                    count.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let dlq = SqliteDlq::open(DlqConfig::new(dir.path())).unwrap();
        let failed = letter_of("billing", "orders.created", 8);
        dlq.insert(std::slice::from_ref(&failed)).unwrap();

        assert!(poll_once(&bus, &dlq, SystemTime::now()));
        assert_eq!(
            dlq.get(failed.letter.id).unwrap().unwrap().state,
            LetterState::Replayed
        );
        let report = bus.shutdown(Duration::from_secs(30));
        assert_eq!(report.stats.accepted, 1, "one copy, for one group");
        assert_eq!(seen[0].load(Ordering::SeqCst), 1, "billing gets it again");
        assert_eq!(
            seen[1].load(Ordering::SeqCst),
            0,
            "audit settled it already"
        );
        bus_test::assert_invariant(&report.stats);
    }

    #[test]
    fn refusals_that_may_pass_are_retried_and_the_rest_given_up() {
        let topic = bus_core::Topic::new("t").unwrap();
        let env = || bus_core::Envelope::new(topic.clone(), &b"x"[..]);
        assert_eq!(
            permanent(&PublishError::NoSubscribers { envelope: env() }),
            Some(true)
        );
        assert_eq!(
            permanent(&PublishError::QueueFull {
                envelope: env(),
                group: "g".into()
            }),
            Some(false)
        );
        assert_eq!(
            permanent(&PublishError::NoSuchGroup {
                envelope: env(),
                group: "g".into()
            }),
            Some(true)
        );
        assert_eq!(permanent(&PublishError::Closed { envelope: env() }), None);
    }
}
