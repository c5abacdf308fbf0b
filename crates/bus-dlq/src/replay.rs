//! Re-publishing dead letters.

use crate::query::{DlqQuery, Filter, ReplayReport};
use crate::record::LetterState;
use bus_core::trace::{REPLAYED_TRACEPARENT, TRACEPARENT, TRACESTATE};
use bus_core::{DeadLetter, DlqError, Envelope, PublishError, Topic};
use std::time::SystemTime;

/// The header a replayed message carries: the id of the letter it came from.
pub const REPLAYED_FROM_HEADER: &str = "bus-replayed-from";

/// The header a replayed message carries: the id the message had when it
/// failed.
pub const ORIGINAL_ID_HEADER: &str = "bus-original-id";

/// The envelope to re-publish for `letter`: the same message (payload,
/// headers, history kept) with `attempt` reset to 1, the headers
/// [`REPLAYED_FROM_HEADER`] and [`ORIGINAL_ID_HEADER`] set, its
/// `traceparent` kept as `bus-replayed-traceparent` (a replay starts a new
/// trace linked to the original), the topic changed to `target` if given,
/// and a fresh id: a replay is a new delivery, and a
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
    // A replay is a new trace, linked to the one the message failed in.
    if let Some(tp) = env.headers.remove(TRACEPARENT) {
        env.headers.insert(REPLAYED_TRACEPARENT.to_owned(), tp);
    }
    env.headers.remove(TRACESTATE);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_keeps_the_original_trace_only_as_a_link() {
        let mut letter = crate::testutil::letter("orders", "boom", 1);
        let tp = "00-0000000000000000000000000000000a-000000000000000b-01";
        letter
            .envelope
            .headers
            .insert(TRACEPARENT.into(), tp.into());
        letter
            .envelope
            .headers
            .insert(TRACESTATE.into(), "k=v".into());
        let env = replay_envelope(&letter, None);
        assert_eq!(env.headers.get(TRACEPARENT), None);
        assert_eq!(env.headers.get(TRACESTATE), None);
        assert_eq!(env.headers[REPLAYED_TRACEPARENT], tp);
        // A letter that carried no trace carries no link.
        let plain = replay_envelope(&crate::testutil::letter("orders", "boom", 2), None);
        assert!(!plain.headers.contains_key(REPLAYED_TRACEPARENT));
    }
}
