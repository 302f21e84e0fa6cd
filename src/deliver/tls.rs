//! TLS for `protocol = "tls"` destinations (RFC 5425): the rustls client configuration, the
//! name to verify, what to print about the peer, and one readable reason per failure.
//!
//! * Trust: `ca_file` when set (only it), else the system's roots (rustls-native-certs).
//!   TLS 1.2 and 1.3 only, ring provider only.
//! * Mutual TLS: `client_cert` (a PEM chain, leaf first) and `client_key` (PEM, PKCS#8, PKCS#1
//!   or SEC1; encrypted keys are refused with a clear message).
//! * `pin_sha256`: base64 SHA-256 of the end-entity certificate's SubjectPublicKeyInfo (the
//!   HPKP / curl `--pinnedpubkey sha256//…` format; the `sha256//` prefix is accepted). Pins
//!   are checked *on top of* chain and name verification, against the end-entity certificate
//!   only (as curl does); any one matching pin passes (backup pins). With `tls_verify = false`
//!   the chain and name are not checked but pins still are (curl `--insecure` does the same).
//! * `tls_verify = false`: any certificate is accepted and `ca_file` is not read; handshake
//!   signatures are still verified with the provider's algorithms, so the peer must hold the
//!   key of the certificate it shows. The caller logs a warning at every connect.
//! * Server names: `server_name` or the host part of the address. An IP literal becomes
//!   [`ServerName::IpAddress`]: rustls then sends **no SNI** (rustls 0.23 `client/hs.rs` only
//!   puts a `server_name` extension in the ClientHello for `ServerName::DnsName`; RFC 6066 §3
//!   forbids IP literals in SNI) and webpki verifies the name against the certificate's
//!   iPAddress SANs, never against the CN.
//!
//! Build the configuration once per destination and again when [`files_fingerprint`] changes
//! (certificate renewal without restart) or on SIGHUP: loading the system's roots reads the
//! whole trust store.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName,
    OtherError, ProtocolVersion, RootCertStore, SignatureScheme,
};

use crate::config::{split_host_port, DestinationConfig};

/// Why a TLS configuration could not be built, or why a server failed its pin check. Messages
/// name the config key, the file and the reason; they never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {key} {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{key} {}: {reason}", path.display())]
    Malformed {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{key} {} holds no {expected}", path.display())]
    Empty {
        key: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("ca_file {}: no usable CA certificate ({reasons})", path.display())]
    NoUsableCa { path: PathBuf, reasons: String },
    #[error("the system's trust store holds no usable root certificate{detail}; set ca_file")]
    NoSystemRoots { detail: String },
    #[error("client_cert and client_key go together, but only {0} is set")]
    HalfClientAuth(&'static str),
    #[error("client_cert {} with client_key {}: {reason}", cert.display(), key.display())]
    ClientAuth {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("pin_sha256[{index}] {value:?} is not a base64 SHA-256 digest (44 characters, optionally prefixed with \"sha256//\")")]
    BadPin { index: usize, value: String },
    #[error("server name {0:?} is neither a DNS name nor an IP address")]
    BadServerName(String),
    #[error("address {0:?} is not host:port")]
    BadAddress(String),
    #[error("TLS setup failed: {0}")]
    Setup(String),
    /// Raised by the certificate verifier during the handshake (inside a
    /// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`).
    #[error("pin mismatch: the server's public key is sha256//{actual}, pin_sha256 allows {}", expected.join(", "))]
    PinMismatch {
        actual: String,
        expected: Vec<String>,
    },
}

// ---------------------------------------------------------------------------------------------
// Client configuration

/// The rustls client configuration for a TLS destination (see the module docs).
pub fn client_config(dest: &DestinationConfig) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pins = parse_pins(&dest.pin_sha256)?;
    let chain = if dest.tls_verify {
        let roots = match &dest.ca_file {
            Some(path) => load_ca_file(path)?,
            None => system_roots(&dest.name)?,
        };
        let v = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        Some(v)
    } else {
        None
    };
    let verifier = Arc::new(Verifier {
        chain,
        pins,
        algs: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&dest.client_cert, &dest.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(TlsError::HalfClientAuth("client_cert")),
        (None, Some(_)) => return Err(TlsError::HalfClientAuth("client_key")),
        (Some(cert), Some(key)) => {
            let chain = load_cert_chain(cert)?;
            if let Some(not_after) = chain.first().and_then(|c| cert_info(c).not_after) {
                if not_after < Utc::now() {
                    tracing::warn!(destination = %dest.name, file = %cert.display(), %not_after, "our client certificate has expired; receivers will refuse it");
                }
            }
            let key_der = load_private_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| TlsError::ClientAuth {
                    cert: cert.clone(),
                    key: key.clone(),
                    reason: match e {
                        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                            "the private key does not belong to the certificate (the first certificate of client_cert must be ours)".to_string()
                        }
                        other => other.to_string(),
                    },
                })?
        }
    };
    Ok(Arc::new(config))
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// A PEM error as words; never echoes the file's content.
fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM section holds invalid base64".into(),
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => "no PEM item found".into(),
        pem::Error::SectionTooLarge => "a PEM section is too large".into(),
        _ => "malformed PEM".into(),
    }
}

