//! Strict parsers written from the specifications, not from our encoder: CEF (the CEF
//! Implementation Standard's header and extension rules: `|` and `\` escaped in the header, `=`
//! and `\` in values, CR/LF as `\r`/`\n`), RFC 5424 §6 (its ABNF), RFC 6587 §3.4 octet counting
//! and LF framing, and the
//! RFC 3164 §4.1 BSD header. They accept what the specs allow and reject everything the specs
//! forbid or call ambiguous (raw control characters, lone backslashes, empty values,
//! a trailing space at the end of a record), so a pass means a strict receiver agrees.
//!
//! Shared by `tests/encode_props.rs`, `tests/interop.rs`, `tests/encode_golden.rs` and
//! `tests/support` (whose `parse_cef` is this one) through `#[path]`.

#![allow(dead_code)]

/// A parsed CEF record, header fields and extension values unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cef {
    pub version: String,
    pub vendor: String,
    pub product: String,
    pub device_version: String,
    pub signature_id: String,
    pub name: String,
    pub severity: String,
    pub ext: Vec<ExtPair>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtPair {
    pub key: String,
    /// The value as the producer meant it (escapes resolved).
    pub value: String,
    /// The value as it stands on the wire (escaped).
    pub raw: String,
}

impl Cef {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.ext
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    pub fn keys(&self) -> Vec<&str> {
        self.ext.iter().map(|p| p.key.as_str()).collect()
    }
}

/// Parses one CEF record (`CEF:Version|Vendor|Product|Version|SignatureID|Name|Severity|Ext`).
pub fn parse_cef(line: &str) -> Result<Cef, String> {
    // CEF is one line of text: no raw control character may appear anywhere (CR/LF are only
    // allowed as the escapes `\r` `\n`; a raw TAB is a pair separator for some parsers).
    if let Some(c) = line.chars().find(|c| c.is_ascii_control()) {
        return Err(format!("raw control character {c:?} in the record"));
    }
    let rest = line
        .strip_prefix("CEF:")
        .ok_or_else(|| "record does not start with CEF:".to_string())?;
    // Header: seven fields separated by unescaped `|`; `\|` and `\\` are the only escapes.
    let mut fields: Vec<String> = Vec::with_capacity(7);
    let mut cur = String::new();
    let mut chars = rest.char_indices();
    let mut ext_start = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '\\')) => cur.push('\\'),
                Some((_, '|')) => cur.push('|'),
                Some((_, other)) => {
                    return Err(format!(
                        "header field {}: illegal escape \\{other:?}",
                        fields.len()
                    ))
                }
                None => return Err("header ends with a lone backslash".into()),
            },
            '|' => {
                fields.push(std::mem::take(&mut cur));
                if fields.len() == 7 {
                    ext_start = Some(i + 1);
                    break;
                }
            }
            c => cur.push(c),
        }
    }
    let ext_start = ext_start.ok_or_else(|| format!("only {} header fields", fields.len()))?;
    let mut f = fields.into_iter();
    let mut next = || f.next().unwrap_or_default();
    let cef = Cef {
        version: next(),
        vendor: next(),
        product: next(),
        device_version: next(),
        signature_id: next(),
        name: next(),
        severity: next(),
        ext: parse_extension(&rest[ext_start..])?,
    };
    if !matches!(cef.version.as_str(), "0" | "1") {
        return Err(format!("version {:?} is neither 0 nor 1", cef.version));
    }
    let sev_ok = match cef.severity.parse::<u8>() {
        Ok(n) => n <= 10 && !cef.severity.starts_with('+'),
        Err(_) => matches!(
            cef.severity.as_str(),
            "Unknown" | "Low" | "Medium" | "High" | "Very-High"
        ),
    };
    if !sev_ok {
        return Err(format!("severity {:?} is not 0-10 or a name", cef.severity));
    }
    for (name, v) in [
        ("Device Vendor", &cef.vendor),
        ("Device Product", &cef.product),
        ("Device Version", &cef.device_version),
        ("Signature ID", &cef.signature_id),
        ("Name", &cef.name),
    ] {
        if v.is_empty() {
            return Err(format!("{name} is empty"));
        }
    }
    Ok(cef)
}

