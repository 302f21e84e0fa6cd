#![no_main]
// The body is shared with tests/fuzz_regressions.rs: see fuzz/src/cef_encode.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ioc_forwarder_fuzz::cef_encode::run(data));
