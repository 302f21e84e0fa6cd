//! Faults for the durable-delivery tests (`tests/delivery.rs`): syslog receivers that misbehave
//! the way real ones do (reset, close, stop reading, stall), a private network namespace in
//! which a receiver can vanish without a trace, and ways to start the binary through a wrapper
//! (`nsenter`, `sh -c 'ulimit …'`).
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

use super::{collect, parse_octet_counted, Agent, Connections, Framing, TcpReceiver};

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
        let addr = listener.local_addr().unwrap();
        let conns: Connections = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let incidents: Arc<Mutex<Vec<Incident>>> = Arc::default();
        let (c, s, inc) = (conns.clone(), stop.clone(), incidents.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let buf = Arc::new(Mutex::new(Vec::new()));
                let idx = {
                    let mut all = c.lock().unwrap();
                    all.push(buf.clone());
                    all.len() - 1
                };
                let plan = (idx < times).then_some(how);
                let (s, c, inc) = (s.clone(), c.clone(), inc.clone());
                thread::spawn(move || {
                    serve_connection(conn, idx, &buf, framing, plan, &s, &c, &inc);
                });
            }
        });
        Misbehaving {
            rx: TcpReceiver {
                addr,
                framing,
                conns,
                stop,
            },
            incidents,
        }
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

