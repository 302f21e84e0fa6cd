//! What every CEF line the encoder (or `truncate_to`) produces must look like, checked by
//! parsing it back strictly: the SPEC's escaping, seven header fields, `key=value` pairs with
//! no empty value and no value starting or ending with a space, and no raw control character
//! (so no CR or LF that could split LF framing).

/// A line split into its seven header fields (unescaped) and its pairs (values as on the wire).
#[derive(Debug)]
pub struct Parsed<'a> {
    pub header: Vec<String>,
    /// Byte offset where the extension starts.
    pub ext_start: usize,
    pub pairs: Vec<(&'a str, &'a str)>,
}

/// Parses `line` strictly, panicking (with the line) on anything a strict CEF parser would
/// reject or read differently.
pub fn parse(line: &str) -> Parsed<'_> {
    for (i, b) in line.bytes().enumerate() {
        assert!(
            b >= 0x20 && b != 0x7f,
            "raw control byte {b:#04x} at {i} in CEF line {line:?}"
        );
    }
    assert!(line.starts_with("CEF:0|"), "no CEF:0| prefix: {line:?}");
    let b = line.as_bytes();
    let mut header = Vec::new();
    let mut field = Vec::new();
    let mut i = 0;
    while header.len() < 7 {
        assert!(i < b.len(), "fewer than 7 header fields: {line:?}");
        match b[i] {
            b'\\' => {
                let next = b.get(i + 1).copied();
                assert!(
                    matches!(next, Some(b'\\' | b'|')),
                    "bad header escape at {i}: {line:?}"
                );
                field.push(next.unwrap_or_default());
                i += 1;
            }
            b'|' => header.push(String::from_utf8(std::mem::take(&mut field)).unwrap()),
            c => field.push(c),
        }
        i += 1;
    }
    let ext_start = i;
    let ext = &line[ext_start..];
    Parsed {
        header,
        ext_start,
        pairs: pairs(ext, line),
    }
}

/// The pairs of an extension: a key is ASCII letters and digits right after the start or a
/// space and right before an unescaped `=`; every `\` escapes one of `\ = r n`.
fn pairs<'a>(ext: &'a str, line: &str) -> Vec<(&'a str, &'a str)> {
    let b = ext.as_bytes();
    let mut eqs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                assert!(
                    matches!(b.get(i + 1), Some(b'\\' | b'=' | b'r' | b'n')),
                    "bad extension escape at {i} of the extension: {line:?}"
                );
                i += 1;
            }
            b'=' => eqs.push(i),
            _ => {}
        }
        i += 1;
    }
    if eqs.is_empty() {
        assert!(ext.is_empty(), "an extension without a pair: {line:?}");
        return Vec::new();
    }
    let mut out: Vec<(&str, &str)> = Vec::new();
    let mut value_start = 0;
    for &eq in &eqs {
        let key_start = if out.is_empty() {
            0
        } else {
            let space = ext[value_start..eq]
                .rfind(' ')
                .unwrap_or_else(|| panic!("no space before the key at {eq}: {line:?}"));
            let last = out.last_mut().unwrap();
            last.1 = &ext[value_start..value_start + space];
            value_start + space + 1
        };
        let key = &ext[key_start..eq];
        assert!(
            !key.is_empty() && key.bytes().all(|c| c.is_ascii_alphanumeric()),
            "bad key {key:?}: {line:?}"
        );
        out.push((key, ""));
        value_start = eq + 1;
    }
    out.last_mut().unwrap().1 = &ext[value_start..];
    for (k, v) in &out {
        assert!(!v.is_empty(), "empty value of {k}: {line:?}");
        assert!(
            !v.starts_with(' ') && !v.ends_with(' '),
            "value of {k} starts or ends with a space: {line:?}"
        );
    }
    out
}

/// An extension value as it was before escaping.
pub fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(e) => out.push(e),
            None => panic!("a trailing backslash in {v:?}"),
        }
    }
    out
}

/// What an extension value must read back as: trimmed of spaces and of the controls that
/// would go out as spaces, with those controls inside it as spaces.
pub fn expected_ext_value(s: &str) -> String {
    let spaced = |c: char| c == ' ' || (c.is_ascii_control() && c != '\r' && c != '\n');
    s.trim_matches(spaced)
        .chars()
        .map(|c| if spaced(c) { ' ' } else { c })
        .collect()
}

/// What a header field must read back as: every control character as a space.
pub fn expected_header(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_control() { ' ' } else { c })
        .collect()
}
