//! Cutting an encoded CEF line to a byte limit (the destination's `max_message_size` less
//! the syslog header) so that what is left is still valid CEF: a value is cut only at a
//! character and escape boundary, never so that it ends with a space, and a line that cannot
//! keep its indicator is not sent at all.
//!
//! It works on the line, not the indicator: the queue stores lines, and a line is cut only
//! when a destination's limit asks for it.

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

/// `(key, escaped value)` of every pair of an extension produced by [`encode`](super::encode). Our values
/// never hold an unescaped `=`, so each unescaped `=` ends a key that starts after the last
/// space before it, and the previous value ends at that space.
fn pairs(ext: &str) -> Vec<(&str, &str)> {
    let b = ext.as_bytes();
    let mut out: Vec<(&str, &str)> = Vec::new();
    let mut value_start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'=' => {
                let key_start = ext[value_start..i]
                    .rfind(' ')
                    .map_or(value_start, |s| value_start + s + 1);
                if let Some(last) = out.last_mut() {
                    last.1 = &ext[value_start..key_start.saturating_sub(1).max(value_start)];
                }
                out.push((&ext[key_start..i], ""));
                value_start = i + 1;
            }
            _ => {}
        }
        i += 1;
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

/// Shortens a CEF line produced by [`encode`](super::encode) to at most `max` bytes by cutting its longest
/// extension value at a character and escape boundary, so the result is still valid CEF.
///
/// When cutting the longest value cannot make the line fit, the last pairs are removed first
/// (the first pair carries the indicator itself; the later ones are context). `None` when even
/// the header and a cut first pair do not fit: a line without its indicator is not worth
/// sending.
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
        let (idx, v) = kv
            .iter()
            .enumerate()
            .max_by_key(|(_, (_, v))| v.len())
            .map(|(i, (_, v))| (i, *v))?;
        if v.len() > excess {
            let keep = safe_cut(v, v.len() - excess);
            if keep > 0 {
                kv[idx].1 = &v[..keep];
                break;
            }
        }
        if kv.len() == 1 {
            return None;
        }
        kv.pop();
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
    use crate::encode::cef::tests::line;
    use serde_json::json;

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