/// Every certificate of a PEM file, in file order.
fn pem_certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Malformed {
            key,
            path: path.to_path_buf(),
            reason: pem_reason(&e),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            key,
            path: path.to_path_buf(),
            expected: "PEM certificate (-----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(certs)
}

fn load_ca_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = pem_certificates("ca_file", path)?;
    let mut roots = RootCertStore::empty();
    let mut rejected = Vec::new();
    for (i, cert) in certs.into_iter().enumerate() {
        if let Err(e) = roots.add(cert) {
            rejected.push(format!("certificate #{}: {e}", i + 1));
        }
    }
    if roots.is_empty() {
        return Err(TlsError::NoUsableCa {
            path: path.to_path_buf(),
            reasons: rejected.join("; "),
        });
    }
    if !rejected.is_empty() {
        tracing::warn!(file = %path.display(), rejected = %rejected.join("; "), "some certificates of ca_file cannot be used as trust anchors");
    }
    Ok(roots)
}

fn system_roots(destination: &str) -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    for e in &found.errors {
        tracing::debug!(%destination, error = %e, "problem reading the system's trust store");
    }
    if added == 0 {
        let detail = if found.errors.is_empty() {
            String::new()
        } else {
            let errs: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
            format!(" ({})", errs.join("; "))
        };
        return Err(TlsError::NoSystemRoots { detail });
    }
    tracing::info!(%destination, roots = added, ignored, "loaded the system's root certificates");
    Ok(roots)
}

fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pem_certificates("client_cert", path)
}

fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file("client_key", path)?;
    let malformed = |reason: String| TlsError::Malformed {
        key: "client_key",
        path: path.to_path_buf(),
        reason,
    };
    if contains(&bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || contains(&bytes, b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(malformed(
            "the key is encrypted; a passphrase-less PEM key is needed".into(),
        ));
    }
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(k) => Ok(k),
        Err(pem::Error::NoItemsFound) => Err(TlsError::Empty {
            key: "client_key",
            path: path.to_path_buf(),
            expected: "PEM private key (PKCS#8 PRIVATE KEY, PKCS#1 RSA PRIVATE KEY or SEC1 EC PRIVATE KEY)",
        }),
        Err(e) => Err(malformed(pem_reason(&e))),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// Verification

/// Chain + name verification (unless `tls_verify = false`), then the SPKI pins if any.
#[derive(Debug)]
struct Verifier {
    /// `None` when `tls_verify = false`.
    chain: Option<Arc<WebPkiServerVerifier>>,
    pins: Vec<[u8; 32]>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        if !self.pins.is_empty() {
            let Some(actual) = spki_sha256(end_entity) else {
                return Err(CertificateError::BadEncoding.into());
            };
            if !self.pins.contains(&actual) {
                let err = TlsError::PinMismatch {
                    actual: base64_encode(&actual),
                    expected: self.pins.iter().map(|p| base64_encode(p)).collect(),
                };
                return Err(CertificateError::Other(OtherError(Arc::new(err))).into());
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.chain.as_ref().and_then(|c| c.root_hint_subjects())
    }
}

/// SHA-256 of the certificate's DER SubjectPublicKeyInfo; `None` when webpki cannot parse it.
fn spki_sha256(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    let spki = ee.subject_public_key_info();
    let digest = ring::digest::digest(&ring::digest::SHA256, spki.as_ref());
    digest.as_ref().try_into().ok()
}

/// The pin of a DER certificate as `pin_sha256` takes it (base64, without `sha256//`).
pub fn spki_pin(cert_der: &[u8]) -> Option<String> {
    spki_sha256(&CertificateDer::from(cert_der)).map(|d| base64_encode(&d))
}

/// Parses one `pin_sha256` entry: base64 (standard alphabet, padding optional) of a 32-byte
/// digest, optionally prefixed with `sha256//`. Usable for config validation.
pub fn parse_pin(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let s = s.strip_prefix("sha256//").unwrap_or(s);
    base64_decode(s)?.try_into().ok()
}

fn parse_pins(pins: &[String]) -> Result<Vec<[u8; 32]>, TlsError> {
    pins.iter()
        .enumerate()
        .map(|(index, value)| {
            parse_pin(value).ok_or_else(|| TlsError::BadPin {
                index,
                value: value.clone(),
            })
        })
        .collect()
}

/// Standard base64 (RFC 4648) that also reads pins written without their `=` padding; padding,
/// when present, must be right, and so must the unused bits of the last character.
const PIN_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn base64_encode(data: &[u8]) -> String {
    PIN_BASE64.encode(data)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    // Padding is all or nothing: the engine also takes a partly padded last quantum.
    if s.ends_with('=') && s.len() % 4 != 0 {
        return None;
    }
    PIN_BASE64.decode(s).ok()
}

// ---------------------------------------------------------------------------------------------
// Server name

/// The name to verify (and send as SNI unless it is an IP literal): `server_name` if set, else
/// the host part of `address` (`host:port` or `[v6]:port`).
pub fn server_name(
    dest: &DestinationConfig,
    address: &str,
) -> Result<ServerName<'static>, TlsError> {
    let name = match &dest.server_name {
        Some(n) => n.trim(),
        None => {
            split_host_port(address)
                .ok_or_else(|| TlsError::BadAddress(address.to_string()))?
                .0
        }
    };
    // "[::1]" as a server_name is forgiven.
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    rustls::pki_types::DnsName::try_from(bare)
        .map(|d| ServerName::DnsName(d.to_owned()))
        .map_err(|_| TlsError::BadServerName(name.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Peer information

/// What `test-destination` prints and the expiry metric exports about a TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// "TLSv1.3" or "TLSv1.2"; "?" before the handshake completed.
    pub version: String,
    /// The IANA name, e.g. "TLS13_AES_256_GCM_SHA384"; "?" when unknown.
    pub cipher: String,
    /// The end-entity certificate's subject, RFC 4514 style (most specific first, e.g.
    /// `CN=receiver.test,O=Example`); "(empty)" for an empty subject, "?" when unreadable.
    pub subject: String,
    /// The end-entity certificate's notAfter.
    pub not_after: Option<DateTime<Utc>>,
    /// The end-entity certificate's SPKI pin (what `pin_sha256` takes).
    pub spki_pin: Option<String>,
}

/// The subject and notAfter of one DER certificate (see [`cert_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub not_after: Option<DateTime<Utc>>,
}

/// Protocol version, cipher suite and the peer's end-entity certificate of a connection.
pub fn peer_info(conn: &rustls::ClientConnection) -> PeerInfo {
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "?".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| {
            let suite = s.suite();
            suite
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{suite:?}"))
        })
        .unwrap_or_else(|| "?".to_string());
    let leaf = conn.peer_certificates().and_then(|c| c.first());
    let info = leaf.map(|c| cert_info(c)).unwrap_or(CertInfo {
        subject: "?".into(),
        not_after: None,
    });
    PeerInfo {
        version,
        cipher,
        subject: info.subject,
        not_after: info.not_after,
        spki_pin: leaf.and_then(|c| spki_pin(c)),
    }
}

/// The subject and notAfter of a DER X.509 certificate. Never panics: malformed input gives
/// subject "?" and/or `not_after: None`.
pub fn cert_info(der: &[u8]) -> CertInfo {
    let tbs = tbs_fields(der);
    let subject = tbs
        .as_ref()
        .and_then(|t| format_name(t.subject))
        .unwrap_or_else(|| "?".to_string());
    let not_after = tbs.and_then(|t| {
        let mut v = der::Reader::new(t.validity);
        let _not_before = v.read()?;
        let (tag, value) = v.read()?;
        parse_time(tag, value)
    });
    CertInfo { subject, not_after }
}

/// A minimal DER reader: definite lengths up to 4 length bytes, low tag numbers only. Every
/// access is checked; malformed input yields `None`.
mod der {
    pub const INTEGER: u8 = 0x02;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const CONTEXT_0: u8 = 0xA0;

    pub struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        pub fn new(input: &'a [u8]) -> Self {
            Reader(input)
        }

        pub fn is_empty(&self) -> bool {
            self.0.is_empty()
        }

        pub fn peek_tag(&self) -> Option<u8> {
            self.0.first().copied()
        }

        /// The next TLV's tag and value.
        pub fn read(&mut self) -> Option<(u8, &'a [u8])> {
            let (&tag, rest) = self.0.split_first()?;
            if tag & 0x1f == 0x1f {
                return None; // high-tag-number form: not used where we look
            }
            let (&first, mut rest) = rest.split_first()?;
            let len = if first < 0x80 {
                usize::from(first)
            } else {
                let n = usize::from(first & 0x7f);
                if n == 0 || n > 4 {
                    return None; // indefinite (BER) or absurd
                }
                let (bytes, r) = rest.split_at_checked(n)?;
                rest = r;
                let mut len: usize = 0;
                for b in bytes {
                    len = len.checked_mul(256)?.checked_add(usize::from(*b))?;
                }
                len
            };
            let (value, rest) = rest.split_at_checked(len)?;
            self.0 = rest;
            Some((tag, value))
        }

        /// The next TLV's value if it has this tag.
        pub fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
            let (t, v) = self.read()?;
            (t == tag).then_some(v)
        }
    }
}

