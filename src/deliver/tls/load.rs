//! Reading what a TLS configuration is built from: PEM certificates (`ca_file`,
//! `client_cert`), the private key (`client_key`) and the system's trust store.
//!
//! Errors name the config key, the file and the reason, never the file's content: a key file
//! must not end up in a log line.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use super::TlsError;

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

pub(super) fn load_ca_file(path: &Path) -> Result<RootCertStore, TlsError> {
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

pub(super) fn system_roots(destination: &str) -> Result<RootCertStore, TlsError> {
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

pub(super) fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    pem_certificates("client_cert", path)
}

pub(super) fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
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
