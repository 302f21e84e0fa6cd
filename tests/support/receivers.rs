//! TCP syslog receivers on 127.0.0.1 that keep every byte of every connection, in accept
//! order, and split them into frames only when asked: what the agent sent is never lost to
//! the receiver's own parsing.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::parsers::{lf_frames, parse_octet_counted};
use super::process::wait_until;

/// Where one connection's bytes go.
pub(super) type Buffer = Arc<Mutex<Vec<u8>>>;

/// Every connection's bytes, in accept order (shared by the stream receivers).
#[derive(Clone, Default)]
pub(super) struct Connections(Arc<Mutex<Vec<Buffer>>>);

impl Connections {
    /// A buffer for the next accepted connection, and its index in accept order.
    pub fn open(&self) -> (usize, Buffer) {
        let buf = Buffer::default();
        let mut all = self.0.lock().unwrap();
        all.push(buf.clone());
        (all.len() - 1, buf)
    }

    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Every byte received, per connection.
    pub fn raw(&self) -> Vec<Vec<u8>> {
        let all = self.0.lock().unwrap();
        all.iter().map(|b| b.lock().unwrap().clone()).collect()
    }

    /// Complete LF-terminated frames (without the LF) of every connection; a trailing partial
    /// frame of a connection (cut by a crash) is left out.
    pub fn frames_lf(&self) -> Vec<String> {
        let raw = self.raw();
        raw.iter().flat_map(|b| lf_frames(b)).map(utf8).collect()
    }

    /// LF bytes on the connections from `first` on, counted without copying.
    pub fn lf_count_from(&self, first: usize) -> usize {
        let all = self.0.lock().unwrap();
        let lfs = |b: &Buffer| b.lock().unwrap().iter().filter(|&&c| c == b'\n').count();
        all.iter().skip(first).map(lfs).sum()
    }
}

/// How a receiver splits its byte stream into frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Lf,
    OctetCounting,
}

/// Reads a connection at most `chunk` bytes every `pause`.
#[derive(Clone, Copy, Debug)]
pub struct SlowRead {
    pub chunk: usize,
    pub pause: Duration,
}

/// A TCP listener that keeps every byte of every connection, in connection order.
pub struct TcpReceiver {
    pub addr: SocketAddr,
    pub framing: Framing,
    conns: Connections,
    stop: Arc<AtomicBool>,
}

/// Binds 127.0.0.1:0, notes the port and drops the listener, so nothing listens there (yet).
pub fn reserve_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("reserve port");
    l.local_addr().unwrap().port()
}

/// A loopback TCP port where nothing listens for as long as this lives: a socket is bound to
/// it and never listens, so a connection is refused and no other socket (another test's
/// receiver) can take the port meanwhile, as it can one [`reserve_port`] gave back.
pub struct RefusedPort {
    pub port: u16,
    _bound: std::os::fd::OwnedFd,
}

impl RefusedPort {
    pub fn new() -> RefusedPort {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: socket() has no preconditions; the descriptor it returns is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let bound = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_in of `len` bytes for both calls.
        let bound_ok = unsafe {
            libc::bind(fd, std::ptr::addr_of!(addr).cast(), len) == 0
                && libc::getsockname(fd, std::ptr::addr_of_mut!(addr).cast(), &mut len) == 0
        };
        assert!(bound_ok, "bind: {}", std::io::Error::last_os_error());
        RefusedPort {
            port: u16::from_be(addr.sin_port),
            _bound: bound,
        }
    }
}

/// One accepted connection, handed to its own thread.
pub(super) struct Accepted {
    pub conn: TcpStream,
    /// Its place in accept order.
    pub index: usize,
    /// Where its bytes go: `raw()[index]`.
    pub buf: Buffer,
    /// Set when the receiver is dropped.
    pub stop: Arc<AtomicBool>,
    /// Every connection's bytes, this one's included.
    pub conns: Connections,
}

