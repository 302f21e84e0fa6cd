//! What `test-destination` prints and the expiry metric exports about a TLS connection:
//! protocol version, cipher suite, and the peer's end-entity certificate.

use chrono::{DateTime, Utc};
use rustls::ProtocolVersion;

use super::cert::{cert_info, CertInfo};
use super::verify::spki_pin;

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
