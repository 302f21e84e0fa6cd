//! Cutting an encoded CEF line to a byte limit (the destination's `max_message_size` less
//! the syslog header) so that what is left is still valid CEF: a value is cut only at a
//! character and escape boundary, never so that it ends with a space, and a line that cannot
//! keep its indicator is not sent at all. The pairs a SIEM rule keys on (`act`, `end`,
//! `externalId`) are kept whole as long as anything else can go instead.
//!
//! It works on the line, not the indicator: the queue stores lines, and a line is cut only
//! when a destination's limit asks for it.

/// Byte offset where the extension starts: after the seventh unescaped `|`.
fn extension_start(line: &str) -> Option<usize> {
    super::header_pipes(line).map(|p| p[6] + 1)
}

/// `(key, escaped value)` of every pair of an extension produced by [`encode`](super::encode). Our values
/// never hold an unescaped `=`, so each unescaped `=` ends a key that starts after the last
/// space before it, and the previous value ends at that space.
fn pairs(ext: &str) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let mut value_start = 0;
    for i in super::unescaped(ext, b'=') {
        let key_start = ext[value_start..i]
            .rfind(' ')
            .map_or(value_start, |s| value_start + s + 1);
        if let Some(last) = out.last_mut() {
            last.1 = &ext[value_start..key_start.saturating_sub(1).max(value_start)];
        }
        out.push((&ext[key_start..i], ""));
        value_start = i + 1;
    }
    if let Some(last) = out.last_mut() {
        last.1 = &ext[value_start.min(ext.len())..];
    }
    out
}

/// Largest prefix length of the escaped value `v` that is at most `max` bytes, ends on a
/// character and escape boundary, and does not end with a space (which the value would lose
/// or carry ambiguously, see the module doc).
fn safe_cut(v: &str, max: usize) -> usize {
    let mut best = 0;
    let mut chars = v.char_indices();
    while let Some((i, c)) = chars.next() {
        let mut end = i + c.len_utf8();
        if c == '\\' {
            if let Some((j, escaped)) = chars.next() {
                end = j + escaped.len_utf8();
            }
        }
        if end > max {
            break;
        }
        if c != ' ' {
            best = end;
        }
    }
    best
}

/// The pairs besides the indicator (the first pair) that a SIEM rule matches add, update and
/// lifecycle events on: a cut line keeps them whole. They are never shortened (`act=exp` or
/// half an id would match nothing, or the wrong entry) and are removed only when no other
/// pair after the indicator is left to remove.
const RULE_KEYS: [&str; 3] = ["act", "end", "externalId"];

fn is_rule_pair(i: usize, key: &str) -> bool {
    i > 0 && RULE_KEYS.contains(&key)
}

/// The longest value that may be shortened, with its index.
fn longest_cuttable<'a>(kv: &[(&str, &'a str)]) -> Option<(usize, &'a str)> {
    kv.iter()
        .enumerate()
        .filter(|(i, (k, _))| !is_rule_pair(*i, k))
        .max_by_key(|(_, (_, v))| v.len())
        .map(|(i, (_, v))| (i, *v))
}

/// The pair to remove next: the last one after the indicator that is not a rule pair, else
/// the last one.
fn next_to_remove(kv: &[(&str, &str)]) -> usize {
    (1..kv.len())
        .rev()
        .find(|&i| !is_rule_pair(i, kv[i].0))
        .unwrap_or(kv.len() - 1)
}

