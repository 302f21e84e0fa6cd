//! TLS to the API via rustls, through the real binary: a TLS-terminating front on 127.0.0.1
//! (tokio-rustls, a server certificate made with rcgen at test time) forwards the decrypted
//! bytes both ways to the plain-HTTP fake API, and the agent's `base_url` is
//! `https://127.0.0.1:<front>/api/v1`.
//!
//! * With `[source] ca_file` naming the test CA, `once` delivers every indicator and every API
//!   request travelled over a completed TLS handshake.
//! * Without it (the system's roots do not know the test CA), and with a certificate for
//!   another name (no IP SAN for 127.0.0.1), `once` fails with exit 1, says what is wrong with
//!   the certificate, delivers nothing, and the request (with its key) never reaches the API.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Duration as CDuration;
use rcgen::SanType;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::tls::{leaf_params, Ca, Leaf};
use support::*;

const WAIT: Duration = Duration::from_secs(10);
const FEED_LEN: usize = 25;

/// What the front saw of one accepted TCP connection.
#[derive(Clone, Debug, Default)]
struct FrontConn {
    /// The TLS handshake completed on the front's side.
    handshake_done: bool,
    /// The handshake error as tokio-rustls words it (e.g. the client's alert).
    handshake_error: Option<String>,
    version: Option<String>,
    alpn: Option<String>,
    /// Decrypted bytes forwarded client → API and API → client.
    up_bytes: u64,
    down_bytes: u64,
}

/// A TLS-terminating reverse proxy on 127.0.0.1 in front of a plain TCP upstream.
struct TlsFront {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Arc<Mutex<FrontConn>>>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl TlsFront {
    fn start(leaf: &Leaf, upstream: SocketAddr) -> TlsFront {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.serialize_der()));
        let chain: Vec<CertificateDer<'static>> = vec![leaf.cert.der().clone()];
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));

        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind TLS front");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let conns: Arc<Mutex<Vec<Arc<Mutex<FrontConn>>>>> = Arc::default();
        let c = conns.clone();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let slot = Arc::new(Mutex::new(FrontConn::default()));
                c.lock().unwrap().push(slot.clone());
                let acceptor = acceptor.clone();
                tokio::spawn(async move { front_one(acceptor, tcp, upstream, slot).await });
            }
        });
        TlsFront {
            addr,
            conns,
            rt: Some(rt),
        }
    }

    fn base_url(&self) -> String {
        format!("https://{}/api/v1", self.addr)
    }

    fn connections(&self) -> Vec<FrontConn> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.lock().unwrap().clone())
            .collect()
    }

    fn handshakes(&self) -> usize {
        self.connections()
            .iter()
            .filter(|c| c.handshake_done)
            .count()
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn front_one(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    upstream: SocketAddr,
    slot: Arc<Mutex<FrontConn>>,
) {
    let tls = match tokio::time::timeout(WAIT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            slot.lock().unwrap().handshake_error = Some(e.to_string());
            return;
        }
        Err(_) => {
            slot.lock().unwrap().handshake_error = Some("handshake timed out".to_string());
            return;
        }
    };
    {
        let (_, conn) = tls.get_ref();
        let mut s = slot.lock().unwrap();
        s.handshake_done = true;
        s.version = conn.protocol_version().map(|v| format!("{v:?}"));
        s.alpn = conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned());
    }
    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    // Count what passes each way even when the copy ends in an error (a client that closes
    // without close_notify), so wrap the counters around the streams' halves.
    let (mut tr, mut tw) = tokio::io::split(tls);
    let (mut ur, mut uw) = up.split();
    let s1 = slot.clone();
    let c2u = async move {
        let n = copy_counting(&mut tr, &mut uw, |n| s1.lock().unwrap().up_bytes += n).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut uw).await;
        n
    };
    let s2 = slot.clone();
    let u2c = async move {
        let n = copy_counting(&mut ur, &mut tw, |n| s2.lock().unwrap().down_bytes += n).await;
        // The API closed: our close_notify to the client.
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tw).await;
        n
    };
    let _ = tokio::time::timeout(WAIT, async { tokio::join!(c2u, u2c) }).await;
}

async fn copy_counting<R, W>(r: &mut R, w: &mut W, mut count: impl FnMut(u64)) -> u64
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() || w.flush().await.is_err() {
            return total;
        }
        total += n as u64;
        count(n as u64);
    }
}

