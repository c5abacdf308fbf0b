//! The JSON API: one function per view or action.

pub(crate) mod bus;
pub(crate) mod dlq;
