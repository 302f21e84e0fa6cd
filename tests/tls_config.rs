//! The TLS client configuration (`ioc_forwarder::deliver::tls`) against real tokio-rustls
//! servers on 127.0.0.1, with the certificates of `support::tls` (made at test time by rcgen,
//! PEMs in a tempdir).
//!
//! RSA keys (PKCS#8 and PKCS#1) and an OpenSSL-made SEC1 key need the `openssl` command (rcgen
//! with the ring backend cannot generate RSA keys); those tests print a notice and pass when it
//! is missing.

mod support;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{AlertDescription, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use ioc_forwarder::config::{DestinationConfig, Framing, Oversize, Protocol, SyslogFormat};
use ioc_forwarder::deliver::tls::{
    cert_info, classify_error, client_config, describe_error, files_fingerprint, peer_info,
    server_name, spki_pin, TlsError, TlsFailure,
};
use support::tls::{leaf_params, sec1_pem, server_config, sha256_b64, Ca, Leaf, TlsOpts};
use support::{tempdir, write_file};

const GUARD: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Destinations, servers, clients

fn dest(address: &str) -> DestinationConfig {
    DestinationConfig {
        name: "siem".into(),
        protocol: Protocol::Tls,
        address: vec![address.to_string()],
        framing: Framing::OctetCounting,
        format: SyslogFormat::Rfc5424,
        max_message_size: 8192,
        oversize: Oversize::Truncate,
        ca_file: None,
        server_name: None,
        client_cert: None,
        client_key: None,
        tls_verify: true,
        pin_sha256: vec![],
        connect_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        lifecycle_events: true,
    }
}

/// What the test server saw on its one connection.
#[derive(Debug)]
struct Served {
    /// Bytes received until the client closed.
    data: Vec<u8>,
    /// The SNI the client sent.
    sni: Option<String>,
    /// The subject of the client's certificate, if it sent one.
    client_subject: Option<String>,
}

/// Accepts one connection; the handshake error is the server-side view of a failure.
async fn serve_once(cfg: Arc<ServerConfig>) -> (SocketAddr, JoinHandle<Result<Served, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(cfg)
            .accept(tcp)
            .await
            .map_err(|e| e.to_string())?;
        let conn = tls.get_ref().1;
        let sni = conn.server_name().map(str::to_string);
        let client_subject = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| cert_info(c).subject);
        let mut data = Vec::new();
        tls.read_to_end(&mut data)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tls.shutdown().await;
        Ok(Served {
            data,
            sni,
            client_subject,
        })
    });
    (addr, task)
}

type Client = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects to `addr` with the configuration and name our module derives from `d`.
async fn connect(d: &DestinationConfig, addr: SocketAddr) -> io::Result<Client> {
    let cfg = client_config(d).expect("client config");
    let name = server_name(d, &d.address[0]).expect("server name");
    let tcp = TcpStream::connect(addr).await?;
    tokio::time::timeout(GUARD, TlsConnector::from(cfg).connect(name, tcp))
        .await
        .expect("handshake hung")
}

/// Handshake, send one line, close with close_notify; returns what the server got.
async fn deliver(d: &DestinationConfig, server: Arc<ServerConfig>) -> Served {
    let (addr, task) = serve_once(server).await;
    let mut c = connect(d, addr).await.unwrap_or_else(|e| {
        panic!("handshake failed: {}", describe_error(&e));
    });
    c.write_all(b"<14>1 hello\n").await.unwrap();
    c.shutdown().await.unwrap();
    let served = tokio::time::timeout(GUARD, task)
        .await
        .expect("server hung")
        .unwrap()
        .expect("server side failed");
    assert_eq!(served.data, b"<14>1 hello\n");
    served
}

