//! A state file made by the release before the live set (state file version 3, queue chunks
//! of format 1), opened by this one: what it had queued is delivered intact, what it had sent
//! is not sent again, and the file passes `queue verify` before and after.
//!
//! The fixture was made by `scripts/make-state-fixture.sh` at that release: `once` on the
//! built-in sample feed with two destinations, `delivered` (stdout: everything sent) and
//! `queued` (a TCP port nobody listened on: everything still queued).

mod support;

use std::path::Path;

use support::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state-v3");
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/demo-feed.json");

/// A config like the fixture's, with `queued` pointing at `queued_at`.
fn config(dir: &Path, queued_at: &str) -> std::path::PathBuf {
    let text = format!(
        "state_dir = {}\nshutdown_timeout = \"2s\"\n\n[source]\nkind = \"file\"\npath = {}\n\n\
         [[destinations]]\nname = \"delivered\"\nprotocol = \"stdout\"\n\n\
         [[destinations]]\nname = \"queued\"\nprotocol = \"tcp\"\naddress = {}\n",
        toml_str(dir.join("state").to_str().unwrap()),
        toml_str(SAMPLE),
        toml_str(queued_at),
    );
    write_file(dir, "config.toml", &text)
}

/// The fixture's files copied into `DIR/state`.
fn old_state(dir: &Path) {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    for entry in std::fs::read_dir(FIXTURE).expect("the fixture directory") {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), state.join(entry.file_name())).unwrap();
    }
}

/// The CEF lines of frames, in order.
fn cef_lines(frames: &[String]) -> Vec<String> {
    frames
        .iter()
        .map(|f| parse_rfc5424(f).expect("an RFC 5424 frame").msg)
        .collect()
}

#[test]
fn a_previous_release_state_file_delivers_its_queue_intact_and_resends_nothing() {
    // What this release sends for the sample feed from a fresh state: the reference lines.
    let fresh = tempdir();
    let dead = RefusedPort::new();
    let cfg = config(fresh.path(), &format!("127.0.0.1:{}", dead.port));
    let out = run_once(&cfg);
    assert_exit(&out, 3);
    let reference = cef_lines(
        &text(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>(),
    );
    assert_eq!(reference.len(), 46, "the sample feed's indicators");

    let dir = tempdir();
    old_state(dir.path());
    let receiver = TcpReceiver::start(Framing::Lf);
    let cfg = config(dir.path(), &receiver.address());
    assert_exit(&run_args(&cfg, &["queue", "verify"]), 0);
    assert_eq!(pending(&cfg, "queued"), 46);
    assert_eq!(pending(&cfg, "delivered"), 0);

    let out = run_once(&cfg);
    assert_exit(&out, 0);
    assert_eq!(
        text(&out.stdout),
        "",
        "nothing the old release sent is sent again"
    );
    assert_eq!(
        cef_lines(&receiver.frames()),
        reference,
        "the old queue arrives as this release would have queued it"
    );
    assert_exit(&run_args(&cfg, &["queue", "verify"]), 0);
    assert_eq!(pending(&cfg, "queued"), 0);
    let db = rusqlite::Connection::open(dir.path().join("state/state.db")).unwrap();
    let version: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4, "the file was upgraded");
}
