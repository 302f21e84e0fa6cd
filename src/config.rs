//! The TOML configuration (every key is in `config.example.toml`) as typed values.
//!
//! Loading never stops at the first mistake: every problem (unknown key, wrong type, unset
//! `${VAR}`, bad duration, unreadable file) is collected with the dotted key it belongs to and
//! the file line where we can find it, so an operator fixes a config in one round trip.
//! After loading, nothing in the program looks a key up by string.
//!
//! Secrets (the API key) live in [`Secret`], whose `Debug` and `Display` never show them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

/// A string that must never be printed: `Debug`/`Display` show a redaction marker.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The value itself; call only where it goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The only part of the key that may ever be shown (check-config, logs, errors): its first
    /// 12 characters, what the API itself shows as `key_prefix`, and only of a key of at least
    /// 20, so that most of it stays secret. Nothing of a shorter key.
    pub fn shown_prefix(&self) -> Option<String> {
        (self.0.chars().count() >= 20).then(|| self.0.chars().take(12).collect())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl fmt::Display for Secret {
    /// [`Secret::shown_prefix`] and a redaction marker: the one way a key is written out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shown_prefix() {
            Some(p) => write!(f, "{p}… (redacted)"),
            None => f.write_str("(redacted)"),
        }
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

/// The host of an `http://` URL unless it is a loopback address (127.0.0.0/8, `::1`) or
/// `localhost`, where the key never leaves the machine. The URL is read as the HTTP client
/// reads it, so `http://127.1/` counts as loopback and `http://localhost.example/` does not.
pub fn cleartext_host(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    if parsed.scheme() != "http" {
        return None;
    }
    let host = parsed.host_str()?;
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    (!loopback).then(|| host.to_string())
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

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} (line {}): {}", self.key, line, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Everything wrong with a config, in file order where known.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "config error in {}: {}", self.path.display(), p)?;
        }
        Ok(())
    }
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

