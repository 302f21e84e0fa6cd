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
//! Items are decoded into an indicator that is reused from item to item (`item::ItemInto`):
//! every field is overwritten or cleared, and the strings keep their buffers.
//!
//! | file | what |
//! |---|---|
//! | `fields.rs` | one field's value (text, a time, a list of strings, a count); the field names |
//! | `item.rs` | one element of `data`: an indicator, or why it is not one |
//! | `body.rs` | an API response body: `data` collected or handed out item by item, and `meta` |
//! | `stream.rs` | a file read as it streams in (an array of items or an API body), in pages |
//!
//! [`Indicator`]: crate::indicator::Indicator
//! [`Skip`]: crate::indicator::Skip

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

mod body;
mod fields;
mod item;
mod stream;

pub use body::{body, body_each, Body, Data};
pub use item::{blank, check_item, item, Item};
pub use stream::{stream, Shape};
