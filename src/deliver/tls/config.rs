//! The rustls client configuration of one destination, and the server name it verifies.
//!
//! Trust comes from `ca_file` or the system's roots ([`super::load`]), the verifier from
//! [`super::verify`]; only TLS 1.2 and 1.3 with the ring provider are offered.

use std::sync::Arc;

use chrono::Utc;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::cert::cert_info;
use super::load::{load_ca_file, load_cert_chain, load_private_key, system_roots};
use super::verify::{parse_pins, Verifier};
use super::TlsError;
use crate::config::{split_host_port, DestinationConfig};

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
