//! Receivers that count frames and bytes and throw the bytes away: plain TCP (one thread per
//! connection) and TLS (tokio-rustls on a current-thread runtime of its own). Framing is
//! parsed, not guessed: `lf` counts newlines, `octet-counting` walks `LEN SP FRAME`.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Lf,
    OctetCounting,
}

impl Framing {
    pub fn name(self) -> &'static str {
        match self {
            Framing::Lf => "lf",
            Framing::OctetCounting => "octet-counting",
        }
    }
}

/// Incremental frame counter for one connection.
struct Parser {
    framing: Framing,
    /// Octet counting: the length being read, or the bytes of the frame still to skip.
    len: usize,
    skipping: bool,
    digits: usize,
}

impl Parser {
    fn new(framing: Framing) -> Parser {
        Parser {
            framing,
            len: 0,
            skipping: false,
            digits: 0,
        }
    }

    /// Frames completed in `data`; `Err` on bytes that are not octet-counted framing.
    fn feed(&mut self, data: &[u8]) -> Result<u64, String> {
        match self.framing {
            Framing::Lf => Ok(data.iter().filter(|&&b| b == b'\n').count() as u64),
            Framing::OctetCounting => {
                let mut frames = 0;
                let mut i = 0;
                while i < data.len() {
                    if self.skipping {
                        let take = self.len.min(data.len() - i);
                        self.len -= take;
                        i += take;
                        if self.len == 0 {
                            self.skipping = false;
                            frames += 1;
                        }
                        continue;
                    }
                    match data[i] {
                        b @ b'0'..=b'9' if self.digits < 9 => {
                            self.len = self.len * 10 + (b - b'0') as usize;
                            self.digits += 1;
                        }
                        b' ' if self.digits > 0 && self.len > 0 => {
                            self.skipping = true;
                            self.digits = 0;
                        }
                        b => {
                            return Err(format!("byte {b:#04x} where an octet count was expected"))
                        }
                    }
                    i += 1;
                }
                Ok(frames)
            }
        }
    }
}

/// What a receiver has seen, over all its connections.
#[derive(Default)]
pub struct Counts {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub connections: AtomicU64,
    pub errors: AtomicU64,
    /// Nanoseconds after `epoch` of the last byte received (0 = none yet).
    last_ns: AtomicU64,
    first_ns: AtomicU64,
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub framing: Framing,
    pub counts: Arc<Counts>,
    epoch: Instant,
}

fn record(counts: &Counts, epoch: Instant, parser: &mut Parser, data: &[u8]) {
    let ns = epoch.elapsed().as_nanos() as u64;
    let _ = counts
        .first_ns
        .compare_exchange(0, ns.max(1), Ordering::Relaxed, Ordering::Relaxed);
    counts.last_ns.store(ns, Ordering::Relaxed);
    counts.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
    match parser.feed(data) {
        Ok(f) => {
            counts.frames.fetch_add(f, Ordering::Relaxed);
        }
        Err(e) => {
            if counts.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("receiver: framing error: {e}");
            }
        }
    }
}

impl Receiver {
    /// A plain TCP receiver on 127.0.0.1.
    pub fn tcp(framing: Framing) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let epoch = Instant::now();
        let c = counts.clone();
        thread::Builder::new()
            .name("recv-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(mut conn) = conn else { continue };
                    let c = c.clone();
                    c.connections.fetch_add(1, Ordering::Relaxed);
                    thread::spawn(move || {
                        let mut parser = Parser::new(framing);
                        let mut buf = vec![0u8; 256 * 1024];
                        loop {
                            match conn.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => record(&c, epoch, &mut parser, &buf[..n]),
                            }
                        }
                    });
                }
            })
            .unwrap();
        Receiver {
            addr,
            framing,
            counts,
            epoch,
        }
    }

    /// A TLS receiver on 127.0.0.1 serving `chain`/`key`.
    pub fn tls(
        framing: Framing,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Receiver {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind TLS receiver");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let epoch = Instant::now();
        let c = counts.clone();
        thread::Builder::new()
            .name("recv-tls".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    use tokio::io::AsyncReadExt;
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        let (acceptor, c) = (acceptor.clone(), c.clone());
                        c.connections.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(async move {
                            let Ok(mut tls) = acceptor.accept(stream).await else {
                                c.errors.fetch_add(1, Ordering::Relaxed);
                                return;
                            };
                            let mut parser = Parser::new(framing);
                            let mut buf = vec![0u8; 256 * 1024];
                            loop {
                                match tls.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => record(&c, epoch, &mut parser, &buf[..n]),
                                }
                            }
                        });
                    }
                });
            })
            .unwrap();
        Receiver {
            addr,
            framing,
            counts,
            epoch,
        }
    }

    pub fn frames(&self) -> u64 {
        self.counts.frames.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.counts.bytes.load(Ordering::Relaxed)
    }

    /// When the last byte arrived, if any did.
    pub fn last_byte_at(&self) -> Option<Instant> {
        match self.counts.last_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.epoch + Duration::from_nanos(ns)),
        }
    }

    /// Waits until `n` frames arrived; gives up when nothing arrived for `stall`. Returns the
    /// count seen.
    pub fn wait_for(&self, n: u64, stall: Duration) -> u64 {
        let mut last = (self.frames(), Instant::now());
        loop {
            let f = self.frames();
            if f >= n {
                return f;
            }
            if f != last.0 {
                last = (f, Instant::now());
            } else if last.1.elapsed() >= stall {
                return f;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until the count stops changing for `quiet` (late duplicates would show up here).
    pub fn settle(&self, quiet: Duration) -> u64 {
        let mut last = (self.frames(), Instant::now());
        loop {
            thread::sleep(Duration::from_millis(20));
            let f = self.frames();
            if f != last.0 {
                last = (f, Instant::now());
            } else if last.1.elapsed() >= quiet {
                return f;
            }
        }
    }
}

/// Sanity check of the octet-counting parser across arbitrary splits (run once at start).
pub fn self_check() {
    let stream = b"5 hello11 hello world3 abc";
    for cut in 0..stream.len() {
        let mut p = Parser::new(Framing::OctetCounting);
        let a = p.feed(&stream[..cut]).unwrap();
        let b = p.feed(&stream[cut..]).unwrap();
        assert_eq!(a + b, 3, "cut at {cut}");
    }
    let mut p = Parser::new(Framing::OctetCounting);
    assert!(p.feed(b"<14>1 x").is_err());
}