/// Expects the handshake to fail; returns the client's error and the server's view.
async fn refused(d: &DestinationConfig, server: Arc<ServerConfig>) -> (io::Error, String) {
    let (addr, task) = serve_once(server).await;
    let err = match connect(d, addr).await {
        Ok(_) => panic!("handshake unexpectedly succeeded"),
        Err(e) => e,
    };
    let server_side = tokio::time::timeout(GUARD, task)
        .await
        .expect("server hung")
        .unwrap()
        .expect_err("server side unexpectedly succeeded");
    eprintln!("client: {} | server: {server_side}", describe_error(&err));
    (err, server_side)
}

// ---------------------------------------------------------------------------------------------
// Verification

#[tokio::test]
async fn handshake_ok_with_ca_file_and_sni_sent() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let mut d = dest("receiver.test:6514");
    d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));
    let served = deliver(&d, server_config(&leaf, &TlsOpts::default())).await;
    assert_eq!(served.sni.as_deref(), Some("receiver.test"));
    assert_eq!(served.client_subject, None);
}

#[tokio::test]
async fn ca_file_with_several_certificates() {
    let dir = tempdir();
    let other = Ca::new("Other CA");
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let mut d = dest("receiver.test:6514");
    let bundle = format!("{}{}", other.pem(), ca.pem());
    d.ca_file = Some(write_file(dir.path(), "bundle.pem", &bundle));
    deliver(&d, server_config(&leaf, &TlsOpts::default())).await;
}

#[tokio::test]
async fn unknown_ca_fails_clearly() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let other = Ca::new("Other CA");
    let leaf = ca.server_leaf();
    let mut d = dest("receiver.test:6514");
    d.ca_file = Some(write_file(dir.path(), "other.pem", &other.pem()));
    let (err, server_side) = refused(&d, server_config(&leaf, &TlsOpts::default())).await;
    assert_eq!(classify_error(&err), TlsFailure::UnknownIssuer);
    let why = describe_error(&err);
    assert!(why.starts_with("unknown CA"), "{why}");
    assert!(server_side.contains("UnknownCA"), "{server_side}");
}

#[tokio::test]
async fn name_mismatch_fails_clearly() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let mut d = dest("127.0.0.1:6514");
    d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));
    d.server_name = Some("other.test".into());
    let (err, _) = refused(&d, server_config(&leaf, &TlsOpts::default())).await;
    assert_eq!(classify_error(&err), TlsFailure::NameMismatch);
    let why = describe_error(&err);
    assert!(why.starts_with("name mismatch"), "{why}");
    assert!(why.contains("other.test"), "{why}");
    assert!(why.contains("receiver.test, 127.0.0.1"), "{why}");
}

#[tokio::test]
async fn ip_literal_verifies_against_ip_san_and_sends_no_sni() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let mut d = dest("127.0.0.1:6514");
    d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));
    assert!(matches!(
        server_name(&d, "127.0.0.1:6514").unwrap(),
        ServerName::IpAddress(_)
    ));
    let served = deliver(&d, server_config(&leaf, &TlsOpts::default())).await;
    assert_eq!(
        served.sni, None,
        "rustls must not send an IP literal as SNI"
    );
}

#[tokio::test]
async fn ip_literal_only_in_common_name_is_not_enough() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.sign(leaf_params(
        "127.0.0.1",
        vec![SanType::DnsName("receiver.test".try_into().unwrap())],
        false,
    ));
    let mut d = dest("127.0.0.1:6514");
    d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));
    let (err, _) = refused(&d, server_config(&leaf, &TlsOpts::default())).await;
    assert_eq!(classify_error(&err), TlsFailure::NameMismatch);
}

#[tokio::test]
async fn expired_server_certificate_fails_as_expired() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.expired_server_leaf();
    let mut d = dest("receiver.test:6514");
    d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));
    let (err, _) = refused(&d, server_config(&leaf, &TlsOpts::default())).await;
    assert_eq!(classify_error(&err), TlsFailure::Expired);
    let why = describe_error(&err);
    assert!(why.starts_with("expired"), "{why}");
    assert!(why.contains("2001-01-01T00:00:00Z"), "{why}");
}

