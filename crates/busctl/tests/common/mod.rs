//! Letters for the `busctl dlq` tests.
#![allow(dead_code)]

/// A plain letter: topic, category, component and message chosen by the caller.
pub(crate) use bus_test::letter;
