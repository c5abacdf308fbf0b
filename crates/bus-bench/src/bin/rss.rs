//! Peak RSS run (being written).
fn main() {}
