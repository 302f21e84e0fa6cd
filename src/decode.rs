//! Decoding API pages straight into [`Indicator`]s, without building a `serde_json::Value`
//! tree first (that tree cost more than half of a backfill's decoding time and most of its
//! allocations).
//!
//! The decoder is lenient on purpose (the API adds and drops fields): any field may be
//! missing, null, of an unexpected JSON type, or accompanied by fields we do not know. A string
//! field that holds a number or a boolean takes its JSON text; one that holds an array or an
//! object is treated as missing. `tags` and `mitre_techniques` take a list (objects in it give
//! their `id`) or a single scalar. An item that is not an object, or has no usable `value`,
//! becomes an [`Item`] carrying the [`Skip`] reason — the page still decodes. Only a body that
//! is not JSON at all, or has no `data` array, is an error.
//!
//! Items are decoded into an indicator that is reused from item to item ([`ItemInto`]): every
//! field is overwritten or cleared, and the strings keep their buffers.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::indicator::{Indicator, IocType, Provenance, Skip};

/// One element of a page's `data` array: an indicator, or why it is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item(pub Result<Indicator, Skip>);

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

/// Decodes one item held as a JSON tree (tests, benchmarks, the fuzz targets) with the same
/// rules as the pages the daemon decodes straight from their bytes.
pub fn item(v: &serde_json::Value) -> Result<Indicator, Skip> {
    Item::deserialize(v)
        .map(|i| i.0)
        .unwrap_or(Err(Skip::NotAnObject))
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

/// The visits of every JSON scalar a visitor does not want (strings, booleans, numbers, and
/// with `unit` also null): each gives the same value.
macro_rules! scalars_are {
    ($ty:ty, $value:expr, unit) => {
        scalars_are!($ty, $value);
        fn visit_unit<E: de::Error>(self) -> Result<$ty, E> {
            Ok($value)
        }
    };
    ($ty:ty, $value:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$ty, E> {
            Ok($value)
        }
        scalars_are!(not_str $ty, $value);
    };
    // Booleans and numbers only.
    (not_str $ty:ty, $value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$ty, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$ty, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$ty, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$ty, E> {
            Ok($value)
        }
    };
}

/// A seed that is its own visitor: it deserializes by visiting whatever value comes.
macro_rules! seed_is_visitor {
    ($ty:ty => $value:ty) => {
        impl<'de> de::DeserializeSeed<'de> for $ty {
            type Value = $value;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<$value, D::Error> {
                d.deserialize_any(self)
            }
        }
    };
}

/// Drains whatever value comes next; used for every shape we do not use.
fn skip<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A scalar taken as text (see [`TextInto`]), or missing.
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        use de::DeserializeSeed;
        let mut s = String::new();
        let present = TextInto(&mut s).deserialize(d)?;
        Ok(Text(present.then_some(s)))
    }
}

/// Writes a scalar as text into a reused buffer: strings as they are, numbers and booleans as
/// their JSON text. The value is `true` when something usable was written (an empty string,
/// null, an array or an object are missing).
struct TextInto<'a>(&'a mut String);

seed_is_visitor!(TextInto<'_> => bool);

impl TextInto<'_> {
    fn display(self, v: impl fmt::Display) -> bool {
        use fmt::Write;
        self.0.clear();
        // Writing into a String cannot fail.
        let _ = write!(self.0, "{v}");
        true
    }
}

