#![no_main]
// The body is shared with tests/fuzz_regressions.rs: see fuzz/src/decode_body.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ioc_forwarder_fuzz::decode_body::run(data));
