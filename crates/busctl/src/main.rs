//! busctl (work in progress).
fn main() {}