/// The API's certificate: DNS SAN `api.test` and IP SAN 127.0.0.1, issued by `ca`.
fn api_leaf(ca: &Ca) -> Leaf {
    ca.sign(leaf_params(
        "api.test",
        vec![
            SanType::DnsName("api.test".try_into().unwrap()),
            SanType::IpAddress(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        ],
        false,
    ))
}

/// A config for `base_url`, one TCP destination, pages of 10 (several requests, each on its
/// own connection: the fake answers `Connection: close`), and `ca_file` when given.
fn config(dir: &Path, base_url: &str, rx: &TcpReceiver, ca_file: Option<&Path>) -> PathBuf {
    let opts = ConfigOpts {
        page_size: 10,
        request_timeout: "3s".to_string(),
        shutdown_timeout: "2s".to_string(),
        source_extra: ca_file
            .map(|p| format!("ca_file = {}", toml_str(p.to_str().unwrap())))
            .unwrap_or_default(),
        ..ConfigOpts::default()
    };
    write_config_with(dir, base_url, &[Dest::tcp("siem1", rx.addr)], &opts)
}

fn feed() -> Vec<serde_json::Value> {
    ipv4_feed(
        FEED_LEN,
        now_secs() - CDuration::minutes(1),
        Duration::from_secs(1),
    )
}

/// `once` with no proxy variables and no `SSL_CERT_*` overrides, so the system's roots are
/// the only other trust and nothing sits between the agent and the front.
fn once(cfg: &Path) -> std::process::Output {
    let mut cmd = command(cfg, &["once"]);
    without_proxies(&mut cmd)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    run_cmd(cmd).0
}

/// What `once` printed and what the front saw, for assertion messages.
fn explain(out: &std::process::Output, front: &TlsFront, api: &FakeApi) -> String {
    format!(
        "{}\nfront connections: {:#?}\nAPI requests:\n{}",
        describe(out),
        front.connections(),
        api.request_summary()
    )
}

#[test]
fn https_api_with_ca_file_delivers_every_indicator_over_tls() {
    let ca = Ca::new("ioc-forwarder test API CA");
    let api = FakeApi::start(feed());
    let front = TlsFront::start(&api_leaf(&ca), api.addr);
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let ca_path = write_file(dir.path(), "ca.pem", &ca.pem());
    let cfg = config(dir.path(), &front.base_url(), &rx, Some(&ca_path));

    let out = once(&cfg);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        explain(&out, &front, &api)
    );
    rx.wait_for(FEED_LEN, WAIT);
    let got = value_counts(&rx.frames());
    let want: std::collections::HashSet<String> = (0..FEED_LEN).map(ipv4_value).collect();
    assert_eq!(
        got.keys()
            .cloned()
            .collect::<std::collections::HashSet<_>>(),
        want,
        "every indicator was delivered\n{}",
        explain(&out, &front, &api)
    );
    assert!(
        got.values().all(|&n| n == 1),
        "each indicator once: {got:?}"
    );

    // The requests went through the front: TLS handshakes completed there, and the API saw
    // them with the front's authority (the agent knows no other address).
    let reqs = api.ioc_requests();
    assert!(
        reqs.len() >= 3,
        "{FEED_LEN} items in pages of 10: {}",
        api.request_summary()
    );
    let conns = front.connections();
    let served: Vec<&FrontConn> = conns
        .iter()
        .filter(|c| c.handshake_done && c.up_bytes > 0 && c.down_bytes > 0)
        .collect();
    assert!(
        !served.is_empty() && served.len() >= reqs.len(),
        "every API request travelled over a completed TLS handshake: {} requests, front: {conns:#?}",
        reqs.len()
    );
    assert!(
        conns.iter().all(|c| c.handshake_error.is_none()),
        "no failed handshake: {conns:#?}"
    );
    for c in &served {
        assert!(
            matches!(c.version.as_deref(), Some("TLSv1_3" | "TLSv1_2")),
            "{c:?}"
        );
    }
    let authority = front.addr.to_string();
    for r in &reqs {
        assert_eq!(r.header("host"), Some(authority.as_str()), "{r:?}");
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {API_KEY}").as_str())
        );
    }
}

#[test]
fn https_api_without_ca_file_fails_on_the_unknown_issuer_and_sends_nothing() {
    let ca = Ca::new("ioc-forwarder test API CA");
    let api = FakeApi::start(feed());
    let front = TlsFront::start(&api_leaf(&ca), api.addr);
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = config(dir.path(), &front.base_url(), &rx, None);

    let out = once(&cfg);
    let stderr = text(&out.stderr);
    let why = explain(&out, &front, &api);
    eprintln!("{why}");
    assert_eq!(out.status.code(), Some(1), "{why}");
    let lower = stderr.to_ascii_lowercase();
    assert!(
        lower.contains("certificate") || lower.contains("unknownissuer"),
        "stderr names the certificate problem:\n{why}"
    );
    assert!(
        !stderr.contains(API_KEY) && !text(&out.stdout).contains(API_KEY),
        "the API key leaked into the output:\n{why}"
    );
    // The agent refused the handshake: it never completed on the front, so no request (and
    // no key) crossed it.
    assert!(!front.connections().is_empty(), "the agent tried: {why}");
    assert_eq!(front.handshakes(), 0, "{why}");
    assert_eq!(api.request_count(), 0, "{why}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        rx.frames().is_empty(),
        "nothing delivered: {:?}",
        rx.frames()
    );
}

#[test]
fn https_api_with_a_certificate_for_another_name_fails_clearly() {
    let ca = Ca::new("ioc-forwarder test API CA");
    let api = FakeApi::start(feed());
    // Issued by the trusted CA, but for other.test only: no IP SAN for 127.0.0.1.
    let leaf = ca.sign(leaf_params(
        "other.test",
        vec![SanType::DnsName("other.test".try_into().unwrap())],
        false,
    ));
    let front = TlsFront::start(&leaf, api.addr);
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let ca_path = write_file(dir.path(), "ca.pem", &ca.pem());
    let cfg = config(dir.path(), &front.base_url(), &rx, Some(&ca_path));

    let out = once(&cfg);
    let stderr = text(&out.stderr);
    let why = explain(&out, &front, &api);
    eprintln!("{why}");
    assert_eq!(out.status.code(), Some(1), "{why}");
    let lower = stderr.to_ascii_lowercase();
    assert!(
        lower.contains("certificate") && (lower.contains("name") || lower.contains("127.0.0.1")),
        "stderr says the certificate does not match the name:\n{why}"
    );
    assert!(!stderr.contains(API_KEY), "the API key leaked:\n{why}");
    assert!(!front.connections().is_empty(), "the agent tried: {why}");
    assert_eq!(front.handshakes(), 0, "{why}");
    assert_eq!(api.request_count(), 0, "{why}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        rx.frames().is_empty(),
        "nothing delivered: {:?}",
        rx.frames()
    );
}