#[tokio::test]
async fn a_matching_pin_among_backup_pins_passes_with_or_without_the_sha256_prefix() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let pin = leaf.spki_pin();
    assert_eq!(spki_pin(leaf.cert.der()).as_deref(), Some(pin.as_str()));
    let mut d = dest("receiver.test:6514");
    d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));
    // A wrong pin next to the right one is fine (backup pins); the curl prefix is accepted.
    d.pin_sha256 = vec![sha256_b64(b"backup key"), format!("sha256//{pin}")];
    deliver(&d, server_config(&leaf, &TlsOpts::default())).await;
}

#[tokio::test]
async fn wrong_pin_fails_as_pin_mismatch() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let wrong = sha256_b64(b"some other key");
    let mut d = dest("receiver.test:6514");
    d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));
    d.pin_sha256 = vec![wrong.clone()];
    let (err, _) = refused(&d, server_config(&leaf, &TlsOpts::default())).await;
    assert_eq!(classify_error(&err), TlsFailure::PinMismatch);
    let why = describe_error(&err);
    let actual = leaf.spki_pin();
    assert!(why.starts_with("pin mismatch"), "{why}");
    assert!(why.contains(&actual), "names the server's pin: {why}");
    assert!(why.contains(&wrong), "names the configured pin: {why}");
}

#[tokio::test]
async fn pin_is_checked_on_top_of_the_chain() {
    // The right pin does not make an untrusted chain acceptable.
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let mut d = dest("receiver.test:6514");
    d.ca_file = Some(write_file(
        dir.path(),
        "other.pem",
        &Ca::new("Other CA").pem(),
    ));
    d.pin_sha256 = vec![leaf.spki_pin()];
    let (err, _) = refused(&d, server_config(&leaf, &TlsOpts::default())).await;
    assert_eq!(classify_error(&err), TlsFailure::UnknownIssuer);
}

#[tokio::test]
async fn tls_verify_false_connects_to_self_signed() {
    let leaf = Leaf::self_signed("self.test");
    let mut d = dest("whatever.test:6514");
    d.tls_verify = false;
    deliver(&d, server_config(&leaf, &TlsOpts::default())).await;
}

#[tokio::test]
async fn tls_verify_false_still_checks_pins() {
    let leaf = Leaf::self_signed("self.test");
    let mut d = dest("whatever.test:6514");
    d.tls_verify = false;
    d.pin_sha256 = vec![leaf.spki_pin()];
    deliver(&d, server_config(&leaf, &TlsOpts::default())).await;
    d.pin_sha256 = vec![sha256_b64(b"not it")];
    let (err, _) = refused(&d, server_config(&leaf, &TlsOpts::default())).await;
    assert_eq!(classify_error(&err), TlsFailure::PinMismatch);
}

#[tokio::test]
async fn renewed_ca_file_is_seen_and_used() {
    let dir = tempdir();
    let old = Ca::new("Old CA");
    let new = Ca::new("New CA");
    let mut d = dest("receiver.test:6514");
    let ca_path = write_file(dir.path(), "ca.pem", &old.pem());
    d.ca_file = Some(ca_path.clone());
    let before = files_fingerprint(&d).unwrap();
    let leaf = new.server_leaf();
    let (err, _) = refused(&d, server_config(&leaf, &TlsOpts::default())).await;
    assert_eq!(classify_error(&err), TlsFailure::UnknownIssuer);
    // Renewal the way most tools do it: write a new file, rename it over the old one.
    let tmp = write_file(dir.path(), "ca.pem.tmp", &new.pem());
    std::fs::rename(&tmp, &ca_path).unwrap();
    assert_ne!(files_fingerprint(&d).unwrap(), before);
    deliver(&d, server_config(&leaf, &TlsOpts::default())).await;
}

// ---------------------------------------------------------------------------------------------
// Mutual TLS

