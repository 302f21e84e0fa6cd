//! `[[destinations]]`: each entry's transport, address, framing, size limit, TLS keys and
//! whether it gets lifecycle events. A key the transport does not use (a TLS key on tcp, an
//! address on stdout) is an error, not silently ignored.

use std::path::PathBuf;

use toml::Value;

use super::{only_with, quoted_names, Reader, Section};
use crate::config::*;

/// The keys only `protocol = "tls"` reads.
const TLS_KEYS: &[&str] = &[
    "ca_file",
    "server_name",
    "client_cert",
    "client_key",
    "tls_verify",
    "pin_sha256",
];

/// A destination's TLS keys, as read (all unset unless `protocol = "tls"`).
struct Tls {
    ca_file: Option<PathBuf>,
    server_name: Option<String>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    tls_verify: bool,
    pin_sha256: Vec<String>,
}

impl Reader<'_> {
    pub(super) fn destinations(&mut self, top: &mut Section) -> Vec<DestinationConfig> {
        let items = match top.table.remove("destinations") {
            None => vec![],
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
                table_line: None,
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
        let name = self.destination_name(s);
        let protocol = self.protocol(s);
        let address = self.address(s, protocol);
        let framing = self.choice(s, "framing").unwrap_or(match protocol {
            Protocol::Tls => Framing::OctetCounting,
            _ => Framing::Lf,
        });
        let format = self.choice(s, "format").unwrap_or(SyslogFormat::Rfc5424);
        let max_message_size = self.max_message_size(s, protocol);
        let oversize = self.choice(s, "oversize").unwrap_or(Oversize::Truncate);
        let tls = self.tls(s, protocol);
        let connect_timeout = self.duration(s, "connect_timeout", "10s");
        let write_timeout = self.duration(s, "write_timeout", "30s");
        let lifecycle_events = self.bool(s, "lifecycle_events", true);
        DestinationConfig {
            name,
            protocol,
            address,
            framing,
            format,
            max_message_size,
            oversize,
            ca_file: tls.ca_file,
            server_name: tls.server_name,
            client_cert: tls.client_cert,
            client_key: tls.client_key,
            tls_verify: tls.tls_verify,
            pin_sha256: tls.pin_sha256,
            connect_timeout,
            write_timeout,
            lifecycle_events,
        }
    }

    /// The name logs, metrics and `test-destination` use: required, and safe in all three.
    fn destination_name(&mut self, s: &mut Section) -> String {
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
        name
    }

    /// The required `protocol`; tcp stands in when it is missing or wrong, so the other keys
    /// are still checked.
    fn protocol(&mut self, s: &mut Section) -> Protocol {
        self.choice(s, "protocol").unwrap_or_else(|| {
            if !self.reported(s, "protocol") {
                self.problem(
                    s,
                    "protocol",
                    format!("required: {}", quoted_names::<Protocol>(" or ")),
                );
            }
            Protocol::Tcp
        })
    }

    /// `address` as the protocol needs it: none for stdout, one socket path for unix, and one
    /// or more `host:port` (in failover order) for the network transports.
    fn address(&mut self, s: &mut Section, protocol: Protocol) -> Vec<String> {
        let address = self.string_list(s, "address");
        match protocol {
            Protocol::Stdout => {
                if !address.is_empty() {
                    let problem = format!("{} takes no address", protocol.name());
                    self.problem(s, "address", problem);
                }
            }
            Protocol::Unix => {
                if address.len() != 1 {
                    let problem = format!("{} needs exactly one socket path", protocol.name());
                    self.problem(s, "address", problem);
                }
            }
            Protocol::Udp | Protocol::Tcp | Protocol::Tls => {
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
        address
    }

    /// `max_message_size`: 2048 by default for udp, 8KiB otherwise; a UDP datagram caps it.
    fn max_message_size(&mut self, s: &mut Section, protocol: Protocol) -> usize {
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
        max_message_size as usize
    }

    /// The TLS keys; on another protocol each one present is a problem and all stay unset.
    fn tls(&mut self, s: &mut Section, protocol: Protocol) -> Tls {
        if protocol != Protocol::Tls {
            self.reject(s, TLS_KEYS, &only_with("protocol", Protocol::Tls));
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
        Tls {
            ca_file,
            server_name,
            client_cert,
            client_key,
            tls_verify: self.bool(s, "tls_verify", true),
            pin_sha256: self.string_list(s, "pin_sha256"),
        }
    }
}
