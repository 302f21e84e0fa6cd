//! The subject and notAfter of a DER X.509 certificate, for logs and the expiry metric.
//!
//! The certificate comes from the peer, so it is hostile input: malformed bytes never panic,
//! they give subject "?" and no notAfter, and a subject is cut after [`MAX_SUBJECT_CHARS`].
//! x509-parser reads the certificate; how a name is printed (RFC 4514, most specific first,
//! short names for the usual attributes) and which time encodings count are ours.

use chrono::{DateTime, Utc};
use x509_parser::asn1_rs::{Any, Class, FromDer, Header, Oid};
use x509_parser::certificate::{X509Certificate, X509CertificateParser};
use x509_parser::nom::Parser as _;
use x509_parser::x509::X509Name;

/// The subject and notAfter of one DER certificate (see [`cert_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub not_after: Option<DateTime<Utc>>,
}

/// The subject and notAfter of a DER X.509 certificate. Never panics: malformed input gives
/// subject "?" and `not_after: None`.
pub fn cert_info(der: &[u8]) -> CertInfo {
    // Extensions are not read: what they hold is not shown, and one this parser does not
    // know must not hide the subject.
    let parsed = X509CertificateParser::new()
        .with_deep_parse_extensions(false)
        .parse(der);
    match parsed {
        Ok((_, cert)) => CertInfo {
            subject: subject(&cert),
            not_after: not_after(&cert),
        },
        Err(_) => CertInfo {
            subject: "?".to_string(),
            not_after: None,
        },
    }
}

/// notAfter when it is encoded as RFC 5280 says: UTCTime `YYMMDDHHMMSSZ` (YY < 50 → 20YY) or
/// GeneralizedTime `YYYYMMDDHHMMSSZ`. x509-parser also reads forms DER forbids (no seconds, a
/// time-zone offset, fractions of a second); those count as malformed, so the time is written
/// back in the strict form of its type and must stand as such in the certificate.
fn not_after(cert: &X509Certificate<'_>) -> Option<DateTime<Utc>> {
    let time = cert.validity().not_after;
    let at = DateTime::<Utc>::from_timestamp(time.timestamp(), 0)?;
    let (tag, text) = if time.is_utctime() {
        (0x17, at.format("%y%m%d%H%M%SZ").to_string())
    } else {
        (0x18, at.format("%Y%m%d%H%M%SZ").to_string())
    };
    let mut encoded = vec![tag, u8::try_from(text.len()).ok()?];
    encoded.extend_from_slice(text.as_bytes());
    let tbs: &[u8] = cert.tbs_certificate.as_ref();
    tbs.windows(encoded.len())
        .any(|w| w == encoded.as_slice())
        .then_some(at)
}

/// The subject, or "?" when it cannot be read to its end: x509-parser stops at the first RDN
/// it cannot read and keeps the ones before it, which would show a malformed name as a
/// shorter, well-formed one.
fn subject(cert: &X509Certificate<'_>) -> String {
    let name = cert.subject();
    // The part that was read (header and RDNs) against the length the header declares.
    let whole = Header::from_der(name.as_raw())
        .ok()
        .and_then(|(read, header)| Some(read.len() == header.length().definite().ok()?));
    if whole == Some(true) {
        format_name(name)
    } else {
        "?".to_string()
    }
}

/// Longest subject we print; a hostile peer could send a 60 KB one.
const MAX_SUBJECT_CHARS: usize = 512;

/// A Name printed RFC 4514 style: last RDN first, `,` between RDNs, `+` within one; "(empty)"
/// for a name without RDNs.
fn format_name(name: &X509Name<'_>) -> String {
    let mut rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            let parts: Vec<String> = rdn
                .iter()
                .map(|atv| {
                    format!(
                        "{}={}",
                        attribute_name(atv.attr_type()),
                        attribute_value(atv.attr_value())
                    )
                })
                .collect();
            parts.join("+")
        })
        .collect();
    if rdns.is_empty() {
        return "(empty)".to_string();
    }
    rdns.reverse();
    let mut out = rdns.join(",");
    if out.chars().count() > MAX_SUBJECT_CHARS {
        out = out.chars().take(MAX_SUBJECT_CHARS).collect();
        out.push('…');
    }
    out
}

fn attribute_name(oid: &Oid<'_>) -> String {
    // 2.5.4.x
    if let [0x55, 0x04, x] = oid.as_bytes() {
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
    match oid.as_bytes() {
        // 0.9.2342.19200300.100.1.25
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x19] => "DC".into(),
        // 0.9.2342.19200300.100.1.1
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x01] => "UID".into(),
        // 1.2.840.113549.1.9.1
        [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01] => "emailAddress".into(),
        _ => oid.to_id_string(),
    }
}