struct Tbs<'a> {
    validity: &'a [u8],
    subject: &'a [u8],
}

/// Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
/// TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
///                               validity, subject, subjectPublicKeyInfo, ... }
fn tbs_fields(cert: &[u8]) -> Option<Tbs<'_>> {
    let certificate = der::Reader::new(cert).expect(der::SEQUENCE)?;
    let tbs = der::Reader::new(certificate).expect(der::SEQUENCE)?;
    let mut t = der::Reader::new(tbs);
    if t.peek_tag() == Some(der::CONTEXT_0) {
        t.read()?;
    }
    t.expect(der::INTEGER)?;
    t.expect(der::SEQUENCE)?; // signature AlgorithmIdentifier
    t.expect(der::SEQUENCE)?; // issuer
    let validity = t.expect(der::SEQUENCE)?;
    let subject = t.expect(der::SEQUENCE)?;
    Some(Tbs { validity, subject })
}

/// UTCTime `YYMMDDHHMMSSZ` (YY < 50 → 20YY, RFC 5280) or GeneralizedTime `YYYYMMDDHHMMSSZ`.
fn parse_time(tag: u8, value: &[u8]) -> Option<DateTime<Utc>> {
    let s = std::str::from_utf8(value).ok()?;
    let (year, rest) = match tag {
        der::UTC_TIME if s.len() == 13 => {
            let yy = digits(s.get(0..2)?)? as i32;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        der::GENERALIZED_TIME if s.len() == 15 => (digits(s.get(0..4)?)? as i32, s.get(4..)?),
        _ => return None,
    };
    if rest.get(10..) != Some("Z") {
        return None;
    }
    let field = |r: std::ops::Range<usize>| rest.get(r).and_then(digits);
    let date = NaiveDate::from_ymd_opt(year, field(0..2)?, field(2..4)?)?;
    let time = date.and_hms_opt(field(4..6)?, field(6..8)?, field(8..10)?)?;
    Some(time.and_utc())
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Longest subject we print; a hostile peer could send a 60 KB one.
const MAX_SUBJECT_CHARS: usize = 512;

/// Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue), printed
/// RFC 4514 style: last RDN first, `,` between RDNs, `+` within one.
fn format_name(name: &[u8]) -> Option<String> {
    let mut rdns = Vec::new();
    let mut r = der::Reader::new(name);
    while !r.is_empty() {
        let set = r.expect(der::SET)?;
        let mut s = der::Reader::new(set);
        let mut parts = Vec::new();
        while !s.is_empty() {
            let atv = s.expect(der::SEQUENCE)?;
            let mut a = der::Reader::new(atv);
            let oid = a.expect(der::OID)?;
            let (tag, value) = a.read()?;
            parts.push(format!(
                "{}={}",
                attribute_name(oid),
                attribute_value(tag, value)
            ));
        }
        rdns.push(parts.join("+"));
    }
    if rdns.is_empty() {
        return Some("(empty)".to_string());
    }
    rdns.reverse();
    let mut out = rdns.join(",");
    if out.chars().count() > MAX_SUBJECT_CHARS {
        out = out.chars().take(MAX_SUBJECT_CHARS).collect();
        out.push('…');
    }
    Some(out)
}

fn attribute_name(oid: &[u8]) -> String {
    // 2.5.4.x
    if let [0x55, 0x04, x] = oid {
        let short = match x {
            3 => "CN",
            4 => "SN",
            5 => "serialNumber",
            6 => "C",
            7 => "L",
            8 => "ST",
            9 => "STREET",
            10 => "O",
            11 => "OU",
            12 => "title",
            42 => "GN",
            _ => "",
        };
        if !short.is_empty() {
            return short.to_string();
        }
    }
    match oid {
        // 0.9.2342.19200300.100.1.25
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x19] => "DC".into(),
        // 0.9.2342.19200300.100.1.1
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x01] => "UID".into(),
        // 1.2.840.113549.1.9.1
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01] => "emailAddress".into(),
        _ => dotted_oid(oid).unwrap_or_else(|| "?".into()),
    }
}

