//! The configuration as typed values: what the rest of the program reads after loading.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::secret::Secret;
use super::syntax::cleartext_host;

/// A config value spelled as one of a fixed set of names (`protocol = "tcp"`). Its table is the
/// one place those names are spelled: the reader looks a value up in it, `check-config` writes
/// the name back from it and error messages list it, so the three cannot drift apart.
pub trait Named: Copy + PartialEq + 'static {
    /// Every value with its name, in the order error messages list them.
    const NAMES: &'static [(&'static str, Self)];

    /// The value as the config file spells it. Every value is in its table (a unit test reads
    /// each table back), so the empty fallback is never taken.
    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(n, _)| n)
    }

    /// The value a name stands for, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub shutdown_timeout: Duration,
    pub source: SourceConfig,
    pub cef: CefConfig,
    pub syslog: SyslogConfig,
    pub destinations: Vec<DestinationConfig>,
    pub queue: QueueConfig,
    pub metrics: MetricsConfig,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub kind: SourceKind,
    pub poll_interval: Duration,
    pub lookback: Duration,
    /// Wanted IOC types as the user wrote them (normalised); empty = all.
    pub types: Vec<String>,
    /// Wanted confidences; empty = all.
    pub confidence: Vec<String>,
    pub industry: String,
    pub category: String,
}

#[derive(Debug, Clone)]
pub enum SourceKind {
    SocDefenders(ApiConfig),
    File { path: PathBuf },
}

/// The `kind` key of `[source]`: which [`SourceKind`] the section describes, named before its
/// settings are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKindTag {
    SocDefenders,
    File,
}

impl Named for SourceKindTag {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("socdefenders", SourceKindTag::SocDefenders),
        ("file", SourceKindTag::File),
    ];
}

impl SourceKind {
    /// Which kind this is, without its settings.
    pub fn tag(&self) -> SourceKindTag {
        match self {
            SourceKind::SocDefenders(_) => SourceKindTag::SocDefenders,
            SourceKind::File { .. } => SourceKindTag::File,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub base_url: String,
    pub api_key: Secret,
    pub page_size: u32,
    pub request_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// The key is written literally in the config file (not `${VAR}`, not `api_key_file`):
    /// then the file itself is a secret and its permissions matter.
    pub key_in_config_file: bool,
    /// An `http://` base_url to a host other than this machine is accepted (the key then
    /// crosses the network in clear text).
    pub allow_insecure_http: bool,
}

impl ApiConfig {
    /// The host the API key would travel to in clear text: `base_url` is `http://` and its
    /// host is not this machine. `None` for https:// and for loopback hosts.
    pub fn cleartext_host(&self) -> Option<String> {
        cleartext_host(&self.base_url)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CefProfile {
    SocDefenders,
    Extended,
}

impl Named for CefProfile {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("socdefenders", CefProfile::SocDefenders),
        ("extended", CefProfile::Extended),
    ];
}

#[derive(Debug, Clone)]
pub struct CefConfig {
    pub device_vendor: String,
    pub device_product: String,
    pub device_version: String,
    pub profile: CefProfile,
    pub severity: SeverityMap,
}

/// CEF severity (0-10) per confidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeverityMap {
    pub low: u8,
    pub medium: u8,
    pub high: u8,
}

impl Default for SeverityMap {
    fn default() -> Self {
        SeverityMap {
            low: 3,
            medium: 6,
            high: 9,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgId {
    /// The IOC type of each event.
    IocType,
    Fixed(String),
}

impl MsgId {
    /// The `msgid` value that stands for [`MsgId::IocType`].
    const IOC_TYPE: &'static str = "type";

    /// The `msgid` value as written in the file.
    pub fn from_name(name: String) -> MsgId {
        if name == Self::IOC_TYPE {
            MsgId::IocType
        } else {
            MsgId::Fixed(name)
        }
    }

    /// The value as the config file spells it.
    pub fn name(&self) -> &str {
        match self {
            MsgId::IocType => Self::IOC_TYPE,
            MsgId::Fixed(s) => s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// Empty means "the machine's hostname", resolved when the frame header is built.
    pub hostname: String,
    pub app_name: String,
    pub facility: u8,
    pub severity: u8,
    pub msgid: MsgId,
    pub structured_data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
    Tls,
    Unix,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    OctetCounting,
    Lf,
}

impl Named for Framing {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("octet-counting", Framing::OctetCounting),
        ("lf", Framing::Lf),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    Rfc5424,
    Rfc3164,
}

impl Named for SyslogFormat {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("rfc5424", SyslogFormat::Rfc5424),
        ("rfc3164", SyslogFormat::Rfc3164),
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    Truncate,
    Drop,
}

impl Named for Oversize {
    const NAMES: &'static [(&'static str, Self)] =
        &[("truncate", Oversize::Truncate), ("drop", Oversize::Drop)];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationConfig {
    pub name: String,
    pub protocol: Protocol,
    /// host:port entries in failover order (a single path for unix; empty for stdout).
    pub address: Vec<String>,
    pub framing: Framing,
    pub format: SyslogFormat,
    pub max_message_size: usize,
    pub oversize: Oversize,
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub tls_verify: bool,
    pub pin_sha256: Vec<String>,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    DropOldest,
    PausePolling,
}

impl Named for WhenFull {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("drop-oldest", WhenFull::DropOldest),
        ("pause-polling", WhenFull::PausePolling),
    ];
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub max_bytes: u64,
    pub when_full: WhenFull,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
}

/// The confidence levels `source.confidence` accepts.
pub const CONFIDENCES: &[&str] = &["low", "medium", "high"];

pub const IOC_TYPES: &[&str] = &[
    "ipv4",
    "ipv6",
    "domain",
    "url",
    "md5",
    "sha1",
    "sha256",
    "sha512",
    "cve",
    "email",
    "mitre-attack",
];

pub(crate) const FACILITIES: &[&str] = &[
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

pub(crate) const SEVERITIES: &[&str] = &[
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];
