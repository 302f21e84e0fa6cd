//! The configuration as typed values: what the rest of the program reads after loading.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::secret::Secret;
use super::syntax::cleartext_host;

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

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
            Protocol::Unix => "unix",
            Protocol::Stdout => "stdout",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    OctetCounting,
    Lf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    Rfc5424,
    Rfc3164,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    Truncate,
    Drop,
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
