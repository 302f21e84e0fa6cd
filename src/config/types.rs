//! The configuration as typed values: what the rest of the program reads after loading. Each
//! field's doc names its key, its default and its unit, as `config.example.toml` does; the reader
//! enforces them. A `[[destinations]]` entry has its own file, `destination.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::destination::DestinationConfig;
use super::lifecycle::LifecycleConfig;
use super::named::Named;
use super::secret::Secret;
use super::syntax::cleartext_host;
use crate::indicator::IocType;

/// A whole config file: where indicators come from, how they become CEF events in syslog
/// frames, where those go, and the queue between.
#[derive(Debug, Clone)]
pub struct Config {
    /// `state_dir`: the directory holding the durable queue, the poll cursor and the dedup
    /// state; created if missing, and it must be writable by the service user.
    /// Default: "/var/lib/ioc-forwarder".
    pub state_dir: PathBuf,
    /// `shutdown_timeout`: after SIGTERM/SIGINT, and in `once`, delivery goes on for up to this
    /// long before the program exits (`once` gives up when no destination has made progress for
    /// this long). The whole stop ends within this plus 2 seconds. Default: "10s".
    pub shutdown_timeout: Duration,
    /// `[source]`: where indicators come from and which ones are wanted.
    pub source: SourceConfig,
    /// `[cef]`: the CEF header fields, extension layout and severity of each event.
    pub cef: CefConfig,
    /// `[syslog]`: the syslog header fields every frame carries.
    pub syslog: SyslogConfig,
    /// `[[destinations]]`: the receivers, at least one, each with its own position in the
    /// queue so a slow or dead one never holds back the others until the queue is full.
    pub destinations: Vec<DestinationConfig>,
    /// `[queue]`: the durable queue between polling and delivery, and the retry backoff.
    pub queue: QueueConfig,
    /// `[metrics]`: the HTTP endpoint for metrics and health checks.
    pub metrics: MetricsConfig,
    /// `[lifecycle]`: when sent indicators expire, and how often live ones are sent again.
    pub lifecycle: LifecycleConfig,
}

/// `[source]`: where indicators come from and which ones are forwarded.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// `kind` and the keys that go with it: the API, or a file. Default: "socdefenders".
    pub kind: SourceKind,
    /// `poll_interval`: how often to poll for new or changed indicators. Default: "5m".
    pub poll_interval: Duration,
    /// `lookback`: how far back the first poll reaches when there is no saved cursor yet (the
    /// API clamps it to the tier's lookback). Default: "24h".
    pub lookback: Duration,
    /// `types`: only forward these IOC types, lowercased with `_` as `-` ("mitre_attack" is
    /// "mitre-attack"), each once; every one is in [`IOC_TYPES`]. Default: empty, meaning all
    /// types, those unknown to the forwarder included.
    pub types: Vec<String>,
    /// `confidence`: only forward these confidence levels, lowercased, each once; every one is
    /// in [`CONFIDENCES`]. Default: empty, meaning all.
    pub confidence: Vec<String>,
    /// `industry`: only indicators for one critical-infrastructure sector (the API's `industry`
    /// parameter, a slug such as "energy"). Default: "" (all).
    pub industry: String,
    /// `category`: only indicators from one source category (the API's `category` parameter,
    /// e.g. "government"). Default: "" (all).
    pub category: String,
}

/// Where indicators come from: `kind` and the settings only that kind reads.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// `kind = "socdefenders"`: poll the SOC Defenders API.
    SocDefenders(ApiConfig),
    /// `kind = "file"`: read indicators from a file (testing, air-gapped hosts).
    File {
        /// `path`: an API response body, a JSON array of IOC objects, or NDJSON (one object a
        /// line, at most 4 MiB a line); relative to the config file's folder. Required.
        path: PathBuf,
    },
}