impl<'de> Visitor<'de> for TextInto<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<bool, E> {
        self.0.clear();
        self.0.push_str(s);
        Ok(!s.is_empty())
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<bool, E> {
        Ok(self.display(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<bool, E> {
        Ok(self.display(n))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<bool, E> {
        Ok(self.display(n))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<bool, E> {
        // serde_json's own rendering, so `1.0` stays `1.0` as it did through a `Value`.
        Ok(serde_json::Number::from_f64(n).is_some_and(|n| self.display(n)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        skip(seq)?;
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        skip_map(map)?;
        Ok(false)
    }
}

/// Reads the next map value as text into `slot`, reusing the buffer it holds.
fn text_into<'de, A: MapAccess<'de>>(
    map: &mut A,
    slot: &mut Option<String>,
) -> Result<(), A::Error> {
    let present = map.next_value_seed(TextInto(slot.get_or_insert_with(String::new)))?;
    if !present {
        *slot = None;
    }
    Ok(())
}

/// An RFC 3339 timestamp; anything else (or an unparsable string) is missing.
struct Time(Option<DateTime<Utc>>);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Time;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an RFC 3339 time")
            }
            // Only strings count: a number is not a time.
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Time, E> {
                Ok(Time(
                    DateTime::parse_from_rfc3339(s.trim())
                        .ok()
                        .map(|t| t.with_timezone(&Utc)),
                ))
            }
            fn visit_none<E: de::Error>(self) -> Result<Time, E> {
                Ok(Time(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Time, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Time, A::Error> {
                skip(seq)?;
                Ok(Time(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Time, A::Error> {
                skip_map(map)?;
                Ok(Time(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Time, E> {
                Ok(Time(None))
            }
            scalars_are!(not_str Time, Time(None));
        }
        d.deserialize_any(V)
    }
}

/// An element of `tags` / `mitre_techniques` into a reused buffer: a scalar, or an object's
/// `id`. `true` when it gave a string.
struct TagInto<'a>(&'a mut String);

seed_is_visitor!(TagInto<'_> => bool);

impl<'de> Visitor<'de> for TagInto<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an object with an id")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut present = false;
        while let Some(k) = map.next_key::<Key>()? {
            if k == Key::Id {
                present = map.next_value_seed(TextInto(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(present)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<bool, E> {
        TextInto(self.0).visit_str(s)
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<bool, E> {
        TextInto(self.0).visit_bool(b)
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<bool, E> {
        TextInto(self.0).visit_i64(n)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<bool, E> {
        TextInto(self.0).visit_u64(n)
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<bool, E> {
        TextInto(self.0).visit_f64(n)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        skip(seq)?;
        Ok(false)
    }
}

/// `tags` / `mitre_techniques` into a reused list: a list, or one scalar standing for a list
/// of one. The strings already in the list are overwritten before new ones are made.
struct StringsInto<'a>(&'a mut Vec<String>);

seed_is_visitor!(StringsInto<'_> => ());

impl StringsInto<'_> {
    /// The list becomes the one string `fill` writes (or empty when it writes none).
    fn one<E>(self, fill: impl FnOnce(TextInto<'_>) -> Result<bool, E>) -> Result<(), E> {
        if self.0.is_empty() {
            self.0.push(String::new());
        }
        let present = fill(TextInto(&mut self.0[0]))?;
        self.0.truncate(usize::from(present));
        Ok(())
    }
}

impl<'de> Visitor<'de> for StringsInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of strings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let list = self.0;
        let mut n = 0;
        loop {
            if n == list.len() {
                list.push(String::new());
            }
            match seq.next_element_seed(TagInto(&mut list[n]))? {
                Some(true) => n += 1,
                Some(false) => {}
                None => break,
            }
        }
        list.truncate(n);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        skip_map(map)?;
        self.0.clear();
        Ok(())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.one(|t| t.visit_str(s))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.one(|t| t.visit_bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        self.one(|t| t.visit_i64(n))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        self.one(|t| t.visit_u64(n))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<(), E> {
        self.one(|t| t.visit_f64(n))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.clear();
        Ok(())
    }
}

/// The field names we read, in items and in `source`; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Id,
    Type,
    Value,
    Confidence,
    FirstSeen,
    LastSeen,
    Source,
    Context,
    Tags,
    MitreTechniques,
    FeedName,
    Category,
    ArticleUrl,
    ReferenceUrl,
    Origin,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "id" => Key::Id,
                    "type" => Key::Type,
                    "value" => Key::Value,
                    "confidence" => Key::Confidence,
                    "first_seen" => Key::FirstSeen,
                    "last_seen" => Key::LastSeen,
                    "source" => Key::Source,
                    "context" => Key::Context,
                    "tags" => Key::Tags,
                    "mitre_techniques" => Key::MitreTechniques,
                    "feed_name" => Key::FeedName,
                    "category" => Key::Category,
                    "article_url" => Key::ArticleUrl,
                    "reference_url" => Key::ReferenceUrl,
                    "origin" => Key::Origin,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
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
struct ItemInto<'a>(&'a mut Indicator);

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

/// A non-negative integer (`meta.limit` and friends); anything else is missing.
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a count")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Count, E> {
                Ok(Count(Some(n)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(n).ok()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Count, A::Error> {
                skip(seq)?;
                Ok(Count(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Count, A::Error> {
                skip_map(map)?;
                Ok(Count(None))
            }
        }
        d.deserialize_any(V)
    }
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

enum TopKey {
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

/// What a whole-value file turned out to be, for [`stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A JSON array of items.
    Array,
    /// An object; `data_array` when it had a `data` array (an API body).
    Object { data_array: bool },
    /// A scalar.
    Other,
}

/// Where [`stream`] puts items: pages of `size` handed to `sink`, or nowhere (`check`).
struct Pages<'a> {
    size: usize,
    buf: Vec<Item>,
    sink: Option<&'a mut dyn FnMut(Vec<Item>) -> bool>,
    stopped: bool,
    /// Without a sink (a check) each item is decoded into this one and dropped.
    scratch: Indicator,
}

const STOPPED: &str = "stopped by the reader of the pages";

impl Pages<'_> {
    fn take<'de, A: SeqAccess<'de>>(&mut self, mut seq: A) -> Result<(), A::Error> {
        let Some(sink) = self.sink.as_mut() else {
            while seq
                .next_element_seed(ItemInto(&mut self.scratch))?
                .is_some()
            {}
            return Ok(());
        };
        while let Some(item) = seq.next_element::<Item>()? {
            self.buf.push(item);
            if self.buf.len() >= self.size {
                let page = std::mem::replace(&mut self.buf, Vec::with_capacity(self.size));
                if !sink(page) {
                    self.stopped = true;
                    return Err(de::Error::custom(STOPPED));
                }
            }
        }
        Ok(())
    }
}

struct TopSeed<'p, 'a>(&'p mut Pages<'a>);

seed_is_visitor!(TopSeed<'_, '_> => Shape);

impl<'de> Visitor<'de> for TopSeed<'_, '_> {
    type Value = Shape;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of indicators or an API response object")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Shape, A::Error> {
        self.0.take(seq)?;
        Ok(Shape::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let mut data_array = false;
        while let Some(k) = map.next_key::<TopKey>()? {
            match k {
                // A repeated `data` would make the last one the body's (as a JSON map keeps
                // it); the stream has handed the first out already: refuse such a file here,
                // it is then read whole.
                TopKey::Data if data_array => return Err(de::Error::custom("two data keys")),
                TopKey::Data => data_array = map.next_value_seed(DataSeed(&mut *self.0))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Shape::Object { data_array })
    }
    scalars_are!(Shape, Shape::Other, unit);
}

struct DataSeed<'p, 'a>(&'p mut Pages<'a>);

seed_is_visitor!(DataSeed<'_, '_> => bool);

impl<'de> Visitor<'de> for DataSeed<'_, '_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of indicators")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        self.0.take(seq)?;
        Ok(true)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        skip_map(map)?;
        Ok(false)
    }
    scalars_are!(bool, false, unit);
}

/// Reads one JSON value from `reader` — an array of items, or an object whose `data` array
/// holds them — handing the items to `sink` in pages of `size` as they are decoded (the last,
/// shorter page too), or only checking them when `sink` is `None`. The whole value must be
/// well-formed and alone in the input. `Ok(None)` when `sink` asked to stop.
pub fn stream<R: std::io::Read>(
    reader: R,
    size: usize,
    sink: Option<&mut dyn FnMut(Vec<Item>) -> bool>,
) -> serde_json::Result<Option<Shape>> {
    let size = size.max(1);
    let mut pages = Pages {
        size,
        buf: Vec::with_capacity(if sink.is_some() { size } else { 0 }),
        sink,
        stopped: false,
        scratch: blank(),
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let shape = match de::DeserializeSeed::deserialize(TopSeed(&mut pages), &mut de) {
        Ok(shape) => shape,
        Err(_) if pages.stopped => return Ok(None),
        Err(e) => return Err(e),
    };
    de.end()?;
    if let Some(sink) = pages.sink.as_mut() {
        if !pages.buf.is_empty() && !sink(std::mem::take(&mut pages.buf)) {
            return Ok(None);
        }
    }
    Ok(Some(shape))
}

#[cfg(test)]
mod tests {
    use super::*;
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
