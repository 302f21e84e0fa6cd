//! Framing a batch for the wire: each event's CEF line inside an RFC 5424 message, framed
//! for a stream (octet-counting or newline) or sent bare as one datagram.
//!
//! A message longer than the limit (`max_message_size`, or less where a datagram socket takes
//! less) is truncated or dropped as `oversize` says; either is counted and logged. A dropped
//! event still moves the destination's position: it is done with once everything before it
//! is delivered.

use crate::config::{DestinationConfig, MsgId, Oversize, SyslogConfig};
use crate::encode::{cef, rfc5424};
use crate::metrics;
use crate::store::Event;

/// The machine's hostname for the RFC 5424 HOSTNAME field when the config leaves it empty.
pub fn machine_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "-".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Builds the constant part of every frame for a destination.
pub fn header_for(dest: &DestinationConfig, syslog: &SyslogConfig) -> rfc5424::Header {
    let hostname = if syslog.hostname.is_empty() {
        machine_hostname()
    } else {
        syslog.hostname.clone()
    };
    let msgid = match &syslog.msgid {
        MsgId::IocType => None,
        MsgId::Fixed(m) => Some(m.as_str()),
    };
    rfc5424::Header::new(
        dest.format,
        syslog.facility,
        syslog.severity,
        &hostname,
        &syslog.app_name,
        std::process::id(),
        msgid,
        syslog.structured_data,
    )
}

/// What happened to one event while framing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    Whole,
    Truncated,
    Dropped,
}

/// Frames one event into `buf` (appending) within `max_message_size`, truncating or dropping
/// per `oversize`. `msg` is scratch space reused across calls.
pub fn frame_event(
    dest: &DestinationConfig,
    header: &rfc5424::Header,
    ev: &Event,
    datagram: bool,
    msg: &mut Vec<u8>,
    buf: &mut Vec<u8>,
) -> Framed {
    frame_event_within(dest, header, ev, datagram, dest.max_message_size, msg, buf)
}

/// [`frame_event`] within `max` bytes instead of the destination's `max_message_size` (a
/// datagram socket may take less).
fn frame_event_within(
    dest: &DestinationConfig,
    header: &rfc5424::Header,
    ev: &Event,
    datagram: bool,
    max: usize,
    msg: &mut Vec<u8>,
    buf: &mut Vec<u8>,
) -> Framed {
    msg.clear();
    let line = ev.cef();
    rfc5424::write_message(msg, header, ev.enqueued, ev.ioc_type(), ev.seq, line);
    let mut outcome = Framed::Whole;
    if msg.len() > max {
        let head_len = msg.len() - line.len();
        if head_len >= max {
            // Not even the header fits (a datagram socket smaller than any sane message).
            return Framed::Dropped;
        }
        let room = max - head_len;
        let cut = match dest.oversize {
            Oversize::Truncate => cef::truncate_to(line, room),
            Oversize::Drop => None,
        };
        let Some(line) = cut else {
            return Framed::Dropped;
        };
        msg.truncate(head_len);
        msg.extend_from_slice(line.as_bytes());
        outcome = Framed::Truncated;
    }
    if datagram {
        buf.extend_from_slice(msg);
    } else {
        rfc5424::frame(buf, dest.framing, msg);
    }
    outcome
}

/// One batch framed for the wire, with the buffers reused from batch to batch.
#[derive(Default)]
pub(super) struct Frames {
    /// Scratch for one message before framing.
    msg: Vec<u8>,
    /// The batch as it goes on the wire.
    pub(super) buf: Vec<u8>,
    /// Where each frame sent ends in `buf` (datagram transports send each on its own).
    pub(super) ends: Vec<usize>,
    /// Every event of the batch with its position on this connection once it is sent (a byte
    /// offset into `buf`, or on datagram transports a count of frames), and whether it is a
    /// frame at all. A dropped event "ends" where the frame before it ended: it is done with once
    /// everything before it is delivered.
    pub(super) positions: Vec<(i64, usize, bool)>,
}

impl Frames {
    /// Frames `batch` within `max` bytes a message, counting and logging what had to be
    /// truncated or dropped.
    pub(super) fn fill(
        &mut self,
        dest: &DestinationConfig,
        header: &rfc5424::Header,
        batch: &[Event],
        datagram: bool,
        max: usize,
    ) {
        self.buf.clear();
        self.ends.clear();
        self.positions.clear();
        let name = &dest.name;
        for ev in batch {
            let framed = frame_event_within(
                dest,
                header,
                ev,
                datagram,
                max,
                &mut self.msg,
                &mut self.buf,
            );
            match framed {
                Framed::Whole => self.ends.push(self.buf.len()),
                Framed::Truncated => {
                    self.ends.push(self.buf.len());
                    metrics::get().truncated(name);
                    tracing::warn!(destination = %name, seq = ev.seq, max, "event longer than max_message_size; truncated");
                }
                Framed::Dropped => {
                    metrics::get().dropped(name, "oversize", 1);
                    tracing::warn!(destination = %name, seq = ev.seq, max, "event longer than max_message_size; dropped");
                }
            }
            let at = if datagram {
                self.ends.len()
            } else {
                self.buf.len()
            };
            self.positions.push((ev.seq, at, framed != Framed::Dropped));
        }
    }
}