const FACILITIES: &[&str] = &[
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

const SEVERITIES: &[&str] = &[
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

impl Config {
    /// Reads, interpolates and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            problems: vec![Problem {
                key: "(file)".into(),
                line: None,
                message: format!("cannot read the config file: {e}"),
            }],
        })?;
        Config::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses config text; `env` looks up `${VAR}` values (injectable for tests).
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            path: path.to_path_buf(),
            problems,
        };
        let table: Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                let line = e.span().map(|s| line_of_offset(text, s.start));
                return Err(fail(vec![Problem {
                    key: "(syntax)".into(),
                    line,
                    message: e.message().to_string(),
                }]));
            }
        };
        let mut r = Reader {
            text,
            env,
            problems: Vec::new(),
            base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        let cfg = r.config(table);
        if r.problems.is_empty() {
            Ok(cfg)
        } else {
            let mut problems = r.problems;
            problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            Err(fail(problems))
        }
    }

    /// A built-in config for `demo`: the sample feed, defaults everywhere, one destination.
    pub fn demo(state_dir: PathBuf, feed: PathBuf, destination: DestinationConfig) -> Config {
        Config {
            state_dir,
            shutdown_timeout: Duration::from_secs(10),
            source: SourceConfig {
                kind: SourceKind::File { path: feed },
                poll_interval: Duration::from_secs(300),
                lookback: Duration::from_secs(86400),
                types: vec![],
                confidence: vec![],
                industry: String::new(),
                category: String::new(),
            },
            cef: CefConfig {
                device_vendor: "SOC Defenders".into(),
                device_product: "Threat Intelligence".into(),
                device_version: "1.0".into(),
                profile: CefProfile::SocDefenders,
                severity: SeverityMap::default(),
            },
            syslog: SyslogConfig {
                hostname: String::new(),
                app_name: "ioc-forwarder".into(),
                facility: 4,
                severity: 4,
                msgid: MsgId::IocType,
                structured_data: false,
            },
            destinations: vec![destination],
            queue: QueueConfig {
                max_bytes: 1 << 30,
                when_full: WhenFull::DropOldest,
                retry_initial: Duration::from_secs(1),
                retry_max: Duration::from_secs(60),
            },
            metrics: MetricsConfig { listen: None },
        }
    }

    /// The effective config as TOML, with secrets redacted (for `check-config`).
    pub fn to_display_toml(&self) -> String {
        let mut out = String::new();
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let q = |s: &str| Value::String(s.to_string()).to_string();
        let list = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
        let path = |p: &Option<PathBuf>| {
            q(&p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default())
        };
        out += &format!("state_dir = {}\n", q(&self.state_dir.display().to_string()));
        out += &format!(
            "shutdown_timeout = {}\n\n[source]\n",
            q(&d(self.shutdown_timeout))
        );
        let s = &self.source;
        match &s.kind {
            SourceKind::SocDefenders(api) => {
                out += "kind = \"socdefenders\"\n";
                out += &format!("base_url = {}\n", q(&api.base_url));
                out += &format!("api_key = {}\n", q(&api.api_key.to_string()));
                out += &format!("page_size = {}\n", api.page_size);
                out += &format!("request_timeout = {}\n", q(&d(api.request_timeout)));
                out += &format!("ca_file = {}\n", path(&api.ca_file));
                out += &format!("allow_insecure_http = {}\n", api.allow_insecure_http);
            }
            SourceKind::File { path } => {
                out += "kind = \"file\"\n";
                out += &format!("path = {}\n", q(&path.display().to_string()));
            }
        }
        out += &format!("poll_interval = {}\n", q(&d(s.poll_interval)));
        out += &format!("lookback = {}\n", q(&d(s.lookback)));
        out += &format!("types = {}\n", list(&s.types));
        out += &format!("confidence = {}\n", list(&s.confidence));
        out += &format!(
            "industry = {}\ncategory = {}\n\n[cef]\n",
            q(&s.industry),
            q(&s.category)
        );
        let c = &self.cef;
        out += &format!("device_vendor = {}\n", q(&c.device_vendor));
        out += &format!("device_product = {}\n", q(&c.device_product));
        out += &format!("device_version = {}\n", q(&c.device_version));
        out += &format!(
            "profile = \"{}\"\n",
            match c.profile {
                CefProfile::SocDefenders => "socdefenders",
                CefProfile::Extended => "extended",
            }
        );
        out += &format!(
            "severity = {{ low = {}, medium = {}, high = {} }}\n\n[syslog]\n",
            c.severity.low, c.severity.medium, c.severity.high
        );
        let y = &self.syslog;
        out += &format!("hostname = {}\n", q(&y.hostname));
        out += &format!("app_name = {}\n", q(&y.app_name));
        out += &format!("facility = {}\n", y.facility);
        out += &format!("severity = {}\n", y.severity);
        out += &format!(
            "msgid = {}\n",
            q(match &y.msgid {
                MsgId::IocType => "type",
                MsgId::Fixed(s) => s,
            })
        );
        out += &format!("structured_data = {}\n", y.structured_data);
        for dst in &self.destinations {
            out += "\n[[destinations]]\n";
            out += &format!("name = {}\n", q(&dst.name));
            out += &format!("protocol = \"{}\"\n", dst.protocol.as_str());
            out += &format!("address = {}\n", list(&dst.address));
            out += &format!(
                "framing = \"{}\"\n",
                match dst.framing {
                    Framing::OctetCounting => "octet-counting",
                    Framing::Lf => "lf",
                }
            );
            out += &format!(
                "format = \"{}\"\n",
                match dst.format {
                    SyslogFormat::Rfc5424 => "rfc5424",
                    SyslogFormat::Rfc3164 => "rfc3164",
                }
            );
            out += &format!("max_message_size = {}\n", dst.max_message_size);
            out += &format!(
                "oversize = \"{}\"\n",
                match dst.oversize {
                    Oversize::Truncate => "truncate",
                    Oversize::Drop => "drop",
                }
            );
            if dst.protocol == Protocol::Tls {
                out += &format!("ca_file = {}\n", path(&dst.ca_file));
                out += &format!(
                    "server_name = {}\n",
                    q(dst.server_name.as_deref().unwrap_or(""))
                );
                out += &format!("client_cert = {}\n", path(&dst.client_cert));
                out += &format!(
                    "client_key = {}\n",
                    q(if dst.client_key.is_some() {
                        "<redacted path set>"
                    } else {
                        ""
                    })
                );
                out += &format!("tls_verify = {}\n", dst.tls_verify);
                out += &format!("pin_sha256 = {}\n", list(&dst.pin_sha256));
            }
            out += &format!("connect_timeout = {}\n", q(&d(dst.connect_timeout)));
            out += &format!("write_timeout = {}\n", q(&d(dst.write_timeout)));
        }
        let qc = &self.queue;
        out += "\n[queue]\n";
        out += &format!("max_bytes = {}\n", qc.max_bytes);
        out += &format!(
            "when_full = \"{}\"\n",
            match qc.when_full {
                WhenFull::DropOldest => "drop-oldest",
                WhenFull::PausePolling => "pause-polling",
            }
        );
        out += &format!("retry_initial = {}\n", q(&d(qc.retry_initial)));
        out += &format!("retry_max = {}\n\n[metrics]\n", q(&d(qc.retry_max)));
        out += &format!(
            "listen = {}\n",
            q(&self
                .metrics
                .listen
                .map(|a| a.to_string())
                .unwrap_or_default())
        );
        out
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Walks the parsed TOML and records problems instead of returning at the first one.
struct Reader<'a> {
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
    base_dir: PathBuf,
}