/// The extension: `key=value` pairs separated by a space. A value runs up to the space before
/// the next key, where a key is `[A-Za-z0-9]+` directly followed by an unescaped `=`. Values
/// escape `\` `=` and carry CR/LF as `\r` `\n`; nothing else may be escaped.
fn parse_extension(ext: &str) -> Result<Vec<ExtPair>, String> {
    if ext.is_empty() {
        return Ok(Vec::new());
    }
    if ext.starts_with(' ') {
        return Err("extension starts with a space".into());
    }
    if ext.ends_with(' ') {
        return Err("record ends with a space (the last value's trailing spaces are lost)".into());
    }
    let b = ext.as_bytes();
    // Positions of unescaped `=`; each must end a key.
    let mut eqs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if i + 1 >= b.len() {
                    return Err("extension ends with a lone backslash".into());
                }
                i += 2;
                continue;
            }
            b'=' => eqs.push(i),
            _ => {}
        }
        i += 1;
    }
    if eqs.is_empty() {
        return Err(format!("extension without any key: {ext:?}"));
    }
    let mut keys = Vec::with_capacity(eqs.len());
    for &eq in &eqs {
        let key_start = ext[..eq]
            .rfind(|c: char| !c.is_ascii_alphanumeric())
            .map_or(0, |p| p + 1);
        if key_start == eq {
            return Err(format!(
                "unescaped '=' at byte {eq} is not preceded by a key (a value's '=' must be escaped)"
            ));
        }
        if key_start > 0 && b[key_start - 1] != b' ' {
            return Err(format!(
                "key {:?} is not preceded by a space (unescaped '=' inside a value?)",
                &ext[key_start..eq]
            ));
        }
        keys.push((key_start, eq));
    }
    if keys[0].0 != 0 {
        return Err(format!(
            "text before the first key: {:?}",
            &ext[..keys[0].0]
        ));
    }
    let mut out: Vec<ExtPair> = Vec::with_capacity(keys.len());
    for (n, &(ks, eq)) in keys.iter().enumerate() {
        let value_end = match keys.get(n + 1) {
            // The single separator space before the next key is not part of the value.
            Some(&(next_ks, _)) => next_ks - 1,
            None => ext.len(),
        };
        if value_end < eq + 1 {
            return Err(format!("key {:?} has no value", &ext[ks..eq]));
        }
        let raw = &ext[eq + 1..value_end];
        let key = &ext[ks..eq];
        if raw.is_empty() {
            return Err(format!("key {key:?} has an empty value"));
        }
        if out.iter().any(|p| p.key == key) {
            return Err(format!("key {key:?} appears twice"));
        }
        out.push(ExtPair {
            key: key.to_string(),
            value: unescape_ext_value(raw).map_err(|e| format!("value of {key}: {e}"))?,
            raw: raw.to_string(),
        });
    }
    Ok(out)
}

fn unescape_ext_value(raw: &str) -> Result<String, String> {
    let mut v = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            v.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => v.push('\\'),
            Some('=') => v.push('='),
            Some('n') => v.push('\n'),
            Some('r') => v.push('\r'),
            Some(other) => return Err(format!("illegal escape \\{other:?}")),
            None => return Err("lone backslash at the end".into()),
        }
    }
    Ok(v)
}