async fn mutual_tls_with_key_file(key_pem: &str, client_key: KeyPair) {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let client = ca.client_leaf_for("client.test", client_key);
    let mut d = dest("receiver.test:6514");
    d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));
    d.client_cert = Some(write_file(dir.path(), "client.pem", &client.cert.pem()));
    d.client_key = Some(write_file(dir.path(), "client.key", key_pem));
    let served = deliver(&d, server_config(&leaf, &TlsOpts::mutual(&ca))).await;
    assert_eq!(
        served.client_subject.as_deref(),
        Some("CN=client.test,O=Example")
    );
}

#[tokio::test]
async fn mutual_tls_pkcs8_ecdsa_p256() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let pem = key.serialize_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    mutual_tls_with_key_file(&pem, key).await;
}

#[tokio::test]
async fn mutual_tls_pkcs8_ecdsa_p384() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let pem = key.serialize_pem();
    mutual_tls_with_key_file(&pem, key).await;
}

#[tokio::test]
async fn mutual_tls_pkcs8_ed25519() {
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let pem = key.serialize_pem();
    mutual_tls_with_key_file(&pem, key).await;
}

#[tokio::test]
async fn mutual_tls_sec1_ec_key() {
    // ring's PKCS#8 holds an ECPrivateKey without the curve parameters; SEC1 as written here.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let pem = sec1_pem(&key);
    assert!(matches!(
        PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap(),
        PrivateKeyDer::Sec1(_)
    ));
    mutual_tls_with_key_file(&pem, key).await;
}

#[tokio::test]
async fn mutual_tls_key_and_chain_in_one_file() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let client = ca.client_leaf("client.test");
    let combined = format!(
        "{}{}{}",
        client.cert.pem(),
        ca.pem(),
        client.key.serialize_pem()
    );
    let both = write_file(dir.path(), "client-all.pem", &combined);
    let mut d = dest("receiver.test:6514");
    d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));
    d.client_cert = Some(both.clone());
    d.client_key = Some(both);
    let served = deliver(&d, server_config(&leaf, &TlsOpts::mutual(&ca))).await;
    assert_eq!(
        served.client_subject.as_deref(),
        Some("CN=client.test,O=Example")
    );
}

fn openssl(args: &[&str]) -> Option<()> {
    let out = Command::new("openssl").args(args).output().ok()?;
    if !out.status.success() {
        eprintln!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(())
}

fn have_openssl() -> bool {
    let ok = openssl(&["version"]).is_some();
    if !ok {
        eprintln!("NOTICE: the openssl command is missing; RSA / OpenSSL SEC1 key tests skipped");
    }
    ok
}

/// A key from `openssl GENERATE… -out first.pem`, converted by
/// `openssl CONVERT… -in first.pem -out second.pem`: both PEMs.
fn openssl_key(generate: &[&str], convert: &[&str]) -> (String, String) {
    let dir = tempdir();
    let first = dir.path().join("first.pem");
    let second = dir.path().join("second.pem");
    let (first_path, second_path) = (first.to_str().unwrap(), second.to_str().unwrap());
    openssl(&[generate, &["-out", first_path]].concat()).unwrap();
    openssl(&[convert, &["-in", first_path, "-out", second_path]].concat()).unwrap();
    let read = |p| std::fs::read_to_string(p).unwrap();
    (read(&first), read(&second))
}

#[tokio::test]
async fn mutual_tls_rsa_pkcs8_and_pkcs1() {
    if !have_openssl() {
        return;
    }
    let (pkcs8, pkcs1) = openssl_key(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ],
        &["rsa", "-traditional"],
    );
    assert!(pkcs8.contains("BEGIN PRIVATE KEY"));
    assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"));
    let signer = || KeyPair::from_pem_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).unwrap();
    mutual_tls_with_key_file(&pkcs8, signer()).await;
    mutual_tls_with_key_file(&pkcs1, signer()).await;
}

