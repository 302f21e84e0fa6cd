//! `[[destinations]]`: each entry's transport, address, framing, size limit and TLS keys.

use toml::Value;

use super::{Reader, Section};
use crate::config::*;

impl Reader<'_> {
    pub(super) fn destinations(&mut self, top: &mut Section) -> Vec<DestinationConfig> {
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
}
