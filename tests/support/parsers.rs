//! Parsers for what arrives at a receiver, strict enough to catch framing and header
//! mistakes: RFC 6587 octet counting, RFC 5424 frames and CEF lines. They return an error
//! saying what is wrong and where, so an assertion message points at the offending byte.

use std::collections::HashMap;

use super::feed::parse_time;

/// The complete LF-terminated frames in `bytes` (without the LF); a trailing partial frame
/// (cut by a crash or a reset) is left out.
pub fn lf_frames(bytes: &[u8]) -> Vec<&[u8]> {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    bytes[..end]
        .split_inclusive(|&b| b == b'\n')
        .map(|frame| &frame[..frame.len() - 1])
        .collect()
}

/// Parses RFC 6587 octet counting: `LEN SP FRAME` repeated. Returns the complete frames and
/// the number of trailing bytes that form an incomplete frame; any malformed prefix is an error.
pub fn parse_octet_counted(bytes: &[u8]) -> Result<(Vec<Vec<u8>>, usize), String> {
    let mut frames = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == bytes.len() {
            return Ok((frames, bytes.len() - start)); // partial length prefix
        }
        if i == start || bytes[i] != b' ' {
            return Err(format!(
                "expected `LEN SP` at byte {start}, found {:?}",
                String::from_utf8_lossy(&bytes[start..bytes.len().min(start + 40)])
            ));
        }
        let digits = std::str::from_utf8(&bytes[start..i]).unwrap();
        if digits.len() > 1 && digits.starts_with('0') {
            return Err(format!(
                "length with a leading zero at byte {start}: {digits}"
            ));
        }
        let len: usize = digits
            .parse()
            .map_err(|e| format!("bad length {digits:?}: {e}"))?;
        if len == 0 {
            return Err(format!("zero-length frame at byte {start}"));
        }
        i += 1;
        if i + len > bytes.len() {
            return Ok((frames, bytes.len() - start));
        }
        frames.push(bytes[i..i + len].to_vec());
        i += len;
    }
    Ok((frames, 0))
}

/// The fields of one RFC 5424 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Syslog5424 {
    pub pri: u8,
    pub version: u32,
    pub timestamp: String,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
    pub msgid: String,
    pub structured_data: String,
    pub msg: String,
}

impl Syslog5424 {
    pub fn facility(&self) -> u8 {
        self.pri / 8
    }
    pub fn severity(&self) -> u8 {
        self.pri % 8
    }
}

fn header_field<'a>(rest: &mut &'a str, name: &str, max: usize) -> Result<&'a str, String> {
    let end = rest
        .find(' ')
        .ok_or_else(|| format!("{name}: missing (no SP after it)"))?;
    let field = &rest[..end];
    if field.is_empty() {
        return Err(format!("{name}: empty"));
    }
    if field.len() > max {
        return Err(format!("{name}: {} octets, more than {max}", field.len()));
    }
    if let Some(c) = field.bytes().find(|b| !(33..=126).contains(b)) {
        return Err(format!("{name}: byte {c:#04x} is not PRINTUSASCII"));
    }
    *rest = &rest[end + 1..];
    Ok(field)
}

fn sd_name(s: &str, i: &mut usize, what: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let start = *i;
    while *i < b.len() && (33..=126).contains(&b[*i]) && !matches!(b[*i], b'=' | b']' | b'"' | b' ')
    {
        *i += 1;
    }
    let n = *i - start;
    if n == 0 || n > 32 {
        return Err(format!("{what}: bad length {n} at {start}"));
    }
    Ok(())
}

/// Parses `STRUCTURED-DATA` at the start of `s`, returning its length.
fn parse_sd(s: &str) -> Result<usize, String> {
    let b = s.as_bytes();
    if b.first() == Some(&b'-') {
        return Ok(1);
    }
    let mut i = 0;
    while i < b.len() && b[i] == b'[' {
        i += 1;
        sd_name(s, &mut i, "SD-ID")?;
        while i < b.len() && b[i] == b' ' {
            i += 1;
            sd_name(s, &mut i, "PARAM-NAME")?;
            if b.get(i) != Some(&b'=') || b.get(i + 1) != Some(&b'"') {
                return Err(format!("SD-PARAM: expected =\" at {i}"));
            }
            i += 2;
            loop {
                match b.get(i) {
                    None => return Err("SD-PARAM: unterminated value".into()),
                    Some(b'\\') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b']') => return Err(format!("SD-PARAM: unescaped ] at {i}")),
                    Some(_) => i += 1,
                }
            }
        }
        if b.get(i) != Some(&b']') {
            return Err(format!("SD-ELEMENT: expected ] at {i}"));
        }
        i += 1;
    }
    if i == 0 {
        return Err("STRUCTURED-DATA: neither `-` nor `[`".into());
    }
    Ok(i)
}

