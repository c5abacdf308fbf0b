//! One conformance suite every [`Transport`] must pass, modelled on
//! Watermill's universal Pub/Sub tests. Messages are matched by id;
//! redelivered duplicates are tolerated and counted, losses never are.
//!
//! Two levels, one list: scenarios on the raw transport contract
//! (publish, subscribe, settle), and scenarios that run the whole pipeline
//! (a [`Bus`](bus_core::Bus) with failing and panicking handlers and a
//! dead-letter store) over the transport and check the ledger exactly.
//! What a transport offers beyond the contract is declared in [`Features`];
//! a scenario that needs what a transport lacks says so and passes, as
//! Watermill's tests skip.
//!
//! Run it for a transport with [`transport_conformance!`](crate::transport_conformance):
//!
//! ```
//! use bus_core::memory::MemoryTransport;
//! use bus_test::conformance::{Ctx, Features};
//! use std::sync::Arc;
//! bus_test::transport_conformance!(memory, |_scenario| {
//!     let features = Features::new().bounded_queues().publish_to_group();
//!     Some(Ctx::new(Arc::new(MemoryTransport::new())).with_features(features))
//! });
//! # fn main() {}
//! ```

mod confirm;
mod pipeline;
mod transport;

pub use confirm::*;
pub use pipeline::*;
pub use transport::*;

use bus_core::{MessageId, SubscribeOptions, Subscription, Topic, Transport};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a transport offers beyond the contract every transport keeps, so
/// the suite runs the scenarios that apply.
#[derive(Clone, Default)]
pub struct Features {
    bounded_queues: bool,
    publish_to_group: bool,
    reconnect: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Features")
            .field("bounded_queues", &self.bounded_queues)
            .field("publish_to_group", &self.publish_to_group)
            .field("reconnect", &self.reconnect.is_some())
            .finish()
    }
}

impl Features {
    /// Only what every transport must do.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscriptions take a capacity and the transport enforces it (the
    /// memory transport); a broker that bounds by unacknowledged count
    /// instead refuses a capacity, so the suite sets none.
    pub fn bounded_queues(mut self) -> Self {
        self.bounded_queues = true;
        self
    }

    /// [`Transport::publish_to_group`] reaches one group alone.
    pub fn publish_to_group(mut self) -> Self {
        self.publish_to_group = true;
        self
    }

    /// How to cut the transport's connection and restore it (for a broker,
    /// kill the server and start it again). The call returns once the
    /// server is back; the transport must find it on its own.
    pub fn reconnect(mut self, cut_and_restore: impl Fn() + Send + Sync + 'static) -> Self {
        self.reconnect = Some(Arc::new(cut_and_restore));
        self
    }
}