fn dotted_oid(oid: &[u8]) -> Option<String> {
    let (&first, rest) = oid.split_first()?;
    let mut parts = vec![
        (u64::from(first) / 40).min(2),
        u64::from(first) - 40 * (u64::from(first) / 40).min(2),
    ];
    let mut acc: u64 = 0;
    for &b in rest {
        acc = acc.checked_mul(128)?.checked_add(u64::from(b & 0x7f))?;
        if b & 0x80 == 0 {
            parts.push(acc);
            acc = 0;
        }
    }
    if rest.last().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    Some(
        parts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("."),
    )
}

fn attribute_value(tag: u8, value: &[u8]) -> String {
    let text: Option<String> = match tag {
        // UTF8String, PrintableString, IA5String, NumericString, VisibleString
        0x0C | 0x13 | 0x16 | 0x12 | 0x1A => std::str::from_utf8(value).ok().map(str::to_string),
        // TeletexString: treated as Latin-1, as most software does
        0x14 => Some(value.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE
        0x1E if value.len() % 2 == 0 => {
            let units = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        // UniversalString: UTF-32BE
        0x1C if value.len() % 4 == 0 => value
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect::<Option<String>>(),
        _ => None,
    };
    match text {
        Some(t) => escape_rfc4514(&t),
        None => {
            let mut hex = String::from("#");
            for b in value {
                hex.push_str(&format!("{b:02x}"));
            }
            hex
        }
    }
}

fn escape_rfc4514(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Failures

/// What kind of TLS failure an I/O error from a handshake, read or write is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The server's chain does not lead to a trusted root.
    UnknownIssuer,
    /// The certificate is not valid for the name we verify.
    NameMismatch,
    /// A certificate of the server's chain has expired.
    Expired,
    /// A certificate of the server's chain is not valid yet.
    NotYetValid,
    /// The server's key matches no `pin_sha256` entry.
    PinMismatch,
    /// The peer sent a fatal alert (e.g. refusing our client certificate).
    PeerAlert(AlertDescription),
    /// The peer closed or reset the TCP connection during the handshake.
    PeerClosed,
    /// Anything else (protocol error, no common parameters, bad certificate encoding, ...).
    Other,
}

/// The first `rustls::Error` in the error's chain.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> =
        e.get_ref().map(|e| e as &(dyn std::error::Error + 'static));
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// The pin error a verifier put into `CertificateError::Other`.
fn pin_error(e: &rustls::Error) -> Option<&TlsError> {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => inner
            .downcast_ref::<TlsError>()
            .filter(|t| matches!(t, TlsError::PinMismatch { .. })),
        _ => None,
    }
}

/// Classifies a handshake / read / write error of a TLS connection.
pub fn classify_error(e: &io::Error) -> TlsFailure {
    let Some(r) = rustls_error(e) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => TlsFailure::PeerClosed,
            _ => TlsFailure::Other,
        };
    };
    if pin_error(r).is_some() {
        return TlsFailure::PinMismatch;
    }
    match r {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::NameMismatch
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                TlsFailure::Expired
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                TlsFailure::NotYetValid
            }
            _ => TlsFailure::Other,
        },
        rustls::Error::AlertReceived(a) => TlsFailure::PeerAlert(*a),
        _ => TlsFailure::Other,
    }
}

