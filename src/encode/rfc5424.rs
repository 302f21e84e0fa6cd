//! CEF line → syslog message → framed bytes (SPEC "RFC 5424 frame"). Pure, no I/O.
//!
//! Header fields are sanitised once per destination ([`Header::new`]): printable US-ASCII only
//! (anything else becomes `_`), cut to the RFC 5424 lengths, `-` when empty. Per event only the
//! timestamp, MSGID and MSG change.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::config::{Framing, SyslogFormat};

/// Replaces anything outside PRINTUSASCII (33..=126) with `_`, cuts to `max`, `-` when empty.
pub fn sanitize_field(s: &str, max: usize) -> String {
    let out: String = s
        .chars()
        .take(max)
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .collect();
    if out.is_empty() {
        "-".to_string()
    } else {
        out
    }
}

/// The per-destination constant part of every frame.
#[derive(Debug, Clone)]
pub struct Header {
    pub format: SyslogFormat,
    pub pri: u8,
    pub hostname: String,
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
        let app_max = if format == SyslogFormat::Rfc3164 {
            32
        } else {
            48
        };
        Header {
            format,
            pri: facility * 8 + severity,
            hostname: sanitize_field(hostname, 255),
            app_name: sanitize_field(app_name, app_max),
            procid: procid.to_string(),
            msgid: msgid.map(|m| sanitize_field(m, 32)),
            structured_data,
        }
    }
}

/// RFC 5424 sequenceId for a queue sequence number: 1..=2147483647, wrapping to 1.
pub fn sequence_id(seq: i64) -> i64 {
    (seq - 1).rem_euclid(2_147_483_647) + 1
}

fn push_sd_value(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
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
    // `write!` into a String never fails; the buffer is reused across events by the caller.
    let mut head = String::with_capacity(96);
    match h.format {
        SyslogFormat::Rfc5424 => {
            let _ = write!(
                head,
                "<{}>1 {} {} {} {} ",
                h.pri,
                ts.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
                h.hostname,
                h.app_name,
                h.procid
            );
            match &h.msgid {
                Some(m) => head.push_str(m),
                None => head.push_str(&sanitize_field(ioc_type, 32)),
            }
            out.extend_from_slice(head.as_bytes());
            if h.structured_data {
                let _ = write!(
                    out_str(out),
                    " [meta sequenceId=\"{}\"][origin software=\"",
                    sequence_id(seq)
                );
                push_sd_value(out, "ioc-forwarder");
                out.extend_from_slice(b"\" swVersion=\"");
                push_sd_value(out, env!("CARGO_PKG_VERSION"));
                out.extend_from_slice(b"\"] ");
            } else {
                out.extend_from_slice(b" - ");
            }
        }
        SyslogFormat::Rfc3164 => {
            // RFC 3164 §4.1.2: "Mmm dd hh:mm:ss", day space-padded; we send UTC.
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let _ = write!(
                head,
                "<{}>{} {:>2} {:02}:{:02}:{:02} {} {}[{}]: ",
                h.pri,
                MONTHS[ts.month0() as usize],
                ts.day(),
                ts.hour(),
                ts.minute(),
                ts.second(),
                h.hostname,
                h.app_name,
                h.procid
            );
            out.extend_from_slice(head.as_bytes());
        }
    }
    out.extend_from_slice(msg.as_bytes());
}

/// Lets `write!` append formatted ASCII straight to a byte buffer.
fn out_str(out: &mut Vec<u8>) -> impl std::fmt::Write + '_ {
    struct W<'a>(&'a mut Vec<u8>);
    impl std::fmt::Write for W<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }
    W(out)
}

/// Appends `message` to `out` with the destination's framing.
pub fn frame(out: &mut Vec<u8>, framing: Framing, message: &[u8]) {
    match framing {
        Framing::OctetCounting => {
            let _ = write!(out_str(out), "{} ", message.len());
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
            "<36>May  7 09:08:07 collector01 ioc-forwarder[4242]: CEF:0|x"
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
