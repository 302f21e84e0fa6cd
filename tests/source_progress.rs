//! Backfill progress through the real binary: a log line every 10 s during a long walk when
//! stderr is not a terminal; a progress line redrawn in place when `once` runs on a terminal
//! (a pseudo-terminal here), and never for `run`.

mod support;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use chrono::Duration as CDuration;
use support::*;

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn a_long_walk_logs_its_progress_every_ten_seconds() {
    let now = now_secs();
    let n = 140;
    let api = FakeApi::start(ipv4_feed(
        n,
        now - CDuration::minutes(1),
        Duration::from_secs(1),
    ));
    // 10 per page, 0.8 s per answer: 15 requests, about 12 seconds.
    api.set_max_limit(10);
    api.set_fault_rule(|_| Some(Fault::Delay(Duration::from_millis(800))));
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem1", rx.addr)]);
    let out = run_once(&cfg);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let err = text(&out.stderr);
    let progress: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("poll cycle in progress"))
        .collect();
    assert_eq!(
        progress.len(),
        1,
        "one progress line in a 10-20 s walk\n{}",
        tail(&err, 4000)
    );
    let line = progress[0];
    for part in ["pages", "indicators", "/140 (", "/s", "ETA"] {
        assert!(line.contains(part), "{part:?} missing in {line}");
    }
    assert!(!err.contains('\r'), "no terminal drawing into a pipe");
    rx.wait_for(n, WAIT);
}

/// A pseudo-terminal: (master, slave).
fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty writes two fresh descriptors into `m` and `s`; the null pointers ask for
    // no name, default termios and window size.
    let rc = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are open and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
}

/// Reads everything written to the terminal until the last writer closes it.
fn read_terminal(master: OwnedFd) -> Arc<Mutex<Vec<u8>>> {
    let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
    let b = buf.clone();
    thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut chunk = [0u8; 4096];
        // EIO once every slave descriptor is closed.
        while let Ok(n) = f.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

/// Runs `args` with stderr on a fresh terminal; returns what the terminal showed.
fn on_terminal(
    config: &std::path::Path,
    args: &[&str],
    until: impl FnOnce(&mut std::process::Child),
) -> String {
    let (master, slave) = openpty();
    let shown = read_terminal(master);
    let mut cmd = command(config, args);
    cmd.stdout(Stdio::null()).stderr(Stdio::from(slave));
    let mut child = cmd.spawn().expect("spawn ioc-forwarder");
    drop(cmd);
    until(&mut child);
    let deadline = std::time::Instant::now() + HANG_GUARD;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ioc-forwarder did not exit"
        );
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    let bytes = shown.lock().unwrap().clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn once_on_a_terminal_draws_a_progress_line_and_run_does_not() {
    let now = now_secs();
    let n = 300;
    let api = FakeApi::start(ipv4_feed(
        n,
        now - CDuration::minutes(1),
        Duration::from_secs(1),
    ));
    api.set_max_limit(100);
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem1", rx.addr)]);

    let shown = on_terminal(&cfg, &["once"], |_| {});
    assert!(
        shown.contains("\r\x1b[2Kfetching indicators: "),
        "a line redrawn in place:\n{shown:?}"
    );
    let last = shown
        .rsplit("\r\x1b[2K")
        .next()
        .and_then(|s| s.lines().next())
        .unwrap_or_default();
    assert!(
        last.contains("pages, 300/300 (100%) indicators") && last.contains("ETA 0s"),
        "the final state stays on screen: {last:?}\n{shown:?}"
    );
    rx.wait_for(n, WAIT);

    // `run` on a terminal logs; it never draws.
    let dir2 = tempdir();
    let rx2 = TcpReceiver::start(Framing::Lf);
    let cfg2 = write_config(
        dir2.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", rx2.addr)],
    );
    let shown = on_terminal(&cfg2, &["run"], |child| {
        rx2.wait_for(n, WAIT);
        // Delivery is woken by each page's commit, so the last frames can arrive before the
        // poller has logged its cycle; a SIGTERM in between stops the poller unlogged.
        thread::sleep(Duration::from_millis(400));
        let st = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    });
    assert!(
        shown.contains("poll cycle complete"),
        "run logged its cycle:\n{shown}"
    );
    assert!(
        !shown.contains("fetching indicators"),
        "run drew a progress line:\n{shown:?}"
    );
}
