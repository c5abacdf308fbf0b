//! A stand-in for the bus pipeline's failure loop, so policies can be driven
//! exactly as the pipeline drives them: fail, classify, decide, record the
//! decision on the report and in the envelope's history, `attempt += 1`,
//! redeliver.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use bus_core::time::Clock;
use bus_core::time::ManualClock;
use bus_core::{AttemptRecord, Decision, Envelope, Failure, RecoveryPolicy, Success, Topic};
use bus_errors::{Classification, ErrorCategory, ErrorReport};
use std::time::{Duration, SystemTime};

/// How long every failing call in these traces ran.
const FAILED_AFTER: Duration = Duration::from_micros(3);

/// What happened to one message.
#[derive(Debug)]
pub struct Trace {
    /// Every decision, in order.
    pub decisions: Vec<Decision>,
    /// Every report, with the recovery fields the pipeline fills in.
    pub reports: Vec<ErrorReport>,
    /// The message at the end (history, headers, payload).
    pub envelope: Envelope,
    /// Whether a delivery finally succeeded.
    pub acked: bool,
    /// Total scheduled delay before the end.
    pub waited: Duration,
    /// The policy's note for each decision (what the pipeline records).
    pub notes: Vec<String>,
}

pub fn envelope(topic: &str, payload: &[u8]) -> Envelope {
    Envelope::new(Topic::new(topic).unwrap(), payload.to_vec())
}

pub fn report(category: ErrorCategory, env: &Envelope, component: &str) -> ErrorReport {
    ErrorReport::new(Classification::of(category), component, "boom")
        .with_topic(env.topic.as_str())
        .with_message_id(env.id)
        .with_attempt(env.attempt)
}

/// Delivers `env` to `handler` until it succeeds or the policy stops
/// retrying. `handler` returns `Err(category)` to fail. A redelivery "waits"
/// by advancing `clock` by the scheduled delay (nothing sleeps).
pub fn deliver(
    policy: &dyn RecoveryPolicy,
    clock: &ManualClock,
    mut env: Envelope,
    component: &str,
    mut handler: impl FnMut(&Envelope) -> Result<(), ErrorCategory>,
) -> Trace {
    let mut trace = Trace {
        decisions: Vec::new(),
        reports: Vec::new(),
        envelope: env.clone(),
        acked: false,
        waited: Duration::ZERO,
        notes: Vec::new(),
    };
    for _ in 0..1_000 {
        let category = match handler(&env) {
            Ok(()) => {
                policy.on_success(&Success::new(
                    &env,
                    component,
                    Duration::ZERO,
                    clock.stamp(),
                ));
                trace.acked = true;
                break;
            }
            Err(category) => category,
        };
        let mut rep = report(category, &env, component);
        rep.retry_count = env.retries();
        // A failing call that returned fast, as a client library's timeout
        // error can: how long it ran must not steer any decision.
        let resolution = policy.decide(&Failure::new(&rep, &env, component, FAILED_AFTER));
        // As the pipeline does: the rewrite first, then the decision.
        let (decision, note) = resolution.apply(&mut env);
        trace.notes.push(note.clone());
        let after = match decision {
            Decision::Retry { after } | Decision::Reconnect { after } => Some(after),
            _ => None,
        };
        rep.record_recovery(
            after.is_some(),
            after.is_none().then_some(false),
            note.clone(),
        );
        env.history.push(AttemptRecord {
            attempt: env.attempt,
            at: SystemTime::now(),
            component: component.to_owned(),
            category,
            severity: rep.severity,
            error_type: rep.error_type.clone(),
            message: rep.message.clone(),
            decision: note,
        });
        trace.decisions.push(decision);
        trace.reports.push(rep);
        let Some(after) = after else { break };
        clock.advance(after);
        trace.waited += after;
        env.attempt += 1;
    }
    trace.envelope = env;
    trace
}

/// Fails every delivery with `category`.
pub fn always_fail(
    policy: &dyn RecoveryPolicy,
    clock: &ManualClock,
    category: ErrorCategory,
    topic: &str,
    component: &str,
) -> Trace {
    deliver(policy, clock, envelope(topic, b"{}"), component, |_| {
        Err(category)
    })
}