/// One RFC 5424 message (§6), NILVALUE fields as `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rfc5424 {
    pub pri: u8,
    pub version: u16,
    pub timestamp: Option<Timestamp>,
    pub hostname: Option<String>,
    pub app_name: Option<String>,
    pub procid: Option<String>,
    pub msgid: Option<String>,
    pub sd: Vec<SdElement>,
    pub msg: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    pub text: String,
    pub year: u32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// Fraction digits as written (1 to 6), empty when absent.
    pub secfrac: String,
    /// `Z` or `+hh:mm` / `-hh:mm`.
    pub offset: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdElement {
    pub id: String,
    pub params: Vec<(String, String)>,
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn expect(&mut self, c: u8, what: &str) -> Result<(), String> {
        match self.peek() {
            Some(x) if x == c => {
                self.i += 1;
                Ok(())
            }
            other => Err(format!(
                "expected {what} ({:?}) at byte {}, found {:?}",
                c as char,
                self.i,
                other.map(|x| x as char)
            )),
        }
    }
    fn digits(&mut self, n: usize, what: &str) -> Result<u32, String> {
        let s = self
            .b
            .get(self.i..self.i + n)
            .ok_or_else(|| format!("{what}: message ends"))?;
        if !s.iter().all(u8::is_ascii_digit) {
            return Err(format!("{what}: {n} digits expected at byte {}", self.i));
        }
        self.i += n;
        Ok(s.iter().fold(0, |a, d| a * 10 + u32::from(d - b'0')))
    }
    /// A header field up to the next SP: NILVALUE or 1..=max PRINTUSASCII.
    fn header_field(&mut self, max: usize, what: &str) -> Result<Option<String>, String> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == b' ' {
                break;
            }
            if !(33..=126).contains(&c) {
                return Err(format!(
                    "{what}: byte {c:#04x} at {} is not PRINTUSASCII",
                    self.i
                ));
            }
            self.i += 1;
        }
        let f = &self.b[start..self.i];
        if f.is_empty() {
            return Err(format!("{what} is empty (NILVALUE is '-')"));
        }
        if f.len() > max {
            return Err(format!("{what} is {} characters, more than {max}", f.len()));
        }
        Ok((f != b"-").then(|| String::from_utf8_lossy(f).into_owned()))
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

fn parse_timestamp(c: &mut Cursor) -> Result<Option<Timestamp>, String> {
    if c.peek() == Some(b'-') {
        c.i += 1;
        return Ok(None);
    }
    let start = c.i;
    let year = c.digits(4, "DATE-FULLYEAR")?;
    c.expect(b'-', "'-'")?;
    let month = c.digits(2, "DATE-MONTH")?;
    c.expect(b'-', "'-'")?;
    let day = c.digits(2, "DATE-MDAY")?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(format!("no such date {year:04}-{month:02}-{day:02}"));
    }
    c.expect(b'T', "upper-case 'T'")?;
    let hour = c.digits(2, "TIME-HOUR")?;
    c.expect(b':', "':'")?;
    let minute = c.digits(2, "TIME-MINUTE")?;
    c.expect(b':', "':'")?;
    let second = c.digits(2, "TIME-SECOND")?;
    // RFC 5424 §6.2.3: no leap second 60.
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!("no such time {hour:02}:{minute:02}:{second:02}"));
    }
    let mut secfrac = String::new();
    if c.peek() == Some(b'.') {
        c.i += 1;
        while let Some(d) = c.peek().filter(u8::is_ascii_digit) {
            secfrac.push(d as char);
            c.i += 1;
        }
        if secfrac.is_empty() || secfrac.len() > 6 {
            return Err(format!(
                "TIME-SECFRAC has {} digits (1 to 6)",
                secfrac.len()
            ));
        }
    }
    let offset = match c.peek() {
        Some(b'Z') => {
            c.i += 1;
            "Z".to_string()
        }
        Some(s @ (b'+' | b'-')) => {
            c.i += 1;
            let h = c.digits(2, "offset hour")?;
            c.expect(b':', "':'")?;
            let m = c.digits(2, "offset minute")?;
            if h > 23 || m > 59 {
                return Err("bad TIME-NUMOFFSET".into());
            }
            format!("{}{h:02}:{m:02}", s as char)
        }
        other => {
            return Err(format!(
                "TIME-OFFSET must be 'Z' or ±hh:mm, found {:?}",
                other.map(|x| x as char)
            ))
        }
    };
    Ok(Some(Timestamp {
        text: String::from_utf8_lossy(&c.b[start..c.i]).into_owned(),
        year,
        month,
        day,
        hour,
        minute,
        second,
        secfrac,
        offset,
    }))
}

