//! Faults for the durable-delivery tests (`tests/delivery.rs`): syslog receivers that misbehave
//! the way real ones do (reset, close, stop reading, stall), a private network namespace in
//! which a receiver can vanish without a trace, a private mount namespace whose disk fills up,
//! and ways to start the binary through a wrapper (`nsenter`, `sh -c 'ulimit …'`).
//!
//! Accounting rule for every receiver here: a byte the receiver's TCP stack acknowledged is a
//! byte the receiver *has* — it is recorded, even when the receiver then closes abortively
//! without reading it (it is peeked first), because that is the line the agent's ack-aware
//! delivery can see. Bytes the stack never acknowledged are never recorded. So "union of the
//! values over all connections = the feed" is exactly the claim "nothing the peer did not
//! acknowledge was dropped".

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::parsers::parse_octet_counted;
use super::receivers::{Accepted, Connections, Framing, TcpReceiver};

/// How long the receive queue must stay unchanged before a stalled receiver takes its window
/// for full (at loopback speed a sender with data fills it in microseconds).
const WINDOW_SETTLE: Duration = Duration::from_secs(1);

/// What a misbehaving receiver does on each of its first connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misbehave {
    /// After `n` complete frames: FIN both ways (from then on the stack answers new data with
    /// RST instead of acknowledging it), read what the stack had acknowledged, then an
    /// abortive close (`SO_LINGER` 0: RST).
    ResetAfter(usize),
    /// The same, then an ordinary close (FIN; a RST only for data sent after our FIN).
    CloseAfter(usize),
    /// After `n` frames stop reading until the receive window is full, record what the stack
    /// acknowledged (`MSG_PEEK`), then RST without any FIN: the sender's unacknowledged send
    /// queue is destroyed by the reset.
    StallThenReset(usize),
    /// After `n` frames stop reading until the window is full, then FIN, read what the stack
    /// had acknowledged, close.
    StallThenClose(usize),
    /// After `n` frames stop reading and hold the connection open (the peer keeps it alive
    /// with zero-window probes, so only the sender's own watchdog can notice); when a newer
    /// connection arrives, read what the stack acknowledged meanwhile and close.
    StallUntilReconnect(usize),
}

impl Misbehave {
    fn after(self) -> usize {
        match self {
            Misbehave::ResetAfter(n)
            | Misbehave::CloseAfter(n)
            | Misbehave::StallThenReset(n)
            | Misbehave::StallThenClose(n)
            | Misbehave::StallUntilReconnect(n) => n,
        }
    }
}

/// What a misbehaving connection did.
#[derive(Clone, Debug)]
pub struct Incident {
    /// The connection's index in accept order.
    pub conn: usize,
    /// Complete frames read before misbehaving.
    pub frames: usize,
    /// Bytes the stack had acknowledged that were collected after the trigger (drained or
    /// peeked).
    pub collected_after: usize,
    /// When it started misbehaving (stopped reading, or closed).
    pub at: Instant,
    pub what: String,
}

/// A [`TcpReceiver`] whose first `times` connections misbehave; later ones behave.
pub struct Misbehaving {
    pub rx: TcpReceiver,
    incidents: Arc<Mutex<Vec<Incident>>>,
}

impl Misbehaving {
    pub fn start(framing: Framing, how: Misbehave, times: usize) -> Misbehaving {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind misbehaving receiver");
        Self::serve(listener, framing, how, times)
    }

    /// Serves on a listener bound elsewhere (e.g. inside a network namespace).
    pub fn serve(
        listener: TcpListener,
        framing: Framing,
        how: Misbehave,
        times: usize,
    ) -> Misbehaving {
        let incidents: Arc<Mutex<Vec<Incident>>> = Arc::default();
        let inc = incidents.clone();
        let rx = TcpReceiver::accept_with(listener, framing, move |a| {
            let plan = (a.index < times).then_some(how);
            serve_connection(a, framing, plan, &inc);
        });
        Misbehaving { rx, incidents }
    }