/// Runs when the last clone of a [`Ctx`] is dropped.
struct Teardown(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// What a scenario needs: a transport, what it offers, and a place for
/// unique names.
#[derive(Clone)]
pub struct Ctx {
    transport: Arc<dyn Transport>,
    features: Features,
    prefix: String,
    teardown: Arc<Teardown>,
    /// How long to wait for a message that should arrive.
    pub patience: Duration,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("prefix", &self.prefix)
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// A context over `transport` with no [`Features`]. Topics and groups
    /// get a unique suffix so durable transports can share a server between
    /// runs.
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        let prefix = format!("conf{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Self {
            transport,
            features: Features::default(),
            prefix,
            teardown: Arc::new(Teardown(None)),
            patience: Duration::from_secs(10),
        }
    }

    /// What the transport offers beyond the contract.
    pub fn with_features(mut self, features: Features) -> Self {
        self.features = features;
        self
    }

    /// How long to wait for a message that should arrive (default 10 s).
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// Runs `f` once the scenario is done with the transport (for a broker,
    /// deleting the streams the scenario made).
    pub fn on_teardown(mut self, f: impl FnOnce() + Send + Sync + 'static) -> Self {
        self.teardown = Arc::new(Teardown(Some(Box::new(f))));
        self
    }

    /// The transport under test.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// What the transport offers.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// A unique topic under this context.
    pub fn topic(&self, name: &str) -> Topic {
        Topic::new(&format!("{}.{name}", self.prefix))
            .unwrap_or_else(|e| panic!("bad test topic {name}: {e}"))
    }

    /// A unique group name.
    pub fn group(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Says a scenario does not apply and why: the test passes, and the
    /// line shows in `--nocapture` output and in the failure log of a run.
    fn skip(&self, scenario: &str, lacks: &str) {
        eprintln!("conformance: {scenario} skipped: the transport lacks {lacks}");
    }

    fn sub(&self, topic: &Topic, group: &str) -> Box<dyn Subscription> {
        let mut opts = SubscribeOptions::group(self.group(group));
        if self.features.bounded_queues {
            // Room for the largest scenario: a full queue is not what the
            // suite tests.
            opts = opts.with_capacity(100_000);
        }
        self.transport
            .subscribe(topic, &opts)
            .unwrap_or_else(|e| panic!("subscribe failed: {e}"))
    }

    fn publish_n(&self, topic: &Topic, n: usize) -> Vec<MessageId> {
        (0..n)
            .map(|i| {
                let env = bus_core::Envelope::new(topic.clone(), format!("m{i}").into_bytes());
                let id = env.id;
                self.transport
                    .publish(env, self.patience)
                    .unwrap_or_else(|e| panic!("publish failed: {e}"));
                id
            })
            .collect()
    }
}

/// Ids received, with duplicates counted.
#[derive(Debug, Default)]
pub struct Tally {
    seen: HashMap<MessageId, u32>,
}

impl Tally {
    fn add(&mut self, id: MessageId) {
        *self.seen.entry(id).or_default() += 1;
    }
    /// Distinct ids seen.
    pub fn distinct(&self) -> usize {
        self.seen.len()
    }
    /// Deliveries beyond the first, summed.
    pub fn duplicates(&self) -> u32 {
        self.seen.values().map(|n| n - 1).sum()
    }
    fn assert_has_all(&self, ids: &[MessageId], what: &str) {
        let missing: Vec<_> = ids
            .iter()
            .filter(|id| !self.seen.contains_key(id))
            .collect();
        assert!(
            missing.is_empty(),
            "{what}: {} of {} messages lost, e.g. {:?}",
            missing.len(),
            ids.len(),
            missing.first()
        );
    }
}

/// Consumes (acking) until `want` distinct ids are seen or patience runs out.
fn drain(ctx: &Ctx, sub: &mut Box<dyn Subscription>, want: usize) -> Tally {
    let mut tally = Tally::default();
    let deadline = Instant::now() + ctx.patience;
    while tally.distinct() < want && Instant::now() < deadline {
        if let Ok(Some(d)) = sub.next(Duration::from_millis(100)) {
            tally.add(d.envelope().id);
            d.ack();
        }
    }
    tally
}

fn assert_quiet(sub: &mut Box<dyn Subscription>, what: &str) {
    if let Ok(Some(d)) = sub.next(Duration::from_millis(300)) {
        let id = d.envelope().id;
        d.ack();
        panic!("{what}: unexpected delivery {id}");
    }
}

/// Generates one `#[test]` per conformance scenario, the one list every
/// transport runs. `$make` is a closure from the scenario's name to
/// `Option<Ctx>`: `None` when the transport cannot be reached here (the
/// scenario then passes after saying so; a CI that requires the transport
/// fails inside the closure instead). The name lets a transport give one
/// scenario a set-up of its own (a server it may kill, for the reconnect).
#[macro_export]
macro_rules! transport_conformance {
    ($name:ident, $make:expr) => {
        #[allow(unreachable_pub)]
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn ctx(scenario: &str) -> ::std::option::Option<$crate::conformance::Ctx> {
                ($make)(scenario)
            }
            $crate::transport_conformance!(@tests
                publish_subscribe_keeps_payload_and_headers, concurrent_subscribe, resend_on_nak,
                continue_after_many_errors, term_is_final, dropped_delivery_is_redelivered,
                close_and_recreate_while_publishing, concurrent_close, parallel_publish_10k,
                topic_isolation, consumer_groups, ordering_within_a_group,
                publish_to_one_group, reconnect_loses_nothing,
                pipeline_accounts_for_every_message, pipeline_survives_panics,
                async_pipeline_accounts_for_every_message, async_pipeline_survives_panics,
                send_confirms_every_message, batch_hands_back_exactly_the_bad_items,
                publisher_window_keeps_order_per_thread, async_publishing_confirms_every_message);
        }
    };
    (@tests $($scenario:ident),*) => {
        $(
            #[test]
            fn $scenario() {
                if let ::std::option::Option::Some(ctx) = ctx(stringify!($scenario)) {
                    $crate::conformance::$scenario(&ctx);
                }
            }
        )*
    };
}
