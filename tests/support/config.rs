//! The agent's TOML config, written the way the tests need it: [`ConfigOpts::default`] is the
//! config most tests run with (state in `DIR/state`, the fake API, short retries), and
//! [`Dest`] builds one `[[destinations]]` table.
//!
//! Tests that check how bad config is reported write their TOML by hand instead.

use std::path::{Path, PathBuf};

use super::api::API_KEY;

/// One `[[destinations]]` entry.
#[derive(Clone, Debug)]
pub struct Dest {
    pub name: String,
    pub protocol: String,
    /// One address, or several for ordered failover (written as a TOML array).
    pub addresses: Vec<String>,
    /// `None` leaves `framing` out, so the protocol's default applies (octet counting for
    /// TLS, LF otherwise).
    pub framing: Option<String>,
    /// Raw `key = value` TOML lines added to the table.
    pub extra: Vec<String>,
}

impl Dest {
    /// TCP with LF framing.
    pub fn tcp(name: &str, address: impl ToString) -> Dest {
        Dest::new(name, "tcp", address).framing("lf")
    }

    pub fn new(name: &str, protocol: &str, address: impl ToString) -> Dest {
        Dest::failover(name, protocol, &[address.to_string()])
    }

    /// TLS to a receiver with the usual test certificate (name `receiver.test`, see
    /// `support::tls`), trusting the CA in `ca_file`.
    pub fn tls(name: &str, address: impl ToString, ca_file: &Path) -> Dest {
        Dest::new(name, "tls", address)
            .set_path("ca_file", ca_file)
            .set_str("server_name", "receiver.test")
    }

    /// Addresses tried in order.
    pub fn failover(name: &str, protocol: &str, addresses: &[String]) -> Dest {
        Dest {
            name: name.to_string(),
            protocol: protocol.to_string(),
            addresses: addresses.to_vec(),
            framing: None,
            extra: Vec::new(),
        }
    }

    /// `key = <raw TOML value>`, e.g. `.set("lifecycle_events", "false")`.
    pub fn set(mut self, key: &str, raw_value: &str) -> Dest {
        self.extra.push(format!("{key} = {raw_value}"));
        self
    }

    /// `key = "value"`.
    pub fn set_str(self, key: &str, value: &str) -> Dest {
        self.set(key, &toml_str(value))
    }

    /// `key = "path"`.
    pub fn set_path(self, key: &str, path: &Path) -> Dest {
        self.set_str(key, path.to_str().unwrap())
    }

    pub fn framing(mut self, framing: &str) -> Dest {
        self.framing = Some(framing.to_string());
        self
    }

    fn render(&self) -> String {
        let address = match &self.addresses[..] {
            [one] => toml_str(one),
            many => toml_list(many),
        };
        let mut s = format!(
            "\n[[destinations]]\nname = {}\nprotocol = {}\naddress = {address}\n",
            toml_str(&self.name),
            toml_str(&self.protocol),
        );
        if let Some(framing) = &self.framing {
            s.push_str(&format!("framing = {}\n", toml_str(framing)));
        }
        for line in &self.extra {
            s.push_str(line);
            s.push('\n');
        }
        s
    }
}

/// The knobs the tests turn; `Default` is the config most tests run with.
#[derive(Clone, Debug)]
pub struct ConfigOpts {
    pub api_key: String,
    pub shutdown_timeout: String,
    pub poll_interval: String,
    pub page_size: u32,
    pub lookback: String,
    pub request_timeout: String,
    /// Raw TOML lines appended to `[source]`.
    pub source_extra: String,
    /// Raw TOML lines for `[syslog]` (hostname is always set).
    pub syslog_extra: String,
    pub retry_initial: String,
    pub retry_max: String,
    /// Raw TOML lines appended to `[queue]`.
    pub queue_extra: String,
    /// Serve `/metrics` on `127.0.0.1:PORT`.
    pub metrics_port: Option<u16>,
    /// The body of a `[lifecycle]` section (raw TOML lines), written only when set; without it
    /// the agent's lifecycle defaults apply.
    pub lifecycle: Option<String>,
}

impl Default for ConfigOpts {
    fn default() -> Self {
        ConfigOpts {
            api_key: API_KEY.to_string(),
            shutdown_timeout: "5s".to_string(),
            poll_interval: "1s".to_string(),
            page_size: 1000,
            lookback: "24h".to_string(),
            request_timeout: "5s".to_string(),
            source_extra: String::new(),
            syslog_extra: String::new(),
            retry_initial: "50ms".to_string(),
            retry_max: "500ms".to_string(),
            queue_extra: String::new(),
            metrics_port: None,
            lifecycle: None,
        }
    }
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML array of basic strings.
pub fn toml_list(items: &[impl AsRef<str>]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_str(s.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// The config text: `[source]` on the fake API at `api_base`, `[syslog]`, `dests`, `[queue]`
/// and, when asked for, `[metrics]` and `[lifecycle]`; `state_dir` is `DIR/state`.
pub fn render_config(dir: &Path, api_base: &str, dests: &[Dest], o: &ConfigOpts) -> String {
    let state = dir.join("state");
    let mut s = format!(
        "state_dir = {}\nshutdown_timeout = {}\n\n[source]\nkind = \"socdefenders\"\nbase_url = {}\napi_key = {}\npoll_interval = {}\npage_size = {}\nlookback = {}\nrequest_timeout = {}\n{}\n\n[syslog]\nhostname = \"collector01\"\n{}\n",
        toml_str(state.to_str().unwrap()),
        toml_str(&o.shutdown_timeout),
        toml_str(api_base),
        toml_str(&o.api_key),
        toml_str(&o.poll_interval),
        o.page_size,
        toml_str(&o.lookback),
        toml_str(&o.request_timeout),
        o.source_extra,
        o.syslog_extra,
    );
    for d in dests {
        s.push_str(&d.render());
    }
    s.push_str(&format!(
        "\n[queue]\nretry_initial = {}\nretry_max = {}\n",
        toml_str(&o.retry_initial),
        toml_str(&o.retry_max)
    ));
    if !o.queue_extra.is_empty() {
        s.push_str(o.queue_extra.trim_end());
        s.push('\n');
    }
    if let Some(port) = o.metrics_port {
        s.push_str(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    }
    if let Some(lifecycle) = &o.lifecycle {
        s.push_str(&format!("\n[lifecycle]\n{}\n", lifecycle.trim_end()));
    }
    s
}

/// Writes `DIR/config.toml` with the standard options; `state_dir` is `DIR/state`.
pub fn write_config(dir: &Path, api_base: &str, destinations: &[Dest]) -> PathBuf {
    write_config_with(dir, api_base, destinations, &ConfigOpts::default())
}

/// Writes `DIR/config.toml` with `opts`.
pub fn write_config_with(
    dir: &Path,
    api_base: &str,
    destinations: &[Dest],
    opts: &ConfigOpts,
) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, render_config(dir, api_base, destinations, opts)).unwrap();
    path
}

/// Writes `contents` (TOML, a PEM, ...) to `DIR/NAME`.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}