/// SD-NAME: 1..=32 PRINTUSASCII except `=`, SP, `]`, `"`.
fn sd_name(c: &mut Cursor, what: &str) -> Result<String, String> {
    let start = c.i;
    while let Some(x) = c.peek() {
        if !(33..=126).contains(&x) || matches!(x, b'=' | b']' | b'"') {
            break;
        }
        c.i += 1;
    }
    let n = &c.b[start..c.i];
    if n.is_empty() || n.len() > 32 {
        return Err(format!("{what} has {} characters (1 to 32)", n.len()));
    }
    Ok(String::from_utf8_lossy(n).into_owned())
}

fn parse_sd(c: &mut Cursor) -> Result<Vec<SdElement>, String> {
    if c.peek() == Some(b'-') {
        c.i += 1;
        return Ok(Vec::new());
    }
    let mut elements: Vec<SdElement> = Vec::new();
    while c.peek() == Some(b'[') {
        c.i += 1;
        let id = sd_name(c, "SD-ID")?;
        if elements.iter().any(|e| e.id == id) {
            return Err(format!("SD-ID {id} appears twice"));
        }
        let mut params = Vec::new();
        while c.peek() == Some(b' ') {
            c.i += 1;
            let name = sd_name(c, "PARAM-NAME")?;
            c.expect(b'=', "'='")?;
            c.expect(b'"', "'\"'")?;
            let mut value = Vec::new();
            loop {
                match c.peek() {
                    None => return Err("PARAM-VALUE is not closed".into()),
                    Some(b'"') => {
                        c.i += 1;
                        break;
                    }
                    Some(b']') => return Err("unescaped ']' in PARAM-VALUE".into()),
                    Some(b'\\') => {
                        c.i += 1;
                        match c.peek() {
                            Some(x @ (b'"' | b'\\' | b']')) => {
                                value.push(x);
                                c.i += 1;
                            }
                            // RFC 5424 §6.3.3: any other backslash is kept as is.
                            _ => value.push(b'\\'),
                        }
                    }
                    Some(x) => {
                        value.push(x);
                        c.i += 1;
                    }
                }
            }
            let value =
                String::from_utf8(value).map_err(|_| "PARAM-VALUE is not UTF-8".to_string())?;
            params.push((name, value));
        }
        c.expect(b']', "']' closing SD-ELEMENT")?;
        elements.push(SdElement { id, params });
    }
    if elements.is_empty() {
        return Err(format!(
            "STRUCTURED-DATA must be '-' or start with '[', found {:?}",
            c.peek().map(|x| x as char)
        ));
    }
    Ok(elements)
}

