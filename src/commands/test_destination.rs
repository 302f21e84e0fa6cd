//! `test-destination [NAME]`: connect to each destination (or the named one) with its real
//! settings, send one marked test event, wait for the receiver's acknowledgement where the
//! transport has one, and report per destination — including the TLS peer's certificate and
//! pin, which is what an operator needs when a handshake or a pin fails.
//!
//! The test event does not go through the queue: it is not an indicator, and it must not
//! move any destination's position.

use std::time::Duration;

use crate::config::{Config, DestinationConfig};
use crate::deliver::{self, transport};
use crate::encode::cef::{self, CefOptions};
use crate::store::Event;

/// Tests every destination (or the one named `only`); exit 0 when all passed, 1 when one
/// failed, 2 when no destination has that name.
pub async fn run(cfg: &Config, only: Option<&str>) -> u8 {
    let chosen: Vec<&DestinationConfig> = cfg
        .destinations
        .iter()
        .filter(|d| only.is_none_or(|n| d.name == n))
        .collect();
    if chosen.is_empty() {
        eprintln!("no destination named {:?}", only.unwrap_or_default());
        return 2;
    }
    let line = cef::test_event(&CefOptions::from_config(&cfg.cef));
    let mut all_ok = true;
    for d in chosen {
        match probe(cfg, d, &line).await {
            Ok(detail) => println!("{}: OK ({detail})", d.name),
            Err(e) => {
                all_ok = false;
                println!("{}: FAILED: {e}", d.name);
            }
        }
    }
    if all_ok {
        0
    } else {
        1
    }
}

/// Sends `line` to `d`; what was connected to (and how) on success, why not on failure.
async fn probe(cfg: &Config, d: &DestinationConfig, line: &str) -> Result<String, String> {
    let header = deliver::header_for(d, &cfg.syslog);
    let ev = Event::new(1, chrono::Utc::now(), "test", line);
    let mut tls = transport::TlsCache::default();
    let mut c = transport::connect(d, &mut tls, None)
        .await
        .map_err(|e| e.to_string())?;
    let (mut msg, mut buf) = (Vec::new(), Vec::new());
    deliver::frame_event(d, &header, &ev, c.is_datagram(), &mut msg, &mut buf);
    tokio::time::timeout(d.write_timeout, c.send(&buf, &[buf.len()]))
        .await
        .map_err(|_| format!("write stalled for more than {:?}", d.write_timeout))?
        .map_err(|e| format!("write failed: {e}"))?;
    // Give a TLS receiver the round trips it needs to refuse us with an alert.
    let acked = c.wait_acked(d.write_timeout).await;
    let mut detail = format!("{} {}", d.protocol.as_str(), c.peer);
    if let Some(t) = c.tls() {
        let expires = t.not_after.map_or_else(|| "?".into(), |x| x.to_rfc3339());
        detail += &format!(
            ", {} {}, certificate {} expires {expires}, pin sha256//{}",
            t.version,
            t.cipher,
            t.subject,
            t.spki_pin.as_deref().unwrap_or("?")
        );
    }
    c.close(Duration::from_millis(500)).await;
    match acked {
        Ok(()) => Ok(detail),
        Err(why) => Err(format!("{detail}: {why}")),
    }
}
