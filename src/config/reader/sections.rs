//! The small sections: the top level, `[cef]`, `[syslog]`, `[queue]` and `[metrics]`
//! (`[lifecycle]` has its own file).

use std::net::SocketAddr;
use std::path::PathBuf;

use toml::Table;

use super::{Reader, Section};
use crate::config::*;

impl Reader<'_> {
    pub(super) fn config(&mut self, table: Table) -> Config {
        let mut top = Section {
            path: String::new(),
            header: None,
            index: 0,
            table_line: None,
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
        let lifecycle = self.lifecycle(&mut top);
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
            lifecycle,
        }
    }

    fn cef(&mut self, top: &mut Section) -> CefConfig {
        let mut s = self.section(top, "cef", "[cef]");
        let device_vendor = self.string(&mut s, "device_vendor", "SOC Defenders");
        let device_product = self.string(&mut s, "device_product", "Threat Intelligence");
        let device_version = self.string(&mut s, "device_version", "1.0");
        let profile = self
            .choice(&mut s, "profile")
            .unwrap_or(CefProfile::SocDefenders);
        let mut severity = SeverityMap::default();
        let shape = "must be a table like { low = 3, medium = 6, high = 9 }";
        if let Some(mut sub) = self.sub_table(&mut s, "severity", "[cef.severity]", shape) {
            severity.low = self.int(&mut sub, "low", severity.low.into(), 0, 10) as u8;
            severity.medium = self.int(&mut sub, "medium", severity.medium.into(), 0, 10) as u8;
            severity.high = self.int(&mut sub, "high", severity.high.into(), 0, 10) as u8;
            self.finish(sub);
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
        let msgid = self
            .opt_str(&mut s, "msgid")
            .map_or(MsgId::IocType, MsgId::from_name);
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

    fn queue(&mut self, top: &mut Section) -> QueueConfig {
        let mut s = self.section(top, "queue", "[queue]");
        let max_bytes = self.size(&mut s, "max_bytes", 1 << 30);
        let when_full = self
            .choice(&mut s, "when_full")
            .unwrap_or(WhenFull::DropOldest);
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