    pub fn incidents(&self) -> Vec<Incident> {
        self.incidents.lock().unwrap().clone()
    }
}

fn count_frames(framing: Framing, bytes: &[u8]) -> usize {
    match framing {
        Framing::Lf => bytes.iter().filter(|&&b| b == b'\n').count(),
        Framing::OctetCounting => parse_octet_counted(bytes)
            .map(|(f, _)| f.len())
            .unwrap_or(0),
    }
}

fn serve_connection(
    a: Accepted,
    framing: Framing,
    plan: Option<Misbehave>,
    incidents: &Mutex<Vec<Incident>>,
) {
    let Accepted {
        mut conn,
        index: idx,
        buf,
        stop,
        conns,
    } = a;
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some(how) = plan {
            let frames = count_frames(framing, &buf.lock().unwrap());
            if frames >= how.after() {
                let at = Instant::now();
                let (collected_after, what) = misbehave(conn, how, idx, &buf, &stop, &conns);
                incidents.lock().unwrap().push(Incident {
                    conn: idx,
                    frames,
                    collected_after,
                    at,
                    what,
                });
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Carries out `how` on `conn`; returns the bytes collected after the trigger and a summary.
fn misbehave(
    conn: TcpStream,
    how: Misbehave,
    idx: usize,
    buf: &Arc<Mutex<Vec<u8>>>,
    stop: &AtomicBool,
    conns: &Connections,
) -> (usize, String) {
    let fd = conn.as_raw_fd();
    match how {
        Misbehave::ResetAfter(_) | Misbehave::CloseAfter(_) => {
            let _ = conn.shutdown(Shutdown::Both);
            let n = drain(&conn, buf);
            let reset = matches!(how, Misbehave::ResetAfter(_));
            if reset {
                set_linger_zero(fd);
            }
            drop(conn);
            let what = if reset {
                "FIN, drain, RST"
            } else {
                "FIN, drain, close"
            };
            (n, what.to_string())
        }
        Misbehave::StallThenReset(_) => {
            let queued = wait_window_full(fd, stop);
            let peeked = peek_all(fd);
            let n = peeked.len();
            buf.lock().unwrap().extend_from_slice(&peeked);
            set_linger_zero(fd);
            drop(conn);
            (
                n,
                format!("stalled with {queued} bytes queued, peeked {n}, RST"),
            )
        }
        Misbehave::StallThenClose(_) => {
            let queued = wait_window_full(fd, stop);
            let _ = conn.shutdown(Shutdown::Both);
            let n = drain(&conn, buf);
            drop(conn);
            (
                n,
                format!("stalled with {queued} bytes queued, FIN, drained {n}, close"),
            )
        }
        Misbehave::StallUntilReconnect(_) => {
            let deadline = Instant::now() + Duration::from_secs(120);
            while conns.count() <= idx + 1
                && !stop.load(Ordering::SeqCst)
                && Instant::now() < deadline
            {
                thread::sleep(Duration::from_millis(20));
            }
            // The sender gave up on this connection; read what our stack acknowledged (and
            // whatever the sender's kernel still flushes) until it closes or goes quiet.
            let mut conn = conn;
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut chunk = vec![0u8; 64 * 1024];
            let mut n = 0;
            while let Ok(k) = conn.read(&mut chunk) {
                if k == 0 {
                    break;
                }
                n += k;
                buf.lock().unwrap().extend_from_slice(&chunk[..k]);
            }
            (
                n,
                format!("stalled until a newer connection, then read {n} and closed"),
            )
        }
    }
}

/// Reads without blocking until the queue is empty, EOF or an error (a reset still lets the
/// queued bytes be read first).
fn drain(mut conn: &TcpStream, buf: &Mutex<Vec<u8>>) -> usize {
    let _ = conn.set_nonblocking(true);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut n = 0;
    while let Ok(k) = conn.read(&mut chunk) {
        if k == 0 {
            break;
        }
        n += k;
        buf.lock().unwrap().extend_from_slice(&chunk[..k]);
    }
    n
}

/// Bytes in the socket's receive queue (`FIONREAD`/`SIOCINQ`): acknowledged, not yet read.
pub fn queued_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if rc == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

/// Waits until the receive queue has not changed for [`WINDOW_SETTLE`] (the window is full, or
/// the sender has nothing more); returns its size.
fn wait_window_full(fd: RawFd, stop: &AtomicBool) -> usize {
    let started = Instant::now();
    let mut last = queued_bytes(fd);
    let mut since = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(25));
        let q = queued_bytes(fd);
        if q != last {
            last = q;
            since = Instant::now();
        } else if since.elapsed() >= WINDOW_SETTLE
            || started.elapsed() > Duration::from_secs(30)
            || stop.load(Ordering::SeqCst)
        {
            return q;
        }
    }
}

/// Everything in the receive queue, without consuming it (so the window stays closed).
fn peek_all(fd: RawFd) -> Vec<u8> {
    loop {
        let q = queued_bytes(fd);
        let mut out = vec![0u8; q + 1];
        // SAFETY: recv writes at most out.len() bytes into out.
        let n = unsafe {
            libc::recv(
                fd,
                out.as_mut_ptr() as *mut libc::c_void,
                out.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let n = n.max(0) as usize;
        if n == queued_bytes(fd) {
            out.truncate(n);
            return out;
        }
    }
}

/// `SO_LINGER {on, 0}`: the next close sends RST and discards the queues.
fn set_linger_zero(fd: RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: fd is a live socket; l is a plain struct of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Starting the binary through a wrapper
// ---------------------------------------------------------------------------------------------

/// `PREFIX… PROGRAM ARGS…` with the environment changes of `inner` (set and removed variables).
pub fn wrap(prefix: &[&str], inner: &Command) -> Command {
    let mut cmd = Command::new(prefix[0]);
    cmd.args(&prefix[1..])
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// `sh -c 'ulimit -f BLOCKS; exec "$0" "$@"' PROGRAM ARGS…`: the program runs with
/// `RLIMIT_FSIZE` (POSIX `sh` counts 512-byte blocks).
pub fn with_file_size_limit(blocks: u64, inner: &Command) -> Command {
    let script = format!("ulimit -f {blocks} && exec \"$0\" \"$@\"");
    wrap(&["sh", "-c", &script], inner)
}

// ---------------------------------------------------------------------------------------------
// Namespaces held open by a child
// ---------------------------------------------------------------------------------------------

/// The child that holds a namespace open (a shell that sets the namespace up, prints `ready`
/// and execs `sleep`); killed on drop, which ends the namespace.
struct Holder(Child);

impl Holder {
    /// Starts `cmd` and waits for its `ready`; otherwise the error says what did not work
    /// (`what`) and what the shell printed.
    fn start(cmd: &mut Command, what: &str) -> Result<Holder, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!("{what} did not work: {}", err.trim()));
        }
        Ok(Holder(child))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// A private network namespace
// ---------------------------------------------------------------------------------------------

/// A network namespace of its own (needs root or CAP_SYS_ADMIN + CAP_NET_ADMIN, `unshare`,
/// `nsenter` and `ip`), held open by a `sleep` child. Its routing policy puts rule priorities
/// below the `local` table's free, so [`NetNs::blackhole_port`] can make a port vanish: packets
/// to it are dropped without any answer, like a receiver whose host fell off the network.
pub struct NetNs {
    holder: Holder,
    path: String,
}

impl NetNs {
    /// Creates the namespace, or says why it cannot.
    pub fn new() -> Result<NetNs, String> {
        let script = "ip link set lo up && ip rule add pref 100 lookup local && ip rule del pref 0 && echo ready && exec sleep 600";
        let holder = Holder::start(
            Command::new("unshare").args(["-n", "sh", "-c", script]),
            "unshare -n + ip rule",
        )?;
        let path = format!("/proc/{}/ns/net", holder.pid());
        let ns = NetNs { holder, path };
        // setns needs CAP_SYS_ADMIN too; find out now rather than in the middle of a test.
        ns.run(|| ())?;
        Ok(ns)
    }

    /// Runs `f` on a thread that entered the namespace: sockets it binds live there (and keep
    /// working from any thread afterwards).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, String> {
        let file = File::open(&self.path).map_err(|e| format!("open {}: {e}", self.path))?;
        thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: fd is an open namespace file; setns affects only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(format!("setns: {}", std::io::Error::last_os_error()));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| "namespace thread panicked".to_string())?
        })
    }

    /// `inner` run inside the namespace (`nsenter` execs it, so the pid stays the program's).
    pub fn command(&self, inner: &Command) -> Command {
        let net = format!("--net={}", self.path);
        wrap(&["nsenter", &net, "--"], inner)
    }

    fn ip(&self, args: &[&str]) {
        let st = Command::new("nsenter")
            .arg(format!("--net={}", self.path))
            .arg("ip")
            .args(args)
            .status()
            .expect("run nsenter ip");
        assert!(st.success(), "ip {args:?} failed in the namespace");
    }

    /// From now on every TCP segment sent to `port` is silently dropped.
    pub fn blackhole_port(&self, port: u16) {
        self.blackhole_rule("add", port);
    }

    /// Undoes [`NetNs::blackhole_port`].
    pub fn restore_port(&self, port: u16) {
        self.blackhole_rule("del", port);
    }

    fn blackhole_rule(&self, op: &str, port: u16) {
        let p = port.to_string();
        self.ip(&[
            "rule",
            op,
            "pref",
            "10",
            "ipproto",
            "tcp",
            "dport",
            &p,
            "blackhole",
        ]);
    }
}

