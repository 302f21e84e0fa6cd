//! The effective config as TOML, as `check-config` prints it: every key with the value in use,
//! defaults included, so an operator sees what the program will do rather than what the file
//! says. Secrets are redacted: the API key shows only [`Secret`]'s prefix, and the client key
//! file only whether one is set. The output is itself valid TOML, with enum values spelled by
//! their [`Named`] tables, as the reader accepts them.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Value;

use super::*;

impl Config {
    /// The effective config as TOML, with secrets redacted (for `check-config`).
    pub fn to_display_toml(&self) -> String {
        let mut out = Toml(String::new());
        out.path("state_dir", &self.state_dir);
        out.duration("shutdown_timeout", self.shutdown_timeout);
        out.source(&self.source);
        out.cef(&self.cef);
        out.syslog(&self.syslog);
        for dst in &self.destinations {
            out.destination(dst);
        }
        out.queue(&self.queue);
        out.header("[metrics]");
        let listen = self.metrics.listen.map(|a| a.to_string());
        out.str("listen", &listen.unwrap_or_default());
        out.lifecycle(&self.lifecycle);
        out.0
    }
}

/// TOML text being written, one `key = value` line at a time.
struct Toml(String);

impl Toml {
    /// A blank line and a table header.
    fn header(&mut self, header: &str) {
        self.0 += &format!("\n{header}\n");
    }

    /// A value written as it displays: numbers, booleans, inline tables.
    fn raw(&mut self, key: &str, value: impl Display) {
        self.0 += &format!("{key} = {value}\n");
    }

    /// A string, quoted and escaped as TOML.
    fn str(&mut self, key: &str, value: &str) {
        self.raw(key, Value::String(value.to_string()));
    }

    fn name(&mut self, key: &str, value: impl Named) {
        self.str(key, value.name());
    }

    /// A duration as the reader takes it back: "5m", "1day".
    fn duration(&mut self, key: &str, value: Duration) {
        self.str(key, &duration_text(value));
    }

    /// A duration where "0s" means never (`None`).
    fn duration_or_never(&mut self, key: &str, value: Option<Duration>) {
        self.duration(key, value.unwrap_or_default());
    }

    fn path(&mut self, key: &str, value: &Path) {
        self.str(key, &value.display().to_string());
    }

    /// An optional file: "" when not set, as the reader takes it.
    fn file(&mut self, key: &str, value: &Option<PathBuf>) {
        self.path(key, value.as_deref().unwrap_or(Path::new("")));
    }

    fn list(&mut self, key: &str, values: &[String]) {
        let items = values.iter().cloned().map(Value::String).collect();
        self.raw(key, Value::Array(items));
    }

    fn source(&mut self, s: &SourceConfig) {
        self.header("[source]");
        self.name("kind", s.kind.tag());
        match &s.kind {
            SourceKind::SocDefenders(api) => {
                self.str("base_url", &api.base_url);
                self.str("api_key", &api.api_key.to_string());
                self.raw("page_size", api.page_size);
                self.duration("request_timeout", api.request_timeout);
                self.file("ca_file", &api.ca_file);
                self.raw("allow_insecure_http", api.allow_insecure_http);
            }
            SourceKind::File { path } => self.path("path", path),
        }
        self.duration("poll_interval", s.poll_interval);
        self.duration("lookback", s.lookback);
        self.list("types", &s.types);
        self.list("confidence", &s.confidence);
        self.str("industry", &s.industry);
        self.str("category", &s.category);
    }

    fn cef(&mut self, c: &CefConfig) {
        self.header("[cef]");
        self.str("device_vendor", &c.device_vendor);
        self.str("device_product", &c.device_product);
        self.str("device_version", &c.device_version);
        self.name("profile", c.profile);
        let SeverityMap { low, medium, high } = c.severity;
        let severity = format!("{{ low = {low}, medium = {medium}, high = {high} }}");
        self.raw("severity", severity);
    }

    fn syslog(&mut self, y: &SyslogConfig) {
        self.header("[syslog]");
        self.str("hostname", &y.hostname);
        self.str("app_name", &y.app_name);
        self.raw("facility", y.facility);
        self.raw("severity", y.severity);
        self.str("msgid", y.msgid.name());
        self.raw("structured_data", y.structured_data);
    }

    fn destination(&mut self, d: &DestinationConfig) {
        self.header("[[destinations]]");
        self.str("name", &d.name);
        self.name("protocol", d.protocol);
        self.list("address", &d.address);
        self.name("framing", d.framing);
        self.name("format", d.format);
        self.raw("max_message_size", d.max_message_size);
        self.name("oversize", d.oversize);
        if d.protocol == Protocol::Tls {
            self.tls(d);
        }
        self.duration("connect_timeout", d.connect_timeout);
        self.duration("write_timeout", d.write_timeout);
        self.raw("lifecycle_events", d.lifecycle_events);
    }

    /// The TLS keys; the client key's path is not shown, only whether one is set.
    fn tls(&mut self, d: &DestinationConfig) {
        self.file("ca_file", &d.ca_file);
        self.str("server_name", d.server_name.as_deref().unwrap_or(""));
        self.file("client_cert", &d.client_cert);
        let client_key = if d.client_key.is_some() {
            "<redacted path set>"
        } else {
            ""
        };
        self.str("client_key", client_key);
        self.raw("tls_verify", d.tls_verify);
        self.list("pin_sha256", &d.pin_sha256);
    }

    /// `[lifecycle]`, the per-type table inline in `IOC_TYPES` order, as the reader keeps it.
    fn lifecycle(&mut self, l: &LifecycleConfig) {
        self.header("[lifecycle]");
        self.duration_or_never("expire_after", l.expire_after);
        let by_type: Vec<String> = l
            .expire_after_by_type
            .iter()
            .map(|(t, after)| {
                let after = Value::String(duration_text(after.unwrap_or_default()));
                format!("{} = {after}", t.name())
            })
            .collect();
        let by_type = if by_type.is_empty() {
            "{}".to_string()
        } else {
            format!("{{ {} }}", by_type.join(", "))
        };
        self.raw("expire_after_by_type", by_type);
        self.duration_or_never("refresh_every", l.refresh_every);
    }

    fn queue(&mut self, q: &QueueConfig) {
        self.header("[queue]");
        self.raw("max_bytes", q.max_bytes);
        self.name("when_full", q.when_full);
        self.duration("retry_initial", q.retry_initial);
        self.duration("retry_max", q.retry_max);
    }
}

/// A duration in humantime's form ("5m", "1day 2h"), which the reader takes back, but never in
/// months or years: humantime counts a month as 30.44 days, so "90d" would come out as
/// "2months 29days 2h 52m 48s". From 30 days on, whole days are written as days.
fn duration_text(value: Duration) -> String {
    const DAY: u64 = 86_400;
    let days = value.as_secs() / DAY;
    if days < 30 {
        return humantime::format_duration(value).to_string();
    }
    let rest = value - Duration::from_secs(days * DAY);
    if rest.is_zero() {
        format!("{days}days")
    } else {
        format!("{days}days {}", humantime::format_duration(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_of_30_days_or_more_are_written_in_days_and_read_back() {
        const DAY: u64 = 86_400;
        for (secs, text) in [
            (90, "1m 30s"),
            (DAY, "1day"),
            (29 * DAY + 3600, "29days 1h"),
            (30 * DAY, "30days"),
            (90 * DAY, "90days"),
            (365 * DAY + 90, "365days 1m 30s"),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(duration_text(d), text);
            assert_eq!(humantime::parse_duration(text), Ok(d));
        }
    }
}
