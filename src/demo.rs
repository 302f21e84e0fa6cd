//! `demo`: the whole pipeline on the sample feed built into the binary — file source, CEF,
//! a real (temporary) state file, RFC 5424 framing — to stdout or to a tcp/udp receiver.

use std::time::Duration;

use crate::agent::{self, AgentError, OnceOutcome};
use crate::config::{
    split_host_port, Config, DestinationConfig, Framing, Oversize, Protocol, SyslogFormat,
};

/// The sample feed: an API response body with every IOC type, documentation addresses only,
/// and a few hostile values.
pub const SAMPLE_FEED: &str = include_str!("../samples/demo-feed.json");

/// A destination from `--to tcp://HOST:PORT | udp://HOST:PORT`, or stdout.
pub fn destination(to: Option<&str>) -> Result<DestinationConfig, String> {
    let (protocol, address) = match to {
        None => (Protocol::Stdout, vec![]),
        Some(url) => {
            let (scheme, rest) = url.split_once("://").ok_or_else(|| {
                format!("--to {url:?}: expected tcp://HOST:PORT or udp://HOST:PORT")
            })?;
            let protocol = match scheme {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => {
                    return Err(format!(
                        "--to {url:?}: scheme {other:?} is not tcp or udp; expected tcp://HOST:PORT or udp://HOST:PORT"
                    ))
                }
            };
            let rest = rest.trim_end_matches('/');
            if split_host_port(rest).is_none() {
                return Err(format!("--to {url:?}: {rest:?} is not HOST:PORT"));
            }
            (protocol, vec![rest.to_string()])
        }
    };
    Ok(DestinationConfig {
        name: "demo".into(),
        protocol,
        address,
        framing: Framing::Lf,
        format: SyslogFormat::Rfc5424,
        max_message_size: if protocol == Protocol::Udp {
            2048
        } else {
            8192
        },
        oversize: Oversize::Truncate,
        ca_file: None,
        server_name: None,
        client_cert: None,
        client_key: None,
        tls_verify: true,
        pin_sha256: vec![],
        connect_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(10),
        lifecycle_events: true,
    })
}

/// Runs the demo in a temporary state directory that is removed afterwards.
pub async fn run(dest: DestinationConfig) -> Result<OnceOutcome, AgentError> {
    let dir = std::env::temp_dir().join(format!(
        "ioc-forwarder-demo-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| AgentError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let feed = dir.join("demo-feed.json");
    let result = async {
        std::fs::write(&feed, SAMPLE_FEED)
            .map_err(|e| AgentError::Io(format!("cannot write {}: {e}", feed.display())))?;
        let cfg = Config::demo(dir.join("state"), feed.clone(), dest);
        agent::once(&cfg).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
