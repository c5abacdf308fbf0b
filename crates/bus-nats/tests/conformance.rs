//! The transport conformance suite of `bus-test`, against NatsTransport on a
//! real nats-server (skipped loudly when unreachable, unless
//! BUS_REQUIRE_NATS=1). Every context gets its own streams (memory storage,
//! short max age, deleted at the end).

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use bus_nats::{NatsTransport, Storage};
use bus_test::conformance::{self, Ctx};
use std::sync::Arc;
use std::time::Duration;

fn run(name: &str, scenario: fn(&Ctx)) {
    if !common::nats_available(name) {
        return;
    }
    let mut cfg = common::config().with_storage(Storage::Memory);
    cfg.max_age = Duration::from_secs(600);
    // A pull request in flight when a subscription is dropped can still be
    // answered; that message comes back after ack_wait (never lost). Keep
    // ack_wait inside the suite's 10 s patience.
    cfg.ack_wait = Duration::from_secs(4);
    let nats = NatsTransport::connect(cfg).unwrap();
    let mut ctx = Ctx::new(Arc::new(nats.clone()));
    // Every publish is a broker round trip: on a loaded 2-core machine the
    // 10k scenario's drain needs more than the default 10 s.
    ctx.patience = Duration::from_secs(30);
    scenario(&ctx);
    let _ = nats.delete_streams();
}

macro_rules! scenarios {
    ($($s:ident),* $(,)?) => {
        $(
            #[test]
            fn $s() {
                run(stringify!($s), conformance::$s);
            }
        )*
    };
}

scenarios!(
    publish_subscribe_keeps_payload_and_headers,
    concurrent_subscribe,
    resend_on_nak,
    continue_after_many_errors,
    term_is_final,
    dropped_delivery_is_redelivered,
    close_and_recreate_while_publishing,
    concurrent_close,
    parallel_publish_10k,
    topic_isolation,
    consumer_groups,
    ordering_within_a_group,
);
