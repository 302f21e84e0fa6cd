//! One readable reason per TLS failure: what kind it is ([`TlsFailure`], for metrics and
//! tests) and the sentence for the log line, from the rustls error inside an I/O error.

use std::io;

use chrono::{DateTime, Utc};
use rustls::pki_types::{ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, OtherError};

use super::TlsError;

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