/// Parses one RFC 5424 SYSLOG-MSG (no framing).
pub fn parse_rfc5424(msg: &[u8]) -> Result<Rfc5424, String> {
    let mut c = Cursor { b: msg, i: 0 };
    c.expect(b'<', "'<'")?;
    let start = c.i;
    while c.peek().is_some_and(|d| d.is_ascii_digit()) {
        c.i += 1;
    }
    let digits = &msg[start..c.i];
    if digits.is_empty() || digits.len() > 3 || (digits.len() > 1 && digits[0] == b'0') {
        return Err(format!(
            "PRIVAL {:?} is not 1-3 digits without a leading zero",
            String::from_utf8_lossy(digits)
        ));
    }
    let pri: u32 = digits.iter().fold(0, |a, d| a * 10 + u32::from(d - b'0'));
    if pri > 191 {
        return Err(format!("PRIVAL {pri} > 191"));
    }
    c.expect(b'>', "'>'")?;
    let vstart = c.i;
    while c.peek().is_some_and(|d| d.is_ascii_digit()) {
        c.i += 1;
    }
    let v = &msg[vstart..c.i];
    if v.is_empty() || v.len() > 3 || v[0] == b'0' {
        return Err("VERSION is not NONZERO-DIGIT 0*2DIGIT".into());
    }
    let version = v.iter().fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
    c.expect(b' ', "SP after VERSION")?;
    let timestamp = parse_timestamp(&mut c)?;
    c.expect(b' ', "SP after TIMESTAMP")?;
    let hostname = c.header_field(255, "HOSTNAME")?;
    c.expect(b' ', "SP after HOSTNAME")?;
    let app_name = c.header_field(48, "APP-NAME")?;
    c.expect(b' ', "SP after APP-NAME")?;
    let procid = c.header_field(128, "PROCID")?;
    c.expect(b' ', "SP after PROCID")?;
    let msgid = c.header_field(32, "MSGID")?;
    c.expect(b' ', "SP after MSGID")?;
    let sd = parse_sd(&mut c)?;
    let msg_text = match c.peek() {
        None => None,
        Some(b' ') => {
            let body = &msg[c.i + 1..];
            let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
            Some(String::from_utf8(body.to_vec()).map_err(|_| "MSG is not UTF-8".to_string())?)
        }
        Some(x) => {
            return Err(format!(
                "expected SP or end after STRUCTURED-DATA, found {:?}",
                x as char
            ))
        }
    };
    Ok(Rfc5424 {
        pri: pri as u8,
        version,
        timestamp,
        hostname,
        app_name,
        procid,
        msgid,
        sd,
        msg: msg_text,
    })
}

/// RFC 6587 §3.4.1 octet counting: `MSG-LEN SP SYSLOG-MSG`, repeated; nothing left over.
pub fn split_octet_counted(stream: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut frames = Vec::new();
    let mut i = 0;
    while i < stream.len() {
        let start = i;
        while i < stream.len() && stream[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &stream[start..i];
        if digits.is_empty() || digits[0] == b'0' {
            return Err(format!(
                "frame {}: MSG-LEN must be NONZERO-DIGIT *DIGIT",
                frames.len()
            ));
        }
        if stream.get(i) != Some(&b' ') {
            return Err(format!("frame {}: no SP after MSG-LEN", frames.len()));
        }
        i += 1;
        let len: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or("MSG-LEN overflows")?;
        let end = i
            .checked_add(len)
            .filter(|&e| e <= stream.len())
            .ok_or_else(|| format!("frame {}: MSG-LEN {len} runs past the end", frames.len()))?;
        frames.push(&stream[i..end]);
        i = end;
    }
    Ok(frames)
}

/// RFC 6587 §3.4.2 non-transparent framing with LF as the trailer; the stream must end with it.
pub fn split_lf(stream: &[u8]) -> Result<Vec<&[u8]>, String> {
    if stream.is_empty() {
        return Ok(Vec::new());
    }
    let body = stream
        .strip_suffix(b"\n")
        .ok_or("the stream does not end with LF")?;
    Ok(body.split(|&b| b == b'\n').collect())
}

/// An RFC 3164 §4.1 message as we send it: `<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rfc3164 {
    pub pri: u8,
    pub timestamp: String,
    pub hostname: String,
    pub tag: String,
    pub pid: String,
    pub msg: String,
}

