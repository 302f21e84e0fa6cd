//! The state file under conditions that used to make the agent stop or grow without bound, end
//! to end against the real binary and real SQLite files: a restart on a full disk, read-only
//! commands on a state file nobody changed, and a source that tells no time.
//!
//! No timing assertions: every wait is a hang guard that fails the test instead of hanging it.

mod support;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use chrono::Duration as CDuration;
use support::faults::MountNs;
use support::*;

/// Hang guard for one wait inside a test.
const WAIT: Duration = Duration::from_secs(30);

/// The distinct `src` values of the frames a receiver got, and how many frames there were.
fn delivered_values(frames: &[String]) -> HashSet<String> {
    frames
        .iter()
        .filter_map(|f| parse_rfc5424(f).ok())
        .filter_map(|s| parse_cef(&s.msg).ok())
        .filter_map(|c| c.get("src").map(str::to_string))
        .collect()
}

/// The values of `ipv4_feed(n, ..)` that are not in `got`.
fn missing(got: &HashSet<String>, n: usize) -> Vec<String> {
    (0..n)
        .map(ipv4_value)
        .filter(|v| !got.contains(v))
        .collect()
}

/// Writes a file until the file system refuses another byte (whole blocks first, then single
/// bytes). Returns the bytes written.
fn fill_to_the_last_byte(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("create the filler file");
    let block = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    for chunk in [block.as_slice(), &block[..4096], &block[..1]] {
        while let Ok(n) = f.write(chunk) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
    }
    let _ = f.sync_all();
    written
}

/// `state.db` and its WAL as they are on disk.
fn state_bytes(state: &Path) -> (Vec<u8>, Vec<u8>) {
    let read = |name: &str| std::fs::read(state.join(name)).unwrap_or_default();
    (read("state.db"), read("state.db-wal"))
}

fn state_db(state_dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(state_dir.join("state.db")).expect("open the state file")
}

fn config_for(dir: &Path, api: &FakeApi, dest: Dest, shutdown_timeout: &str) -> PathBuf {
    let opts = ConfigOpts {
        shutdown_timeout: shutdown_timeout.to_string(),
        ..ConfigOpts::default()
    };
    write_config_with(dir, &api.base_url(), &[dest], &opts)
}

#[test]
fn a_restart_on_a_full_disk_delivers_what_is_queued_instead_of_exiting() {
    const N: usize = 300;
    let dir = tempdir();
    let state = dir.path().join("state");
    let api = FakeApi::start(ipv4_feed(
        N,
        now_secs() - CDuration::minutes(1),
        Duration::from_secs(1),
    ));
    let port = reserve_port();
    let cfg = config_for(
        dir.path(),
        &api,
        Dest::tcp("siem1", format!("127.0.0.1:{port}")),
        "1s",
    );

    // Queued for a receiver that is down: `once` gives up with everything still queued.
    let out = run_once(&cfg);
    assert_exit(&out, 3);
    // The stored queue size drifted (as after a repair by hand), so the next start has
    // something to correct. Closed as the agent closes it: the WAL and its index stay
    // (SQLite needs room for a new WAL index to open a file that has none).
    let db = state_db(&state);
    db.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .expect("no checkpoint on close");
    db.execute("UPDATE totals SET queue_bytes = 1", [])
        .expect("change the stored queue size");
    drop(db);

    // The state directory moves onto a small tmpfs (SQLite resolves `/proc/PID/root` to the
    // test's own namespace, so the file is made here and copied there), which then fills up.
    let held = dir.path().join("held");
    std::fs::rename(&state, &held).expect("move the state directory aside");
    let mnt = match MountNs::tmpfs(&state, "8m") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIPPED a_restart_on_a_full_disk_delivers_what_is_queued_instead_of_exiting: no private mount namespace with a tmpfs ({e}); run the tests as root with util-linux (unshare, nsenter)");
            return;
        }
    };
    let seen_state = mnt.path(&state);
    for entry in std::fs::read_dir(&held).expect("list the state directory") {
        let entry = entry.expect("state directory entry");
        std::fs::copy(entry.path(), seen_state.join(entry.file_name()))
            .expect("copy the state file onto the tmpfs");
    }
    let filled = fill_to_the_last_byte(&seen_state.join("filler"));
    eprintln!("[full disk at restart] filler: {filled} bytes");
    assert!(
        std::fs::OpenOptions::new()
            .append(true)
            .open(seen_state.join("filler"))
            .and_then(|mut f| f.write_all(&[0u8; 4096]).and_then(|_| f.sync_all()))
            .is_err(),
        "the tmpfs still takes writes after filling it"
    );

    // The receiver is back and the agent starts again on the full disk.
    let rx = TcpReceiver::start_on(port, Framing::Lf);
    let mut agent = Agent::spawn_cmd(mnt.command(&command(&cfg, &["run"])));
    let all_there = agent.wait_frames(&rx, WAIT, |f| delivered_values(f).len() >= N);
    let running = agent.is_running();
    let status = if running {
        agent.terminate()
    } else {
        agent.wait()
    };
    let stderr = agent.stderr();
    eprintln!(
        "[full disk at restart] frames {}, distinct {}, exit {:?}",
        rx.count(),
        delivered_values(&rx.frames()).len(),
        status.code()
    );
    assert!(
        running,
        "the agent stopped by itself on a full disk (exit {:?}) instead of delivering\n{}",
        status.code(),
        tail(&stderr, 3000)
    );
    assert!(
        all_there,
        "not every queued event was delivered; missing: {:?}\n{}",
        missing(&delivered_values(&rx.frames()), N)
            .iter()
            .take(10)
            .collect::<Vec<_>>(),
        tail(&stderr, 3000)
    );
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM on a full disk is still a clean stop\n{}",
        tail(&stderr, 3000)
    );
    assert!(!stderr.contains("panicked"), "{}", tail(&stderr, 3000));
    let at_start: Vec<&str> = stderr.lines().filter(|l| l.contains("at start")).collect();
    assert_eq!(
        at_start.len(),
        1,
        "one log line says what could not be saved at start\n{}",
        tail(&stderr, 3000)
    );
    assert!(at_start[0].contains("disk full"), "{}", tail(&stderr, 3000));
    assert!(
        !seen_state
            .read_dir()
            .expect("list the state directory")
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains("corrupt")),
        "a full disk is not damage: the state file was moved aside"
    );
}

