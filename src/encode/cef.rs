//! Indicator → CEF line (SPEC "CEF"). Pure: writes into the caller's buffer, no I/O.
//!
//! Escaping follows the CEF rules exactly, because one wrong byte breaks SIEM parsers silently:
//! header fields escape `\` and `|`; extension values escape `\`, `=`, and encode CR/LF as `\r`
//! `\n`. Every other C0 control character and DEL becomes a space (CEF has no escape for them,
//! and a raw TAB is a pair separator for some parsers), and so do CR/LF in header fields. No raw
//! CR or LF can therefore leave this module, so LF framing can never be split by data.

use std::fmt::Write as _;

use crate::config::{CefProfile, SeverityMap};
use crate::indicator::{Indicator, IocType};

/// What the encoder needs besides the indicator.
#[derive(Debug, Clone)]
pub struct CefOptions {
    pub device_vendor: String,
    pub device_product: String,
    pub device_version: String,
    pub profile: CefProfile,
    pub severity: SeverityMap,
}

impl CefOptions {
    pub fn from_config(c: &crate::config::CefConfig) -> CefOptions {
        CefOptions {
            device_vendor: c.device_vendor.clone(),
            device_product: c.device_product.clone(),
            device_version: c.device_version.clone(),
            profile: c.profile,
            severity: c.severity,
        }
    }
}

/// Whether this version is the first one of its indicator we send (`act` in `extended`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Add,
    Update,
}

fn is_control(c: char) -> bool {
    (c as u32) < 0x20 || c == '\u{7f}'
}

