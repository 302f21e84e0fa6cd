//! One element of a page's `data` array: decoded into an [`Indicator`] that is reused from
//! item to item, or the reason it is not one ([`Skip`]).
//!
//! Every field the element does not set is cleared and the strings keep their buffers, so a
//! page decodes without an allocation per field. A repeated key keeps its last value, as a
//! JSON object map would. An element that is not an object, or whose `value` is missing or
//! nothing but blanks and control characters, is skipped; the page still decodes.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::fields::{skip, text_into, Key, StringsInto, TextInto, Time};
use crate::indicator::{Indicator, IocType, Provenance, Skip};

/// One element of a page's `data` array: an indicator, or why it is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item(pub Result<Indicator, Skip>);

/// Decodes one item held as a JSON tree (tests, benchmarks, the fuzz targets) with the same
/// rules as the pages the daemon decodes straight from their bytes.
pub fn item(v: &serde_json::Value) -> Result<Indicator, Skip> {
    Item::deserialize(v)
        .map(|i| i.0)
        .unwrap_or(Err(Skip::NotAnObject))
}

/// An indicator with nothing in it: where items are decoded into.
pub fn blank() -> Indicator {
    Indicator {
        id: None,
        ioc_type: IocType::Other,
        type_raw: String::new(),
        value: String::new(),
        confidence: None,
        first_seen: None,
        last_seen: None,
        source: Provenance::default(),
        context: None,
        tags: Vec::new(),
        mitre_techniques: Vec::new(),
    }
}

/// The optional fields an item set, in [`ItemInto`].
#[derive(Default)]
struct Seen {
    id: bool,
    confidence: bool,
    first_seen: bool,
    last_seen: bool,
    source: bool,
    context: bool,
    tags: bool,
    mitre_techniques: bool,
}

impl Seen {
    /// Clears every optional field of `ind` the item did not set.
    fn clear_the_rest(&self, ind: &mut Indicator) {
        if !self.id {
            ind.id = None;
        }
        if !self.confidence {
            ind.confidence = None;
        }
        if !self.first_seen {
            ind.first_seen = None;
        }
        if !self.last_seen {
            ind.last_seen = None;
        }
        if !self.source {
            ind.source = Provenance::default();
        }
        if !self.context {
            ind.context = None;
        }
        if !self.tags {
            ind.tags.clear();
        }
        if !self.mitre_techniques {
            ind.mitre_techniques.clear();
        }
    }
}

/// Decodes one element of `data` into an indicator that is reused from item to item: every
/// field is overwritten or cleared, and the strings' buffers are kept, so a page decodes
/// without an allocation per field. `Err` is why the element is not an indicator (the
/// indicator's content is then unspecified).
pub(super) struct ItemInto<'a>(pub(super) &'a mut Indicator);

