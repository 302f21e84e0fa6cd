//! The subject and notAfter of a DER X.509 certificate, for logs and the expiry metric.
//!
//! The certificate comes from the peer, so it is hostile input: malformed bytes never panic,
//! they give subject "?" and no notAfter, and a subject is cut after [`MAX_SUBJECT_CHARS`].

use chrono::{DateTime, NaiveDate, Utc};

/// The subject and notAfter of one DER certificate (see [`cert_info`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub not_after: Option<DateTime<Utc>>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