pub fn parse_rfc3164(msg: &[u8]) -> Result<Rfc3164, String> {
    let s = std::str::from_utf8(msg).map_err(|_| "not UTF-8".to_string())?;
    let rest = s.strip_prefix('<').ok_or("no '<'")?;
    let (pri, rest) = rest.split_once('>').ok_or("no '>'")?;
    if pri.is_empty()
        || pri.len() > 3
        || !pri.bytes().all(|b| b.is_ascii_digit())
        || (pri.len() > 1 && pri.starts_with('0'))
    {
        return Err(format!("PRI {pri:?}"));
    }
    let pri: u8 = pri.parse().map_err(|_| "PRI")?;
    if pri > 191 {
        return Err("PRI > 191".into());
    }
    // §4.1.2: "Mmm dd hh:mm:ss", dd space-padded.
    let ts = rest.get(..15).ok_or("TIMESTAMP too short")?;
    let tb = ts.as_bytes();
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let digit = |i: usize| tb[i].is_ascii_digit();
    let ok = MONTHS.contains(&&ts[..3])
        && tb[3] == b' '
        && ((tb[4] == b' ' && (b'1'..=b'9').contains(&tb[5]))
            || ((b'1'..=b'3').contains(&tb[4]) && digit(5)))
        && tb[6] == b' '
        && digit(7)
        && digit(8)
        && tb[9] == b':'
        && digit(10)
        && digit(11)
        && tb[12] == b':'
        && digit(13)
        && digit(14);
    if !ok {
        return Err(format!("TIMESTAMP {ts:?} is not 'Mmm dd hh:mm:ss'"));
    }
    let rest = rest[15..]
        .strip_prefix(' ')
        .ok_or("no SP after TIMESTAMP")?;
    let (hostname, rest) = rest.split_once(' ').ok_or("no SP after HOSTNAME")?;
    if hostname.is_empty() || !hostname.bytes().all(|b| (33..=126).contains(&b)) {
        return Err(format!("HOSTNAME {hostname:?}"));
    }
    // §4.1.3: TAG = 1..=32 alphanumeric characters; anything else starts CONTENT.
    let tag_len = rest.bytes().take_while(u8::is_ascii_alphanumeric).count();
    if tag_len == 0 || tag_len > 32 {
        return Err(format!(
            "TAG has {tag_len} alphanumeric characters (1 to 32)"
        ));
    }
    let (tag, content) = rest.split_at(tag_len);
    let content = content
        .strip_prefix('[')
        .ok_or("CONTENT does not start with [PID]")?;
    let (pid, content) = content.split_once("]: ").ok_or("no ']: ' after PID")?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("PID {pid:?}"));
    }
    Ok(Rfc3164 {
        pri,
        timestamp: ts.to_string(),
        hostname: hostname.to_string(),
        tag: tag.to_string(),
        pid: pid.to_string(),
        msg: content.to_string(),
    })
}

/// What RFC 5424 allows in a header field, modelled from §6 (not from the encoder): every
/// character outside PRINTUSASCII replaced by `_`, at most `max` characters, `-` when empty.
pub fn expected_header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .take(max)
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

#[cfg(test)]
mod selfcheck {
    use super::*;

    #[test]
    fn cef_spec_examples_parse() {
        let c = parse_cef(
            "CEF:0|security|threatmanager|1.0|100|detected a \\| in message|10|src=10.0.0.1 act=blocked a | dst=1.1.1.1",
        )
        .unwrap();
        assert_eq!(c.name, "detected a | in message");
        assert_eq!(c.get("act"), Some("blocked a |"));
        let c = parse_cef(
            "CEF:0|security|threatmanager|1.0|100|detected a = in message|10|src=10.0.0.1 act=blocked a \\= dst=1.1.1.1",
        )
        .unwrap();
        assert_eq!(c.get("act"), Some("blocked a ="));
        assert_eq!(c.keys(), ["src", "act", "dst"]);
        let c = parse_cef("CEF:0|a|b|c|d|e|5|filePath=/user/my file name.txt msg=l1\\nl2").unwrap();
        assert_eq!(c.get("filePath"), Some("/user/my file name.txt"));
        assert_eq!(c.get("msg"), Some("l1\nl2"));
        let c = parse_cef("CEF:0|a|b|c|d|e|5|x=a  y=b").unwrap();
        assert_eq!(c.get("x"), Some("a "));
    }