/// The `kind` key of `[source]`: which [`SourceKind`] the section describes, named before its
/// settings are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKindTag {
    /// "socdefenders": [`SourceKind::SocDefenders`].
    SocDefenders,
    /// "file": [`SourceKind::File`].
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

/// `[source]` with `kind = "socdefenders"`: where the API is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `base_url`: the API's base URL, without a trailing `/`; endpoints such as `/iocs` are
    /// added to it. https://, or http:// only to this machine unless `allow_insecure_http`.
    /// Default: "https://socdefenders.ai/api/v1".
    pub base_url: String,
    /// `api_key`, or the trimmed content of `api_key_file` (exactly one of the two). Required.
    pub api_key: Secret,
    /// `page_size`: the API's `limit` parameter, 1-10000 (the server may cap it by tier, and
    /// paging copes with that). Default: 1000.
    pub page_size: u32,
    /// `request_timeout`: one HTTP request to the API, connect and response. Default: "30s".
    pub request_timeout: Duration,
    /// `ca_file`: extra PEM CA certificate(s) trusted for the API on top of the system roots
    /// (TLS-inspecting proxies, test servers); readable at load. Default: none.
    pub ca_file: Option<PathBuf>,
    /// The key is written literally in the config file (not `${VAR}`, not `api_key_file`):
    /// then the file itself is a secret and its permissions matter.
    pub key_in_config_file: bool,
    /// `allow_insecure_http`: an `http://` base_url to a host other than this machine is
    /// accepted (the key then crosses the network in clear text, and every start and reload
    /// logs a warning). Default: false.
    pub allow_insecure_http: bool,
}

impl ApiConfig {
    /// The host the API key would travel to in clear text: `base_url` is `http://` and its
    /// host is not this machine. `None` for https:// and for loopback hosts.
    pub fn cleartext_host(&self) -> Option<String> {
        cleartext_host(&self.base_url)
    }
}

/// `cef.profile`: which CEF extension layout events use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CefProfile {
    /// "socdefenders": src, cs1 (confidence), cs2 (feed name) and rt, as the SOC Defenders CEF
    /// endpoint writes them, byte for byte.
    SocDefenders,
    /// "extended": typed keys per IOC type plus tags, techniques, reference, origin, category,
    /// context, id, add/update and dates.
    Extended,
}

impl Named for CefProfile {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("socdefenders", CefProfile::SocDefenders),
        ("extended", CefProfile::Extended),
    ];
}

/// `[cef]`: the CEF line of each event.
#[derive(Debug, Clone)]
pub struct CefConfig {
    /// `device_vendor`: the CEF Device Vendor header field (`|` and `\` are escaped).
    /// Default: "SOC Defenders".
    pub device_vendor: String,
    /// `device_product`: the CEF Device Product header field. Default: "Threat Intelligence".
    pub device_product: String,
    /// `device_version`: the CEF Device Version header field. Default: "1.0".
    pub device_version: String,
    /// `profile`: the extension layout. Default: "socdefenders".
    pub profile: CefProfile,
    /// `severity`: the CEF Severity of each confidence level.
    /// Default: { low = 3, medium = 6, high = 9 }.
    pub severity: SeverityMap,
}

/// `cef.severity`: the CEF Severity (0-10) given to each confidence level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeverityMap {
    /// For confidence "low". Default: 3.
    pub low: u8,
    /// For confidence "medium". Default: 6.
    pub medium: u8,
    /// For confidence "high". Default: 9.
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

/// `syslog.msgid`: the RFC 5424 MSGID field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgId {
    /// "type": the IOC type of each event, e.g. "ipv4".
    IocType,
    /// Any other string, sent as it is.
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

