//! An API response body: its `data` array, collected into [`Item`]s or handed out item by
//! item as each is decoded, and the `meta` fields the walk uses (paging and the server's
//! clock).
//!
//! Only a body that is not JSON (or not complete) is an error. A body without a `data` array
//! is told apart by what it held instead ([`Data`]); a `meta` that is not an object has no
//! fields. Handed out item by item, a second `data` key is refused (the first one's items are
//! gone already); collected, the last one counts, as a JSON map would keep it.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::fields::{skip, skip_map, Count, Text};
use super::item::{blank, Item, ItemInto};
use crate::indicator::{Indicator, Skip};

/// A whole API response body: its `data` items and the `meta` fields the walk uses.
#[derive(Debug, Default)]
pub struct Body {
    pub data: Data,
    /// The body had a `meta` key (even `null`): a missing `data` then means an empty page.
    pub has_meta: bool,
    pub generated_at: Option<String>,
    pub limit: Option<u64>,
    pub total: Option<u64>,
    pub offset: Option<u64>,
}

/// What the body's `data` key held.
#[derive(Debug, Default)]
pub enum Data {
    #[default]
    Missing,
    Null,
    /// Not an array (a string, an object, a number).
    Invalid,
    Items(Vec<Item>),
}

/// Decodes an API response body. `Err` only when the body is not JSON (or not complete).
pub fn body(bytes: &[u8]) -> serde_json::Result<Body> {
    body_seed(bytes, BodySeed(None))
}

/// Decodes an API response body, handing each item of its `data` array to `each` as soon as
/// it is decoded instead of collecting the page (`data` is then an empty `Data::Items`): the
/// caller can keep something smaller than the indicators. The indicator lent to `each` is
/// one buffer reused for every item (no allocation per field once the first items sized its
/// strings). A body with two `data` keys is refused.
pub fn body_each(
    bytes: &[u8],
    each: &mut dyn FnMut(Result<&Indicator, Skip>),
) -> serde_json::Result<Body> {
    body_seed(bytes, BodySeed(Some(each)))
}

fn body_seed(bytes: &[u8], seed: BodySeed<'_, '_>) -> serde_json::Result<Body> {
    use de::DeserializeSeed;
    // One validation of the whole body (SIMD: simdutf8, ~3 % of a backfill's CPU with std's)
    // instead of one per string value and key (~10 % of decoding); a body that is not UTF-8
    // is decoded from bytes so that the error says where, as before.
    let body = match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => {
            let mut de = serde_json::Deserializer::from_str(text);
            let body = seed.deserialize(&mut de)?;
            de.end()?;
            body
        }
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let body = seed.deserialize(&mut de)?;
            de.end()?;
            body
        }
    };
    Ok(body)
}

/// Where a `data` array's items go: collected into [`Data::Items`], or each handed to a sink
/// as soon as it is decoded (`Data::Items` is then empty).
type Sink<'s, 'f> = Option<&'s mut (dyn FnMut(Result<&Indicator, Skip>) + 'f)>;

struct ItemsSeed<'s, 'f>(Sink<'s, 'f>);

seed_is_visitor!(ItemsSeed<'_, '_> => Data);

