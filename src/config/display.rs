//! The effective config as TOML, as `check-config` prints it: every key with the value in use,
//! defaults included, secrets redacted.

use std::path::PathBuf;
use std::time::Duration;

use toml::Value;

use super::*;

impl Config {
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