/// `[syslog]`: the syslog header every frame carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// `hostname`: the HOSTNAME field (non-printable and non-ASCII characters replaced, cut to
    /// 255). Empty means "the machine's hostname", resolved when the frame header is built.
    /// Default: "".
    pub hostname: String,
    /// `app_name`: the APP-NAME field (printable ASCII, at most 48 characters); not empty.
    /// Default: "ioc-forwarder".
    pub app_name: String,
    /// `facility`: the facility code 0-23, part of PRI (facility * 8 + severity), given in the
    /// file as a number or a name ("auth" is 4). Default: 4.
    pub facility: u8,
    /// `severity`: the syslog severity code 0-7 of every event (the CEF severity is in the CEF
    /// line), given as a number or a name ("warning" is 4). Default: 4.
    pub severity: u8,
    /// `msgid`: the MSGID field (printable ASCII, at most 32 characters). Default: "type".
    pub msgid: MsgId,
    /// `structured_data`: add `[meta sequenceId=..][origin software=.. swVersion=..]`; the
    /// sequenceId is the event's queue sequence number, so a frame sent again carries the same
    /// id. Default: false (SD is "-").
    pub structured_data: bool,
}

/// `queue.when_full`: what happens when the queue reaches `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// "drop-oldest": drop the oldest events (counted as dropped, reason queue_full). The
    /// default.
    DropOldest,
    /// "pause-polling": stop polling until delivery makes room.
    PausePolling,
}

impl Named for WhenFull {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("drop-oldest", WhenFull::DropOldest),
        ("pause-polling", WhenFull::PausePolling),
    ];
}

/// `[queue]`: the durable, disk-backed queue between polling and delivery (in `state_dir`),
/// and the backoff for reconnecting and resending.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// `max_bytes`: the most bytes of queued CEF lines (the state file itself is somewhat
    /// larger); given as a size or a number of bytes. Default: 1GiB.
    pub max_bytes: u64,
    /// `when_full`: what happens at `max_bytes`. Default: "drop-oldest".
    pub when_full: WhenFull,
    /// `retry_initial`: the first backoff delay; it grows exponentially, with jitter, up to
    /// `retry_max`. Default: "1s".
    pub retry_initial: Duration,
    /// `retry_max`: the longest backoff delay, not shorter than `retry_initial`; also how often
    /// a failed-over destination probes its first address. Default: "60s".
    pub retry_max: Duration,
}

/// `[metrics]`: the HTTP endpoint.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// `listen`: the IP:port serving GET /metrics (Prometheus text format), /healthz and
    /// /readyz. Default: none (off).
    pub listen: Option<SocketAddr>,
}

/// The confidence levels `source.confidence` accepts.
pub const CONFIDENCES: &[&str] = &["low", "medium", "high"];

/// The IOC types `source.types` and the keys of `lifecycle.expire_after_by_type` accept, as the
/// API spells them: the names in [`IocType`]'s [`Named`] table, in its order.
pub const IOC_TYPES: &[&str] = &names_of(IOC_TYPE_NAMES);

/// The IOC types as config keys name them. [`IocType::Other`] has no name: the config can
/// only address the types the forwarder knows. The API's other spelling, "mitre_attack", is
/// normalised by the reader (lowercase, `_` as `-`) before the lookup.
impl Named for IocType {
    const NAMES: &'static [(&'static str, Self)] = &IOC_TYPE_NAMES;
}

/// [`IocType`]'s name table: the one list of IOC type names, kept with the type.
const IOC_TYPE_NAMES: [(&str, IocType); 11] = IocType::NAMES;

/// The names of a name table, in its order: a `const` list of names drawn from the table, so
/// the two cannot differ.
const fn names_of<T: Copy, const N: usize>(table: [(&'static str, T); N]) -> [&'static str; N] {
    let mut names = [""; N];
    let mut i = 0;
    while i < N {
        names[i] = table[i].0;
        i += 1;
    }
    names
}

/// The syslog facility names `syslog.facility` accepts; a name's index is its code.
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

/// The syslog severity names `syslog.severity` accepts; a name's index is its code.
pub(crate) const SEVERITIES: &[&str] = &[
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];
