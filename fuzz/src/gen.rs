//! Arbitrary indicators and CEF options: every field any string (controls, `| = \`, CR, LF,
//! non-ASCII), some fields long enough to pass the length limits.

use arbitrary::Arbitrary;
use chrono::{DateTime, Utc};
use ioc_forwarder::config::{CefProfile, SeverityMap, IOC_TYPES};
use ioc_forwarder::encode::cef::CefOptions;
use ioc_forwarder::indicator::{Indicator, IocType, Provenance};

/// Type spellings the encoder treats specially beyond the known types (`config::IOC_TYPES`):
/// the API's other mitre spelling with case and spaces, an unknown type, none.
const MORE_TYPES: [&str; 3] = [" MITRE_ATTACK ", "other", ""];

/// Values that reach the typed keys of `extended` (a parsable address) or sit next to them.
const VALUES: [&str; 6] = [
    "203.0.113.42",
    "2001:db8::1",
    "[2001:db8::1]",
    "10.0.0.0/8",
    " 198.51.100.7\t",
    "::ffff:1.2.3.4",
];

const CONFIDENCES: [&str; 5] = ["high", "medium", "low", " high\u{7f}", "HIGH"];

#[derive(Debug, Arbitrary)]
pub struct ArbIndicator {
    id: Option<String>,
    type_choice: u8,
    type_raw: String,
    value_choice: u8,
    value: String,
    /// The value repeated 1 + this many times (up to ~64 copies: past every length limit).
    value_repeat: u8,
    confidence_choice: u8,
    confidence: Option<String>,
    first_seen: Option<i64>,
    last_seen: Option<i64>,
    feed_name: Option<String>,
    category: Option<String>,
    article_url: Option<String>,
    reference_url: Option<String>,
    origin: Option<String>,
    context: Option<String>,
    context_repeat: u8,
    tags: Vec<String>,
    mitre_techniques: Vec<String>,
}

fn time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::from_timestamp_millis)
}

fn repeat(s: String, n: u8) -> String {
    match n % 64 {
        0 => s,
        n => s.repeat(usize::from(n) + 1),
    }
}

impl ArbIndicator {
    pub fn build(self) -> Indicator {
        // Any index past the known spellings takes the arbitrary `type_raw`.
        let type_raw = IOC_TYPES
            .iter()
            .chain(MORE_TYPES.iter())
            .nth(usize::from(self.type_choice))
            .map_or(self.type_raw, |t| t.to_string());
        let value = match VALUES.get(usize::from(self.value_choice)) {
            Some(v) => format!("{v}{}", self.value),
            None => self.value,
        };
        let confidence = match CONFIDENCES.get(usize::from(self.confidence_choice)) {
            Some(c) => Some(c.to_string()),
            None => self.confidence,
        };
        Indicator {
            id: self.id,
            ioc_type: IocType::parse(&type_raw),
            type_raw,
            value: repeat(value, self.value_repeat),
            confidence,
            first_seen: time(self.first_seen),
            last_seen: time(self.last_seen),
            source: Provenance {
                feed_name: self.feed_name,
                category: self.category,
                article_url: self.article_url,
                reference_url: self.reference_url,
                origin: self.origin,
            },
            context: self.context.map(|c| repeat(c, self.context_repeat)),
            tags: self.tags,
            mitre_techniques: self.mitre_techniques,
        }
    }
}

#[derive(Debug, Arbitrary)]
pub struct ArbOptions {
    /// `None`: the config's defaults (the SOC Defenders header fields).
    header: Option<(String, String, String)>,
    extended: bool,
    severity: (u8, u8, u8),
}

impl ArbOptions {
    pub fn build(self) -> CefOptions {
        let mut o = CefOptions::default();
        if let Some((vendor, product, version)) = self.header {
            o.device_vendor = vendor;
            o.device_product = product;
            o.device_version = version;
        }
        o.profile = if self.extended {
            CefProfile::Extended
        } else {
            CefProfile::SocDefenders
        };
        let (low, medium, high) = self.severity;
        o.severity = SeverityMap { low, medium, high };
        o
    }
}