    #[test]
    fn cef_violations_are_rejected() {
        for bad in [
            "CEF:0|a|b|c|d|e|5|src=a=b",
            "CEF:0|a|b|c|d|e|5|src=a b=c\\",
            "CEF:0|a|b|c|d|e|5|src=a\\|b",
            "CEF:0|a|b|c|d|e|5|src=a\tb",
            "CEF:0|a|b|c|d|e|5|src=a\nb",
            "CEF:0|a|b|c|d|e|5|src=a ",
            "CEF:0|a|b|c|d|e|5|src=",
            "CEF:0|a|b|c|d|e|5| src=a",
            "CEF:0|a|b|c|d|e|5|src=a src=b",
            "CEF:0|a|b|c|d|e|11|src=a",
            "CEF:0|a|b\\c|c|d|e|5|src=a",
            "CEF:0|a|b|c|d|e|5",
            "CEF:0|a|b|c|d|e|5|s-c=a",
        ] {
            assert!(parse_cef(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn rfc5424_examples_parse_and_violations_are_rejected() {
        let m = parse_rfc5424(
            b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Appli\\]cation\"][examplePriority@32473 class=\"high\"] BOMAn application event",
        )
        .unwrap();
        assert_eq!(m.pri, 165);
        assert_eq!(m.sd[0].params[1].1, "Appli]cation");
        assert_eq!(m.procid, None);
        assert!(parse_rfc5424(
            b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - m"
        )
        .is_ok());
        // A space ends STRUCTURED-DATA: what follows is MSG, even when it looks like SD.
        let m = parse_rfc5424(b"<34>1 - - - - - [a x=\"1\"] [b y=\"2\"]").unwrap();
        assert_eq!(m.msg.as_deref(), Some("[b y=\"2\"]"));
        for bad in [
            &b"<192>1 - - - - - -"[..],
            b"<034>1 - - - - - -",
            b"<34>0 - - - - - -",
            b"<34>1 2003-10-11t22:14:15Z - - - - -",
            b"<34>1 2003-02-29T22:14:15Z - - - - -",
            b"<34>1 2003-10-11T22:14:60Z - - - - -",
            b"<34>1 2003-10-11T22:14:15.1234567Z - - - - -",
            b"<34>1 - h\xc3\xb6st - - - -",
            b"<34>1 - - - - 012345678901234567890123456789012 -",
            b"<34>1 - - - - - [a x=\"]\"]",
            b"<34>1 - - - - - [a x=\"1\"][a y=\"2\"]",
            b"<34>1 - - - - -m",
        ] {
            assert!(
                parse_rfc5424(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn framings_split_exactly() {
        assert_eq!(
            split_octet_counted(b"3 abc2 de").unwrap(),
            [&b"abc"[..], &b"de"[..]]
        );
        assert!(split_octet_counted(b"4 abc").is_err());
        assert!(split_octet_counted(b"03 abc").is_err());
        assert_eq!(split_lf(b"a\nb\n").unwrap(), [&b"a"[..], &b"b"[..]]);
        assert!(split_lf(b"a\nb").is_err());
    }

    #[test]
    fn rfc3164_tag_stops_at_non_alphanumerics() {
        let m = parse_rfc3164(b"<36>May  7 09:08:07 host iocforwarder[42]: CEF:0|x").unwrap();
        assert_eq!(m.tag, "iocforwarder");
        assert!(parse_rfc3164(b"<36>May  7 09:08:07 host ioc-forwarder[42]: CEF:0|x").is_err());
        assert!(parse_rfc3164(b"<36>May 07 09:08:07 host a[42]: x").is_err());
    }
}
