#![no_main]
// The body is shared with tests/fuzz_regressions.rs: see fuzz/src/config_parse.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ioc_forwarder_fuzz::config_parse::run(data));