#[allow(clippy::too_many_arguments)]
fn serve_connection(
    mut conn: TcpStream,
    idx: usize,
    buf: &Arc<Mutex<Vec<u8>>>,
    framing: Framing,
    plan: Option<Misbehave>,
    stop: &AtomicBool,
    conns: &Connections,
    incidents: &Mutex<Vec<Incident>>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some(how) = plan {
            let frames = count_frames(framing, &buf.lock().unwrap());
            if frames >= how.after() {
                let at = Instant::now();
                let (collected_after, what) = misbehave(conn, how, idx, buf, stop, conns);
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
            while conns.lock().unwrap().len() <= idx + 1
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

impl Agent {
    /// Starts `cmd` (an `ioc-forwarder run`, possibly behind a wrapper that execs it) as an
    /// agent. The wrapper must `exec`, so that `pid` is the agent's.
    pub fn spawn_command(mut cmd: Command) -> Agent {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ioc-forwarder run");
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
}

// ---------------------------------------------------------------------------------------------
// A private network namespace
// ---------------------------------------------------------------------------------------------

/// A network namespace of its own (needs root or CAP_SYS_ADMIN + CAP_NET_ADMIN, `unshare`,
/// `nsenter` and `ip`), held open by a `sleep` child. Its routing policy puts rule priorities
/// below the `local` table's free, so [`NetNs::blackhole_port`] can make a port vanish: packets
/// to it are dropped without any answer, like a receiver whose host fell off the network.
pub struct NetNs {
    holder: Child,
    path: String,
}

impl NetNs {
    /// Creates the namespace, or says why it cannot.
    pub fn new() -> Result<NetNs, String> {
        let script = "ip link set lo up && ip rule add pref 100 lookup local && ip rule del pref 0 && echo ready && exec sleep 600";
        let mut holder = Command::new("unshare")
            .args(["-n", "sh", "-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let mut line = String::new();
        let _ = BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            let mut err = String::new();
            if let Some(mut e) = holder.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!("unshare -n + ip rule did not work: {}", err.trim()));
        }
        let path = format!("/proc/{}/ns/net", holder.id());
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
        let p = port.to_string();
        self.ip(&[
            "rule",
            "add",
            "pref",
            "10",
            "ipproto",
            "tcp",
            "dport",
            &p,
            "blackhole",
        ]);
    }

    /// Undoes [`NetNs::blackhole_port`].
    pub fn restore_port(&self, port: u16) {
        let p = port.to_string();
        self.ip(&[
            "rule",
            "del",
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

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// A fast fake API for bulk feeds
// ---------------------------------------------------------------------------------------------

/// The list endpoint of the SOC Defenders API for a large, fixed feed: items are serialized
/// once and pages are cut from them, so a 50,000-item feed costs microseconds per page (the
/// general [`super::FakeApi`] filters, sorts and clones the whole feed on every request, about
/// two seconds per page at that size in a debug build). It honours `since` (strictly newer
/// `last_seen`), `offset` and `limit` capped at `max_limit`, requires the standard key, and
/// records each request's query. Items must be newest first, as `ipv4_feed` makes them.
/// The query of every request a [`BulkApi`] answered, in order.
type QueryLog = Arc<Mutex<Vec<Vec<(String, String)>>>>;

pub struct BulkApi {
    pub addr: std::net::SocketAddr,
    requests: QueryLog,
    stop: Arc<AtomicBool>,
}

impl BulkApi {
    pub fn start(feed: &[serde_json::Value], max_limit: usize) -> BulkApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind bulk API");
        let addr = listener.local_addr().unwrap();
        let items: Arc<Vec<(i64, String)>> = Arc::new(
            feed.iter()
                .map(|v| {
                    let t = v["last_seen"]
                        .as_str()
                        .and_then(super::parse_time)
                        .map(|t| t.timestamp())
                        .unwrap_or(0);
                    (t, v.to_string())
                })
                .collect(),
        );
        assert!(
            items.windows(2).all(|w| w[0].0 >= w[1].0),
            "BulkApi wants the feed newest first"
        );
        let requests: QueryLog = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (items, r) = (items.clone(), r.clone());
                thread::spawn(move || {
                    let _ = serve_bulk(conn, addr, &items, max_limit, &r);
                });
            }
        });
        BulkApi {
            addr,
            requests,
            stop,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// The query of every request, in order.
    pub fn requests(&self) -> Vec<Vec<(String, String)>> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for BulkApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_bulk(
    mut conn: TcpStream,
    addr: std::net::SocketAddr,
    items: &[(i64, String)],
    max_limit: usize,
    requests: &Mutex<Vec<Vec<(String, String)>>>,
) -> std::io::Result<()> {
    use std::io::Write;
    let Some((_method, target, headers)) = super::read_head(&mut conn)? else {
        return Ok(());
    };
    let query = target
        .split_once('?')
        .map(|(_, q)| super::parse_query(q))
        .unwrap_or_default();
    requests.lock().unwrap().push(query.clone());
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let now = super::now_secs();
    let authorized = headers.iter().any(|(k, v)| {
        (k == "authorization" && v.strip_prefix("Bearer ") == Some(super::API_KEY))
            || (k == "x-api-key" && v == super::API_KEY)
    });
    let (status, body) = if !authorized {
        (
            "401 Unauthorized",
            super::error_body("invalid_api_key", "Invalid API key"),
        )
    } else {
        let limit = param("limit")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(100)
            .clamp(1, max_limit);
        let offset = param("offset")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let since = param("since")
            .and_then(|v| super::parse_time(&v).or_else(|| super::parse_time(&v.replace(' ', "+"))))
            .map(|t| t.timestamp());
        // Newest first: the items newer than `since` are a prefix.
        let total = match since {
            Some(s) => items.partition_point(|(t, _)| *t > s),
            None => items.len(),
        };
        let page: Vec<&str> = items[..total]
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(_, j)| j.as_str())
            .collect();
        let base = format!("http://{addr}/api/v1/iocs");
        let next = if offset + limit < total {
            format!(
                ",\"next\":\"{base}?limit={limit}&offset={}\"",
                offset + limit
            )
        } else {
            String::new()
        };
        (
            "200 OK",
            format!(
                "{{\"meta\":{{\"total\":{total},\"limit\":{limit},\"offset\":{offset},\"generated_at\":\"{}\",\"feed_version\":\"1.0\",\"source\":\"SOC Defenders\"}},\"data\":[{}],\"links\":{{\"self\":\"{base}?limit={limit}&offset={offset}\"{next}}}}}",
                super::iso(now),
                page.join(",")
            ),
        )
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-RateLimit-Limit: 100000\r\nX-RateLimit-Remaining: 99999\r\nX-RateLimit-Reset: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        now.timestamp() + 60,
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

// ---------------------------------------------------------------------------------------------
// A private mount namespace with a small tmpfs
// ---------------------------------------------------------------------------------------------

/// A mount namespace of its own (needs root or CAP_SYS_ADMIN, `unshare`, `nsenter`) in which a
/// size-limited tmpfs is mounted on `dir`, held open by a `sleep` child. Nothing is mounted in
/// the test's own namespace; the mount disappears with the holder. Programs see it through
/// [`MountNs::command`], the test through [`MountNs::path`] (`/proc/PID/root/...`).
pub struct MountNs {
    holder: Child,
    dir: std::path::PathBuf,
}

impl MountNs {
    pub fn tmpfs(dir: &std::path::Path, size: &str) -> Result<MountNs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let script = "mount -t tmpfs -o size=\"$1\" tmpfs \"$2\" && echo ready && exec sleep 600";
        let mut holder = Command::new("unshare")
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
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run unshare: {e}"))?;
        let mut line = String::new();
        let _ = BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            let mut err = String::new();
            if let Some(mut e) = holder.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(format!(
                "unshare -m + mount tmpfs did not work: {}",
                err.trim()
            ));
        }
        Ok(MountNs {
            holder,
            dir: dir.to_path_buf(),
        })
    }

    /// `inner` run inside the mount namespace.
    pub fn command(&self, inner: &Command) -> Command {
        let mnt = format!("--mount=/proc/{}/ns/mnt", self.holder.id());
        wrap(&["nsenter", &mnt, "--"], inner)
    }

    /// `p` (an absolute path) as the namespace sees it.
    pub fn path(&self, p: &std::path::Path) -> std::path::PathBuf {
        let rel = p.strip_prefix("/").unwrap_or(p);
        std::path::PathBuf::from(format!("/proc/{}/root", self.holder.id())).join(rel)
    }

    /// Changes the tmpfs size (`mount -o remount,size=...`).
    pub fn resize(&self, size: &str) {
        let st = Command::new("nsenter")
            .arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .args(["mount", "-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("run nsenter mount");
        assert!(st.success(), "remount of the tmpfs failed");
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

impl TcpReceiver {
    /// LF-terminated frames on the connections from `first_conn` on (accept order), counted
    /// without copying: cheap enough to poll while tens of megabytes arrive.
    pub fn lf_frames_from(&self, first_conn: usize) -> usize {
        let conns = self.conns.lock().unwrap();
        conns
            .iter()
            .skip(first_conn)
            .map(|b| b.lock().unwrap().iter().filter(|&&c| c == b'\n').count())
            .sum()
    }
}