/// One clear reason for a failed TLS handshake, read or write, for the log line.
pub fn describe_error(e: &io::Error) -> String {
    let Some(r) = rustls_error(e) else {
        return match classify_error(e) {
            TlsFailure::PeerClosed if e.kind() == io::ErrorKind::UnexpectedEof => {
                "the peer closed the connection during the TLS handshake (not a TLS port, or it refused us)".to_string()
            }
            TlsFailure::PeerClosed => {
                format!("the peer dropped the connection ({e}); not a TLS port, or it refused us")
            }
            _ => e.to_string(),
        };
    };
    if let Some(pin) = pin_error(r) {
        return pin.to_string();
    }
    match r {
        rustls::Error::InvalidCertificate(ce) => describe_certificate_error(ce),
        rustls::Error::AlertReceived(a) => format!("peer sent alert: {}", alert_text(*a)),
        rustls::Error::NoCertificatesPresented => "the server presented no certificate".to_string(),
        rustls::Error::PeerIncompatible(p) => {
            format!("no common TLS parameters with the peer (TLS 1.2+ required): {p:?}")
        }
        other => format!("TLS error: {other}"),
    }
}

fn describe_certificate_error(ce: &CertificateError) -> String {
    match ce {
        CertificateError::UnknownIssuer => {
            "unknown CA: the server's certificate is not issued by a trusted CA (ca_file, or the system's roots)".to_string()
        }
        CertificateError::NotValidForNameContext { expected, presented } => {
            let names: Vec<String> = presented.iter().take(10).map(|p| tidy_presented(p)).collect();
            let names = if names.is_empty() {
                "no subjectAltName".to_string()
            } else {
                names.join(", ")
            };
            format!(
                "name mismatch: the server's certificate is not valid for {} (it names: {names}); set server_name",
                display_server_name(expected)
            )
        }
        CertificateError::NotValidForName => {
            "name mismatch: the server's certificate is not valid for the name we verify; set server_name".to_string()
        }
        CertificateError::ExpiredContext { time, not_after } => format!(
            "expired: the server's certificate (or its chain) expired at {} (now {})",
            unix_time(*not_after),
            unix_time(*time)
        ),
        CertificateError::Expired => {
            "expired: the server's certificate (or its chain) has expired".to_string()
        }
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "not yet valid: the server's certificate (or its chain) is valid from {} (now {}; check the clock)",
            unix_time(*not_before),
            unix_time(*time)
        ),
        CertificateError::NotValidYet => {
            "not yet valid: the server's certificate (or its chain) is not valid yet (check the clock)".to_string()
        }
        other => format!("invalid server certificate: {}", rustls::Error::InvalidCertificate(other.clone())),
    }
}

