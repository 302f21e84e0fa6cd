//! One field's value, decoded leniently into a reused buffer: a scalar as text, an RFC 3339
//! time, a list of strings (`tags`, `mitre_techniques`), a count; and the field names that
//! items and their `source` use.
//!
//! The rule every visitor here keeps: a value of a JSON type the field does not take is
//! missing, never an error — it is drained (an array or an object whole) and decoding goes
//! on. Only malformed JSON fails.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Drains whatever value comes next; used for every shape we do not use.
pub(super) fn skip<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

pub(super) fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// A scalar taken as text (see [`TextInto`]), or missing.
pub(super) struct Text(pub(super) Option<String>);

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
pub(super) struct TextInto<'a>(pub(super) &'a mut String);

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
pub(super) fn text_into<'de, A: MapAccess<'de>>(
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
pub(super) struct Time(pub(super) Option<DateTime<Utc>>);

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
pub(super) struct StringsInto<'a>(pub(super) &'a mut Vec<String>);

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

/// A non-negative integer (`meta.limit` and friends); anything else is missing.
pub(super) struct Count(pub(super) Option<u64>);

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

/// The field names we read, in items and in `source`; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
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
