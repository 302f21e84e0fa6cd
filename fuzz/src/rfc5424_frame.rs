//! Target `rfc5424_frame`: arbitrary `[syslog]` header values (hostname, APP-NAME, MSGID,
//! PRI parts, pid), time, sequence number and message — a raw string, or the CEF line of an
//! arbitrary indicator — through `Header::new`, `write_message`, `frame` (both framings)
//! and `deliver::frame_event` (the daemon's path, with a `max_message_size` from the config's
//! smallest, 480 bytes, to 4.5 KiB, so lines get truncated or dropped).
//!
//! Checks: header fields are printable US-ASCII within the RFC 5424 lengths; the timestamp
//! is chrono's RFC 3339 rendering (or `-`); MSG is the message unchanged; octet counting's
//! MSG-LEN is the frame's exact length and LF framing ends in one LF; `frame_event` appends,
//! writes nothing for a dropped event, and keeps a truncated message within the limit (and a
//! header always fits the smallest limit, which `frame_event` relies on).

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use chrono::{DateTime, Datelike, Timelike, Utc};
use ioc_forwarder::config::{Config, DestinationConfig, Framing, Oversize, SyslogFormat};
use ioc_forwarder::deliver::{frame_event, Framed};
use ioc_forwarder::encode::cef;
use ioc_forwarder::encode::rfc5424::{self, Header};
use ioc_forwarder::store::Event;

use super::gen::{ArbIndicator, ArbOptions};

#[derive(Debug, Arbitrary)]
enum Message {
    Raw(String),
    Cef(Box<(ArbIndicator, ArbOptions)>),
}

#[derive(Debug, Arbitrary)]
struct Input {
    rfc3164: bool,
    facility: u8,
    severity: u8,
    hostname: String,
    app_name: String,
    pid: u32,
    msgid: Option<String>,
    structured_data: bool,
    seq: i64,
    secs: i64,
    nanos: u32,
    ioc_type: String,
    message: Message,
    octet_counting: bool,
    truncate: bool,
    datagram: bool,
    max_message_size: u16,
    prefix: Vec<u8>,
}

/// A destination from the public config API, so fields added later keep their defaults.
fn destination() -> &'static DestinationConfig {
    static DEST: OnceLock<DestinationConfig> = OnceLock::new();
    DEST.get_or_init(|| {
        let text = "state_dir = \"/nonexistent/ioc-forwarder-fuzz\"\n\
                    [source]\nkind = \"file\"\npath = \"/nonexistent/ioc-forwarder-fuzz/feed.json\"\n\
                    [[destinations]]\nname = \"fuzz\"\nprotocol = \"tcp\"\naddress = \"127.0.0.1:9\"\n";
        let cfg = Config::parse(text, "/nonexistent/fuzz.toml".as_ref(), &|_| None)
            .unwrap_or_else(|e| panic!("the fuzz destination does not parse: {e}"));
        cfg.destinations.into_iter().next().expect("one destination")
    })
}

/// The smallest `max_message_size` the config accepts.
const MIN_MAX_MESSAGE_SIZE: usize = 480;

fn time(secs: i64, nanos: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, nanos).unwrap_or_else(|| {
        let secs = secs.clamp(
            DateTime::<Utc>::MIN_UTC.timestamp(),
            DateTime::<Utc>::MAX_UTC.timestamp(),
        );
        DateTime::from_timestamp(secs, nanos % 1_000_000_000).unwrap_or_default()
    })
}

fn printable(field: &str, s: &str, max: usize) {
    assert!(
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic()),
        "{field} {s:?}"
    );
}

pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let format = if input.rfc3164 {
        SyslogFormat::Rfc3164
    } else {
        SyslogFormat::Rfc5424
    };
    let header = Header::new(
        format,
        input.facility,
        input.severity,
        &input.hostname,
        &input.app_name,
        input.pid,
        input.msgid.as_deref(),
        input.structured_data,
    );
    assert!(header.pri <= 191, "PRI {}", header.pri);
    printable("HOSTNAME", &header.hostname, rfc5424::HOSTNAME_MAX);
    match format {
        SyslogFormat::Rfc5424 => printable("APP-NAME", &header.app_name, rfc5424::APP_NAME_MAX),
        SyslogFormat::Rfc3164 => {
            printable("TAG", &header.app_name, rfc5424::TAG_MAX);
            assert!(header.app_name.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }
    if let Some(m) = &header.msgid {
        printable("MSGID", m, rfc5424::MSGID_MAX);
    }

    let (line, is_cef) = match input.message {
        Message::Raw(s) => (s, false),
        Message::Cef(cef) => {
            let (ind, opts) = *cef;
            let mut line = String::new();
            cef::encode(&ind.build(), cef::Act::Add, &opts.build(), &mut line);
            (line, true)
        }
    };
    let ts = time(input.secs, input.nanos);
    let mut msg = Vec::new();
    rfc5424::write_message(&mut msg, &header, ts, &input.ioc_type, input.seq, &line);
    assert!(msg.ends_with(line.as_bytes()), "MSG changed");
    let head = &msg[..msg.len() - line.len()];
    check_head(head, &header, ts);
    // `frame_event` relies on this: with the smallest limit the config allows there is room
    // after the longest header, so a message too long is cut in its MSG or dropped, never sent
    // over the limit.
    assert!(
        head.len() < MIN_MAX_MESSAGE_SIZE,
        "a {}-byte header",
        head.len()
    );

    for framing in [Framing::OctetCounting, Framing::Lf] {
        let mut out = b"x".to_vec();
        rfc5424::frame(&mut out, framing, &msg);
        assert_eq!(unframe(&out[1..], framing), &msg[..]);
    }

    let mut dest = destination().clone();
    dest.format = format;
    dest.framing = if input.octet_counting {
        Framing::OctetCounting
    } else {
        Framing::Lf
    };
    dest.oversize = if input.truncate {
        Oversize::Truncate
    } else {
        Oversize::Drop
    };
    // The config allows 480 bytes to 16 MiB; small limits make truncation and drops common.
    dest.max_message_size = MIN_MAX_MESSAGE_SIZE + usize::from(input.max_message_size % 4096);
    let ev = Event::new(input.seq, ts, &input.ioc_type, &line);
    let mut scratch = b"stale".to_vec();
    let mut buf = input.prefix.clone();
    let outcome = frame_event(&dest, &header, &ev, input.datagram, &mut scratch, &mut buf);
    assert!(buf.starts_with(&input.prefix), "frame_event must append");
    let out = &buf[input.prefix.len()..];
    let sent = if input.datagram || out.is_empty() {
        out
    } else {
        unframe(out, dest.framing)
    };
    match outcome {
        Framed::Dropped => {
            assert!(out.is_empty(), "a dropped event wrote bytes");
            assert!(msg.len() > dest.max_message_size);
        }
        Framed::Whole => {
            assert!(msg.len() <= dest.max_message_size);
            assert_eq!(sent, &msg[..]);
        }
        Framed::Truncated => {
            assert!(msg.len() > dest.max_message_size);
            assert!(sent.len() <= dest.max_message_size, "{} bytes", sent.len());
            assert!(sent.starts_with(head), "the header changed");
            let cut = std::str::from_utf8(&sent[head.len()..]).expect("a cut MSG is UTF-8");
            if is_cef {
                super::cef_check::parse(cut);
            }
        }
    }
}

/// The message in one frame, checking the framing.
fn unframe(out: &[u8], framing: Framing) -> &[u8] {
    match framing {
        Framing::OctetCounting => {
            let sp = out.iter().position(|&b| b == b' ').expect("MSG-LEN SP");
            let len: usize = std::str::from_utf8(&out[..sp])
                .ok()
                .and_then(|l| l.parse().ok())
                .expect("MSG-LEN is a number");
            assert!(
                !out[..sp].starts_with(b"0") || sp == 1,
                "MSG-LEN with a leading zero"
            );
            assert_eq!(len, out.len() - sp - 1, "MSG-LEN is not the frame's length");
            &out[sp + 1..]
        }
        Framing::Lf => {
            let (last, msg) = out.split_last().expect("an LF frame");
            assert_eq!(*last, b'\n');
            msg
        }
    }
}

/// The header (everything before MSG): printable ASCII and spaces; in RFC 5424, the fields in
/// order with the timestamp as chrono writes it.
fn check_head(head: &[u8], h: &Header, ts: DateTime<Utc>) {
    assert!(
        head.iter().all(|&b| b == b' ' || b.is_ascii_graphic()),
        "header {:?}",
        String::from_utf8_lossy(head)
    );
    let head = std::str::from_utf8(head).unwrap();
    let pri = format!("<{}>", h.pri);
    assert!(head.starts_with(&pri), "{head:?}");
    if h.format == SyslogFormat::Rfc3164 {
        return;
    }
    let mut fields = head[pri.len()..].splitn(7, ' ');
    let mut next = || fields.next().unwrap_or_else(|| panic!("{head:?}"));
    assert_eq!(next(), "1");
    let want_ts = if (0..=9999).contains(&ts.year()) {
        let (sec, micros) = if ts.nanosecond() >= 1_000_000_000 {
            (59, 999_999)
        } else {
            (ts.second(), ts.nanosecond() / 1000)
        };
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{sec:02}.{micros:06}Z",
            ts.year(),
            ts.month(),
            ts.day(),
            ts.hour(),
            ts.minute()
        )
    } else {
        "-".to_string()
    };
    assert_eq!(next(), want_ts);
    assert_eq!(next(), h.hostname);
    assert_eq!(next(), h.app_name);
    assert_eq!(next(), h.procid);
    printable("MSGID", next(), rfc5424::MSGID_MAX);
    let sd = next();
    if h.structured_data {
        assert!(
            sd.starts_with("[meta sequenceId=\"") && sd.ends_with("\"] "),
            "{head:?}"
        );
    } else {
        assert_eq!(sd, "- ", "{head:?}");
    }
}