seed_is_visitor!(ItemInto<'_> => Result<(), Skip>);

impl<'de> Visitor<'de> for ItemInto<'_> {
    type Value = Result<(), Skip>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an indicator object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ind = self.0;
        // What this object set; everything else is cleared at the end (whatever it set
        // reused the previous item's buffers).
        let mut seen = Seen::default();
        let (mut has_type, mut has_value) = (false, false);
        // A repeated key keeps its last value, as a JSON object map would.
        while let Some(k) = map.next_key::<Key>()? {
            match k {
                Key::Id => {
                    text_into(&mut map, &mut ind.id)?;
                    seen.id = true;
                }
                Key::Type => has_type = map.next_value_seed(TextInto(&mut ind.type_raw))?,
                Key::Value => has_value = map.next_value_seed(TextInto(&mut ind.value))?,
                Key::Confidence => {
                    text_into(&mut map, &mut ind.confidence)?;
                    seen.confidence = true;
                }
                Key::FirstSeen => {
                    ind.first_seen = map.next_value::<Time>()?.0;
                    seen.first_seen = true;
                }
                Key::LastSeen => {
                    ind.last_seen = map.next_value::<Time>()?.0;
                    seen.last_seen = true;
                }
                Key::Source => {
                    map.next_value_seed(SourceInto(&mut ind.source))?;
                    seen.source = true;
                }
                Key::Context => {
                    text_into(&mut map, &mut ind.context)?;
                    seen.context = true;
                }
                Key::Tags => {
                    map.next_value_seed(StringsInto(&mut ind.tags))?;
                    seen.tags = true;
                }
                Key::MitreTechniques => {
                    map.next_value_seed(StringsInto(&mut ind.mitre_techniques))?;
                    seen.mitre_techniques = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        seen.clear_the_rest(ind);
        if !has_type {
            ind.type_raw.clear();
        }
        // A value of nothing but blanks or control characters would encode to no indicator.
        if !has_value
            || !ind
                .value
                .chars()
                .any(|c| !c.is_whitespace() && !c.is_control())
        {
            return Ok(Err(Skip::NoValue));
        }
        ind.ioc_type = IocType::parse(&ind.type_raw);
        if let Some(c) = &mut ind.confidence {
            c.make_ascii_lowercase();
        }
        Ok(Ok(()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        skip(seq)?;
        Ok(Err(Skip::NotAnObject))
    }
    scalars_are!(Result<(), Skip>, Err(Skip::NotAnObject), unit);
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Item, D::Error> {
        use de::DeserializeSeed;
        let mut ind = blank();
        let r = ItemInto(&mut ind).deserialize(d)?;
        Ok(Item(r.map(|()| ind)))
    }
}

/// `source` into a reused [`Provenance`]: an object of provenance strings; anything else is
/// no provenance.
struct SourceInto<'a>(&'a mut Provenance);

seed_is_visitor!(SourceInto<'_> => ());

impl<'de> Visitor<'de> for SourceInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let p = self.0;
        // Which fields this object set; the others are cleared at the end (the buffers of
        // the ones it set are reused from the previous item).
        let mut set = [false; 5];
        while let Some(k) = map.next_key::<Key>()? {
            let (i, slot) = match k {
                Key::FeedName => (0, &mut p.feed_name),
                Key::Category => (1, &mut p.category),
                Key::ArticleUrl => (2, &mut p.article_url),
                Key::ReferenceUrl => (3, &mut p.reference_url),
                Key::Origin => (4, &mut p.origin),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            set[i] = true;
            text_into(&mut map, slot)?;
        }
        let slots = [
            &mut p.feed_name,
            &mut p.category,
            &mut p.article_url,
            &mut p.reference_url,
            &mut p.origin,
        ];
        for (slot, set) in slots.into_iter().zip(set) {
            if !set {
                *slot = None;
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        skip(seq)?;
        *self.0 = Provenance::default();
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        *self.0 = Provenance::default();
        Ok(())
    }
}

/// Checks that `text` is one JSON value that decodes as an item (an indicator or a skipped
/// one), decoding it into `scratch` (reused: no allocation per field). What
/// `serde_json::from_str::<Item>` would accept, without keeping the item.
pub fn check_item(text: &str, scratch: &mut Indicator) -> serde_json::Result<()> {
    use de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(text);
    // An item that is skipped (not an object, no value) checks out too: only JSON errors fail.
    let _item_or_skip = ItemInto(scratch).deserialize(&mut de)?;
    de.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::body_each;
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;

    #[test]
    fn an_item_is_laid_out_like_an_indicator() {
        // `Source::commit` collects a page's indicators in place only when this holds; if a
        // change breaks it, pages are held twice again (memory, not correctness).
        assert_eq!(
            std::mem::size_of::<Item>(),
            std::mem::size_of::<Indicator>()
        );
        assert_eq!(
            std::mem::align_of::<Item>(),
            std::mem::align_of::<Indicator>()
        );
    }
    use serde_json::{json, Value};

    /// The decoder this module replaced (a `Value` tree read field by field), kept as the
    /// oracle: the typed decoder must give the same indicator for every input.
    mod oracle {
        use super::*;

        fn text(v: Option<&Value>) -> Option<String> {
            match v? {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        }

        fn time(v: Option<&Value>) -> Option<DateTime<Utc>> {
            let s = v?.as_str()?;
            DateTime::parse_from_rfc3339(s.trim())
                .ok()
                .map(|t| t.with_timezone(&Utc))
        }

        fn strings(v: Option<&Value>) -> Vec<String> {
            let Some(Value::Array(items)) = v else {
                return text(v).into_iter().collect();
            };
            items
                .iter()
                .filter_map(|item| match item {
                    Value::Object(o) => text(o.get("id")),
                    other => text(Some(other)),
                })
                .collect()
        }

        pub fn from_json(v: &Value) -> Result<Indicator, Skip> {
            let Value::Object(o) = v else {
                return Err(Skip::NotAnObject);
            };
            let value = text(o.get("value"))
                .filter(|v| v.chars().any(|c| !c.is_whitespace() && !c.is_control()))
                .ok_or(Skip::NoValue)?;
            let type_raw = text(o.get("type")).unwrap_or_default();
            let src = o.get("source").and_then(Value::as_object);
            let field = |k: &str| src.and_then(|s| text(s.get(k)));
            Ok(Indicator {
                id: text(o.get("id")),
                ioc_type: IocType::parse(&type_raw),
                type_raw,
                value,
                confidence: text(o.get("confidence")).map(|c| c.to_ascii_lowercase()),
                first_seen: time(o.get("first_seen")),
                last_seen: time(o.get("last_seen")),
                source: Provenance {
                    feed_name: field("feed_name"),
                    category: field("category"),
                    article_url: field("article_url"),
                    reference_url: field("reference_url"),
                    origin: field("origin"),
                },
                context: text(o.get("context")),
                tags: strings(o.get("tags")),
                mitre_techniques: strings(o.get("mitre_techniques")),
            })
        }
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            // Escapes, separators, controls, non-ASCII, blanks.
            "[a-zA-Z0-9 |=\\\\\"\r\n\t\u{7}é€😀-]{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("2026-05-01T10:00:00Z"),
                Just(" 2026-05-01T10:00:00.123+02:00 "),
                Just("2026-13-01T00:00:00Z"),
                Just("HIGH"),
                Just("Medium"),
                Just("ipv4"),
                Just("mitre_attack"),
            ]
            .prop_map(|s| Value::String(s.to_string())),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("id"),
            Just("type"),
            Just("value"),
            Just("confidence"),
            Just("first_seen"),
            Just("last_seen"),
            Just("source"),
            Just("context"),
            Just("tags"),
            Just("mitre_techniques"),
            Just("feed_name"),
            Just("category"),
            Just("article_url"),
            Just("reference_url"),
            Just("origin"),
            Just("unknown"),
            Just("Value"),
        ]
        .prop_map(String::from)
    }

    fn item() -> impl Strategy<Value = Value> {
        prop_oneof![
            1 => value(),
            6 => prop::collection::vec((key(), value()), 0..12)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn typed_decoding_matches_the_value_tree_reading(v in item()) {
            // What the old daemon saw: the bytes parsed into a tree (serde_json's float
            // parsing is not exact both ways, so the generated tree itself would differ).
            let text = serde_json::to_string(&v).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            let expected = oracle::from_json(&v);
            prop_assert_eq!(&serde_json::from_str::<Item>(&text).unwrap().0, &expected);
            prop_assert_eq!(&super::item(&v), &expected);
        }

        #[test]
        fn items_decoded_into_one_reused_indicator_keep_nothing_of_the_previous_one(
            items in prop::collection::vec(item(), 0..8)
        ) {
            let text = serde_json::to_string(&serde_json::json!({ "data": items })).unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            let expected: Vec<_> = v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(oracle::from_json)
                .collect();
            let mut got = Vec::new();
            body_each(text.as_bytes(), &mut |r| got.push(r.cloned())).unwrap();
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn check_item_accepts_exactly_what_decoding_an_item_accepts() {
        let mut scratch = blank();
        for line in [
            r#"{"value":"x","type":"ipv4"}"#,
            r#"{"type":"ipv4"}"#,
            "[1,2]",
            "7",
            "null",
            r#"{"value":"x"} junk"#,
            r#"{"value":"x""#,
            r#"{"value":"\q"}"#,
            "",
            r#"{"value":"x","tags":[{"id":1},[],"t"],"source":{"origin":true}}"#,
        ] {
            assert_eq!(
                check_item(line, &mut scratch).is_ok(),
                serde_json::from_str::<Item>(line).is_ok(),
                "{line}"
            );
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value_and_escapes_are_decoded() {
        let i = serde_json::from_str::<Item>(
            r#"{"value":"first","value":"a\u007c\"b\\\n","tags":"one","source":{"feed_name":7}}"#,
        )
        .unwrap()
        .0
        .unwrap();
        assert_eq!(i.value, "a|\"b\\\n");
        assert_eq!(i.tags, vec!["one"]);
        assert_eq!(i.source.feed_name.as_deref(), Some("7"));
    }

    #[test]
    fn missing_null_and_extra_fields_never_fail_a_parse() {
        let v = json!({"value": "198.51.100.7", "type": "ipv4", "confidence": null,
                       "source": null, "tags": null, "x": {"y": 1}, "first_seen": "garbage"});
        let i = super::item(&v).unwrap();
        assert_eq!(i.value, "198.51.100.7");
        assert_eq!(i.confidence, None);
        assert_eq!(i.first_seen, None);
        assert!(i.tags.is_empty());
    }

    #[test]
    fn an_indicator_without_value_is_skipped() {
        assert_eq!(super::item(&json!({"type": "ipv4"})), Err(Skip::NoValue));
        assert_eq!(super::item(&json!({"value": ""})), Err(Skip::NoValue));
        assert_eq!(
            super::item(&json!({"value": " \t\u{0007} "})),
            Err(Skip::NoValue)
        );
        assert_eq!(super::item(&json!([1])), Err(Skip::NotAnObject));
    }

    #[test]
    fn technique_objects_give_their_ids() {
        let v =
            json!({"value": "x", "mitre_techniques": [{"id": "T1071", "name": "App"}, "T1566"]});
        let i = super::item(&v).unwrap();
        assert_eq!(i.mitre_techniques, vec!["T1071", "T1566"]);
    }
}
