//! TLS for the end-to-end tests: certificates made at test time with rcgen (written to a
//! tempdir, never committed) and a blocking rustls syslog receiver on 127.0.0.1 that records,
//! per connection, the handshake outcome, the SNI, the client certificate, every byte of
//! application data and how the connection ended (a clean `close_notify` or not).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use super::parsers::parse_octet_counted;
use super::process::wait_until;
use super::receivers::SlowRead;

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A certificate authority made at test time.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// The usual receiver certificate: `CN=receiver.test,O=Example`, DNS SAN `receiver.test`,
    /// IP SAN 127.0.0.1, valid 2020–2049.
    pub fn server_leaf(&self) -> Leaf {
        self.sign(leaf_params("receiver.test", receiver_sans(), false))
    }

    /// Like [`Ca::server_leaf`] but valid only during the year 2000.
    pub fn expired_server_leaf(&self) -> Leaf {
        let mut p = leaf_params("receiver.test", receiver_sans(), false);
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        self.sign(p)
    }

    /// A client certificate `CN=<cn>,O=Example` with the clientAuth EKU.
    pub fn client_leaf(&self, cn: &str) -> Leaf {
        self.client_leaf_for(cn, KeyPair::generate().unwrap())
    }

    /// Like [`Ca::client_leaf`], for a key made elsewhere (another algorithm, an OpenSSL key).
    pub fn client_leaf_for(&self, cn: &str, key: KeyPair) -> Leaf {
        self.sign_key(leaf_params(cn, vec![], true), key)
    }

    /// A certificate from `p` for a new ECDSA P-256 key.
    pub fn sign(&self, p: CertificateParams) -> Leaf {
        self.sign_key(p, KeyPair::generate().unwrap())
    }

    pub fn sign_key(&self, p: CertificateParams, key: KeyPair) -> Leaf {
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf { cert, key }
    }
}

/// An end-entity certificate and its key (ECDSA P-256).
pub struct Leaf {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Leaf {
    /// A self-signed server certificate for `cn` with no SAN at all.
    pub fn self_signed(cn: &str) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = leaf_params(cn, vec![], false).self_signed(&key).unwrap();
        Leaf { cert, key }
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The key as PKCS#8 (`BEGIN PRIVATE KEY`).
    pub fn key_pkcs8_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The key as SEC1 (`BEGIN EC PRIVATE KEY`), cut out of the PKCS#8 form.
    pub fn key_sec1_pem(&self) -> String {
        sec1_pem(&self.key)
    }

    /// The SPKI SHA-256 pin (base64), as `pin_sha256` takes it.
    pub fn spki_pin(&self) -> String {
        sha256_b64(&self.key.public_key_der())
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.der().clone()]
    }

    fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key.serialize_pem().as_bytes()).unwrap()
    }
}

pub fn leaf_params(cn: &str, sans: Vec<SanType>, client: bool) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "Example");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.subject_alt_names = sans;
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2049, 12, 31);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    p
}

pub fn receiver_sans() -> Vec<SanType> {
    vec![
        SanType::DnsName("receiver.test".try_into().unwrap()),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ]
}

