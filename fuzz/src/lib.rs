//! The bodies of the fuzz targets, one module per target, each a `run(data: &[u8])` that
//! panics only on a bug. `fuzz_targets/<target>.rs` calls it from libFuzzer, and the main
//! crate's `tests/fuzz_regressions.rs` includes this file (`#[path]`) and replays every file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through the same code, so what a
//! fuzzer once found stays checked by `cargo test`.
//!
//! Structured targets decode their input with `arbitrary` here (not in `fuzz_target!`), so a
//! corpus file means the same thing to the fuzzer and to the test.

pub mod cef_check;
pub mod cef_encode;
pub mod config_parse;
pub mod decode_body;
pub mod file_source;
pub mod gen;
pub mod rfc5424_frame;