/// Parses `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [SP MSG]` strictly enough to
/// catch framing and header mistakes.
pub fn parse_rfc5424(frame: &str) -> Result<Syslog5424, String> {
    let rest = frame
        .strip_prefix('<')
        .ok_or_else(|| "PRI: frame does not start with `<`".to_string())?;
    let close = rest.find('>').ok_or("PRI: no `>`")?;
    let pri_s = &rest[..close];
    if pri_s.is_empty() || pri_s.len() > 3 || !pri_s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("PRI: {pri_s:?} is not 1-3 digits"));
    }
    if pri_s.len() > 1 && pri_s.starts_with('0') {
        return Err(format!("PRI: {pri_s:?} has a leading zero"));
    }
    let pri: u16 = pri_s.parse().unwrap();
    if pri > 191 {
        return Err(format!("PRI: {pri} > 191"));
    }
    let mut rest = &rest[close + 1..];
    let version = header_field(&mut rest, "VERSION", 2)?;
    if version != "1" {
        return Err(format!("VERSION: {version:?}, expected 1"));
    }
    let timestamp = header_field(&mut rest, "TIMESTAMP", 64)?;
    if timestamp != "-" && parse_time(timestamp).is_none() {
        return Err(format!("TIMESTAMP: {timestamp:?} is not RFC 3339"));
    }
    let hostname = header_field(&mut rest, "HOSTNAME", 255)?;
    let app_name = header_field(&mut rest, "APP-NAME", 48)?;
    let procid = header_field(&mut rest, "PROCID", 128)?;
    let msgid = header_field(&mut rest, "MSGID", 32)?;
    let sd_len = parse_sd(rest)?;
    let sd = &rest[..sd_len];
    let after = &rest[sd_len..];
    let msg = if after.is_empty() {
        ""
    } else {
        after
            .strip_prefix(' ')
            .ok_or_else(|| format!("no SP between STRUCTURED-DATA and MSG: {after:?}"))?
    };
    Ok(Syslog5424 {
        pri: pri as u8,
        version: 1,
        timestamp: timestamp.to_string(),
        hostname: hostname.to_string(),
        app_name: app_name.to_string(),
        procid: procid.to_string(),
        msgid: msgid.to_string(),
        structured_data: sd.to_string(),
        msg: msg.to_string(),
    })
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`: RFC 3339 UTC with exactly six fractional digits.
pub fn is_rfc3339_micros_utc(ts: &str) -> bool {
    let b = ts.as_bytes();
    let shape = "dddd-dd-ddTdd:dd:dd.ddddddZ".as_bytes();
    b.len() == shape.len()
        && b.iter().zip(shape).all(|(&c, &s)| match s {
            b'd' => c.is_ascii_digit(),
            s => c == s,
        })
        && parse_time(ts).is_some()
}

/// A parsed CEF line: the seven header fields (unescaped) and the extension pairs in order
/// (values unescaped).
#[derive(Clone, Debug)]
pub struct Cef {
    pub header: Vec<String>,
    pub ext: Vec<(String, String)>,
}

impl Cef {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.ext
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn keys(&self) -> Vec<&str> {
        self.ext.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// A CEF line as the strict parser (`tests/interop/strict.rs`) reads it: one set of CEF rules
/// for every test.
pub fn parse_cef(line: &str) -> Result<Cef, String> {
    let c = super::strict::parse_cef(line).map_err(|e| format!("{e}: {line:?}"))?;
    Ok(Cef {
        header: vec![
            c.version,
            c.vendor,
            c.product,
            c.device_version,
            c.signature_id,
            c.name,
            c.severity,
        ],
        ext: c.ext.into_iter().map(|p| (p.key, p.value)).collect(),
    })
}

/// Parses every frame as RFC 5424 + CEF and returns the `src` values, panicking with the
/// offending frame on any parse error.
pub fn src_values(frames: &[String]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            let s = parse_rfc5424(f).unwrap_or_else(|e| panic!("bad RFC 5424 frame ({e}): {f:?}"));
            let cef = parse_cef(&s.msg).unwrap_or_else(|e| panic!("bad CEF ({e}): {f:?}"));
            cef.get("src")
                .unwrap_or_else(|| panic!("no src= in {f:?}"))
                .to_string()
        })
        .collect()
}

/// How many frames carried each `src` value (parsing as [`src_values`] does).
pub fn value_counts(frames: &[String]) -> HashMap<String, usize> {
    tally(&src_values(frames))
}

/// Counts of each value.
pub fn tally(values: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for v in values {
        *m.entry(v.clone()).or_insert(0) += 1;
    }
    m
}