#[test]
fn read_only_commands_leave_an_unchanged_state_file_byte_for_byte_unchanged() {
    const N: usize = 40;
    let dir = tempdir();
    let api = FakeApi::start(ipv4_feed(
        N,
        now_secs() - CDuration::minutes(1),
        Duration::from_secs(1),
    ));
    let dead = RefusedPort::new();
    let cfg = config_for(
        dir.path(),
        &api,
        Dest::tcp("dead", format!("127.0.0.1:{}", dead.port)),
        "1s",
    );
    let out = run_once(&cfg);
    assert_exit(&out, 3);
    let state = dir.path().join("state");
    let before = state_bytes(&state);
    assert!(!before.0.is_empty(), "no state file after `once`");
    for args in [&["queue", "stats"][..], &["queue", "peek", "5"]] {
        let out = run_args(&cfg, args);
        assert_exit(&out, 0);
        let after = state_bytes(&state);
        assert!(after.0 == before.0, "`{}` changed state.db", args.join(" "));
        assert!(
            after.1 == before.1,
            "`{}` changed the WAL ({} -> {} bytes)",
            args.join(" "),
            before.1.len(),
            after.1.len()
        );
    }
}

#[test]
fn a_state_file_cannot_be_created_on_a_full_disk_and_the_error_says_so() {
    let dir = tempdir();
    let state = dir.path().join("state");
    let mnt = match MountNs::tmpfs(&state, "1m") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIPPED a_state_file_cannot_be_created_on_a_full_disk_and_the_error_says_so: no private mount namespace with a tmpfs ({e}); run the tests as root with util-linux (unshare, nsenter)");
            return;
        }
    };
    let seen_state = mnt.path(&state);
    fill_to_the_last_byte(&seen_state.join("filler"));
    let api = FakeApi::start(ipv4_feed(
        5,
        now_secs() - CDuration::minutes(1),
        Duration::from_secs(1),
    ));
    let refused = RefusedPort::new();
    let cfg = config_for(
        dir.path(),
        &api,
        Dest::tcp("siem1", format!("127.0.0.1:{}", refused.port)),
        "1s",
    );
    let out = run_cmd(mnt.command(&command(&cfg, &["once"]))).0;
    assert_exit(&out, 1);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{}", describe(&out));
    assert!(
        stderr.contains("the disk is full") && stderr.contains("free some space"),
        "the error names the cause\n{}",
        describe(&out)
    );
    assert!(
        !seen_state
            .read_dir()
            .expect("list the state directory")
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains("corrupt")),
        "a full disk is not damage: something was moved aside"
    );
}

fn meta(state_dir: &Path, key: &str) -> Option<String> {
    use rusqlite::OptionalExtension;
    state_db(state_dir)
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .expect("read meta")
}

fn seen_rows(state_dir: &Path) -> i64 {
    state_db(state_dir)
        .query_row("SELECT COUNT(*) FROM seen_log", [], |r| r.get(0))
        .expect("count seen_log rows")
}

#[test]
fn a_source_without_server_time_still_records_its_successful_polls_and_prunes_old_versions() {
    const N: usize = 20;
    let dir = tempdir();
    let api = FakeApi::start(ipv4_feed(
        N,
        now_secs() - CDuration::minutes(1),
        Duration::from_secs(1),
    ));
    api.without_server_time();
    let rx = TcpReceiver::start(Framing::Lf);
    let cfg = config_for(dir.path(), &api, Dest::tcp("siem1", rx.addr), "5s");
    let state = dir.path().join("state");

    let out = run_once(&cfg);
    assert_exit(&out, 0);
    assert!(
        text(&out.stderr).contains("neither meta.generated_at nor a Date header"),
        "the fake API told a time after all\n{}",
        describe(&out)
    );
    assert_eq!(rx.wait_for(N, WAIT), N);
    assert_eq!(meta(&state, "since"), None, "no server time, no cursor");
    assert!(
        meta(&state, "last_success_us").is_some(),
        "a successful cycle without server time records that it succeeded\n{}",
        tail(&text(&out.stderr), 3000)
    );
    assert!(seen_rows(&state) > 0);

    // The versions were recorded four days ago: past every horizon once the next cycle succeeds.
    let four_days_us = CDuration::days(4).num_microseconds().unwrap_or(i64::MAX);
    state_db(&state)
        .execute(
            "UPDATE seen_log SET recorded_us = recorded_us - ?1",
            [four_days_us],
        )
        .expect("age seen_log");
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        rx.count(),
        N,
        "the second cycle still knew every version (pruning comes after it)"
    );
    assert_eq!(
        seen_rows(&state),
        0,
        "versions older than the horizon are forgotten without server time too\n{}",
        tail(&text(&out.stderr), 3000)
    );
}