/// Standard base64 with padding.
pub fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn sha256_b64(data: &[u8]) -> String {
    b64(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let body = b64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// An EC key as SEC1 (`BEGIN EC PRIVATE KEY`), cut out of its PKCS#8 form (ring's PKCS#8
/// holds the ECPrivateKey without the curve parameters, so neither has them).
pub fn sec1_pem(key: &KeyPair) -> String {
    pem("EC PRIVATE KEY", &pkcs8_to_sec1(&key.serialize_der()))
}

/// One DER TLV of well-formed input: (tag, value, rest).
fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = b[0];
    let (len, hdr) = if b[1] < 0x80 {
        (b[1] as usize, 2)
    } else {
        let n = (b[1] & 0x7f) as usize;
        let len = b[2..2 + n].iter().fold(0usize, |a, x| a << 8 | *x as usize);
        (len, 2 + n)
    };
    (tag, &b[hdr..hdr + len], &b[hdr + len..])
}

/// PKCS#8 PrivateKeyInfo → the SEC1 ECPrivateKey inside its privateKey OCTET STRING.
fn pkcs8_to_sec1(pkcs8: &[u8]) -> Vec<u8> {
    let (_, seq, _) = tlv(pkcs8);
    let (_, _version, rest) = tlv(seq);
    let (_, _alg, rest) = tlv(rest);
    let (tag, sec1, _) = tlv(rest);
    assert_eq!(tag, 0x04, "PKCS#8 privateKey is not an OCTET STRING");
    sec1.to_vec()
}

// ---------------------------------------------------------------------------------------------
// TLS receiver
// ---------------------------------------------------------------------------------------------

/// How a TLS receiver behaves.
#[derive(Default)]
pub struct TlsOpts {
    /// Require a client certificate issued by this CA (PEM).
    pub client_ca: Option<String>,
    /// Offer TLS 1.2 only (default: 1.3 and 1.2).
    pub tls12_only: bool,
    /// Read the TCP stream at most `chunk` bytes every `pause` once the handshake is done.
    pub slow: Option<SlowRead>,
    /// Close this many first connections right after their handshake (close_notify + FIN);
    /// what the client still sends on them is read and recorded.
    pub close_first: usize,
    /// Wait this long before reading the client's second flight (its Certificate and
    /// Finished), like a receiver that checks revocation or is busy: under TLS 1.3 our side
    /// of the handshake is complete long before the receiver judges our certificate.
    pub judge_delay: Option<Duration>,
}

impl TlsOpts {
    /// Requires a client certificate issued by `ca`.
    pub fn mutual(ca: &Ca) -> TlsOpts {
        TlsOpts {
            client_ca: Some(ca.pem()),
            ..TlsOpts::default()
        }
    }

    /// Offers TLS 1.2 only.
    pub fn tls12() -> TlsOpts {
        TlsOpts {
            tls12_only: true,
            ..TlsOpts::default()
        }
    }
}

/// How one connection ended, as the receiver saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Still open.
    Open,
    /// The client sent `close_notify` (rustls read returned `Ok(0)`).
    CloseNotify,
    /// TCP closed without `close_notify` (rustls: unexpected EOF).
    UnexpectedEof,
    /// The handshake failed on the receiver's side (the error as rustls words it).
    HandshakeFailed(String),
    /// The receiver closed it on purpose (`close_first`).
    ClosedByReceiver,
    /// Any other read error (e.g. a reset, or a TLS alert from the client).
    Error(String),
    /// The receiver was dropped.
    Stopped,
}

/// What a TLS receiver recorded about one accepted TCP connection.
#[derive(Clone, Debug)]
pub struct TlsConn {
    pub handshake_done: bool,
    /// The SNI the client sent.
    pub sni: Option<String>,
    /// The client certificate's subject (from rcgen's point of view: CN only).
    pub client_cn: Option<String>,
    pub version: Option<String>,
    /// Application data received.
    pub data: Vec<u8>,
    pub end: End,
    /// When the receiver accepted the TCP connection, and when it saw it end.
    pub accepted_at: SystemTime,
    pub ended_at: Option<SystemTime>,
}

type TlsConns = Arc<Mutex<Vec<Arc<Mutex<TlsConn>>>>>;

/// A blocking rustls syslog receiver (octet-counted frames, as RFC 5425 says).
pub struct TlsReceiver {
    pub addr: SocketAddr,
    conns: TlsConns,
    stop: Arc<AtomicBool>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The receiver side of a handshake: `leaf`'s chain and key, the versions and client
/// authentication `opts` asks for.
pub fn server_config(leaf: &Leaf, opts: &TlsOpts) -> Arc<ServerConfig> {
    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let b = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap();
    let b = match &opts.client_ca {
        None => b.with_no_client_auth(),
        Some(ca_pem) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .unwrap();
            b.with_client_cert_verifier(verifier)
        }
    };
    Arc::new(b.with_single_cert(leaf.chain(), leaf.key_der()).unwrap())
}

