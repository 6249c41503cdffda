//! Placeholder: the HTTP ingest benchmark.
fn main() {}
