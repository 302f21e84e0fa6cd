//! A file of indicators read as it streams in: one JSON value — an array of items, or an
//! object whose `data` array holds them (an API body saved to a file) — whose items are handed
//! out in pages as they are decoded, so memory holds a page or two whatever the file's size.
//!
//! The whole value must be well-formed and alone in the input; the reader of the pages can
//! stop the decoding early. Without a reader the items are only checked, each decoded into
//! one scratch indicator.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::body::TopKey;
use super::fields::skip_map;
use super::item::{blank, Item, ItemInto};
use crate::indicator::Indicator;

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
