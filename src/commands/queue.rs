//! `queue stats|peek|purge|verify`: look into the state file, or change it, beside (or instead
//! of) a running agent. Stats, peek and verify only read; purge changes what a running agent
//! reads and acknowledges, so it takes the state directory's lock first.

use std::time::Duration;

use super::failed;
use crate::config::Config;
use crate::lock::StateLock;
use crate::store::{self, Store};

/// Integrity check of the state file; exit 1 on damage.
pub fn verify(cfg: &Config) -> u8 {
    let file = cfg.state_dir.join(store::FILE_NAME);
    if !file.exists() {
        // Not damage: the agent has not run with this state_dir yet (or it points elsewhere:
        // the path says which).
        println!(
            "no state file at {}: nothing queued yet, nothing to verify",
            file.display()
        );
        return 0;
    }
    match store::verify(&cfg.state_dir) {
        Ok(problems) if problems.is_empty() => {
            println!("state file OK: {}", file.display());
            0
        }
        Ok(problems) => {
            for p in problems {
                println!("damage: {p}");
            }
            1
        }
        Err(e) => failed(e),
    }
}

/// Events and bytes queued per destination, and the age of the oldest.
pub fn stats(cfg: &Config) -> u8 {
    let rows = match Store::open(&cfg.state_dir).and_then(|s| s.stats()) {
        Ok(rows) => rows,
        Err(e) => return failed(e),
    };
    println!(
        "{:<24} {:>10} {:>14} {:>12}",
        "DESTINATION", "EVENTS", "BYTES", "OLDEST_AGE"
    );
    let now = chrono::Utc::now();
    for r in rows {
        let age = r
            .oldest
            .map(|t| {
                let secs = (now - t).num_seconds().max(0) as u64;
                humantime::format_duration(Duration::from_secs(secs)).to_string()
            })
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:>10} {:>14} {:>12}",
            r.name, r.events, r.bytes, age
        );
    }
    0
}

/// The next `n` queued CEF lines.
pub fn peek(cfg: &Config, n: usize) -> u8 {
    match Store::open(&cfg.state_dir).and_then(|s| s.peek(n)) {
        Ok(events) => {
            for e in events {
                println!("{}", e.cef());
            }
            0
        }
        Err(e) => failed(e),
    }
}

/// Drops the queued events of one destination, or of all; only with `yes`.
pub fn purge(cfg: &Config, destination: Option<&str>, yes: bool) -> u8 {
    if !yes {
        eprintln!("queue purge drops queued events for good; add --yes to confirm");
        return 2;
    }
    let _lock = match StateLock::acquire(&cfg.state_dir) {
        Ok(l) => l,
        Err(e) => return failed(e),
    };
    let s = match Store::open(&cfg.state_dir) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    if let Some(d) = destination {
        match s.destinations() {
            Ok(known) if !known.iter().any(|k| k == d) => {
                eprintln!(
                    "no destination named {d:?} in the state file (known: {})",
                    known.join(", ")
                );
                return 2;
            }
            _ => {}
        }
    }
    match s.purge(destination) {
        Ok(n) => {
            println!("purged {n} events");
            0
        }
        Err(e) => failed(e),
    }
}
