//! A typed, borrowing decoder for the same pages: what JSON decoding could cost if the daemon
//! deserialised straight into a struct instead of building a `serde_json::Value` tree first.
//! It produces the same owned data as `Indicator::from_json` (strings, parsed timestamps,
//! lists), so the comparison is fair; it is not lenient about wrong JSON types the way
//! `from_json` is (a real one would need `deserialize_with` helpers for that).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;

#[derive(Deserialize)]
pub struct Page<'a> {
    #[serde(borrow)]
    pub data: Vec<Item<'a>>,
}

#[derive(Deserialize)]
pub struct Item<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow)]
    value: Option<Cow<'a, str>>,
    #[serde(borrow)]
    confidence: Option<Cow<'a, str>>,
    #[serde(borrow)]
    first_seen: Option<Cow<'a, str>>,
    #[serde(borrow)]
    last_seen: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source: Option<Source<'a>>,
    #[serde(borrow)]
    context: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tags: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow)]
    mitre_techniques: Option<Vec<Cow<'a, str>>>,
}

#[derive(Deserialize)]
pub struct Source<'a> {
    #[serde(borrow)]
    feed_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    category: Option<Cow<'a, str>>,
    #[serde(borrow)]
    article_url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reference_url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    origin: Option<Cow<'a, str>>,
}

/// The owned result, field for field what `Indicator` holds.
#[allow(dead_code)]
pub struct Owned {
    id: Option<String>,
    ty: String,
    value: String,
    confidence: Option<String>,
    first_seen: Option<DateTime<Utc>>,
    last_seen: Option<DateTime<Utc>>,
    feed_name: Option<String>,
    category: Option<String>,
    article_url: Option<String>,
    reference_url: Option<String>,
    origin: Option<String>,
    context: Option<String>,
    tags: Vec<String>,
    mitre_techniques: Vec<String>,
}

fn s(v: &Option<Cow<'_, str>>) -> Option<String> {
    v.as_deref().filter(|x| !x.is_empty()).map(str::to_string)
}

fn t(v: &Option<Cow<'_, str>>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_deref()?.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Decodes a page into owned indicators (items without a value are skipped).
pub fn decode(body: &[u8]) -> Vec<Owned> {
    let page: Page<'_> = serde_json::from_slice(body).expect("generated JSON decodes");
    page.data
        .iter()
        .filter_map(|i| {
            let src = i.source.as_ref();
            Some(Owned {
                value: s(&i.value)?,
                id: s(&i.id),
                ty: s(&i.ty).unwrap_or_default(),
                confidence: i.confidence.as_deref().map(str::to_ascii_lowercase),
                first_seen: t(&i.first_seen),
                last_seen: t(&i.last_seen),
                feed_name: src.and_then(|x| s(&x.feed_name)),
                category: src.and_then(|x| s(&x.category)),
                article_url: src.and_then(|x| s(&x.article_url)),
                reference_url: src.and_then(|x| s(&x.reference_url)),
                origin: src.and_then(|x| s(&x.origin)),
                context: s(&i.context),
                tags: i.tags.iter().flatten().map(|x| x.to_string()).collect(),
                mitre_techniques: i
                    .mitre_techniques
                    .iter()
                    .flatten()
                    .map(|x| x.to_string())
                    .collect(),
            })
        })
        .collect()
}