/// `DnsName("a.test")` → `a.test`, `IpAddress(127.0.0.1)` → `127.0.0.1` (webpki's Debug form).
fn tidy_presented(p: &str) -> String {
    let inner = p
        .strip_prefix("DnsName(\"")
        .and_then(|s| s.strip_suffix("\")"))
        .or_else(|| {
            p.strip_prefix("IpAddress(")
                .and_then(|s| s.strip_suffix(')'))
        })
        .unwrap_or(p);
    inner.chars().filter(|c| !c.is_control()).collect()
}

fn display_server_name(n: &ServerName<'_>) -> String {
    match n {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

fn unix_time(t: UnixTime) -> String {
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| format!("{}s after the epoch", t.as_secs()))
}

fn alert_text(a: AlertDescription) -> String {
    let (name, hint) = match a {
        AlertDescription::CertificateRequired => (
            "certificate required",
            "the receiver requires a client certificate; set client_cert and client_key",
        ),
        AlertDescription::BadCertificate => (
            "bad certificate",
            "the receiver rejected our client certificate",
        ),
        AlertDescription::UnsupportedCertificate => (
            "unsupported certificate",
            "the receiver cannot use our client certificate",
        ),
        AlertDescription::CertificateUnknown => (
            "certificate unknown",
            "the receiver rejected our client certificate",
        ),
        AlertDescription::CertificateExpired => (
            "certificate expired",
            "the receiver says our client certificate has expired",
        ),
        AlertDescription::CertificateRevoked => (
            "certificate revoked",
            "the receiver says our client certificate is revoked",
        ),
        AlertDescription::UnknownCA => (
            "unknown CA",
            "the receiver does not trust the CA of our client certificate",
        ),
        AlertDescription::AccessDenied => ("access denied", "the receiver refused us"),
        AlertDescription::HandshakeFailure => (
            "handshake failure",
            "no common cipher suite or parameters, or the receiver refused us",
        ),
        AlertDescription::ProtocolVersion => (
            "protocol version",
            "the receiver accepts neither TLS 1.2 nor TLS 1.3",
        ),
        AlertDescription::InsufficientSecurity => (
            "insufficient security",
            "the receiver wants stronger parameters",
        ),
        AlertDescription::UnrecognisedName => (
            "unrecognised name",
            "the receiver does not serve the name we sent as SNI; check server_name",
        ),
        AlertDescription::DecryptError => ("decrypt error", ""),
        AlertDescription::InternalError => ("internal error", "a problem on the receiver's side"),
        AlertDescription::IllegalParameter => ("illegal parameter", ""),
        AlertDescription::DecodeError => ("decode error", ""),
        AlertDescription::UnexpectedMessage => ("unexpected message", ""),
        AlertDescription::BadRecordMac => ("bad record MAC", ""),
        other => {
            return other
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{other:?}"))
        }
    };
    if hint.is_empty() {
        name.to_string()
    } else {
        format!("{name} ({hint})")
    }
}

// ---------------------------------------------------------------------------------------------
// Files on disk

/// What the files a TLS configuration is built from look like on disk; compare two to know
/// whether to rebuild before reconnecting. `None` when the destination names no file (the
/// system's roots are only re-read on reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesFingerprint(Vec<FileStamp>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    /// `None` when the file cannot be stat'ed (so its return counts as a change too).
    meta: Option<Meta>,
}

/// Metadata only (never content): length, mtime, and on Unix device, inode and ctime, so an
/// atomic rename or a Kubernetes secret's symlink swap with an equal length and mtime is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    len: u64,
    modified: Option<SystemTime>,
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl fmt::Display for FilesFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match &s.meta {
                Some(m) => write!(f, "{} ({} bytes)", s.path.display(), m.len)?,
                None => write!(f, "{} (missing)", s.path.display())?,
            }
        }
        Ok(())
    }
}

/// The on-disk state of `ca_file`, `client_cert` and `client_key` (metadata, following
/// symlinks).
pub fn files_fingerprint(dest: &DestinationConfig) -> Option<FilesFingerprint> {
    let stamps: Vec<FileStamp> = [&dest.ca_file, &dest.client_cert, &dest.client_key]
        .into_iter()
        .flatten()
        .map(|path| FileStamp {
            path: path.clone(),
            meta: std::fs::metadata(path).ok().map(|m| meta_of(&m)),
        })
        .collect();
    (!stamps.is_empty()).then_some(FilesFingerprint(stamps))
}