#[tokio::test]
async fn mutual_tls_openssl_sec1_key_with_curve_parameters() {
    if !have_openssl() {
        return;
    }
    let (sec1_pem, pkcs8) = openssl_key(
        &["ecparam", "-name", "prime256v1", "-genkey", "-noout"],
        &["pkcs8", "-topk8", "-nocrypt"],
    );
    assert!(sec1_pem.contains("BEGIN EC PRIVATE KEY"));
    let key = KeyPair::from_pem(&pkcs8).unwrap();
    mutual_tls_with_key_file(&sec1_pem, key).await;
}

/// TLS 1.3: the client's handshake is complete when it has *sent* its (empty) Certificate and
/// Finished; the server judges them afterwards. So `connect` succeeds, a write succeeds (it
/// only fills the socket buffer), and the refusal arrives as an alert on the first read.
#[tokio::test]
async fn tls13_missing_client_cert_surfaces_as_alert_on_first_read() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let mut d = dest("receiver.test:6514");
    d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));

    // A server that, like a patient receiver, keeps the TCP connection open after refusing
    // until the client closes (so the alert cannot be overtaken by a reset).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = server_config(&leaf, &TlsOpts::mutual(&ca));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match TlsAcceptor::from(cfg).accept(tcp).into_fallible().await {
            Ok(_) => panic!("server accepted a client without a certificate"),
            Err((e, mut tcp)) => {
                let mut sink = Vec::new();
                let _ = tcp.read_to_end(&mut sink).await;
                e.to_string()
            }
        }
    });

    let mut c = connect(&d, addr)
        .await
        .expect("TLS 1.3 handshake completes on our side");
    let info = peer_info(c.get_ref().1);
    assert_eq!(info.version, "TLSv1.3");
    c.write_all(b"<14>1 lost\n")
        .await
        .expect("the write is buffered, not refused");
    c.flush().await.unwrap();
    let mut buf = [0u8; 64];
    let err = tokio::time::timeout(GUARD, c.read(&mut buf))
        .await
        .expect("read hung")
        .expect_err("the read must fail with the peer's alert");
    assert_eq!(
        classify_error(&err),
        TlsFailure::PeerAlert(AlertDescription::CertificateRequired)
    );
    let why = describe_error(&err);
    assert!(
        why.starts_with("peer sent alert: certificate required"),
        "{why}"
    );
    // Further writes fail too.
    assert!(c.write_all(b"more\n").await.is_err());
    drop(c);
    let server_side = tokio::time::timeout(GUARD, server).await.unwrap().unwrap();
    assert!(server_side.contains("no certificates"), "{server_side}");
}

/// The same refusal from a server that closes its socket right after the alert (OpenSSL-style
/// receivers do). The first read still fails; depending on timing it sees the alert or, if our
/// early data made the server's kernel answer with a reset, a connection reset.
#[tokio::test]
async fn tls13_missing_client_cert_with_abrupt_server_still_fails_the_read() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let mut d = dest("receiver.test:6514");
    d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));
    for _ in 0..5 {
        let (addr, task) = serve_once(server_config(&leaf, &TlsOpts::mutual(&ca))).await;
        let mut c = connect(&d, addr)
            .await
            .expect("handshake completes on our side");
        let _ = c.write_all(b"<14>1 lost\n").await;
        let _ = c.flush().await;
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(GUARD, c.read(&mut buf))
            .await
            .expect("read hung");
        let err = match r {
            Ok(n) => panic!("read returned Ok({n}) instead of failing"),
            Err(e) => e,
        };
        let kind = classify_error(&err);
        assert!(
            kind == TlsFailure::PeerAlert(AlertDescription::CertificateRequired)
                || kind == TlsFailure::PeerClosed,
            "{kind:?}: {}",
            describe_error(&err)
        );
        eprintln!(
            "abrupt server: first read failed with {}",
            describe_error(&err)
        );
        assert!(task.await.unwrap().is_err());
    }
}

