//! CEF line → syslog message (RFC 5424, or the legacy RFC 3164 header) → framed bytes (RFC 6587
//! octet counting or LF). Pure, no I/O.
//!
//! Header fields are sanitised once per destination ([`Header::new`]): printable US-ASCII only
//! (anything else becomes `_`), cut to the RFC 5424 lengths, `-` when empty. Per event only the
//! timestamp, MSGID and MSG change, and they are written straight into the caller's buffer.
//!
//! `format = "rfc3164"` writes the legacy BSD header of RFC 3164 §4.1
//! (`<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG`). Its TAG is at most 32 alphanumeric
//! characters (§4.1.3: any other character ends the TAG), so APP-NAME keeps only its ASCII
//! letters and digits there (`ioc-forwarder` → `iocforwarder`).

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::config::{Framing, SyslogFormat};

/// RFC 5424 §6 field lengths.
pub const HOSTNAME_MAX: usize = 255;
pub const APP_NAME_MAX: usize = 48;
pub const MSGID_MAX: usize = 32;
/// RFC 3164 §4.1.3.
pub const TAG_MAX: usize = 32;
/// The TAG when APP-NAME has no ASCII letter or digit at all.
const TAG_FALLBACK: &str = "iocforwarder";

/// Appends `s` with anything outside PRINTUSASCII (33..=126) as `_`, cut to `max` characters,
/// `-` (NILVALUE) when empty.
fn push_field(out: &mut Vec<u8>, s: &str, max: usize) {
    let before = out.len();
    for c in s.chars().take(max) {
        out.push(if c.is_ascii_graphic() { c as u8 } else { b'_' });
    }
    if out.len() == before {
        out.push(b'-');
    }
}

/// Replaces anything outside PRINTUSASCII (33..=126) with `_`, cuts to `max`, `-` when empty.
pub fn sanitize_field(s: &str, max: usize) -> String {
    let mut out = Vec::with_capacity(s.len().min(max));
    push_field(&mut out, s, max);
    // Only ASCII bytes were written.
    String::from_utf8_lossy(&out).into_owned()
}

/// The RFC 3164 TAG: ASCII letters and digits of `app_name`, at most 32.
pub fn tag_field(app_name: &str) -> String {
    let tag: String = app_name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(TAG_MAX)
        .collect();
    if tag.is_empty() {
        TAG_FALLBACK.to_string()
    } else {
        tag
    }
}

/// The per-destination constant part of every frame.
#[derive(Debug, Clone)]
pub struct Header {
    pub format: SyslogFormat,
    pub pri: u8,
    pub hostname: String,
    /// APP-NAME (RFC 5424), or the TAG (RFC 3164).
    pub app_name: String,
    pub procid: String,
    /// `Some` = fixed MSGID; `None` = the event's IOC type.
    pub msgid: Option<String>,
    pub structured_data: bool,
}

impl Header {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        format: SyslogFormat,
        facility: u8,
        severity: u8,
        hostname: &str,
        app_name: &str,
        procid: u32,
        msgid: Option<&str>,
        structured_data: bool,
    ) -> Header {
        let app_name = match format {
            SyslogFormat::Rfc5424 => sanitize_field(app_name, APP_NAME_MAX),
            SyslogFormat::Rfc3164 => tag_field(app_name),
        };
        Header {
            format,
            // The config only allows 0..=23 and 0..=7; clamping keeps PRIVAL within 0..=191
            // (and the u8 from overflowing) whatever a caller passes.
            pri: facility.min(23) * 8 + severity.min(7),
            hostname: sanitize_field(hostname, HOSTNAME_MAX),
            app_name,
            procid: procid.to_string(),
            msgid: msgid.map(|m| sanitize_field(m, MSGID_MAX)),
            structured_data,
        }
    }
}

/// RFC 5424 sequenceId for a queue sequence number: 1..=2147483647, wrapping to 1.
pub fn sequence_id(seq: i64) -> i64 {
    const N: i64 = 2_147_483_647;
    // (seq - 1) mod N + 1, without `seq - 1` overflowing at i64::MIN.
    (seq.rem_euclid(N) + N - 1) % N + 1
}

