//! One `[[destinations]]` entry as typed values: the receiver, its transport and framing, the
//! size limit, the TLS keys, and whether it gets lifecycle events.

use std::path::PathBuf;
use std::time::Duration;

use super::named::Named;

/// `protocol`: the transport of one destination. Required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// "udp": one message per datagram.
    Udp,
    /// "tcp": framed messages on a stream.
    Tcp,
    /// "tls": framed messages on a TLS 1.2+ stream (rustls), with the TLS keys.
    Tls,
    /// "unix": the socket at the path in `address`; a datagram socket (such as /dev/log) gets
    /// one unframed message per datagram, a stream socket gets framed messages.
    Unix,
    /// "stdout": framed messages on standard output; no address.
    Stdout,
}

impl Named for Protocol {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("udp", Protocol::Udp),
        ("tcp", Protocol::Tcp),
        ("tls", Protocol::Tls),
        ("unix", Protocol::Unix),
        ("stdout", Protocol::Stdout),
    ];
}

impl Protocol {
    /// [`Named::name`], callable without the trait in scope.
    pub fn as_str(self) -> &'static str {
        self.name()
    }
}

/// `framing`: how frames are separated on a stream (datagrams ignore it: one message each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// "octet-counting": `LEN SP FRAME` (RFC 6587 / RFC 5425). The default for tls.
    OctetCounting,
    /// "lf": `FRAME\n` (CEF data never holds a raw LF, so frames are never split). The default
    /// for every protocol but tls.
    Lf,
}

impl Named for Framing {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("octet-counting", Framing::OctetCounting),
        ("lf", Framing::Lf),
    ];
}

/// `format`: the syslog header format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    /// "rfc5424": the RFC 5424 header. The default.
    Rfc5424,
    /// "rfc3164": the legacy BSD header `<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG` in UTC, for
    /// receivers that require it.
    Rfc3164,
}

impl Named for SyslogFormat {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("rfc5424", SyslogFormat::Rfc5424),
        ("rfc3164", SyslogFormat::Rfc3164),
    ];
}

/// `oversize`: what happens to a message larger than `max_message_size` (both are counted in
/// metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// "truncate": shorten the longest CEF extension value at a UTF-8 and escape boundary, so
    /// the line stays valid CEF. The default.
    Truncate,
    /// "drop": drop the event and count it.
    Drop,
}

impl Named for Oversize {
    const NAMES: &'static [(&'static str, Self)] =
        &[("truncate", Oversize::Truncate), ("drop", Oversize::Drop)];
}

/// One `[[destinations]]` entry: a SIEM receiver. The TLS keys (`ca_file` to `pin_sha256`)
/// may only be set with `protocol = "tls"`, and keep their defaults otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationConfig {
    /// `name`: unique among destinations, used in logs, metrics labels and `test-destination
    /// NAME`; letters, digits, '-', '_' and '.'. Required.
    pub name: String,
    /// `protocol`: the transport. Required.
    pub protocol: Protocol,
    /// `address`: host:port entries in failover order (the first that answers is used, and the
    /// first is probed again every `queue.retry_max`); a single socket path for unix; empty
    /// for stdout. Given as a string or a list. Required except for stdout.
    pub address: Vec<String>,
    /// `framing`: how frames are separated. Default: "octet-counting" for tls, "lf" otherwise.
    pub framing: Framing,
    /// `format`: the syslog header format. Default: "rfc5424".
    pub format: SyslogFormat,
    /// `max_message_size`: the largest syslog message, in bytes without framing, 480 to 16MiB
    /// (at most 65507 for udp); given as a size or a number of bytes.
    /// Default: 2048 for udp, 8KiB otherwise.
    pub max_message_size: usize,
    /// `oversize`: what happens to a larger message. Default: "truncate".
    pub oversize: Oversize,
    /// `ca_file`: PEM CA certificate(s) to verify the receiver with, instead of the system
    /// roots; readable at load. Default: none (system roots).
    pub ca_file: Option<PathBuf>,
    /// `server_name`: the name to verify in the receiver's certificate and to send as SNI.
    /// Default: none (the host part of `address`).
    pub server_name: Option<String>,
    /// `client_cert`: PEM certificate chain for mutual TLS; set with `client_key` or not at
    /// all; readable at load. Default: none (no client certificate).
    pub client_cert: Option<PathBuf>,
    /// `client_key`: PEM private key for `client_cert`; a secret, so check-config shows only
    /// whether it is set. Default: none.
    pub client_key: Option<PathBuf>,
    /// `tls_verify`: verify the receiver's chain and name; false is allowed but warns at every
    /// connect. Default: true.
    pub tls_verify: bool,
    /// `pin_sha256`: SPKI SHA-256 pins (base64); when set, one must match the receiver's
    /// certificate, checked in addition to the chain. Default: empty.
    pub pin_sha256: Vec<String>,
    /// `connect_timeout`: time allowed to open a connection (TCP connect plus TLS handshake).
    /// Default: "10s".
    pub connect_timeout: Duration,
    /// `write_timeout`: a write that makes no progress for this long fails; the connection is
    /// opened again and unacknowledged events are sent again. Default: "30s".
    pub write_timeout: Duration,
    /// `lifecycle_events`: whether this destination gets the lifecycle events (expire, revoke,
    /// refresh; see `[lifecycle]`); false = add and update events only. Default: true.
    pub lifecycle_events: bool,
}