/// With TLS 1.2 the server asks for the certificate before its Finished, so the refusal fails
/// the handshake itself.
#[tokio::test]
async fn tls12_missing_client_cert_fails_the_handshake() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let mut d = dest("receiver.test:6514");
    d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));
    let (err, _) = refused(
        &d,
        server_config(
            &leaf,
            &TlsOpts {
                tls12_only: true,
                ..TlsOpts::mutual(&ca)
            },
        ),
    )
    .await;
    assert_eq!(
        classify_error(&err),
        TlsFailure::PeerAlert(AlertDescription::CertificateRequired)
    );
}

#[tokio::test]
async fn client_cert_from_untrusted_ca_is_refused_by_alert() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let rogue = Ca::new("Other CA");
    let leaf = ca.server_leaf();
    let client = rogue.client_leaf("client.test");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = server_config(&leaf, &TlsOpts::mutual(&ca));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if let Err((_, mut tcp)) = TlsAcceptor::from(cfg).accept(tcp).into_fallible().await {
            let _ = tcp.read_to_end(&mut Vec::new()).await;
        }
    });
    let mut d = dest("receiver.test:6514");
    d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));
    d.client_cert = Some(write_file(dir.path(), "client.pem", &client.cert.pem()));
    d.client_key = Some(write_file(
        dir.path(),
        "client.key",
        &client.key.serialize_pem(),
    ));
    let mut c = connect(&d, addr).await.unwrap();
    let _ = c.write_all(b"x\n").await;
    let err = c.read(&mut [0u8; 16]).await.unwrap_err();
    assert_eq!(
        classify_error(&err),
        TlsFailure::PeerAlert(AlertDescription::UnknownCA)
    );
    assert!(describe_error(&err).contains("does not trust the CA of our client certificate"));
    drop(c);
    server.await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Peer information

#[tokio::test]
async fn peer_info_reports_version_cipher_subject_and_expiry() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let pin = leaf.spki_pin();
    for (versions, version, prefix) in [
        (TlsOpts::default(), "TLSv1.3", "TLS13_"),
        (TlsOpts::tls12(), "TLSv1.2", "TLS_ECDHE_ECDSA_"),
    ] {
        let mut d = dest("receiver.test:6514");
        d.ca_file = Some(write_file(dir.path(), "ca.pem", &ca.pem()));
        let (addr, task) = serve_once(server_config(&leaf, &versions)).await;
        let mut c = connect(&d, addr).await.unwrap();
        let info = peer_info(c.get_ref().1);
        assert_eq!(info.version, version);
        assert!(info.cipher.starts_with(prefix), "{}", info.cipher);
        assert_eq!(info.subject, "CN=receiver.test,O=Example");
        assert_eq!(
            info.not_after,
            Some(Utc.with_ymd_and_hms(2049, 12, 31, 0, 0, 0).unwrap())
        );
        assert_eq!(info.spki_pin.as_deref(), Some(pin.as_str()));
        c.shutdown().await.unwrap();
        task.await.unwrap().unwrap();
    }
}

#[test]
fn cert_info_reads_generalized_time_and_odd_subjects() {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CountryName, "DE");
    p.distinguished_name
        .push(DnType::CommonName, "Müller, \"Syslog\" + co");
    p.not_after = rcgen::date_time_ymd(2051, 5, 17);
    let cert = p.self_signed(&key).unwrap();
    let info = cert_info(cert.der());
    assert_eq!(
        info.not_after,
        Some(Utc.with_ymd_and_hms(2051, 5, 17, 0, 0, 0).unwrap())
    );
    assert_eq!(info.subject, "CN=Müller\\, \\\"Syslog\\\" \\+ co,C=DE");

    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    let empty = p.self_signed(&key).unwrap();
    assert_eq!(cert_info(empty.der()).subject, "(empty)");
}

