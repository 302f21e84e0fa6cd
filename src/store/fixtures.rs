//! Test pages for the store's unit tests: indicators that differ in identity, version and
//! confidence, prepared with a CEF stand-in whose `act` the commit can rewrite.

use serde_json::json;

use super::{Prepared, Store};
use crate::indicator::Indicator;

pub fn ind(id: &str, last_seen: &str, confidence: &str) -> Indicator {
    crate::decode::item(&json!({"id": id, "type": "ipv4", "value": "192.0.2.1",
        "last_seen": last_seen, "confidence": confidence}))
    .unwrap()
}

/// Test pages: each line is `<id>:act=add`, `act` rewritten on an update.
pub fn page(s: &Store, items: &[Indicator]) -> Vec<Prepared> {
    items
        .iter()
        .map(|i| {
            let line = format!("{}:act=add", i.id.clone().unwrap_or_default());
            Prepared::new(s.keyer().key(i), i, &line, Some(line.len() - 3), 0)
        })
        .collect()
}

/// `n` indicators with identities `id0`, `id1`, …, all new.
pub fn many(n: usize) -> Vec<Indicator> {
    (0..n)
        .map(|i| ind(&format!("id{i}"), "2026-05-17T00:00:00Z", "low"))
        .collect()
}
