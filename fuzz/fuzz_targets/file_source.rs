#![no_main]
// The body is shared with tests/fuzz_regressions.rs: see fuzz/src/file_source.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ioc_forwarder_fuzz::file_source::run(data));
