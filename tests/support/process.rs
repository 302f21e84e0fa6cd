//! Running the binary under test: one-shot commands with a hang guard, and a long-running
//! [`Agent`] whose output is captured while it runs. Nothing here waits forever: a process
//! that hangs is killed after [`HANG_GUARD`] and the test fails with its log.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::receivers::TcpReceiver;

/// The path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ioc-forwarder");

/// A hung process is killed after this long so that CI fails instead of hanging.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// A temporary directory with a short path under /tmp: unix socket paths are limited to 107
/// bytes.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("iocfw")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

/// A command for the binary with a clean environment for the variables it reads.
pub fn command(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("IOC_FORWARDER_CONFIG")
        .env_remove("SOCDEFENDERS_API_KEY")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null());
    cmd
}

/// Takes the proxy variables of the test's own environment away from `cmd` (both spellings,
/// and `REQUEST_METHOD`, under which `HTTP_PROXY` is ignored as in CGI), so nothing sits
/// between the agent and the fakes unless a test puts it there.
pub fn without_proxies(cmd: &mut Command) -> &mut Command {
    for v in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
        "REQUEST_METHOD",
    ] {
        cmd.env_remove(v);
    }
    cmd
}

/// Runs to completion; the process is killed and the test fails after `HANG_GUARD`.
/// Returns the output and the child's pid.
pub fn run_cmd(cmd: Command) -> (Output, u32) {
    let mut process = Agent::spawn_cmd(cmd);
    let status = process.wait();
    let output = Output {
        status,
        stdout: process.stdout.lock().unwrap().clone(),
        stderr: process.stderr.lock().unwrap().clone(),
    };
    (output, process.pid)
}

/// `ioc-forwarder --config PATH once`, with the hang guard.
pub fn run_once(config: &Path) -> Output {
    run_cmd(command(config, &["once"])).0
}

/// Like `run_once`, also returning the pid of the process.
pub fn run_once_with_pid(config: &Path) -> (Output, u32) {
    run_cmd(command(config, &["once"]))
}

/// `ioc-forwarder --config PATH check-config`.
pub fn check_config(config: &Path) -> Output {
    run_cmd(command(config, &["check-config"])).0
}

/// `ioc-forwarder --config CFG ARGS...` to completion, with the hang guard.
pub fn run_args(cfg: &Path, args: &[&str]) -> Output {
    run_cmd(command(cfg, args)).0
}

/// One row of `queue stats`.
#[derive(Debug, Clone)]
pub struct StatsRow {
    pub events: u64,
    pub bytes: u64,
    pub oldest_age: String,
}

/// `queue stats` via the binary, as a map destination → row. Panics unless it exits 0.
pub fn queue_stats(cfg: &Path) -> HashMap<String, StatsRow> {
    let out = run_args(cfg, &["queue", "stats"]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    let mut rows = HashMap::new();
    for line in stdout.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let (Ok(events), Ok(bytes)) = (f[1].parse(), f[2].parse()) else {
            panic!("queue stats row is not `NAME EVENTS BYTES AGE`: {line:?}\n{stdout}");
        };
        rows.insert(
            f[0].to_string(),
            StatsRow {
                events,
                bytes,
                oldest_age: f[3..].join(" "),
            },
        );
    }
    rows
}

/// Events still queued for `dest`, from `queue stats`.
pub fn pending(cfg: &Path, dest: &str) -> u64 {
    let stats = queue_stats(cfg);
    match stats.get(dest) {
        Some(row) => row.events,
        None => panic!("no row for {dest} in queue stats: {stats:?}"),
    }
}

/// The process exited with `code`; otherwise fails with its output.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}\n{}",
        describe(out)
    );
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The last `n` bytes of a log, for assertion messages.
pub fn tail(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

/// A short description of an exit for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        tail(&text(&out.stdout), 2000),
        tail(&text(&out.stderr), 4000)
    )
}

/// A running `ioc-forwarder` (usually `run`) whose stdout and stderr are captured while it
/// runs; killed on drop if still alive.
pub struct Agent {
    child: Option<Child>,
    pub pid: u32,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout: Arc<Mutex<Vec<u8>>>,
}

impl Agent {
    pub fn spawn(config: &Path) -> Agent {
        Self::spawn_cmd(command(config, &["run"]))
    }

    /// Like `spawn`, for a command built by the caller (extra environment, a wrapper that
    /// `exec`s the binary, other arguments): stdout and stderr are captured.
    pub fn spawn_cmd(mut cmd: Command) -> Agent {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ioc-forwarder");
        let pid = child.id();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Agent {
            child: Some(child),
            pid,
            stderr,
            stdout,
        }
    }

    pub fn stderr(&self) -> String {
        text(&self.stderr.lock().unwrap())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Polls until `pred(frames)` holds, the agent exits on its own, or `timeout` passes.
    /// Returns whether `pred` held.
    pub fn wait_frames(
        &mut self,
        rx: &TcpReceiver,
        timeout: Duration,
        pred: impl Fn(&[String]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&rx.frames()) {
                return true;
            }
            if Instant::now() >= deadline || !self.is_running() {
                thread::sleep(Duration::from_millis(200));
                return pred(&rx.frames());
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends `kill -SIG` (e.g. "HUP") to the agent.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid);
    }

    /// SIGTERM, then wait (with the hang guard) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) -> ExitStatus {
        self.signal("KILL");
        self.wait()
    }

    /// Waits (with the hang guard) for the exit status.
    pub fn wait(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("agent already reaped");
        let stderr = &self.stderr;
        let st = wait_guarded(child, || {
            format!("stderr:\n{}", tail(&text(&stderr.lock().unwrap()), 4000))
        });
        self.child = None;
        wait_pipe(&self.stdout);
        wait_pipe(&self.stderr);
        st
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `GET /metrics` on 127.0.0.1:port: the body of a 200, `None` otherwise (also while nothing
/// answers yet).
pub fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Waits for `child` to exit; after [`HANG_GUARD`] kills it and fails the test with `log()`.
pub fn wait_guarded(child: &mut Child, log: impl Fn() -> String) -> ExitStatus {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ioc-forwarder did not exit within {HANG_GUARD:?}; killed it.\n{}",
                log()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` every 25 ms until it holds or `timeout` passed; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Reads `r` to its end on a thread of its own, into the returned buffer.
fn collect<R: Read + Send + 'static>(mut r: R) -> Arc<Mutex<Vec<u8>>> {
    let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
    let b = buf.clone();
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => b.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    buf
}

/// The whole of a [`collect`] buffer once its reader thread has seen the end of the pipe.
fn wait_pipe(buf: &Arc<Mutex<Vec<u8>>>) -> Vec<u8> {
    // Reader threads hold a clone of the Arc until EOF.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(buf) > 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    buf.lock().unwrap().clone()
}
