//! The replay poller: how `busctl dlq replay` (which only marks letters
//! `replay_requested` in the SQLite file) reaches a running bus.

use bus_core::PublishError;
use bus_dlq::{DlqQuery, SqliteDlq, replay_envelope};
use crossbeam_channel::{Sender, bounded};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Letters taken per poll.
const BATCH: usize = 256;

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
                    if !poll_once(&bus, &dlq) {
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

/// Republishes up to one batch of requested replays; `false` once the bus
/// is closed.
pub(crate) fn poll_once(bus: &bus_core::Bus, dlq: &SqliteDlq) -> bool {
    let letters = match dlq.take_replay_requests(BATCH) {
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
        match bus.publish_envelope(env) {
            Ok(_) => done.push(stored.letter.id),
            Err(PublishError::Closed { .. }) => {
                open = false;
                break;
            }
            Err(error) => {
                // Left `replay_requested`: tried again at the next poll.
                tracing::warn!(letter = %stored.letter.id, %error, "replay refused by the bus; will retry");
            }
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
