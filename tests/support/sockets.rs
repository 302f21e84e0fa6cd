//! Datagram and unix-socket receivers for the end-to-end transport tests: a UDP socket on
//! 127.0.0.1, a unix datagram socket (like `/dev/log`) and a unix stream socket (like a local
//! relay), each bound by the test and recording exactly what arrived.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::process::wait_until;
use super::receivers::Connections;

type Datagrams = Arc<Mutex<Vec<Vec<u8>>>>;

/// Receives datagrams until `stop`; each one is kept whole (64 KiB buffer).
fn collect_datagrams(
    mut recv: impl FnMut(&mut [u8]) -> std::io::Result<usize> + Send + 'static,
    stop: Arc<AtomicBool>,
) -> Datagrams {
    let got: Datagrams = Arc::default();
    let g = got.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Ordering::SeqCst) {
            match recv(&mut buf) {
                Ok(n) => g.lock().unwrap().push(buf[..n].to_vec()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
    });
    got
}

/// A UDP syslog receiver on 127.0.0.1: one message per datagram.
pub struct UdpReceiver {
    pub addr: SocketAddr,
    got: Datagrams,
    stop: Arc<AtomicBool>,
}

impl UdpReceiver {
    pub fn start() -> UdpReceiver {
        UdpReceiver::start_on(0)
    }

    /// On a given port of 127.0.0.1 (0 = any free one).
    pub fn start_on(port: u16) -> UdpReceiver {
        let sock = UdpSocket::bind(("127.0.0.1", port)).expect("bind UDP receiver");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let got = collect_datagrams(move |b| sock.recv(b), stop.clone());
        UdpReceiver { addr, got, stop }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Every datagram received, in arrival order.
    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.got.lock().unwrap().clone()
    }

    /// Polls until at least `n` datagrams arrived or `timeout` passed; returns the count.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        wait_until(timeout, || self.got.lock().unwrap().len() >= n);
        self.got.lock().unwrap().len()
    }
}

impl Drop for UdpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A unix datagram socket bound by the test (what `/dev/log` is).
pub struct UnixDgramReceiver {
    pub path: PathBuf,
    got: Datagrams,
    stop: Arc<AtomicBool>,
    /// Set while the receiver must not read (its queue fills up).
    paused: Arc<AtomicBool>,
    reader: Option<thread::JoinHandle<()>>,
}

impl UnixDgramReceiver {
    pub fn start(path: &Path) -> UnixDgramReceiver {
        UnixDgramReceiver::start_with(path, false)
    }

    /// Bound, but not reading until [`UnixDgramReceiver::resume`].
    pub fn start_paused(path: &Path) -> UnixDgramReceiver {
        UnixDgramReceiver::start_with(path, true)
    }

    fn start_with(path: &Path, paused: bool) -> UnixDgramReceiver {
        let sock = UnixDatagram::bind(path).expect("bind unix datagram receiver");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(paused));
        let got: Datagrams = Arc::default();
        let (g, st, p) = (got.clone(), stop.clone(), paused.clone());
        // The socket lives in the thread: it is closed when the thread ends.
        let reader = thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !st.load(Ordering::SeqCst) {
                if p.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
                match sock.recv(&mut buf) {
                    Ok(n) => g.lock().unwrap().push(buf[..n].to_vec()),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        });
        UnixDgramReceiver {
            path: path.to_path_buf(),
            got,
            stop,
            paused,
            reader: Some(reader),
        }
    }

    /// Starts reading (what queued up meanwhile first).
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Closes the socket and removes its path, as a syslog daemon does when it stops (what is
    /// still queued in the socket goes with it). Returns what it received.
    pub fn close(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let _ = std::fs::remove_file(&self.path);
        self.datagrams()
    }

    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.got.lock().unwrap().clone()
    }

    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        wait_until(timeout, || self.got.lock().unwrap().len() >= n);
        self.got.lock().unwrap().len()
    }
}

impl Drop for UnixDgramReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A unix stream socket bound by the test; keeps every byte of every connection.
pub struct UnixStreamReceiver {
    pub path: PathBuf,
    conns: Connections,
    stop: Arc<AtomicBool>,
}

impl UnixStreamReceiver {
    pub fn start(path: &Path) -> UnixStreamReceiver {
        let listener = UnixListener::bind(path).expect("bind unix stream receiver");
        let conns = Connections::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let (_, buf) = c.open();
                let s = s.clone();
                thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
                    let mut chunk = vec![0u8; 64 * 1024];
                    loop {
                        match conn.read(&mut chunk) {
                            Ok(0) => break,
                            Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::WouldBlock | ErrorKind::TimedOut
                                ) =>
                            {
                                if s.load(Ordering::SeqCst) {
                                    break;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                });
            }
        });
        UnixStreamReceiver {
            path: path.to_path_buf(),
            conns,
            stop,
        }
    }

    /// Every byte received, per connection, in accept order.
    pub fn raw(&self) -> Vec<Vec<u8>> {
        self.conns.raw()
    }

    /// Complete LF-terminated frames (without the LF) of every connection.
    pub fn frames_lf(&self) -> Vec<String> {
        self.conns.frames_lf()
    }

    pub fn wait_for_lf(&self, n: usize, timeout: Duration) -> usize {
        wait_until(timeout, || self.frames_lf().len() >= n);
        self.frames_lf().len()
    }
}

impl Drop for UnixStreamReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
    }
}
