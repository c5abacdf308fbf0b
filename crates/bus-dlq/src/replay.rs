//! Re-publishing dead letters.

use crate::query::{DlqQuery, Filter, ReplayReport};
use crate::record::LetterState;
use bus_core::{DeadLetter, DlqError, Envelope, PublishError, Topic};
use std::time::SystemTime;

/// The header a replayed message carries: the id of the letter it came from.
pub const REPLAYED_FROM_HEADER: &str = "bus-replayed-from";

/// The header a replayed message carries: the id the message had when it
/// failed.
pub const ORIGINAL_ID_HEADER: &str = "bus-original-id";

/// The envelope to re-publish for `letter`: the same message (payload,
/// headers, history kept) with `attempt` reset to 1, the headers
/// [`REPLAYED_FROM_HEADER`] and [`ORIGINAL_ID_HEADER`] set, the topic changed
/// to `target` if given, and a fresh id: a replay is a new delivery, and a
/// broker that de-duplicates by message id (JetStream's `Nats-Msg-Id`, within
/// its window) would otherwise drop it while the letter is marked replayed.
pub fn replay_envelope(letter: &DeadLetter, target: Option<&Topic>) -> Envelope {
    let original = letter.envelope.id;
    let mut env = letter
        .envelope
        .clone()
        .with_id(uuid::Uuid::now_v7())
        .with_header(REPLAYED_FROM_HEADER, letter.id.to_string())
        .with_header(ORIGINAL_ID_HEADER, original.to_string());
    env.attempt = 1;
    if let Some(t) = target {
        env = env.with_topic(t.clone());
    }
    env
}

pub(crate) fn replay<Q: DlqQuery + ?Sized>(
    q: &Q,
    filter: &Filter,
    target: Option<&Topic>,
    publish: &mut dyn FnMut(Envelope) -> Result<(), PublishError>,
) -> Result<ReplayReport, DlqError> {
    let mut report = ReplayReport::default();
    let mut ids = Vec::new();
    q.walk(filter, &mut |page| {
        ids.extend(
            page.iter()
                .filter(|l| l.state != LetterState::Replayed)
                .map(|l| l.id),
        );
        Ok(true)
    })?;
    report.selected = ids.len() as u64;
    for id in ids {
        let Some(stored) = q.get(id)? else { continue };
        let to = target.or(stored.replay_topic.as_ref());
        match publish(replay_envelope(&stored.letter, to)) {
            Ok(()) => {
                let from = [LetterState::Dead, LetterState::ReplayRequested];
                match q.set_state(
                    &[id],
                    &from,
                    LetterState::Replayed,
                    Some(SystemTime::now()),
                    None,
                ) {
                    Ok(_) => report.replayed.push(id),
                    Err(e) => report.unmarked.push((id, e.to_string())),
                }
            }
            Err(e) => report.failed.push((id, e.to_string())),
        }
    }
    Ok(report)
}
