//! The memory transport passes the transport conformance suite.

use bus_core::memory::MemoryTransport;
use std::sync::Arc;

bus_test::transport_conformance!(memory, || Arc::new(MemoryTransport::new()));