/// One TOML table being read: keys are removed as they are consumed, leftovers are unknown.
struct Section {
    /// Dotted path for messages, e.g. `destinations[1]`; empty at top level.
    path: String,
    /// The header as written in the file (`[source]`, `[[destinations]]`), for line lookup.
    header: Option<&'static str>,
    /// Which occurrence of the header (for arrays of tables).
    index: usize,
    table: Table,
}

impl Section {
    fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{}", self.path, k)
        }
    }
}

impl<'a> Reader<'a> {
    fn problem(&mut self, sec: &Section, key: &str, message: impl Into<String>) {
        let line = self.find_line(sec, key);
        self.problems.push(Problem {
            key: sec.key(key),
            line,
            message: message.into(),
        });
    }

    /// Best-effort line of `key = ...` inside the section's header block.
    fn find_line(&self, sec: &Section, key: &str) -> Option<usize> {
        let mut in_section = sec.header.is_none();
        let mut seen = 0usize;
        for (i, raw) in self.text.lines().enumerate() {
            let line = raw.trim_start();
            if line.starts_with('[') {
                in_section = match sec.header {
                    Some(h) if line.starts_with(h) => {
                        seen += 1;
                        seen == sec.index + 1
                    }
                    _ => false,
                };
                if key.is_empty() && in_section {
                    return Some(i + 1);
                }
                continue;
            }
            if in_section && !key.is_empty() {
                let Some(rest) = line.strip_prefix(key) else {
                    continue;
                };
                let rest = rest.trim_start();
                if rest.starts_with('=') {
                    return Some(i + 1);
                }
            }
        }
        None
    }

    fn section(&mut self, parent: &mut Section, key: &str, header: &'static str) -> Section {
        let table = match parent.table.remove(key) {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(_) => {
                self.problem(parent, key, "must be a table");
                Table::new()
            }
        };
        Section {
            path: key.to_string(),
            header: Some(header),
            index: 0,
            table,
        }
    }

    fn finish(&mut self, sec: Section) {
        let keys: Vec<String> = sec.table.keys().cloned().collect();
        for k in keys {
            self.problem(&sec, &k, "unknown key");
        }
    }