#[test]
fn cert_info_never_panics_on_malformed_input() {
    let ca = Ca::new("Test CA");
    let der = ca.server_leaf().cert.der().to_vec();
    // Every truncation.
    for n in 0..der.len() {
        let info = cert_info(&der[..n]);
        assert_eq!((info.subject.as_str(), info.not_after), ("?", None), "{n}");
    }
    // Every single-byte corruption (three patterns) of the header part.
    for i in 0..der.len().min(400) {
        for x in [0x00u8, 0xff, 0x80] {
            let mut bad = der.clone();
            bad[i] = x;
            let _ = cert_info(&bad);
        }
    }
    // Pseudo-random garbage, including garbage behind a plausible SEQUENCE header.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        let len = (state % 300) as usize;
        let mut v = Vec::with_capacity(len + 4);
        if state % 3 == 0 {
            v.extend_from_slice(&[0x30, 0x82, 0x01, 0x00, 0x30, 0x81, 0xf0]);
        }
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            v.push(state as u8);
        }
        let _ = cert_info(&v);
    }
    assert_eq!(cert_info(&[]).subject, "?");
    assert_eq!(cert_info(b"not a certificate").not_after, None);
}

// ---------------------------------------------------------------------------------------------
// Configuration errors, names, fingerprints

#[test]
fn system_roots_load_or_fail_clearly() {
    // No ca_file: the system's trust store. Whether this machine has one is not ours to know;
    // either it loads or the error says what to do.
    match client_config(&dest("receiver.test:6514")) {
        Ok(_) => {}
        Err(e @ TlsError::NoSystemRoots { .. }) => assert!(e.to_string().contains("set ca_file")),
        Err(e) => panic!("{e}"),
    }
}

fn config_error(d: &DestinationConfig) -> TlsError {
    match client_config(d) {
        Ok(_) => panic!("client_config unexpectedly succeeded"),
        Err(e) => {
            eprintln!("config error: {e}");
            e
        }
    }
}

#[test]
fn config_errors_name_the_file_and_the_reason_but_no_key_material() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let client = ca.client_leaf("client.test");
    let good_ca = write_file(dir.path(), "ca.pem", &ca.pem());
    let mut d = dest("receiver.test:6514");

    d.ca_file = Some(dir.path().join("missing.pem"));
    let e = config_error(&d).to_string();
    assert!(e.starts_with("cannot read ca_file "), "{e}");
    assert!(e.contains("missing.pem"), "{e}");

    d.ca_file = Some(write_file(dir.path(), "junk.pem", "not pem at all\n"));
    let e = config_error(&d).to_string();
    assert!(
        e.contains("ca_file") && e.contains("junk.pem") && e.contains("no PEM certificate"),
        "{e}"
    );

    d.ca_file = Some(write_file(
        dir.path(),
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
    ));
    let e = config_error(&d).to_string();
    assert!(e.contains("broken.pem") && e.contains("no END line"), "{e}");

    d.ca_file = Some(good_ca.clone());
    d.client_cert = Some(write_file(dir.path(), "client.pem", &client.cert.pem()));
    assert!(matches!(
        config_error(&d),
        TlsError::HalfClientAuth("client_cert")
    ));

    // A key file holding only a certificate.
    d.client_key = Some(write_file(dir.path(), "nokey.pem", &client.cert.pem()));
    let e = config_error(&d).to_string();
    assert!(
        e.contains("client_key") && e.contains("nokey.pem") && e.contains("no PEM private key"),
        "{e}"
    );

    // A key that does not belong to the certificate.
    let other_key = KeyPair::generate().unwrap().serialize_pem();
    d.client_key = Some(write_file(dir.path(), "other.key", &other_key));
    let e = config_error(&d).to_string();
    assert!(e.contains("client.pem") && e.contains("other.key"), "{e}");
    assert!(e.contains("does not belong to the certificate"), "{e}");
    assert_key_not_in(&e, &other_key);

    // Corrupt base64 inside the key: the message must not echo it.
    let mut corrupt = client.key.serialize_pem();
    corrupt.insert_str(40, "!!secret-ish!!");
    d.client_key = Some(write_file(dir.path(), "corrupt.key", &corrupt));
    let e = config_error(&d).to_string();
    assert!(e.contains("corrupt.key"), "{e}");
    assert!(!e.contains("secret-ish"), "{e}");
    assert_key_not_in(&e, &corrupt);

    // Encrypted keys are named as such.
    d.client_key = Some(write_file(
        dir.path(),
        "enc.key",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
    ));
    let e = config_error(&d).to_string();
    assert!(e.contains("enc.key") && e.contains("encrypted"), "{e}");

    d.client_cert = None;
    d.client_key = None;
    d.pin_sha256 = vec!["c2hvcnQ=".into()];
    let e = config_error(&d).to_string();
    assert!(e.starts_with("pin_sha256[0] \"c2hvcnQ=\""), "{e}");
}