/// Appends a header field with `\` and `|` escaped and control characters as spaces.
pub fn push_header(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            c if is_control(c) => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Appends an extension value: `\` `=` escaped, CR/LF as `\r`/`\n`, other controls as spaces.
pub fn push_ext_value(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_control(c) => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Appends ` key=value` (no leading space for the first pair), escaping the value and cutting it
/// to `cap` characters first. Returns true when the value was cut.
fn pair(out: &mut String, first: &mut bool, key: &str, value: &str, cap: usize) -> bool {
    if value.is_empty() {
        return false;
    }
    if !*first {
        out.push(' ');
    }
    *first = false;
    out.push_str(key);
    out.push('=');
    match value.char_indices().nth(cap) {
        Some((cut, _)) => {
            push_ext_value(out, &value[..cut]);
            true
        }
        None => {
            push_ext_value(out, value);
            false
        }
    }
}

const NO_CAP: usize = usize::MAX;

/// Encodes one indicator as a CEF line into `out` (appending). Returns how many values were cut
/// to the ArcSight key limits (always 0 for the `socdefenders` profile, which has no limits).
pub fn encode(ind: &Indicator, act: Act, opts: &CefOptions, out: &mut String) -> usize {
    out.push_str("CEF:0|");
    push_header(out, &opts.device_vendor);
    out.push('|');
    push_header(out, &opts.device_product);
    out.push('|');
    push_header(out, &opts.device_version);
    out.push('|');
    if ind.type_raw.is_empty() {
        out.push_str("unknown");
    } else {
        push_header(out, &ind.type_raw);
    }
    out.push('|');
    match ind.ioc_type.label() {
        Some(label) => {
            out.push_str("Malicious ");
            out.push_str(label);
            out.push_str(" Indicator");
        }
        None => out.push_str("Malicious Indicator"),
    }
    out.push('|');
    let _ = write!(out, "{}", severity(ind, &opts.severity));
    out.push('|');
    match opts.profile {
        CefProfile::SocDefenders => {
            socdefenders_extension(ind, out);
            0
        }
        CefProfile::Extended => extended_extension(ind, act, out),
    }
}

/// Severity from confidence; an unknown or missing confidence gets the `low` severity.
fn severity(ind: &Indicator, map: &SeverityMap) -> u8 {
    match ind.confidence.as_deref() {
        Some("high") => map.high,
        Some("medium") => map.medium,
        _ => map.low,
    }
}

fn socdefenders_extension(ind: &Indicator, out: &mut String) {
    let mut first = true;
    pair(out, &mut first, "src", &ind.value, NO_CAP);
    if let Some(c) = &ind.confidence {
        pair(out, &mut first, "cs1", c, NO_CAP);
        pair(out, &mut first, "cs1Label", "confidence", NO_CAP);
    }
    if let Some(feed) = &ind.source.feed_name {
        pair(out, &mut first, "cs2", feed, NO_CAP);
        pair(out, &mut first, "cs2Label", "source", NO_CAP);
    }
    if let Some(t) = ind.first_seen {
        pair(
            out,
            &mut first,
            "rt",
            &t.timestamp_millis().to_string(),
            NO_CAP,
        );
    }
}

fn extended_extension(ind: &Indicator, act: Act, out: &mut String) -> usize {
    const LABEL: usize = 1023;
    const CS: usize = 4000;
    let mut first = true;
    let mut cuts = 0usize;
    let mut p = |out: &mut String, key: &str, value: &str, cap: usize| {
        if pair(out, &mut first, key, value, cap) {
            cuts += 1;
        }
    };
    let (key, cap, label) = match ind.ioc_type {
        IocType::Ipv4 => ("src", NO_CAP, None),
        IocType::Ipv6 => ("c6a1", NO_CAP, Some("c6a1Label")),
        IocType::Domain => ("dhost", 1023, None),
        IocType::Url => ("request", 1023, None),
        IocType::Md5 | IocType::Sha1 | IocType::Sha256 | IocType::Sha512 => ("fileHash", 255, None),
        IocType::Email => ("duser", 1023, None),
        IocType::Cve | IocType::MitreAttack | IocType::Other => ("cs6", CS, Some("cs6Label")),
    };
    p(out, key, &ind.value, cap);
    if let Some(l) = label {
        p(out, l, "indicator", LABEL);
    }
    let labelled = |p: &mut dyn FnMut(&mut String, &str, &str, usize),
                    out: &mut String,
                    key: &str,
                    value: Option<&str>,
                    label_key: &str,
                    label: &str| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            p(out, key, v, CS);
            p(out, label_key, label, LABEL);
        }
    };
    let tags = (!ind.tags.is_empty()).then(|| ind.tags.join(","));
    let techniques = (!ind.mitre_techniques.is_empty()).then(|| ind.mitre_techniques.join(","));
    labelled(
        &mut p,
        out,
        "cs1",
        ind.confidence.as_deref(),
        "cs1Label",
        "confidence",
    );
    labelled(
        &mut p,
        out,
        "cs2",
        ind.source.feed_name.as_deref(),
        "cs2Label",
        "source",
    );
    labelled(&mut p, out, "cs3", tags.as_deref(), "cs3Label", "tags");
    labelled(
        &mut p,
        out,
        "cs4",
        techniques.as_deref(),
        "cs4Label",
        "mitreTechniques",
    );
    labelled(
        &mut p,
        out,
        "cs5",
        ind.source.article_url.as_deref(),
        "cs5Label",
        "reference",
    );
    if let Some(origin) = &ind.source.origin {
        p(out, "flexString1", origin, CS);
        p(out, "flexString1Label", "origin", LABEL);
    }
    if let Some(cat) = &ind.source.category {
        p(out, "cat", cat, 1023);
    }
    if let Some(msg) = &ind.context {
        p(out, "msg", msg, 1023);
    }
    if let Some(id) = &ind.id {
        p(out, "externalId", id, 40);
    }
    p(
        out,
        "act",
        match act {
            Act::Add => "add",
            Act::Update => "update",
        },
        63,
    );
    if let Some(t) = ind.first_seen {
        p(
            out,
            "deviceCustomDate1",
            &t.timestamp_millis().to_string(),
            NO_CAP,
        );
        p(out, "deviceCustomDate1Label", "firstSeen", LABEL);
    }
    if let Some(t) = ind.last_seen {
        p(
            out,
            "deviceCustomDate2",
            &t.timestamp_millis().to_string(),
            NO_CAP,
        );
        p(out, "deviceCustomDate2Label", "lastSeen", LABEL);
    }
    if let Some(t) = ind.first_seen {
        p(out, "rt", &t.timestamp_millis().to_string(), NO_CAP);
    }
    cuts
}

/// Byte offset where the extension starts: after the seventh unescaped `|`.
fn extension_start(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let mut pipes = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'|' => {
                pipes += 1;
                if pipes == 7 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// `(key_start, value_start, value_end)` of every pair of an extension produced by [`encode`].
/// Our values never hold an unescaped `=`, so each unescaped `=` ends a key that starts after
/// the last space before it.
fn pairs(ext: &str) -> Vec<(usize, usize, usize)> {
    let b = ext.as_bytes();
    let mut eqs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'=' => eqs.push(i),
            _ => {}
        }
        i += 1;
    }
    let mut out: Vec<(usize, usize, usize)> = Vec::with_capacity(eqs.len());
    for &eq in &eqs {
        let key_start = ext[..eq].rfind(' ').map(|s| s + 1).unwrap_or(0);
        if let Some(last) = out.last_mut() {
            last.2 = key_start.saturating_sub(1);
        }
        out.push((key_start, eq + 1, ext.len()));
    }
    out
}

/// Largest prefix length of the escaped value `v` that is at most `max` bytes and ends on a
/// character and escape boundary.
fn safe_cut(v: &str, max: usize) -> usize {
    let b = v.as_bytes();
    let mut i = 0;
    let mut last_ok = 0;
    while i < b.len() {
        let step = if b[i] == b'\\' {
            2
        } else {
            v[i..].chars().next().map(char::len_utf8).unwrap_or(1)
        };
        if i + step > max {
            break;
        }
        i += step;
        last_ok = i;
    }
    last_ok
}

/// Shortens a CEF line produced by [`encode`] to at most `max` bytes by cutting the longest
/// extension value (then the next, removing pairs that would become empty), so the result is
/// still valid CEF. `None` when even the header does not fit.
pub fn truncate_to(line: &str, max: usize) -> Option<String> {
    if line.len() <= max {
        return Some(line.to_string());
    }
    let start = extension_start(line)?;
    let header = &line[..start];
    let ext = &line[start..];
    let mut kv: Vec<(String, String)> = pairs(ext)
        .into_iter()
        .map(|(k, vs, ve)| (ext[k..vs - 1].to_string(), ext[vs..ve].to_string()))
        .collect();
    let total = |kv: &[(String, String)]| -> usize {
        header.len()
            + kv.iter().map(|(k, v)| k.len() + 1 + v.len()).sum::<usize>()
            + kv.len().saturating_sub(1)
    };
    loop {
        let len = total(&kv);
        if len <= max {
            break;
        }
        let excess = len - max;
        let (idx, _) = kv.iter().enumerate().max_by_key(|(_, (_, v))| v.len())?;
        let v = &kv[idx].1;
        if v.len() > excess {
            let keep = safe_cut(v, v.len() - excess);
            if keep > 0 {
                kv[idx].1.truncate(keep);
                continue;
            }
        }
        kv.remove(idx);
        if kv.is_empty() && header.len() > max {
            return None;
        }
    }
    let mut out = String::with_capacity(max);
    out.push_str(header);
    for (i, (k, v)) in kv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::indicator::Indicator;
    use serde_json::json;

    fn opts(profile: CefProfile) -> CefOptions {
        CefOptions {
            device_vendor: "SOC Defenders".into(),
            device_product: "Threat Intelligence".into(),
            device_version: "1.0".into(),
            profile,
            severity: SeverityMap::default(),
        }
    }

    fn line(v: serde_json::Value, profile: CefProfile) -> String {
        let ind = Indicator::from_json(&v).unwrap();
        let mut s = String::new();
        encode(&ind, Act::Add, &opts(profile), &mut s);
        s
    }

    #[test]
    fn seed_line_is_reproduced_byte_for_byte_with_the_table_severity() {
        let v = json!({"type": "ipv4", "value": "203.0.113.42", "confidence": "high",
            "first_seen": "2025-05-17T00:00:00Z", "source": {"feed_name": "CISA Alerts"}});
        assert_eq!(
            line(v, CefProfile::SocDefenders),
            "CEF:0|SOC Defenders|Threat Intelligence|1.0|ipv4|Malicious IPv4 Indicator|9|src=203.0.113.42 cs1=high cs1Label=confidence cs2=CISA Alerts cs2Label=source rt=1747440000000"
        );
    }

    #[test]
    fn hostile_value_with_newline_stays_on_one_line() {
        let v = json!({"type": "url", "value": "http://x.example/a\r\nb=c\\d|e\tf",
            "source": {"feed_name": "A|B=C\\D\n"}});
        let l = line(v, CefProfile::SocDefenders);
        assert!(!l.contains('\n') && !l.contains('\r') && !l.contains('\t'));
        assert!(
            l.ends_with(
                "|3|src=http://x.example/a\\r\\nb\\=c\\\\d|e f cs2=A|B\\=C\\\\D\\n cs2Label=source"
            ),
            "{l}"
        );
    }

    #[test]
    fn header_fields_escape_pipe_and_backslash() {
        let v = json!({"type": "we|ird\\type\n", "value": "x"});
        let l = line(v, CefProfile::SocDefenders);
        assert!(l.starts_with("CEF:0|SOC Defenders|Threat Intelligence|1.0|we\\|ird\\\\type |Malicious Indicator|3|src=x"), "{l}");
    }

    #[test]
    fn missing_fields_leave_their_keys_out() {
        let l = line(
            json!({"type": "domain", "value": "a.example"}),
            CefProfile::SocDefenders,
        );
        assert!(
            l.ends_with("|Malicious Domain Indicator|3|src=a.example"),
            "{l}"
        );
    }

    #[test]
    fn extended_profile_puts_the_value_in_the_typed_key() {
        let v = json!({"id": "u1", "type": "ipv6", "value": "2001:db8::1", "confidence": "medium",
            "first_seen": "2025-05-17T00:00:00Z", "last_seen": "2025-05-17T00:00:01Z",
            "tags": ["a", "b"], "source": {"feed_name": "F", "origin": "feed", "category": "gov"}});
        assert_eq!(
            line(v, CefProfile::Extended),
            "CEF:0|SOC Defenders|Threat Intelligence|1.0|ipv6|Malicious IPv6 Indicator|6|c6a1=2001:db8::1 c6a1Label=indicator cs1=medium cs1Label=confidence cs2=F cs2Label=source cs3=a,b cs3Label=tags flexString1=feed flexString1Label=origin cat=gov externalId=u1 act=add deviceCustomDate1=1747440000000 deviceCustomDate1Label=firstSeen deviceCustomDate2=1747440001000 deviceCustomDate2Label=lastSeen rt=1747440000000"
        );
    }

    #[test]
    fn truncation_cuts_the_longest_value_on_an_escape_boundary() {
        let long = format!("https://example.com/{}", "a=b\\".repeat(500));
        let l = line(
            json!({"type": "url", "value": long, "confidence": "low"}),
            CefProfile::SocDefenders,
        );
        for max in [200usize, 201, 202, 203, 150] {
            let t = truncate_to(&l, max).unwrap();
            assert!(t.len() <= max, "{} > {max}", t.len());
            assert!(t.ends_with("cs1=low cs1Label=confidence"), "{t}");
            // never a dangling backslash at the end of the cut value
            let ext = &t[extension_start(&t).unwrap()..];
            let v = &ext[4..ext.find(" cs1=").unwrap()];
            assert_eq!((v.len() - v.trim_end_matches('\\').len()) % 2, 0, "{v}");
        }
        assert_eq!(truncate_to(&l, 20), None);
    }
}