fn meta_of(m: &std::fs::Metadata) -> Meta {
    #[cfg(unix)]
    let (dev, ino, ctime) = {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino(), (m.ctime(), m.ctime_nsec()))
    };
    #[cfg(not(unix))]
    let (dev, ino, ctime) = (0, 0, (0, 0));
    Meta {
        len: m.len(),
        modified: m.modified().ok(),
        dev,
        ino,
        ctime,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in vectors {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).as_deref(), Some(plain.as_bytes()));
            assert_eq!(
                base64_decode(enc.trim_end_matches('=')).as_deref(),
                Some(plain.as_bytes())
            );
        }
        for bad in ["Zg=", "Z", "Zm9v!", "Zh==", "Zg===", "Z=g=", "Zm9=v"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)), Some(all));
    }

    #[test]
    fn pins_parse_with_and_without_prefix() {
        let digest = [7u8; 32];
        let b64 = base64_encode(&digest);
        assert_eq!(b64.len(), 44);
        assert_eq!(parse_pin(&b64), Some(digest));
        assert_eq!(parse_pin(&format!("sha256//{b64}")), Some(digest));
        assert_eq!(parse_pin(&format!(" {b64} ")), Some(digest));
        assert_eq!(parse_pin(&base64_encode(&[7u8; 20])), None);
        assert_eq!(parse_pin("not a pin"), None);
    }

    #[test]
    fn times_parse_strictly() {
        let t = |tag, s: &str| parse_time(tag, s.as_bytes()).map(|d| d.to_rfc3339());
        assert_eq!(
            t(der::UTC_TIME, "491231235959Z").as_deref(),
            Some("2049-12-31T23:59:59+00:00")
        );
        assert_eq!(
            t(der::UTC_TIME, "500101000000Z").as_deref(),
            Some("1950-01-01T00:00:00+00:00")
        );
        assert_eq!(
            t(der::GENERALIZED_TIME, "20510517120000Z").as_deref(),
            Some("2051-05-17T12:00:00+00:00")
        );
        for bad in [
            "4912312359Z",
            "491231235959+0100",
            "491331235959Z",
            "4912312359590",
            "49123123595 Z",
            "+9123123595Z",
            "491231235960Z",
        ] {
            assert_eq!(t(der::UTC_TIME, bad), None, "{bad}");
        }
        assert_eq!(t(der::GENERALIZED_TIME, "491231235959Z"), None);
        assert_eq!(parse_time(der::UTC_TIME, &[0xff; 13]), None);
    }

    #[test]
    fn a_distinguished_name_is_shown_most_specific_first_with_rfc4514_escapes() {
        // SEQUENCE { SET { SEQ { OID 2.5.4.6, PrintableString "US" } },
        //            SET { SEQ { OID 2.5.4.3, UTF8String "a,b\n" } } }
        let name = [
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'U', b'S', 0x31,
            0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x04, b'a', b',', b'b', b'\n',
        ];
        assert_eq!(format_name(&name).as_deref(), Some("CN=a\\,b\\0A,C=US"));
        assert_eq!(format_name(&[]).as_deref(), Some("(empty)"));
        assert_eq!(format_name(&name[..name.len() - 1]), None);
        assert_eq!(dotted_oid(&[0x2A, 0x86, 0x48]).as_deref(), Some("1.2.840"));
    }

    #[test]
    fn der_reader_rejects_bad_lengths() {
        assert_eq!(der::Reader::new(&[0x30, 0x80, 0, 0]).read(), None);
        assert_eq!(der::Reader::new(&[0x30, 0x85, 1, 1, 1, 1, 1]).read(), None);
        assert_eq!(der::Reader::new(&[0x30, 0x82, 0xff]).read(), None);
        assert_eq!(der::Reader::new(&[0x30, 0x03, 1]).read(), None);
        assert_eq!(der::Reader::new(&[0x1f, 0x01, 1]).read(), None);
        assert_eq!(
            der::Reader::new(&[0x30, 0x81, 0x01, 9]).read(),
            Some((0x30, &[9u8][..]))
        );
    }
}
