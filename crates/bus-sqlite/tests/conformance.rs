//! The conformance suite of `bus-test`, transport and pipeline scenarios,
//! against SqliteTransport, each scenario on a file of its own.

use bus_sqlite::{SqliteConfig, SqliteTransport};
use bus_test::conformance::{Ctx, Features};
use std::sync::Arc;
use std::time::Duration;

fn sqlite_ctx() -> Option<Ctx> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let transport = SqliteTransport::open(SqliteConfig::new(dir.path()))
        .unwrap_or_else(|e| panic!("open: {e}"));
    let features = Features::new().bounded_queues().publish_to_group();
    Some(
        Ctx::new(Arc::new(transport))
            .with_features(features)
            // Every lone publish is a commit and an fsync.
            .with_patience(Duration::from_secs(30))
            .on_teardown(move || drop(dir)),
    )
}

bus_test::transport_conformance!(sqlite, |_scenario| sqlite_ctx());
