//! Verifying the server: chain and name through webpki (unless `tls_verify = false`), then the
//! `pin_sha256` pins against the end-entity certificate's SubjectPublicKeyInfo.
//!
//! A pin is the base64 SHA-256 of the SPKI (the HPKP / curl `--pinnedpubkey sha256//…`
//! format); any one matching pin passes, so a backup pin can be listed before a key rollover.

use std::sync::Arc;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use super::TlsError;

/// Chain + name verification (unless `tls_verify = false`), then the SPKI pins if any.
#[derive(Debug)]
pub(super) struct Verifier {
    /// `None` when `tls_verify = false`.
    pub(super) chain: Option<Arc<WebPkiServerVerifier>>,
    pub(super) pins: Vec<[u8; 32]>,
    pub(super) algs: WebPkiSupportedAlgorithms,
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

pub(super) fn parse_pins(pins: &[String]) -> Result<Vec<[u8; 32]>, TlsError> {
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
}
