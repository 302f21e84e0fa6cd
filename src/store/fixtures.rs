//! Test pages for the store's unit tests: indicators that differ in identity, version and
//! confidence, prepared with a CEF stand-in whose `act` the commit can rewrite.

use std::path::Path;

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

/// A store in a new temporary directory, which lives as long as the returned guard.
pub fn new_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    (dir, s)
}

/// Acknowledges everything up to `through` for destination `a` (the only one), which empties
/// the queue; reopens the store in `dir` and queues one new indicator. Returns the sequence
/// number it got.
pub fn seq_after_emptying_and_restarting(s: Store, dir: &Path, through: i64) -> i64 {
    s.ack("a", through).unwrap();
    s.compact().unwrap();
    assert_eq!(s.tail().unwrap(), 0, "emptied");
    drop(s);
    let s = Store::open(dir).unwrap();
    s.commit_page(&page(&s, &[ind("n", "2026-05-17T00:00:00Z", "low")]), None)
        .unwrap();
    s.tail().unwrap()
}
