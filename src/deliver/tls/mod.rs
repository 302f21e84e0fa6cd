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
//!
//! The parts: [`client_config`] and [`server_name`] (`config.rs`) build on the files read in
//! `load.rs` and the verifier in `verify.rs`; [`peer_info`] (`peer.rs`, with `cert.rs`) says
//! what a connection reached; [`classify_error`] and [`describe_error`] (`failure.rs`) turn a
//! failed handshake into one reason; [`FilesFingerprint`] (`fingerprint.rs`) notices renewed
//! files.
//!
//! [`ServerName::IpAddress`]: rustls::pki_types::ServerName::IpAddress

mod cert;
mod config;
mod failure;
mod fingerprint;
mod load;
mod peer;
mod verify;

use std::io;
use std::path::PathBuf;

pub use cert::{cert_info, CertInfo};
pub use config::{client_config, server_name};
pub use failure::{classify_error, describe_error, TlsFailure};
pub use fingerprint::{files_fingerprint, FilesFingerprint};
pub use peer::{peer_info, PeerInfo};
pub use verify::{parse_pin, spki_pin};

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
