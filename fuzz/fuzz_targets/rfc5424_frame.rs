#![no_main]
// The body is shared with tests/fuzz_regressions.rs: see fuzz/src/rfc5424_frame.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ioc_forwarder_fuzz::rfc5424_frame::run(data));
