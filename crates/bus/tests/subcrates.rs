//! Touches every re-export of the facade so none silently disappears.
#![allow(clippy::unwrap_used)] // tests may unwrap

#[test]
fn every_subcrate_is_reexported() {
    // Core items at the root.
    let _: fn() -> bus::BusBuilder = bus::Bus::builder;
    let topic = bus::Topic::new("a.b").unwrap();
    let env = bus::Envelope::new(topic, bus::transport::Bytes::from_static(b"x"));
    assert_eq!(env.attempt, 1);
    // The modules by audience.
    let _ = bus::transport::memory::MemoryTransport::new();
    let _: Option<bus::transport::QueueDepth> = None;
    let _ = bus::plug::MemoryDeadLetters::new();
    let _: &dyn bus::plug::RecoveryPolicy = &bus::plug::NoRetry;
    let _: Option<bus::subscribe::SubscriptionHandle> = None;
    assert_eq!(
        bus::Config::default().unrouted,
        bus::config::Unrouted::Reject
    );
    assert_eq!(bus::config::DEFAULT_DATA_DIR, "./bus-data");
    let _ = bus::time::ManualClock::new();
    // Errors.
    assert_eq!(bus::errors::ErrorCategory::Timeout.to_string(), "TIMEOUT");
    // Breaker.
    let cfg = bus::breaker::BreakerConfig::default();
    assert_eq!(cfg.consecutive_failures, Some(5));
    // Recovery.
    let _ = bus::recovery::RetryPolicy::for_category(bus::errors::ErrorCategory::Connection);
    // DLQ.
    assert_eq!(bus::dlq::DB_FILE_NAME, "dlq.sqlite");
    let _ = bus::dlq::MemoryDlq::default();
    // SQLite transport.
    assert_eq!(bus::sqlite::QUEUE_FILE_NAME, "queue.sqlite");
    // Logger.
    assert_eq!(bus::logger::LOG_FILE, "errors.jsonl");
    // Health (with the http feature).
    let _ = bus::health::HealthMonitor::new();
    let _: Option<bus::health::HttpOptions> = None;
    // Console.
    assert!(bus::console::CONTENT_SECURITY_POLICY.starts_with("default-src 'self'"));
    assert_eq!(bus::console::TOKEN_ENV, "BUS_CONSOLE_TOKEN");
}

/// The async layer, with the `tokio` feature.
#[cfg(feature = "tokio")]
#[test]
fn the_runtime_module_is_reexported() {
    assert_eq!(bus::runtime::DEFAULT_IN_FLIGHT, 64);
    let _: Option<bus::runtime::OwnedMessage> = None;
    let _: Option<bus::runtime::AsyncSubscription> = None;
}