fn assert_key_not_in(message: &str, key_pem: &str) {
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        for chunk in line.as_bytes().chunks(16) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            assert!(
                chunk.len() < 16 || !message.contains(chunk),
                "key material in the message: {message}"
            );
        }
    }
}

#[test]
fn server_names_from_config_or_address() {
    let d = dest("receiver.test:6514");
    let dns = |n: ServerName<'static>| match n {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        other => panic!("{other:?}"),
    };
    let ip = |n: ServerName<'static>| match n {
        ServerName::IpAddress(a) => IpAddr::from(a).to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        dns(server_name(&d, "receiver.test:6514").unwrap()),
        "receiver.test"
    );
    assert_eq!(ip(server_name(&d, "192.0.2.7:6514").unwrap()), "192.0.2.7");
    assert_eq!(
        ip(server_name(&d, "[2001:db8::1]:6514").unwrap()),
        "2001:db8::1"
    );
    assert!(matches!(
        server_name(&d, "nonsense"),
        Err(TlsError::BadAddress(_))
    ));

    let mut o = d.clone();
    o.server_name = Some("qradar.example.com".into());
    assert_eq!(
        dns(server_name(&o, "192.0.2.7:6514").unwrap()),
        "qradar.example.com"
    );
    o.server_name = Some("[::1]".into());
    assert_eq!(ip(server_name(&o, "x:1").unwrap()), "::1");
    o.server_name = Some("10.1.2.3".into());
    assert_eq!(ip(server_name(&o, "x:1").unwrap()), "10.1.2.3");
    o.server_name = Some("bad name!".into());
    assert!(matches!(
        server_name(&o, "x:1"),
        Err(TlsError::BadServerName(_))
    ));
}

#[test]
fn files_fingerprint_follows_the_files() {
    let dir = tempdir();
    let mut d = dest("receiver.test:6514");
    assert!(
        files_fingerprint(&d).is_none(),
        "no files, nothing to watch"
    );
    let cert = write_file(dir.path(), "c.pem", "one");
    let key = write_file(dir.path(), "k.pem", "key");
    d.client_cert = Some(cert.clone());
    d.client_key = Some(key.clone());
    let a = files_fingerprint(&d).unwrap();
    assert_eq!(files_fingerprint(&d).unwrap(), a, "stable while untouched");
    // Same length, rewritten in place.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&cert, "two").unwrap();
    let b = files_fingerprint(&d).unwrap();
    assert_ne!(a, b);
    // Removed, then back.
    std::fs::remove_file(&key).unwrap();
    let c = files_fingerprint(&d).unwrap();
    assert_ne!(b, c);
    assert!(c.to_string().contains("missing"), "{c}");
    std::fs::write(&key, "key").unwrap();
    assert_ne!(files_fingerprint(&d).unwrap(), c);
    let shown = files_fingerprint(&d).unwrap().to_string();
    assert!(shown.ends_with("k.pem (3 bytes)"), "{shown}");
}