/// Reads the connection to its end (or until the receiver is dropped), optionally slowly.
fn read_all(a: Accepted, slow: Option<SlowRead>) {
    let Accepted {
        mut conn,
        buf,
        stop,
        ..
    } = a;
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let size = slow.map(|s| s.chunk).unwrap_or(64 * 1024);
    let mut chunk = vec![0u8; size];
    loop {
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                continue;
            }
            Err(_) => break,
        }
        if let Some(slow) = slow {
            thread::sleep(slow.pause);
        }
    }
}

impl TcpReceiver {
    pub fn start(framing: Framing) -> TcpReceiver {
        Self::start_with(0, framing, None)
    }

    pub fn start_on(port: u16, framing: Framing) -> TcpReceiver {
        Self::start_with(port, framing, None)
    }

    pub fn start_slow(framing: Framing, slow: SlowRead) -> TcpReceiver {
        Self::start_with(0, framing, Some(slow))
    }

    pub fn start_with(port: u16, framing: Framing, slow: Option<SlowRead>) -> TcpReceiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        Self::accept_with(listener, framing, move |a| read_all(a, slow))
    }

    /// Accepts on `listener` until the receiver is dropped; each connection gets the next
    /// buffer in [`TcpReceiver::raw`] and a thread of its own running `handle`.
    pub(super) fn accept_with(
        listener: TcpListener,
        framing: Framing,
        handle: impl Fn(Accepted) + Send + Sync + 'static,
    ) -> TcpReceiver {
        let addr = listener.local_addr().unwrap();
        let conns = Connections::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        let handle = Arc::new(handle);
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (index, buf) = c.open();
                let accepted = Accepted {
                    conn,
                    index,
                    buf,
                    stop: s.clone(),
                    conns: c.clone(),
                };
                let handle = handle.clone();
                thread::spawn(move || handle(accepted));
            }
        });
        TcpReceiver {
            addr,
            framing,
            conns,
            stop,
        }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.count()
    }

    /// Every byte received, per connection, in accept order.
    pub fn raw(&self) -> Vec<Vec<u8>> {
        self.conns.raw()
    }

    /// Complete LF-terminated frames (without the LF); a trailing partial frame of a
    /// connection (cut by a crash) is left out.
    pub fn frames_lf(&self) -> Vec<String> {
        self.conns.frames_lf()
    }

    /// Complete `LEN SP FRAME` frames; panics on bytes that are not octet-counted framing.
    pub fn frames_octet_counted(&self) -> Vec<String> {
        let mut out = Vec::new();
        for bytes in self.raw() {
            match parse_octet_counted(&bytes) {
                Ok((frames, _partial)) => out.extend(frames.iter().map(|f| utf8(f))),
                Err(e) => panic!("receiver got bytes that are not octet-counted frames: {e}"),
            }
        }
        out
    }

    /// LF-terminated frames on the connections from `first_conn` on (accept order), counted
    /// without copying: cheap enough to poll while tens of megabytes arrive.
    pub fn lf_frames_from(&self, first_conn: usize) -> usize {
        self.conns.lf_count_from(first_conn)
    }

    pub fn frames(&self) -> Vec<String> {
        match self.framing {
            Framing::Lf => self.frames_lf(),
            Framing::OctetCounting => self.frames_octet_counted(),
        }
    }

    pub fn count(&self) -> usize {
        self.frames().len()
    }

    /// Polls until at least `n` frames arrived or `timeout` passed; returns the count seen.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        wait_until(timeout, || self.count() >= n);
        self.count()
    }

    /// Polls until `pred(frames)` holds or `timeout` passed; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        wait_until(timeout, || pred(&self.frames()))
    }
}

impl Drop for TcpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap_or_else(|e| {
        panic!(
            "frame is not valid UTF-8 ({e}): {:?}",
            String::from_utf8_lossy(b)
        )
    })
}
