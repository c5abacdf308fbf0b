//! Scenarios on the whole pipeline over the transport under test: handlers
//! that fail, recover and panic, a retry policy and a dead-letter store, with
//! the ledger checked exactly. The transport contract can hold while the
//! pipeline on top of it still loses or double-counts; these catch that.

use super::Ctx;
use crate::{Fault, FaultInjector, assert_invariant, wait_until};
use bus_core::runtime::OwnedMessage;
use bus_core::{Bus, Handler, MemoryDeadLetters, MessageId, SimpleRetry};
use std::sync::Arc;
use std::time::Duration;

const GROUPS: [&str; 2] = ["a", "b"];

/// Who calls the handlers: worker threads, or tasks on a tokio runtime
/// (the subscriber's own) with an in-flight limit.
#[derive(Debug, Clone, Copy)]
enum Runner {
    Threads,
    Tasks { in_flight: usize },
}

/// A bus over the context's transport: two retries 1 ms apart, dead letters
/// in memory, one subscriber per group applying `faults` with `workers`
/// workers each, run by `runner`.
fn bus_with(
    ctx: &Ctx,
    faults: &FaultInjector,
    workers: usize,
    runner: Runner,
) -> (Bus, MemoryDeadLetters) {
    let dlq = MemoryDeadLetters::new();
    let bus = Bus::builder()
        .transport(Arc::clone(&ctx.transport))
        .recovery(Arc::new(SimpleRetry {
            max_retries: 2,
            delay: Duration::from_millis(1),
        }))
        .dead_letters(Arc::new(dlq.clone()))
        .build();
    let topic = ctx.topic("pipeline");
    for g in GROUPS {
        let builder = bus
            .subscriber(&ctx.group(g))
            .topic(topic.as_str())
            .workers(workers);
        let started = match runner {
            Runner::Threads => builder.start(faults.handler()),
            Runner::Tasks { in_flight } => {
                let handler = faults.handler();
                builder
                    .in_flight(in_flight)
                    .start_async(move |msg: OwnedMessage| {
                        let handler = handler.clone();
                        async move {
                            // A suspension point, so calls interleave.
                            tokio::task::yield_now().await;
                            handler.handle(&msg.as_message())
                        }
                    })
            }
        };
        started.unwrap_or_else(|e| panic!("subscribe {g}: {e}"));
    }
    (bus, dlq)
}

fn publish(ctx: &Ctx, bus: &Bus, n: usize) -> Vec<MessageId> {
    let topic = ctx.topic("pipeline");
    (0..n)
        .map(|i| {
            bus.publish(topic.as_str(), format!("p{i}").into_bytes())
                .unwrap_or_else(|e| panic!("publish {i}: {e}"))
        })
        .collect()
}

/// Waits until every copy has settled, shuts the bus down and checks the
/// ledger: each group's copy of a clean or transient message is acked, of a
/// poison or panicking one dead-lettered, and the invariant adds up.
fn settle_and_check(
    ctx: &Ctx,
    bus: Bus,
    dlq: &MemoryDeadLetters,
    faults: &FaultInjector,
    ids: &[MessageId],
) {
    let copies = (ids.len() * GROUPS.len()) as u64;
    let settled = wait_until(ctx.patience, || {
        let s = bus.stats();
        s.acked + s.dead_lettered >= copies
    });
    let report = bus.shutdown(ctx.patience);
    let s = report.stats;
    assert!(settled && report.drained, "not settled in time: {s:?}");
    assert_invariant(&s);
    assert_eq!(s.published, copies, "one copy per group");
    let failing = ids
        .iter()
        .filter(|id| matches!(faults.fault_for(**id), Fault::Poison | Fault::Panic))
        .count() as u64;
    assert_eq!(
        s.dead_lettered,
        failing * GROUPS.len() as u64,
        "exactly the poison and panicking messages are dead-lettered, in every group: {s:?}"
    );
    assert_eq!(s.acked, copies - s.dead_lettered, "{s:?}");
    assert_eq!(dlq.len() as u64, s.dead_lettered, "a letter for each");
}

/// Transient failures recover through retries, poison messages are
/// dead-lettered, and every copy is counted once.
pub fn pipeline_accounts_for_every_message(ctx: &Ctx) {
    let faults = FaultInjector::new(11).transient(0.2).poison(0.1);
    let (bus, dlq) = bus_with(ctx, &faults, 2, Runner::Threads);
    let ids = publish(ctx, &bus, 200);
    settle_and_check(ctx, bus, &dlq, &faults, &ids);
    let recovered = faults
        .acked()
        .values()
        .filter(|attempt| **attempt > 1)
        .count();
    assert!(recovered > 0, "some transient message recovered on a retry");
}

/// A handler that panics is caught and its message dead-lettered; the
/// single worker of each group lives on and handles everything after it.
pub fn pipeline_survives_panics(ctx: &Ctx) {
    let faults = FaultInjector::new(5).panics(0.25);
    let (bus, dlq) = bus_with(ctx, &faults, 1, Runner::Threads);
    let ids = publish(ctx, &bus, 80);
    let clean_after_a_panic = ids
        .iter()
        .skip_while(|id| faults.fault_for(**id) != Fault::Panic)
        .filter(|id| faults.fault_for(**id) == Fault::Clean)
        .count();
    assert!(
        clean_after_a_panic > 0,
        "the seed puts clean messages after a panic"
    );
    settle_and_check(ctx, bus, &dlq, &faults, &ids);
}

/// [`pipeline_accounts_for_every_message`] with async handlers: the same
/// ledger, the calls tasks on a runtime, eight in flight per group.
pub fn async_pipeline_accounts_for_every_message(ctx: &Ctx) {
    let faults = FaultInjector::new(11).transient(0.2).poison(0.1);
    let (bus, dlq) = bus_with(ctx, &faults, 1, Runner::Tasks { in_flight: 8 });
    let ids = publish(ctx, &bus, 200);
    settle_and_check(ctx, bus, &dlq, &faults, &ids);
    let recovered = faults
        .acked()
        .values()
        .filter(|attempt| **attempt > 1)
        .count();
    assert!(recovered > 0, "some transient message recovered on a retry");
}

/// [`pipeline_survives_panics`] with async handlers: a panic inside the
/// future is caught, its message dead-lettered, and the subscriber goes on.
pub fn async_pipeline_survives_panics(ctx: &Ctx) {
    let faults = FaultInjector::new(5).panics(0.25);
    let (bus, dlq) = bus_with(ctx, &faults, 1, Runner::Tasks { in_flight: 4 });
    let ids = publish(ctx, &bus, 80);
    settle_and_check(ctx, bus, &dlq, &faults, &ids);
}
