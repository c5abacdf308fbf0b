//! The memory transport passes the conformance suite, transport and
//! pipeline scenarios alike.

use bus_core::memory::MemoryTransport;
use bus_test::conformance::{Ctx, Features};
use std::sync::Arc;

bus_test::transport_conformance!(memory, |_scenario| {
    let features = Features::new().bounded_queues().publish_to_group();
    Some(Ctx::new(Arc::new(MemoryTransport::new())).with_features(features))
});