impl<'de> Visitor<'de> for ItemsSeed<'_, '_> {
    type Value = Data;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of indicators")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Data, A::Error> {
        if let Some(each) = self.0 {
            // One indicator for the whole page, overwritten item by item.
            let mut ind = blank();
            while let Some(r) = seq.next_element_seed(ItemInto(&mut ind))? {
                each(r.map(|()| &ind));
            }
            return Ok(Data::Items(Vec::new()));
        }
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(10_000));
        while let Some(item) = seq.next_element::<Item>()? {
            items.push(item);
        }
        // Growth by doubling leaves up to half the array unused for as long as the page
        // lives (10,000 items: 5.2 MB for 3.2); the shrink of a buffer this size is an
        // mremap, not a copy.
        items.shrink_to_fit();
        Ok(Data::Items(items))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Data, E> {
        Ok(Data::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Data, A::Error> {
        skip_map(map)?;
        Ok(Data::Invalid)
    }
    scalars_are!(Data, Data::Invalid);
}

/// The body's top level: `data`, `meta`; other keys are ignored.
struct BodySeed<'s, 'f>(Sink<'s, 'f>);

seed_is_visitor!(BodySeed<'_, '_> => Body);

impl<'de> Visitor<'de> for BodySeed<'_, '_> {
    type Value = Body;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a response object")
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Body, A::Error> {
        let mut body = Body::default();
        let mut seen_data = false;
        let streaming = self.0.is_some();
        while let Some(k) = map.next_key::<TopKey>()? {
            match k {
                // Collected, a repeated `data` is the last one (as a JSON map keeps it); handed
                // out item by item, the first one's items are gone already: refused.
                TopKey::Data if seen_data && streaming => {
                    return Err(de::Error::custom("two data keys"))
                }
                TopKey::Data => {
                    seen_data = true;
                    body.data = map.next_value_seed(ItemsSeed(self.0.as_deref_mut()))?;
                }
                TopKey::Meta => {
                    body.has_meta = true;
                    let m = map.next_value::<Meta>()?;
                    body.generated_at = m.generated_at;
                    body.limit = m.limit;
                    body.total = m.total;
                    body.offset = m.offset;
                }
                TopKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(body)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Body, A::Error> {
        skip(seq)?;
        Ok(Body::default())
    }
    scalars_are!(Body, Body::default(), unit);
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Body, D::Error> {
        de::DeserializeSeed::deserialize(BodySeed(None), d)
    }
}

/// The keys read at a body's top level (a file holding a body has the same).
pub(super) enum TopKey {
    Data,
    Meta,
    Other,
}

impl<'de> Deserialize<'de> for TopKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TopKey, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<TopKey, E> {
                Ok(match s {
                    "data" => TopKey::Data,
                    "meta" => TopKey::Meta,
                    _ => TopKey::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// `meta`: the paging fields and the server's clock; a non-object is no meta fields.
#[derive(Default)]
struct Meta {
    generated_at: Option<String>,
    limit: Option<u64>,
    total: Option<u64>,
    offset: Option<u64>,
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Meta, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Meta;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta, A::Error> {
                let mut m = Meta::default();
                while let Some(k) = map.next_key::<MetaKey>()? {
                    match k {
                        MetaKey::GeneratedAt => m.generated_at = map.next_value::<Text>()?.0,
                        MetaKey::Limit => m.limit = map.next_value::<Count>()?.0,
                        MetaKey::Total => m.total = map.next_value::<Count>()?.0,
                        MetaKey::Offset => m.offset = map.next_value::<Count>()?.0,
                        MetaKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(m)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Meta, A::Error> {
                skip(seq)?;
                Ok(Meta::default())
            }
            scalars_are!(Meta, Meta::default(), unit);
        }
        d.deserialize_any(V)
    }
}

enum MetaKey {
    GeneratedAt,
    Limit,
    Total,
    Offset,
    Other,
}

impl<'de> Deserialize<'de> for MetaKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MetaKey, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MetaKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MetaKey, E> {
                Ok(match s {
                    "generated_at" => MetaKey::GeneratedAt,
                    "limit" => MetaKey::Limit,
                    "total" => MetaKey::Total,
                    "offset" => MetaKey::Offset,
                    _ => MetaKey::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_utf8_is_an_error_that_says_where_and_non_ascii_text_is_kept() {
        let bad = b"{\"data\":[{\"value\":\"ok\"},{\"value\":\"a\xffb\"}]}";
        let e = body(bad).unwrap_err().to_string();
        assert!(e.contains("line 1 column"), "{e}");
        let mut n = 0;
        assert!(body_each(bad, &mut |_| n += 1).is_err());
        let good = "{\"data\":[{\"value\":\"bücher.example — 例え.jp\"}]}";
        let Data::Items(items) = body(good.as_bytes()).unwrap().data else {
            panic!("a data array")
        };
        assert_eq!(
            items[0].0.as_ref().unwrap().value,
            "bücher.example — 例え.jp"
        );
    }

    #[test]
    fn a_page_with_bad_items_still_decodes_every_item() {
        let b = body(br#"{"meta":{"limit":2,"total":-1,"generated_at":5},"data":[{"value":"x"},[1,{"a":2}],"s",{"type":"ipv4"},null]}"#).unwrap();
        let Data::Items(items) = b.data else {
            panic!("no items")
        };
        let reasons: Vec<_> = items.iter().map(|i| i.0.as_ref().err().copied()).collect();
        assert_eq!(
            reasons,
            vec![
                None,
                Some(Skip::NotAnObject),
                Some(Skip::NotAnObject),
                Some(Skip::NoValue),
                Some(Skip::NotAnObject)
            ]
        );
        assert_eq!(
            (b.limit, b.total, b.generated_at),
            (Some(2), None, Some("5".into()))
        );
        assert!(b.has_meta);
    }

    #[test]
    fn bodies_without_a_data_array_are_told_apart() {
        assert!(matches!(
            body(b"{\"meta\":null}").unwrap().data,
            Data::Missing
        ));
        assert!(body(b"{\"meta\":null}").unwrap().has_meta);
        assert!(matches!(body(b"{\"data\":null}").unwrap().data, Data::Null));
        assert!(matches!(
            body(b"{\"data\":{}}").unwrap().data,
            Data::Invalid
        ));
        assert!(matches!(body(b"[]").unwrap().data, Data::Missing));
        assert!(body(b"{\"data\":[").is_err());
    }
}