/// Appends PARAM-VALUE with `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
fn push_sd_value(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// Appends the decimal digits of `n`, at least `width` of them (zero-padded).
fn push_uint(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = [0u8; 20];
    out.extend_from_slice(super::decimal(&mut buf, n, width));
}

/// Writes `n` as exactly `width` decimal digits into `buf` (the caller keeps `n` in range).
fn put_digits(buf: &mut [u8], n: u32) {
    let mut v = n;
    for d in buf.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// RFC 5424 TIMESTAMP: `YYYY-MM-DDThh:mm:ss.uuuuuuZ` in UTC; NILVALUE for a year outside
/// 0000..=9999, which the RFC's `4DIGIT` cannot carry. A leap second (which chrono represents
/// as a nanosecond value ≥ 1e9 and RFC 5424 forbids) is sent as :59.999999.
fn push_timestamp(out: &mut Vec<u8>, ts: DateTime<Utc>) {
    // One conversion; every accessor of DateTime<Utc> would convert again.
    let ts = ts.naive_utc();
    let Ok(year) = u32::try_from(ts.year()) else {
        out.push(b'-');
        return;
    };
    if year > 9999 {
        out.push(b'-');
        return;
    }
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    put_digits(&mut b[0..4], year);
    put_digits(&mut b[5..7], ts.month());
    put_digits(&mut b[8..10], ts.day());
    put_digits(&mut b[11..13], ts.hour());
    put_digits(&mut b[14..16], ts.minute());
    put_digits(&mut b[17..19], ts.second().min(59));
    put_digits(&mut b[20..26], (ts.nanosecond() / 1000).min(999_999));
    out.extend_from_slice(&b);
}

/// RFC 3164 §4.1.2 TIMESTAMP: `Mmm dd hh:mm:ss`, the day padded with a space; we send UTC.
fn push_bsd_timestamp(out: &mut Vec<u8>, ts: DateTime<Utc>) {
    let ts = ts.naive_utc();
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    out.extend_from_slice(MONTHS[ts.month0() as usize % 12]);
    out.push(b' ');
    let day = ts.day();
    if day < 10 {
        out.push(b' ');
    }
    push_uint(out, u64::from(day), 1);
    out.push(b' ');
    push_uint(out, u64::from(ts.hour()), 2);
    out.push(b':');
    push_uint(out, u64::from(ts.minute()), 2);
    out.push(b':');
    push_uint(out, u64::from(ts.second().min(59)), 2);
}

/// Writes the syslog message (header + MSG, no framing) for one event into `out`.
/// `ts` is when the event was enqueued; `ioc_type` feeds MSGID = "type"; `seq` the sequenceId.
pub fn write_message(
    out: &mut Vec<u8>,
    h: &Header,
    ts: DateTime<Utc>,
    ioc_type: &str,
    seq: i64,
    msg: &str,
) {
    out.push(b'<');
    push_uint(out, u64::from(h.pri), 1);
    out.push(b'>');
    match h.format {
        SyslogFormat::Rfc5424 => {
            out.extend_from_slice(b"1 ");
            push_timestamp(out, ts);
            out.push(b' ');
            out.extend_from_slice(h.hostname.as_bytes());
            out.push(b' ');
            out.extend_from_slice(h.app_name.as_bytes());
            out.push(b' ');
            out.extend_from_slice(h.procid.as_bytes());
            out.push(b' ');
            match &h.msgid {
                Some(m) => out.extend_from_slice(m.as_bytes()),
                None => push_field(out, ioc_type, MSGID_MAX),
            }
            if h.structured_data {
                out.extend_from_slice(b" [meta sequenceId=\"");
                push_uint(out, sequence_id(seq).unsigned_abs(), 1);
                out.extend_from_slice(b"\"][origin software=\"");
                push_sd_value(out, env!("CARGO_PKG_NAME"));
                out.extend_from_slice(b"\" swVersion=\"");
                push_sd_value(out, env!("CARGO_PKG_VERSION"));
                out.extend_from_slice(b"\"] ");
            } else {
                out.extend_from_slice(b" - ");
            }
        }
        SyslogFormat::Rfc3164 => {
            push_bsd_timestamp(out, ts);
            out.push(b' ');
            out.extend_from_slice(h.hostname.as_bytes());
            out.push(b' ');
            out.extend_from_slice(h.app_name.as_bytes());
            out.push(b'[');
            out.extend_from_slice(h.procid.as_bytes());
            out.extend_from_slice(b"]: ");
        }
    }
    out.extend_from_slice(msg.as_bytes());
}

/// Appends `message` to `out` with the destination's framing. MSG-LEN counts the final bytes.
pub fn frame(out: &mut Vec<u8>, framing: Framing, message: &[u8]) {
    match framing {
        Framing::OctetCounting => {
            push_uint(out, message.len() as u64, 1);
            out.push(b' ');
            out.extend_from_slice(message);
        }
        Framing::Lf => {
            out.extend_from_slice(message);
            out.push(b'\n');
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ts() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, 17, 0, 0, 0).unwrap()
    }

    fn header(format: SyslogFormat, sd: bool) -> Header {
        Header::new(format, 4, 4, "collector01", "ioc-forwarder", 4242, None, sd)
    }

    #[test]
    fn rfc5424_header_has_pri_version_microseconds_and_type_msgid() {
        let mut out = Vec::new();
        write_message(
            &mut out,
            &header(SyslogFormat::Rfc5424, false),
            ts(),
            "ipv4",
            1,
            "CEF:0|x",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<36>1 2026-05-17T00:00:00.000000Z collector01 ioc-forwarder 4242 ipv4 - CEF:0|x"
        );
    }

    #[test]
    fn header_fields_are_printable_ascii_within_rfc_lengths() {
        let h = Header::new(
            SyslogFormat::Rfc5424,
            23,
            7,
            "höst name",
            &"a".repeat(60),
            1,
            Some(""),
            false,
        );
        assert_eq!(h.pri, 191);
        assert_eq!(h.hostname, "h_st_name");
        assert_eq!(h.app_name.len(), 48);
        assert_eq!(h.msgid.as_deref(), Some("-"));
        let mut out = Vec::new();
        write_message(
            &mut out,
            &header(SyslogFormat::Rfc5424, false),
            ts(),
            "mitre attack\u{e9}",
            1,
            "m",
        );
        assert!(String::from_utf8(out)
            .unwrap()
            .contains(" mitre_attack_ - m"));
    }

    #[test]
    fn structured_data_carries_sequence_and_origin() {
        let mut out = Vec::new();
        write_message(
            &mut out,
            &header(SyslogFormat::Rfc5424, true),
            ts(),
            "ipv4",
            2_147_483_648,
            "m",
        );
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains(
                " ipv4 [meta sequenceId=\"1\"][origin software=\"ioc-forwarder\" swVersion=\""
            ),
            "{s}"
        );
        assert!(s.ends_with("\"] m"));
    }

    #[test]
    fn rfc3164_header_is_bsd_style() {
        let mut out = Vec::new();
        let t = Utc.with_ymd_and_hms(2026, 5, 7, 9, 8, 7).unwrap();
        write_message(
            &mut out,
            &header(SyslogFormat::Rfc3164, false),
            t,
            "ipv4",
            1,
            "CEF:0|x",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<36>May  7 09:08:07 collector01 iocforwarder[4242]: CEF:0|x"
        );
    }

    #[test]
    fn rfc3164_tag_is_alphanumeric_within_32_characters() {
        assert_eq!(tag_field("ioc-forwarder"), "iocforwarder");
        assert_eq!(
            tag_field(&"ab:c[".repeat(20)),
            "abcabcabcabcabcabcabcabcabcabcab"
        );
        assert_eq!(tag_field("-_-"), "iocforwarder");
    }

    #[test]
    fn timestamps_rfc5424_cannot_carry_become_nil_or_clamped() {
        let h = header(SyslogFormat::Rfc5424, false);
        let mut out = Vec::new();
        let far = Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap();
        write_message(&mut out, &h, far, "ipv4", 1, "m");
        assert!(out.starts_with(b"<36>1 - collector01 "), "{out:?}");
        out.clear();
        let leap = Utc
            .with_ymd_and_hms(2016, 12, 31, 23, 59, 59)
            .unwrap()
            .with_nanosecond(1_500_000_000)
            .unwrap();
        write_message(&mut out, &h, leap, "ipv4", 1, "m");
        assert!(
            out.starts_with(b"<36>1 2016-12-31T23:59:59.999999Z "),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn octet_counting_counts_utf8_bytes() {
        let mut out = Vec::new();
        frame(&mut out, Framing::OctetCounting, "bü".as_bytes());
        assert_eq!(out, "3 bü".as_bytes());
        let mut out = Vec::new();
        frame(&mut out, Framing::Lf, b"x");
        assert_eq!(out, b"x\n");
    }
}
