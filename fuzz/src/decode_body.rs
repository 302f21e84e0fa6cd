//! Target `decode_body`: any bytes as an HTTP body through `decode::body_each`, the function
//! the API source decodes pages with. Checks: it agrees with the collecting `decode::body`
//! and with decoding each item from a `serde_json::Value` tree (`decode::item`);
//! every indicator has a visible value, a type parsed from its spelling and a lowercase
//! confidence; and every one encodes as valid CEF in both profiles.

use ioc_forwarder::config::CefProfile;
use ioc_forwarder::decode::{self, Data, Item};
use ioc_forwarder::encode::cef::{Act, CefOptions};
use ioc_forwarder::indicator::{Indicator, IocType, Skip};
use serde_json::Value;

use super::cef_encode::check_encode;

pub fn run(data: &[u8]) {
    let mut streamed: Vec<Result<Indicator, Skip>> = Vec::new();
    let each = decode::body_each(data, &mut |item| streamed.push(item.cloned()));
    let Ok(each) = each else {
        return;
    };
    let whole = decode::body(data).expect("body_each decoded a body that body refuses");
    assert_eq!(each.has_meta, whole.has_meta);
    assert_eq!(each.generated_at, whole.generated_at);
    assert_eq!(
        (each.limit, each.total, each.offset),
        (whole.limit, whole.total, whole.offset)
    );
    match (&each.data, &whole.data) {
        (Data::Items(none), Data::Items(items)) => {
            assert!(none.is_empty(), "body_each collected items");
            let collected: Vec<&Result<Indicator, Skip>> = items.iter().map(|i| &i.0).collect();
            let handed: Vec<&Result<Indicator, Skip>> = streamed.iter().collect();
            assert_eq!(handed, collected, "body_each and body give different items");
        }
        (a, b) => {
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
            assert!(streamed.is_empty(), "items handed out without a data array");
        }
    }

    // The same items decoded from a JSON tree. A body may decode without being strict JSON
    // only where serde_json skips a value unchecked: the bytes and escapes of a string, and
    // the range of a number, that no decoded field holds.
    let tree: Value = match serde_json::from_slice(data) {
        Ok(tree) => tree,
        Err(e) => {
            let e = e.to_string();
            let unchecked = [
                "invalid unicode code point",
                "lone leading surrogate",
                "unexpected end of hex escape",
                "number out of range",
            ];
            assert!(
                unchecked.iter().any(|u| e.starts_with(u)),
                "decoded, but not JSON: {e}"
            );
            return;
        }
    };
    let from_tree: Vec<Result<Indicator, Skip>> = match tree.get("data") {
        Some(Value::Array(items)) => items.iter().map(decode::item).collect(),
        _ => Vec::new(),
    };
    assert_eq!(
        streamed, from_tree,
        "bytes and a Value tree decode differently"
    );

    let mut opts = CefOptions::default();
    for ind in streamed.iter().flatten() {
        check_indicator(ind);
        for profile in [CefProfile::SocDefenders, CefProfile::Extended] {
            opts.profile = profile;
            check_encode(ind, Act::Add, &opts);
        }
    }
}

/// What the SPEC's "Indicator semantics" promise of a decoded indicator.
pub fn check_indicator(ind: &Indicator) {
    assert!(
        ind.value
            .chars()
            .any(|c| !c.is_whitespace() && !c.is_control()),
        "an indicator without a visible value: {:?}",
        ind.value
    );
    assert_eq!(ind.ioc_type, IocType::parse(&ind.type_raw));
    if let Some(c) = &ind.confidence {
        assert!(
            !c.bytes().any(|b| b.is_ascii_uppercase()),
            "confidence {c:?}"
        );
    }
}

/// The items of `Item`s as `Result`s, for comparing.
pub fn results(items: &[Item]) -> Vec<&Result<Indicator, Skip>> {
    items.iter().map(|i| &i.0).collect()
}
