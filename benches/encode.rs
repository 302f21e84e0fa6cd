//! Placeholder replaced by the encoding benchmark.
fn main() {}