/// Shortens a CEF line produced by [`encode`](super::encode) or
/// [`encode_lifecycle`](super::encode_lifecycle) to at most `max` bytes by cutting its longest
/// extension value at a character and escape boundary, so the result is still valid CEF.
///
/// When cutting the longest value cannot make the line fit, pairs are removed from the end
/// (the first pair carries the indicator itself; the later ones are context), except `act`,
/// `end` and `externalId`, which go last. `None` when even the header and a cut first pair do
/// not fit: a line without its indicator is not worth sending.
pub fn truncate_to(line: &str, max: usize) -> Option<String> {
    if line.len() <= max {
        return Some(line.to_string());
    }
    let start = extension_start(line)?;
    let (header, ext) = line.split_at(start);
    let mut kv = pairs(ext);
    loop {
        let len = header.len()
            + kv.iter().map(|(k, v)| k.len() + 1 + v.len()).sum::<usize>()
            + kv.len().saturating_sub(1);
        if len <= max {
            break;
        }
        let excess = len - max;
        if let Some((idx, v)) = longest_cuttable(&kv) {
            if v.len() > excess {
                let keep = safe_cut(v, v.len() - excess);
                if keep > 0 {
                    kv[idx].1 = &v[..keep];
                    break;
                }
            }
        }
        if kv.len() <= 1 {
            return None;
        }
        kv.remove(next_to_remove(&kv));
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
    use crate::config::CefProfile;
    use crate::encode::cef::tests::{line, opts};
    use crate::encode::cef::{encode_lifecycle, Lifecycle};
    use serde_json::json;

    /// A lifecycle line of an indicator whose value is an 8 KiB URL.
    fn long_url_line(action: Lifecycle, profile: CefProfile) -> String {
        let url = format!("https://cdn.example.com/{}", "a".repeat(8192 - 24));
        let ind = crate::decode::item(&json!({"id": "ioc-8k", "type": "url", "value": url,
            "confidence": "high", "first_seen": "2025-05-17T00:00:00Z",
            "last_seen": "2025-06-01T12:30:00Z", "context": "m".repeat(900),
            "source": {"feed_name": "Long URL Feed"}}))
        .unwrap();
        let end = "2026-05-17T08:00:00Z".parse().ok();
        let mut s = String::new();
        encode_lifecycle(&ind, action, end, &opts(profile), &mut s);
        s
    }

    const HEAD: &str = "CEF:0|SOC Defenders|Threat Intelligence|1.0|url|";

    #[test]
    fn a_cut_lifecycle_line_keeps_act_and_end_after_the_cut_url() {
        let l = long_url_line(Lifecycle::Expire, CefProfile::SocDefenders);
        let t = truncate_to(&l, 2000).unwrap();
        assert!(t.len() <= 2000);
        assert!(
            t.starts_with(&format!(
                "{HEAD}Expired URL Indicator|9|src=https://cdn.example.com/aaa"
            )),
            "{t}"
        );
        assert!(t.ends_with("aaa cs1=high cs1Label=confidence cs2=Long URL Feed cs2Label=source rt=1747440000000 act=expire end=1779004800000"), "{t}");
    }

    #[test]
    fn context_pairs_go_before_act_and_end_when_the_url_alone_cannot_make_room() {
        let keep = |rest: &str| {
            let max =
                format!("{HEAD}Expired URL Indicator|9|src=https://cdn.example.com/{rest}").len();
            truncate_to(
                &long_url_line(Lifecycle::Expire, CefProfile::SocDefenders),
                max,
            )
        };
        // Pairs go from the end, skipping act and end, until the URL can make room: here
        // once only `cs1=high` is left, which then takes 9 of the URL's 24 bytes.
        assert_eq!(
            keep(" act=expire end=1779004800000").unwrap(),
            format!("{HEAD}Expired URL Indicator|9|src=https://cdn.exa cs1=high act=expire end=1779004800000")
        );
        // With no other pair left to remove, they go too, from the end.
        let max = format!("{HEAD}Expired URL Indicator|9|src=h act=expire").len();
        assert_eq!(
            truncate_to(
                &long_url_line(Lifecycle::Expire, CefProfile::SocDefenders),
                max
            )
            .unwrap(),
            format!("{HEAD}Expired URL Indicator|9|src=h act=expire")
        );
    }

    #[test]
    fn a_cut_extended_line_keeps_external_id_act_and_end() {
        let l = long_url_line(Lifecycle::Revoke, CefProfile::Extended);
        let max = format!("{HEAD}Revoked URL Indicator|9|request=https://cdn.example.com/ externalId=ioc-8k act=revoke end=1779004800000").len();
        assert_eq!(
            truncate_to(&l, max).unwrap(),
            format!("{HEAD}Revoked URL Indicator|9|request=https://cdn.exa cs1=high externalId=ioc-8k act=revoke end=1779004800000")
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