    fn interpolate(&mut self, sec: &Section, key: &str, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) => {
                    let name = &after[..end];
                    match (self.env)(name) {
                        Some(v) if !name.is_empty() => out.push_str(&v),
                        _ => self.problem(
                            sec,
                            key,
                            format!("environment variable ${{{name}}} is not set"),
                        ),
                    }
                    rest = &after[end + 1..];
                }
                None => {
                    self.problem(sec, key, "unterminated ${ in string");
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    fn opt_str(&mut self, sec: &mut Section, key: &str) -> Option<String> {
        match sec.table.remove(key) {
            None => None,
            Some(Value::String(s)) => Some(self.interpolate(sec, key, &s)),
            Some(other) => {
                self.problem(
                    sec,
                    key,
                    format!("must be a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn string(&mut self, sec: &mut Section, key: &str, default: &str) -> String {
        self.opt_str(sec, key)
            .unwrap_or_else(|| default.to_string())
    }

    /// A string that, when empty or absent, means "not set".
    fn nonempty(&mut self, sec: &mut Section, key: &str) -> Option<String> {
        self.opt_str(sec, key).filter(|s| !s.is_empty())
    }

    fn bool(&mut self, sec: &mut Section, key: &str, default: bool) -> bool {
        match sec.table.remove(key) {
            None => default,
            Some(Value::Boolean(b)) => b,
            Some(other) => {
                self.problem(
                    sec,
                    key,
                    format!("must be true or false, found {}", other.type_str()),
                );
                default
            }
        }
    }

    fn int(&mut self, sec: &mut Section, key: &str, default: i64, min: i64, max: i64) -> i64 {
        match sec.table.remove(key) {
            None => default,
            Some(Value::Integer(i)) if (min..=max).contains(&i) => i,
            Some(Value::Integer(i)) => {
                self.problem(sec, key, format!("{i} is out of range {min}..={max}"));
                default
            }
            Some(other) => {
                self.problem(
                    sec,
                    key,
                    format!("must be an integer, found {}", other.type_str()),
                );
                default
            }
        }
    }

    fn duration(&mut self, sec: &mut Section, key: &str, default: &str) -> Duration {
        let fallback = humantime::parse_duration(default).unwrap_or_default();
        let Some(s) = self.opt_str(sec, key) else {
            return fallback;
        };
        match humantime::parse_duration(s.trim()) {
            Ok(d) if d.is_zero() => {
                self.problem(sec, key, "must be greater than zero");
                fallback
            }
            Ok(d) => d,
            Err(e) => {
                self.problem(
                    sec,
                    key,
                    format!("{s:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"24h\""),
                );
                fallback
            }
        }
    }

    fn size(&mut self, sec: &mut Section, key: &str, default: u64) -> u64 {
        match sec.table.remove(key) {
            None => default,
            Some(Value::Integer(i)) if i > 0 => i as u64,
            Some(Value::String(s)) => {
                let s = self.interpolate(sec, key, &s);
                match parse_size(&s) {
                    Some(n) if n > 0 => n,
                    _ => {
                        self.problem(
                            sec,
                            key,
                            format!(
                                "{s:?} is not a size; write e.g. \"8KiB\", \"512MiB\", \"1GiB\""
                            ),
                        );
                        default
                    }
                }
            }
            Some(other) => {
                self.problem(
                    sec,
                    key,
                    format!(
                        "must be a size such as \"8KiB\", found {}",
                        other.type_str()
                    ),
                );
                default
            }
        }
    }

    fn string_list(&mut self, sec: &mut Section, key: &str) -> Vec<String> {
        match sec.table.remove(key) {
            None => vec![],
            Some(Value::String(s)) => {
                let s = self.interpolate(sec, key, &s);
                if s.is_empty() {
                    vec![]
                } else {
                    vec![s]
                }
            }
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => out.push(self.interpolate(sec, key, &s)),
                        other => self.problem(
                            sec,
                            key,
                            format!("list items must be strings, found {}", other.type_str()),
                        ),
                    }
                }
                out
            }
            Some(other) => {
                self.problem(
                    sec,
                    key,
                    format!("must be a list of strings, found {}", other.type_str()),
                );
                vec![]
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        sec: &mut Section,
        key: &str,
        choices: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(s) = self.opt_str(sec, key) else {
            return default;
        };
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == s) {
            return *v;
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        self.problem(
            sec,
            key,
            format!("{s:?} is not one of {}", names.join(", ")),
        );
        default
    }

    /// A syslog code given as a name or a number.
    fn code(&mut self, sec: &mut Section, key: &str, names: &[&str], default: u8) -> u8 {
        let max = names.len() as i64 - 1;
        match sec.table.remove(key) {
            None => default,
            Some(Value::Integer(i)) if (0..=max).contains(&i) => i as u8,
            Some(Value::String(s)) => {
                let s = self.interpolate(sec, key, &s).to_ascii_lowercase();
                if let Some(i) = names.iter().position(|n| *n == s) {
                    return i as u8;
                }
                if let Ok(i) = s.parse::<i64>() {
                    if (0..=max).contains(&i) {
                        return i as u8;
                    }
                }
                self.problem(
                    sec,
                    key,
                    format!(
                        "{s:?} is not a name ({}) or a number 0-{max}",
                        names.join(", ")
                    ),
                );
                default
            }
            Some(other) => {
                self.problem(
                    sec,
                    key,
                    format!("must be a name or a number 0-{max}, found {}", other),
                );
                default
            }
        }
    }

    /// A file the config names: it must be readable now (a missing key file is a config error at
    /// start, not a failure at the first poll); relative paths are taken from
    /// the config file's folder.
    fn file(&mut self, sec: &mut Section, key: &str) -> Option<PathBuf> {
        let s = self.nonempty(sec, key)?;
        let p = self.base_dir.join(&s);
        match std::fs::File::open(&p) {
            Ok(_) => Some(p),
            Err(e) => {
                self.problem(sec, key, format!("cannot read {}: {e}", p.display()));
                None
            }
        }
    }

    fn config(&mut self, table: Table) -> Config {
        let mut top = Section {
            path: String::new(),
            header: None,
            index: 0,
            table,
        };
        let state_dir = PathBuf::from(self.string(&mut top, "state_dir", "/var/lib/ioc-forwarder"));
        let shutdown_timeout = self.duration(&mut top, "shutdown_timeout", "10s");
        let source = self.source(&mut top);
        let cef = self.cef(&mut top);
        let syslog = self.syslog(&mut top);
        let destinations = self.destinations(&mut top);
        let queue = self.queue(&mut top);
        let metrics = self.metrics(&mut top);
        self.finish(top);
        Config {
            state_dir,
            shutdown_timeout,
            source,
            cef,
            syslog,
            destinations,
            queue,
            metrics,
        }
    }

    fn source(&mut self, top: &mut Section) -> SourceConfig {
        let mut s = self.section(top, "source", "[source]");
        let kind = self.choice(&mut s, "kind", &[("socdefenders", 0), ("file", 1)], 0);
        let poll_interval = self.duration(&mut s, "poll_interval", "5m");
        let lookback = self.duration(&mut s, "lookback", "24h");
        let mut types = Vec::new();
        for t in self.string_list(&mut s, "types") {
            let norm = t.trim().to_ascii_lowercase().replace('_', "-");
            if IOC_TYPES.contains(&norm.as_str()) {
                if !types.contains(&norm) {
                    types.push(norm);
                }
            } else {
                self.problem(
                    &s,
                    "types",
                    format!("{t:?} is not an IOC type ({})", IOC_TYPES.join(", ")),
                );
            }
        }
        let mut confidence = Vec::new();
        for c in self.string_list(&mut s, "confidence") {
            let norm = c.trim().to_ascii_lowercase();
            if ["low", "medium", "high"].contains(&norm.as_str()) {
                if !confidence.contains(&norm) {
                    confidence.push(norm);
                }
            } else {
                self.problem(
                    &s,
                    "confidence",
                    format!("{c:?} is not one of low, medium, high"),
                );
            }
        }
        let industry = self.string(&mut s, "industry", "");
        let category = self.string(&mut s, "category", "");
        let kind = if kind == 0 {
            let base_url = self.string(&mut s, "base_url", "https://socdefenders.ai/api/v1");
            let allow_insecure_http = self.bool(&mut s, "allow_insecure_http", false);
            if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
                self.problem(
                    &s,
                    "base_url",
                    format!("{base_url:?} must start with https:// or http://"),
                );
            } else if let Err(e) = reqwest::Url::parse(&base_url) {
                self.problem(&s, "base_url", format!("{base_url:?} is not a URL: {e}"));
            } else if let (Some(host), false) = (cleartext_host(&base_url), allow_insecure_http) {
                // The key goes in a request header: over http:// anyone on the path reads it.
                self.problem(
                    &s,
                    "base_url",
                    format!(
                        "http:// to {host} would send the API key in clear text; use https://, or set allow_insecure_http = true in [source] if the network path is trusted"
                    ),
                );
            }
            let key_in_config_file = s
                .table
                .get("api_key")
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty() && !v.contains("${"));
            let key_inline = self.nonempty(&mut s, "api_key");
            let key_file = self.file(&mut s, "api_key_file");
            let api_key = match (key_inline, key_file) {
                (Some(_), Some(_)) => {
                    self.problem(
                        &s,
                        "api_key_file",
                        "set either api_key or api_key_file, not both",
                    );
                    Secret::new("")
                }
                (Some(k), None) => Secret::new(k.trim()),
                (None, Some(p)) => match std::fs::read_to_string(&p) {
                    Ok(k) if !k.trim().is_empty() => Secret::new(k.trim()),
                    Ok(_) => {
                        self.problem(&s, "api_key_file", format!("{} is empty", p.display()));
                        Secret::new("")
                    }
                    Err(e) => {
                        self.problem(
                            &s,
                            "api_key_file",
                            format!("cannot read {}: {e}", p.display()),
                        );
                        Secret::new("")
                    }
                },
                (None, None) => {
                    if !self
                        .problems
                        .iter()
                        .any(|p| p.key == "source.api_key" || p.key == "source.api_key_file")
                    {
                        self.problem(
                            &s,
                            "api_key",
                            "an API key is required: set api_key or api_key_file",
                        );
                    }
                    Secret::new("")
                }
            };
            let page_size = self.int(&mut s, "page_size", 1000, 1, 10_000) as u32;
            let request_timeout = self.duration(&mut s, "request_timeout", "30s");
            let ca_file = self.file(&mut s, "ca_file");
            if let Some(v) = s.table.remove("path") {
                let _ = v;
                self.problem(&s, "path", "only used with kind = \"file\"");
            }
            SourceKind::SocDefenders(ApiConfig {
                base_url: base_url.trim_end_matches('/').to_string(),
                api_key,
                page_size,
                request_timeout,
                ca_file,
                key_in_config_file,
                allow_insecure_http,
            })
        } else {
            let path = match self.nonempty(&mut s, "path") {
                Some(p) => self.base_dir.join(p),
                None => {
                    self.problem(&s, "path", "kind = \"file\" needs a path");
                    PathBuf::new()
                }
            };
            for k in [
                "base_url",
                "api_key",
                "api_key_file",
                "page_size",
                "request_timeout",
                "ca_file",
                "allow_insecure_http",
            ] {
                if s.table.remove(k).is_some() {
                    self.problem(&s, k, "only used with kind = \"socdefenders\"");
                }
            }
            SourceKind::File { path }
        };
        self.finish(s);
        SourceConfig {
            kind,
            poll_interval,
            lookback,
            types,
            confidence,
            industry,
            category,
        }
    }

    fn cef(&mut self, top: &mut Section) -> CefConfig {
        let mut s = self.section(top, "cef", "[cef]");
        let device_vendor = self.string(&mut s, "device_vendor", "SOC Defenders");
        let device_product = self.string(&mut s, "device_product", "Threat Intelligence");
        let device_version = self.string(&mut s, "device_version", "1.0");
        let profile = self.choice(
            &mut s,
            "profile",
            &[
                ("socdefenders", CefProfile::SocDefenders),
                ("extended", CefProfile::Extended),
            ],
            CefProfile::SocDefenders,
        );
        let mut severity = SeverityMap::default();
        match s.table.remove("severity") {
            None => {}
            Some(Value::Table(t)) => {
                let mut sub = Section {
                    path: "cef.severity".into(),
                    header: Some("[cef]"),
                    index: 0,
                    table: t,
                };
                severity.low = self.int(&mut sub, "low", 3, 0, 10) as u8;
                severity.medium = self.int(&mut sub, "medium", 6, 0, 10) as u8;
                severity.high = self.int(&mut sub, "high", 9, 0, 10) as u8;
                self.finish(sub);
            }
            Some(_) => self.problem(
                &s,
                "severity",
                "must be a table like { low = 3, medium = 6, high = 9 }",
            ),
        }
        self.finish(s);
        CefConfig {
            device_vendor,
            device_product,
            device_version,
            profile,
            severity,
        }
    }

    fn syslog(&mut self, top: &mut Section) -> SyslogConfig {
        let mut s = self.section(top, "syslog", "[syslog]");
        let hostname = self.string(&mut s, "hostname", "");
        let app_name = self.string(&mut s, "app_name", "ioc-forwarder");
        if app_name.is_empty() {
            self.problem(&s, "app_name", "must not be empty");
        }
        let facility = self.code(&mut s, "facility", FACILITIES, 4);
        let severity = self.code(&mut s, "severity", SEVERITIES, 4);
        let msgid = match self.string(&mut s, "msgid", "type").as_str() {
            "type" => MsgId::IocType,
            other => MsgId::Fixed(other.to_string()),
        };
        let structured_data = self.bool(&mut s, "structured_data", false);
        self.finish(s);
        SyslogConfig {
            hostname,
            app_name,
            facility,
            severity,
            msgid,
            structured_data,
        }
    }

    fn destinations(&mut self, top: &mut Section) -> Vec<DestinationConfig> {
        let items = match top.table.remove("destinations") {
            None => {
                self.problem(
                    top,
                    "destinations",
                    "at least one [[destinations]] is required",
                );
                return vec![];
            }
            Some(Value::Array(items)) => items,
            Some(_) => {
                self.problem(
                    top,
                    "destinations",
                    "must be an array of tables: write [[destinations]]",
                );
                return vec![];
            }
        };
        if items.is_empty() {
            self.problem(
                top,
                "destinations",
                "at least one [[destinations]] is required",
            );
        }
        let mut out: Vec<DestinationConfig> = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            let Value::Table(table) = item else {
                self.problem(top, "destinations", "every entry must be a table");
                continue;
            };
            let mut s = Section {
                path: format!("destinations[{index}]"),
                header: Some("[[destinations]]"),
                index,
                table,
            };
            let d = self.destination(&mut s);
            if out.iter().any(|o| o.name == d.name) {
                self.problem(
                    &s,
                    "name",
                    format!("{:?} is used by another destination", d.name),
                );
            }
            self.finish(s);
            out.push(d);
        }
        out
    }

    fn destination(&mut self, s: &mut Section) -> DestinationConfig {
        let name = self.string(s, "name", "");
        if name.is_empty() {
            self.problem(s, "name", "every destination needs a name");
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            self.problem(
                s,
                "name",
                format!("{name:?} may only hold letters, digits, '-', '_' and '.'"),
            );
        }
        let protocol = self.choice(
            s,
            "protocol",
            &[
                ("udp", Some(Protocol::Udp)),
                ("tcp", Some(Protocol::Tcp)),
                ("tls", Some(Protocol::Tls)),
                ("unix", Some(Protocol::Unix)),
                ("stdout", Some(Protocol::Stdout)),
            ],
            None,
        );
        let protocol = protocol.unwrap_or_else(|| {
            if !self.problems.iter().any(|p| p.key == s.key("protocol")) {
                self.problem(
                    s,
                    "protocol",
                    "required: \"udp\", \"tcp\", \"tls\", \"unix\" or \"stdout\"",
                );
            }
            Protocol::Tcp
        });
        let address = self.string_list(s, "address");
        match protocol {
            Protocol::Stdout => {
                if !address.is_empty() {
                    self.problem(s, "address", "stdout takes no address");
                }
            }
            Protocol::Unix => {
                if address.len() != 1 {
                    self.problem(s, "address", "unix needs exactly one socket path");
                }
            }
            _ => {
                if address.is_empty() {
                    self.problem(
                        s,
                        "address",
                        "required: host:port, or a list of them for failover",
                    );
                }
                for a in &address {
                    if split_host_port(a).is_none() {
                        self.problem(
                            s,
                            "address",
                            format!("{a:?} is not host:port (IPv6: [::1]:6514)"),
                        );
                    }
                }
            }
        }
        let framing = self.choice(
            s,
            "framing",
            &[
                ("octet-counting", Some(Framing::OctetCounting)),
                ("lf", Some(Framing::Lf)),
            ],
            None,
        );
        let framing = framing.unwrap_or(if protocol == Protocol::Tls {
            Framing::OctetCounting
        } else {
            Framing::Lf
        });
        let format = self.choice(
            s,
            "format",
            &[
                ("rfc5424", SyslogFormat::Rfc5424),
                ("rfc3164", SyslogFormat::Rfc3164),
            ],
            SyslogFormat::Rfc5424,
        );
        let default_size = if protocol == Protocol::Udp {
            2048
        } else {
            8192
        };
        let max_message_size = self.size(s, "max_message_size", default_size);
        if !(480..=16 * 1024 * 1024).contains(&max_message_size) {
            self.problem(s, "max_message_size", "must be between 480 bytes and 16MiB");
        }
        if protocol == Protocol::Udp && max_message_size > 65_507 {
            self.problem(
                s,
                "max_message_size",
                "a UDP datagram holds at most 65507 bytes",
            );
        }
        let oversize = self.choice(
            s,
            "oversize",
            &[("truncate", Oversize::Truncate), ("drop", Oversize::Drop)],
            Oversize::Truncate,
        );
        let tls_keys = [
            "ca_file",
            "server_name",
            "client_cert",
            "client_key",
            "tls_verify",
            "pin_sha256",
        ];
        if protocol != Protocol::Tls {
            for k in tls_keys {
                if s.table.contains_key(k) {
                    s.table.remove(k);
                    self.problem(s, k, "only used with protocol = \"tls\"");
                }
            }
        }
        let ca_file = self.file(s, "ca_file");
        let server_name = self.nonempty(s, "server_name");
        let client_cert = self.file(s, "client_cert");
        let client_key = self.file(s, "client_key");
        if client_cert.is_some() != client_key.is_some()
            && !self
                .problems
                .iter()
                .any(|p| p.key.starts_with(&s.key("client_")))
        {
            self.problem(s, "client_key", "client_cert and client_key go together");
        }
        let tls_verify = self.bool(s, "tls_verify", true);
        let pin_sha256 = self.string_list(s, "pin_sha256");
        let connect_timeout = self.duration(s, "connect_timeout", "10s");
        let write_timeout = self.duration(s, "write_timeout", "30s");
        DestinationConfig {
            name,
            protocol,
            address,
            framing,
            format,
            max_message_size: max_message_size as usize,
            oversize,
            ca_file,
            server_name,
            client_cert,
            client_key,
            tls_verify,
            pin_sha256,
            connect_timeout,
            write_timeout,
        }
    }

    fn queue(&mut self, top: &mut Section) -> QueueConfig {
        let mut s = self.section(top, "queue", "[queue]");
        let max_bytes = self.size(&mut s, "max_bytes", 1 << 30);
        let when_full = self.choice(
            &mut s,
            "when_full",
            &[
                ("drop-oldest", WhenFull::DropOldest),
                ("pause-polling", WhenFull::PausePolling),
            ],
            WhenFull::DropOldest,
        );
        let retry_initial = self.duration(&mut s, "retry_initial", "1s");
        let retry_max = self.duration(&mut s, "retry_max", "60s");
        if retry_max < retry_initial {
            self.problem(&s, "retry_max", "must not be shorter than retry_initial");
        }
        self.finish(s);
        QueueConfig {
            max_bytes,
            when_full,
            retry_initial,
            retry_max,
        }
    }

    fn metrics(&mut self, top: &mut Section) -> MetricsConfig {
        let mut s = self.section(top, "metrics", "[metrics]");
        let listen = self
            .nonempty(&mut s, "listen")
            .and_then(|l| match l.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.problem(
                        &s,
                        "listen",
                        format!("{l:?} is not an IP:port such as \"127.0.0.1:9464\""),
                    );
                    None
                }
            });
        self.finish(s);
        MetricsConfig { listen }
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals). `None` when malformed.
pub fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':')?;
        if h.contains(':') {
            return None;
        }
        (h, p)
    };
    let port: u16 = port.parse().ok()?;
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host, port))
}