// ---------------------------------------------------------------------------------------------
// A private mount namespace with a small tmpfs
// ---------------------------------------------------------------------------------------------

/// A mount namespace of its own (needs root or CAP_SYS_ADMIN, `unshare`, `nsenter`) in which a
/// size-limited tmpfs is mounted on `dir`, held open by a `sleep` child. Nothing is mounted in
/// the test's own namespace; the mount disappears with the holder. Programs see it through
/// [`MountNs::command`], the test through [`MountNs::path`] (`/proc/PID/root/...`).
pub struct MountNs {
    holder: Holder,
    dir: std::path::PathBuf,
}

impl MountNs {
    pub fn tmpfs(dir: &std::path::Path, size: &str) -> Result<MountNs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let script = "mount -t tmpfs -o size=\"$1\" tmpfs \"$2\" && echo ready && exec sleep 600";
        let holder = Holder::start(
            Command::new("unshare")
                .args([
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    script,
                    "sh",
                    size,
                ])
                .arg(dir),
            "unshare -m + mount tmpfs",
        )?;
        Ok(MountNs {
            holder,
            dir: dir.to_path_buf(),
        })
    }

    /// `inner` run inside the mount namespace.
    pub fn command(&self, inner: &Command) -> Command {
        let mnt = format!("--mount=/proc/{}/ns/mnt", self.holder.pid());
        wrap(&["nsenter", &mnt, "--"], inner)
    }

    /// `p` (an absolute path) as the namespace sees it.
    pub fn path(&self, p: &std::path::Path) -> std::path::PathBuf {
        let rel = p.strip_prefix("/").unwrap_or(p);
        std::path::PathBuf::from(format!("/proc/{}/root", self.holder.pid())).join(rel)
    }

    /// Changes the tmpfs size (`mount -o remount,size=...`).
    pub fn resize(&self, size: &str) {
        let st = Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.holder.pid()))
            .args(["mount", "-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("run nsenter mount");
        assert!(st.success(), "remount of the tmpfs failed");
    }
}