fn attribute_value(value: &Any<'_>) -> String {
    let universal = value.class() == Class::Universal && !value.header.is_constructed();
    let tag = if universal { value.tag().0 } else { u32::MAX };
    let value = value.data;
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

#[cfg(test)]
mod tests {
    use super::*;

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;

    /// One DER TLV (contents shorter than 64 KiB).
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend_from_slice(&[0x81, n as u8]),
            n => out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    /// A structurally valid certificate (not signed) with this subject (the Name's contents)
    /// and notAfter (tag and text).
    fn cert(subject: &[u8], not_after: (u8, &[u8])) -> Vec<u8> {
        let ecdsa_sha256 = tlv(
            SEQUENCE,
            &tlv(0x06, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]),
        );
        let mut spki_alg = tlv(0x06, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]);
        spki_alg.extend(tlv(0x06, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]));
        let mut point = vec![0x00, 0x04];
        point.extend([7u8; 64]);
        let mut spki = tlv(SEQUENCE, &spki_alg);
        spki.extend(tlv(0x03, &point));
        let mut validity = tlv(UTC_TIME, b"200101000000Z");
        validity.extend(tlv(not_after.0, not_after.1));
        let tbs: Vec<u8> = [
            tlv(0xA0, &tlv(0x02, &[2])),
            tlv(0x02, &[1]),
            ecdsa_sha256.clone(),
            tlv(SEQUENCE, &cn("issuer")),
            tlv(SEQUENCE, &validity),
            tlv(SEQUENCE, subject),
            tlv(SEQUENCE, &spki),
        ]
        .concat();
        let signed = [tlv(SEQUENCE, &tbs), ecdsa_sha256, tlv(0x03, &[0, 1, 2, 3])].concat();
        tlv(SEQUENCE, &signed)
    }

    /// The contents of a Name with one RDN: CN=value.
    fn cn(value: &str) -> Vec<u8> {
        let mut atv = tlv(0x06, &[0x55, 0x04, 0x03]);
        atv.extend(tlv(0x0C, value.as_bytes()));
        tlv(SET, &tlv(SEQUENCE, &atv))
    }

    #[test]
    fn not_after_is_read_only_in_the_forms_rfc5280_allows() {
        let t = |tag, s: &str| {
            cert_info(&cert(&cn("a"), (tag, s.as_bytes())))
                .not_after
                .map(|d| d.to_rfc3339())
        };
        assert_eq!(
            t(UTC_TIME, "491231235959Z").as_deref(),
            Some("2049-12-31T23:59:59+00:00")
        );
        assert_eq!(
            t(UTC_TIME, "500101000000Z").as_deref(),
            Some("1950-01-01T00:00:00+00:00")
        );
        assert_eq!(
            t(GENERALIZED_TIME, "20510517120000Z").as_deref(),
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
            assert_eq!(t(UTC_TIME, bad), None, "{bad}");
        }
        assert_eq!(t(GENERALIZED_TIME, "491231235959Z"), None);
        assert_eq!(t(GENERALIZED_TIME, "20510517120000.5Z"), None);
        let garbage = cert(&cn("a"), (UTC_TIME, &[0xff; 13]));
        assert_eq!(cert_info(&garbage).not_after, None);
        let good = cert_info(&cert(&cn("a"), (UTC_TIME, b"491231235959Z")));
        assert_eq!(good.subject, "CN=a");
    }

    #[test]
    fn a_distinguished_name_is_shown_most_specific_first_with_rfc4514_escapes() {
        // SEQUENCE { SET { SEQ { OID 2.5.4.6, PrintableString "US" } },
        //            SET { SEQ { OID 2.5.4.3, UTF8String "a,b\n" } } }
        let name = [
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'U', b'S', 0x31,
            0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x04, b'a', b',', b'b', b'\n',
        ];
        let subject =
            |contents: &[u8]| cert_info(&cert(contents, (UTC_TIME, b"491231235959Z"))).subject;
        assert_eq!(subject(&name), "CN=a\\,b\\0A,C=US");
        assert_eq!(subject(&[]), "(empty)");
        assert_eq!(subject(&name[..name.len() - 1]), "?");
        // An attribute without a short name: its OID, dotted.
        let mut atv = tlv(0x06, &[0x2A, 0x86, 0x48]);
        atv.extend(tlv(0x0C, b"x"));
        let odd = tlv(SET, &tlv(SEQUENCE, &atv));
        assert_eq!(subject(&odd), "1.2.840=x");
    }

    #[test]
    fn malformed_lengths_give_no_subject_and_no_expiry() {
        let bad: [&[u8]; 6] = [
            &[0x30, 0x80, 0, 0],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x82, 0xff],
            &[0x30, 0x03, 1],
            &[0x1f, 0x01, 1],
            &[0x30, 0x81, 0x01, 9],
        ];
        for input in bad {
            let info = cert_info(input);
            assert_eq!(
                (info.subject.as_str(), info.not_after),
                ("?", None),
                "{input:?}"
            );
        }
        // A real certificate whose outer length turns indefinite (BER, not DER).
        let mut der = cert(&cn("a"), (UTC_TIME, b"491231235959Z"));
        assert_eq!(cert_info(&der).subject, "CN=a");
        der[1] = 0x80;
        assert_eq!(cert_info(&der).subject, "?");
    }
}