/// "8KiB", "1GiB", "512MB", "1024" → bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "tib" | "t" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct keys named by the problems (used by tests and for summaries).
    fn problem_keys(problems: &[Problem]) -> std::collections::BTreeSet<String> {
        problems.iter().map(|p| p.key.clone()).collect()
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/tmp/x.toml"), &|name| {
            (name == "KEY").then(|| "sk_live_0123456789abcdef".to_string())
        })
    }

    const MINIMAL: &str = r#"
state_dir = "/tmp/s"
[source]
api_key = "${KEY}"
[[destinations]]
name = "a"
protocol = "tcp"
address = "127.0.0.1:514"
"#;

    #[test]
    fn minimal_config_takes_the_spec_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.source.poll_interval, Duration::from_secs(300));
        let SourceKind::SocDefenders(api) = &c.source.kind else {
            panic!()
        };
        assert_eq!(api.api_key.expose(), "sk_live_0123456789abcdef");
        assert_eq!(api.page_size, 1000);
        assert_eq!(c.syslog.facility, 4);
        assert_eq!(c.syslog.severity, 4);
        assert_eq!(c.destinations[0].framing, Framing::Lf);
        assert_eq!(c.destinations[0].max_message_size, 8192);
        assert_eq!(
            c.cef.severity,
            SeverityMap {
                low: 3,
                medium: 6,
                high: 9
            }
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key_and_line() {
        let text = "state_dir = \"/tmp/s\"\nbogus = 1\n[source]\napi_key = \"${NOPE}\"\npoll_interval = \"5 parsecs\"\n[[destinations]]\nname = \"a\"\nprotocol = \"carrier-pigeon\"\naddress = \"x:1\"\n";
        let err = parse(text).unwrap_err();
        let keys = problem_keys(&err.problems);
        for k in [
            "bogus",
            "source.api_key",
            "source.poll_interval",
            "destinations[0].protocol",
        ] {
            assert!(keys.contains(k), "{k} missing from {keys:?}");
        }
        let poll = err
            .problems
            .iter()
            .find(|p| p.key == "source.poll_interval")
            .unwrap();
        assert_eq!(poll.line, Some(5));
        assert!(err.to_string().contains("NOPE"));
    }

    #[test]
    fn secret_never_shows_in_debug_or_display() {
        let c = parse(MINIMAL).unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
        assert!(!c.to_display_toml().contains("0123456789abcdef"));
        assert!(c.to_display_toml().contains("sk_live_0123"));
    }

    #[test]
    fn only_a_long_keys_prefix_is_ever_shown() {
        let long = Secret::new("sk_live_0123456789abcdef");
        assert_eq!(long.shown_prefix().as_deref(), Some("sk_live_0123"));
        assert_eq!(long.to_string(), "sk_live_0123… (redacted)");
        let short = Secret::new("sk_live_01234");
        assert_eq!(short.shown_prefix(), None);
        assert_eq!(short.to_string(), "(redacted)");
    }

    #[test]
    fn display_toml_is_itself_valid_toml() {
        let c = parse(MINIMAL).unwrap();
        let t: Result<Table, _> = c.to_display_toml().parse();
        assert!(t.is_ok(), "{}", c.to_display_toml());
    }

    #[test]
    fn only_http_to_a_host_other_than_this_machine_is_cleartext() {
        for local in [
            "http://127.0.0.1:8080/api",
            "http://127.255.0.9/api",
            "http://127.1/api",
            "http://[::1]:8080/api",
            "http://localhost/api",
            "http://LocalHost:80/api",
            "https://api.example.com/api",
        ] {
            assert_eq!(cleartext_host(local), None, "{local}");
        }
        for (remote, host) in [
            ("http://api.example.com/api", "api.example.com"),
            ("http://localhost.example.com/api", "localhost.example.com"),
            ("http://128.0.0.1/api", "128.0.0.1"),
            ("http://[::2]/api", "[::2]"),
            ("http://[::ffff:10.0.0.1]/api", "[::ffff:a00:1]"),
        ] {
            assert_eq!(cleartext_host(remote).as_deref(), Some(host), "{remote}");
        }
    }

    #[test]
    fn sizes_and_host_ports_parse() {
        assert_eq!(parse_size("8KiB"), Some(8192));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(split_host_port("[::1]:6514"), Some(("::1", 6514)));
        assert_eq!(split_host_port("a.example:514"), Some(("a.example", 514)));
        assert_eq!(split_host_port("::1:514"), None);
        assert_eq!(split_host_port("host"), None);
    }
}