/// The TCP stream, optionally read slowly.
struct Sock {
    tcp: TcpStream,
    slow: Option<SlowRead>,
    /// Sleep this long before the first read after a write (see `TlsOpts::judge_delay`).
    delay_after_write: Option<Duration>,
    wrote: bool,
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let (Some(d), true) = (self.delay_after_write, self.wrote) {
            self.wrote = false;
            thread::sleep(d);
        }
        match self.slow {
            Some(s) => {
                thread::sleep(s.pause);
                let n = buf.len().min(s.chunk);
                self.tcp.read(&mut buf[..n])
            }
            None => self.tcp.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wrote = true;
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The subject's CN of a DER certificate: the value after the last `commonName` OID (the
/// issuer's name comes before the subject's).
fn cn_of(der: &[u8]) -> Option<String> {
    const CN_OID: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
    let at = der.windows(CN_OID.len()).rposition(|w| w == CN_OID)? + CN_OID.len();
    let (_tag, value, _) = tlv(der.get(at..)?);
    String::from_utf8(value.to_vec()).ok()
}

fn serve_tls(
    tcp: TcpStream,
    cfg: Arc<ServerConfig>,
    slot: Arc<Mutex<TlsConn>>,
    stop: Arc<AtomicBool>,
    slow: Option<SlowRead>,
    judge_delay: Option<Duration>,
    close_now: bool,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
    let mut conn = ServerConnection::new(cfg).unwrap();
    let mut sock = Sock {
        tcp,
        slow: None,
        delay_after_write: judge_delay,
        wrote: false,
    };
    let set_end = |end: End| {
        let mut s = slot.lock().unwrap();
        s.end = end;
        s.ended_at = Some(SystemTime::now());
    };
    while conn.is_handshaking() {
        match conn.complete_io(&mut sock) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {
                if stop.load(Ordering::SeqCst) {
                    return set_end(End::Stopped);
                }
            }
            Err(e) => {
                // complete_io has already tried to send the alert.
                set_end(End::HandshakeFailed(e.to_string()));
                let _ = sock.tcp.shutdown(Shutdown::Write);
                // Read (and discard) until the client goes, so our close is not a reset.
                let _ = sock.tcp.set_read_timeout(Some(Duration::from_secs(2)));
                let mut sink = [0u8; 4096];
                while let Ok(n) = sock.tcp.read(&mut sink) {
                    if n == 0 {
                        break;
                    }
                }
                return;
            }
        }
    }
    {
        let mut s = slot.lock().unwrap();
        s.handshake_done = true;
        s.sni = conn.server_name().map(str::to_string);
        s.client_cn = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| cn_of(c));
        s.version = conn.protocol_version().map(|v| format!("{v:?}"));
    }
    sock.delay_after_write = None;
    if close_now {
        conn.send_close_notify();
        let _ = conn.write_tls(&mut sock);
        let _ = sock.tcp.shutdown(Shutdown::Write);
    }
    sock.slow = slow;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let r = rustls::Stream::new(&mut conn, &mut sock).read(&mut buf);
        match r {
            Ok(0) if close_now => return set_end(End::ClosedByReceiver),
            Ok(0) => {
                set_end(End::CloseNotify);
                // Answer with our own close_notify, as a polite receiver does.
                conn.send_close_notify();
                let _ = conn.write_tls(&mut sock);
                let _ = sock.tcp.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => slot.lock().unwrap().data.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => {
                if stop.load(Ordering::SeqCst) {
                    return set_end(End::Stopped);
                }
            }
            Err(_) if close_now => return set_end(End::ClosedByReceiver),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return set_end(End::UnexpectedEof)
            }
            Err(e) => return set_end(End::Error(e.to_string())),
        }
    }
}

impl TlsReceiver {
    /// Listens on 127.0.0.1 (any port) with `leaf` as the server certificate.
    pub fn start(leaf: &Leaf, opts: TlsOpts) -> TlsReceiver {
        Self::start_on(0, leaf, opts)
    }

    pub fn start_on(port: u16, leaf: &Leaf, opts: TlsOpts) -> TlsReceiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind TLS receiver");
        let addr = listener.local_addr().unwrap();
        let cfg = server_config(leaf, &opts);
        let conns: TlsConns = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        let (slow, close_first, judge) = (opts.slow, opts.close_first, opts.judge_delay);
        thread::spawn(move || {
            for (i, tcp) in listener.incoming().enumerate() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = tcp else { continue };
                let slot = Arc::new(Mutex::new(TlsConn {
                    handshake_done: false,
                    sni: None,
                    client_cn: None,
                    version: None,
                    data: Vec::new(),
                    end: End::Open,
                    accepted_at: SystemTime::now(),
                    ended_at: None,
                }));
                c.lock().unwrap().push(slot.clone());
                let (cfg, s) = (cfg.clone(), s.clone());
                thread::spawn(move || serve_tls(tcp, cfg, slot, s, slow, judge, i < close_first));
            }
        });
        TlsReceiver { addr, conns, stop }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every accepted TCP connection so far (handshake or not), in accept order.
    pub fn connections(&self) -> Vec<TlsConn> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.lock().unwrap().clone())
            .collect()
    }

    /// TCP connections accepted (= connection attempts by the agent).
    pub fn attempts(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Connections whose handshake completed on the receiver's side.
    pub fn handshakes(&self) -> usize {
        self.connections()
            .iter()
            .filter(|c| c.handshake_done)
            .count()
    }

    /// Complete octet-counted frames of every connection, in order; panics on bytes that are
    /// not octet-counted framing.
    pub fn frames(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in self.connections() {
            match parse_octet_counted(&c.data) {
                Ok((frames, _partial)) => out.extend(
                    frames
                        .into_iter()
                        .map(|f| String::from_utf8(f).expect("frame is not UTF-8")),
                ),
                Err(e) => panic!("TLS receiver got bytes that are not octet-counted frames: {e}"),
            }
        }
        out
    }

    pub fn count(&self) -> usize {
        self.frames().len()
    }

    /// Polls until at least `n` frames arrived or `timeout` passed; returns the count seen.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        wait_until(timeout, || self.count() >= n);
        self.count()
    }

    /// Polls until `pred(connections)` holds or `timeout` passed; returns whether it held.
    pub fn wait_conns(&self, timeout: Duration, pred: impl Fn(&[TlsConn]) -> bool) -> bool {
        wait_until(timeout, || pred(&self.connections()))
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}
