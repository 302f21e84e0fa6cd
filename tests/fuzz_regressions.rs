//! Replays every committed fuzz input — `fuzz/corpus/<target>/` (the minimised corpus) and
//! `fuzz/regressions/<target>/` (every input that once crashed a target) — through the same
//! target bodies the fuzzers run (`fuzz/src/`, included here), so each fixed crash stays fixed
//! and the targets' invariants keep holding on `cargo test`. Fuzzing itself: `scripts/fuzz.sh`.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_bodies;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Runs `body` on every file of the target's corpus and regressions; fails naming each file
/// whose input panicked.
fn replay(target: &str, body: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut ran = 0;
    let mut failed = Vec::new();
    for dir in ["corpus", "regressions"] {
        let dir = root.join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
                failed.push(file.display().to_string());
            }
            ran += 1;
        }
    }
    assert!(ran > 0, "no committed input for fuzz target {target}");
    assert!(failed.is_empty(), "{target} panicked on: {failed:#?}");
}

#[test]
fn decode_body() {
    replay("decode_body", fuzz_bodies::decode_body::run);
}

#[test]
fn file_source() {
    replay("file_source", fuzz_bodies::file_source::run);
}

#[test]
fn config_parse() {
    replay("config_parse", fuzz_bodies::config_parse::run);
}

#[test]
fn cef_encode() {
    replay("cef_encode", fuzz_bodies::cef_encode::run);
}

#[test]
fn rfc5424_frame() {
    replay("rfc5424_frame", fuzz_bodies::rfc5424_frame::run);
}
