//! Indicators as the SOC Defenders API serves them, and the API's time format.
//!
//! Ids and values come from an index (`uuid(7)`, `ipv4_value(7)`), so a test can say which
//! indicators it expects without keeping the feed around. Times are RFC 3339 UTC with a `Z`
//! and second precision, like the API's examples.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};

/// Now, truncated to whole seconds (the fake API's clock has second precision).
pub fn now_secs() -> DateTime<Utc> {
    Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap()
}

/// ISO 8601 / RFC 3339 UTC with a `Z`, second precision, like the API's examples.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------------------------
// Indicators
// ---------------------------------------------------------------------------------------------

/// A UUID-shaped id from a number, so tests can refer to indicators by index.
pub fn uuid(n: usize) -> String {
    format!("00000000-0000-4000-8000-{:012}", n)
}

/// One IOC object shaped like the list endpoint's items (the union of the documented examples).
pub fn make_indicator(
    id: &str,
    ioc_type: &str,
    value: &str,
    confidence: &str,
    first_seen: &str,
    last_seen: &str,
) -> Value {
    json!({
        "id": id,
        "type": ioc_type,
        "value": value,
        "confidence": confidence,
        "first_seen": first_seen,
        "last_seen": last_seen,
        "source": {
            "article_id": id,
            "article_title": "Test article",
            "article_url": format!("https://socdefenders.ai/item/{id}"),
            "reference_url": null,
            "feed_name": "CISA Alerts",
            "category": "government",
            "origin": "article"
        },
        "context": "C2 server seen in a test campaign",
        "tags": ["c2", "test"],
        "mitre_techniques": ["T1071"]
    })
}

/// IPv4 indicator `i` (`uuid(i)`, `ipv4_value(i)`), high confidence, last seen at `last_seen`.
pub fn ipv4_indicator(i: usize, last_seen: DateTime<Utc>) -> Value {
    make_indicator(
        &uuid(i),
        "ipv4",
        &ipv4_value(i),
        "high",
        "2025-05-17T00:00:00Z",
        &iso(last_seen),
    )
}

/// `n` distinct IPv4 indicators `10.X.Y.Z`, newest first: item `i` has
/// `last_seen = newest - i * step`.
pub fn ipv4_feed(n: usize, newest: DateTime<Utc>, step: Duration) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let last = newest - chrono::Duration::from_std(step * i as u32).unwrap();
            make_indicator(
                &uuid(i),
                "ipv4",
                &ipv4_value(i),
                ["high", "medium", "low"][i % 3],
                "2025-05-17T00:00:00Z",
                &iso(last),
            )
        })
        .collect()
}

/// The value `ipv4_feed` gives to item `i`.
pub fn ipv4_value(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}
