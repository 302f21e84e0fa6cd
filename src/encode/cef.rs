//! Indicator → CEF line, in profile `socdefenders` (byte for byte the line SOC Defenders
//! documents) or `extended` (typed ArcSight keys, context). Pure: writes into the caller's
//! buffer, no I/O.
//!
//! Escaping follows the CEF rules exactly, because one wrong byte breaks SIEM parsers silently:
//! header fields escape `\` and `|`; extension values escape `\`, `=`, and encode CR/LF as `\r`
//! `\n`. Every other C0 control character and DEL becomes a space (CEF has no escape for them,
//! and a raw TAB is a pair separator for some parsers), and so do CR/LF in header fields. No raw
//! CR or LF can therefore leave this module, so LF framing can never be split by data.
//!
//! Values are also trimmed of the spaces they would start or end with on the wire (spaces and
//! the control characters that become spaces): CEF parsers find a value's end by looking back
//! from the next key, so a trailing space of the last pair is lost and one of any other pair
//! is ambiguous (ArcSight's parser, syslog-ng's and Splunk's CEF add-on all trim). A value that
//! is empty after trimming leaves its key out, like
//! a missing one: no empty values on the wire.
//!
//! A line says what happened to its indicator. Add and update lines call it `Malicious`; the
//! lifecycle events re-encode the indicator's own line (same Signature ID, severity and keys,
//! in whatever profile the destination uses) and say `Expired` or `Revoked` in the Name
//! (refresh keeps `Malicious`), with `act` and, for expire and revoke, `end`: the pairs a SIEM
//! rule removes a list entry on. Profile `socdefenders` writes `act` only on lifecycle lines and
//! after every other pair, so its add/update lines stay the documented ones byte for byte.
//! [`relabel`] writes the same lifecycle line from the queued line alone, for the store, which
//! keeps lines rather than indicators.
//!
//! Timestamps (`rt`, `deviceCustomDate1/2`, `end`) are epoch milliseconds; one before 1970 (an API's
//! "zero" date such as `0001-01-01T00:00:00Z`) is treated as missing rather than sent negative.
//!
//! The hot path (`socdefenders`, typical indicator) does no allocation: escaping copies runs of
//! ordinary bytes between the few special ASCII bytes, and numbers are formatted on the stack.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Utc};

use crate::config::{CefProfile, SeverityMap};
use crate::indicator::{Indicator, IocType};

mod relabel;
mod truncate;
pub use relabel::{relabel, NotCef};
pub use truncate::truncate_to;

/// What the encoder needs besides the indicator.
#[derive(Debug, Clone)]
pub struct CefOptions {
    pub device_vendor: String,
    pub device_product: String,
    pub device_version: String,
    pub profile: CefProfile,
    pub severity: SeverityMap,
}

/// The config's defaults: the SOC Defenders header fields, profile `socdefenders`.
impl Default for CefOptions {
    fn default() -> CefOptions {
        CefOptions {
            device_vendor: "SOC Defenders".into(),
            device_product: "Threat Intelligence".into(),
            device_version: "1.0".into(),
            profile: CefProfile::SocDefenders,
            severity: SeverityMap::default(),
        }
    }
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

impl Act {
    /// The `act` value: `add` or `update`.
    pub fn as_str(self) -> &'static str {
        match self {
            Act::Add => "add",
            Act::Update => "update",
        }
    }
}

/// A lifecycle event of an indicator already sent: it stopped being live (`Expire`: its
/// `last_seen` is older than the configured lifetime; `Revoke`: it became unwanted) or is
/// sent again while live (`Refresh`), for SIEM lists whose entries age out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifecycle {
    Expire,
    Revoke,
    Refresh,
}

impl Lifecycle {
    /// The `act` value: `expire`, `revoke` or `refresh`.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Expire => "expire",
            Lifecycle::Revoke => "revoke",
            Lifecycle::Refresh => "refresh",
        }
    }
}

/// What one line tells the SIEM happened to its indicator.
#[derive(Debug, Clone, Copy)]
enum Action {
    Sent(Act),
    /// With the time the indicator stopped being live (written for expire and revoke).
    Lifecycle(Lifecycle, Option<DateTime<Utc>>),
}

impl Action {
    /// The Name's first word.
    fn verdict(self) -> &'static str {
        match self {
            Action::Lifecycle(Lifecycle::Expire, _) => "Expired",
            Action::Lifecycle(Lifecycle::Revoke, _) => "Revoked",
            Action::Sent(_) | Action::Lifecycle(Lifecycle::Refresh, _) => "Malicious",
        }
    }

    fn act(self) -> &'static str {
        match self {
            Action::Sent(act) => act.as_str(),
            Action::Lifecycle(l, _) => l.as_str(),
        }
    }

    /// `end`: only an indicator that stopped being live has one.
    fn end(self) -> Option<DateTime<Utc>> {
        match self {
            Action::Lifecycle(Lifecycle::Expire | Lifecycle::Revoke, end) => end,
            Action::Sent(_) | Action::Lifecycle(Lifecycle::Refresh, _) => None,
        }
    }
}

/// ArcSight's length limit of the Device Event Class ID (Signature ID), applied in bytes.
pub const SIGNATURE_ID_MAX: usize = 1023;

/// What a byte becomes on the wire: 0 = itself, else the character that follows the
/// backslash of its escape, or a space. Every special byte is ASCII, so cutting `s` before or
/// after one is always a char boundary.
type EscapeTable = [u8; 256];

const fn escape_table(extension: bool) -> EscapeTable {
    let mut t = [0u8; 256];
    // C0 controls and DEL: no CEF escape exists for them, so they are sent as a space.
    let mut b = 0;
    while b < 0x20 {
        t[b] = b' ';
        b += 1;
    }
    t[0x7f] = b' ';
    t[b'\\' as usize] = b'\\';
    if extension {
        t[b'=' as usize] = b'=';
        t[b'\n' as usize] = b'n';
        t[b'\r' as usize] = b'r';
    } else {
        t[b'|' as usize] = b'|';
    }
    t
}

const HEADER: EscapeTable = escape_table(false);
const EXTENSION: EscapeTable = escape_table(true);

/// Appends `s` with every special byte replaced per `table`, copying the runs between them.
/// Replacements are pushed as ASCII chars: hostile values have a special every few bytes, and
/// a `push_str` per two-byte escape would double their cost.
#[inline]
fn push_escaped(out: &mut String, s: &str, table: &EscapeTable) {
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let rep = table[usize::from(b)];
        if rep == 0 {
            continue;
        }
        if start < i {
            out.push_str(&s[start..i]);
        }
        if rep != b' ' {
            out.push('\\');
        }
        out.push(char::from(rep));
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// Appends a header field with `\` and `|` escaped and control characters (CR/LF included) as
/// spaces.
pub fn push_header(out: &mut String, s: &str) {
    push_escaped(out, s, &HEADER);
}

/// Appends an extension value: `\` `=` escaped, CR/LF as `\r`/`\n`, other controls as spaces.
pub fn push_ext_value(out: &mut String, s: &str) {
    push_escaped(out, s, &EXTENSION);
}

/// Byte offsets of the unescaped `byte`s of `s`, where `byte` is one the escaping of `s`
/// escapes (`|` in header fields, `=` in extension values): the byte after a backslash is
/// escaped, so `\\|` ends a header field and `\|` does not.
fn unescaped(s: &str, byte: u8) -> impl Iterator<Item = usize> + '_ {
    let b = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            let at = i;
            i += 1;
            match b[at] {
                b'\\' => i += 1,
                c if c == byte => return Some(at),
                _ => {}
            }
        }
        None
    })
}

/// Byte offsets of the first seven unescaped `|` of a line: the ends of its seven header
/// fields (`CEF:0`, vendor, product, version, Signature ID, Name, severity), the extension
/// starting after the last. Extension values do not escape `|`, so scanning stops at the
/// seventh. `None` when the line has fewer.
fn header_pipes(line: &str) -> Option<[usize; 7]> {
    let mut found = unescaped(line, b'|');
    let mut pipes = [0; 7];
    for pipe in &mut pipes {
        *pipe = found.next()?;
    }
    Some(pipes)
}

/// `s` without the leading and trailing characters an extension value would carry as spaces
/// (space, and controls other than CR/LF, which are escaped and therefore visible).
fn trim_ext_value(s: &str) -> &str {
    s.trim_matches(|c: char| c == ' ' || (c.is_ascii_control() && c != '\r' && c != '\n'))
}

/// `s` without leading and trailing spaces and control characters (header fields).
fn trim_header(s: &str) -> &str {
    s.trim_matches(|c: char| c == ' ' || c.is_ascii_control())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub(crate) fn prefix_within(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends the decimal digits of `n` (no allocation).
fn push_int(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    let mut buf = [0u8; 20];
    // Only ASCII digits were written.
    out.push_str(
        std::str::from_utf8(super::decimal(&mut buf, n.unsigned_abs(), 1)).unwrap_or_default(),
    );
}

/// `t` in epoch milliseconds, `None` before 1970 (an API's "zero" date is no time at all).
fn epoch_millis(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis()).filter(|ms| *ms >= 0)
}

/// Writes the extension pairs: one space between pairs, none before the first.
struct Pairs<'a> {
    out: &'a mut String,
    first: bool,
    cuts: usize,
    /// Where the `act` value starts, when one was written.
    act_at: Option<usize>,
}

impl Pairs<'_> {
    /// Appends `key=value` with the value trimmed and, when longer than `cap` bytes, cut at a
    /// char boundary (and counted). An empty value leaves the pair out. Returns whether a pair
    /// was written.
    fn put(&mut self, key: &str, value: &str, cap: usize) -> bool {
        let mut v = trim_ext_value(value);
        if v.len() > cap {
            v = trim_ext_value(prefix_within(v, cap));
            self.cuts += 1;
        }
        if v.is_empty() {
            return false;
        }
        self.start(key);
        push_ext_value(self.out, v);
        true
    }

    /// `key=value` followed by `label_key=label`, both only when the value is not empty.
    fn labelled(&mut self, key: &str, value: &str, cap: usize, label_key: &str, label: &str) {
        if self.put(key, value, cap) {
            self.start(label_key);
            self.out.push_str(label);
        }
    }

    /// A timestamp as epoch milliseconds; before 1970 counts as missing.
    fn millis(&mut self, key: &str, t: Option<DateTime<Utc>>) -> bool {
        match epoch_millis(t) {
            Some(ms) => {
                self.start(key);
                push_int(self.out, ms);
                true
            }
            None => false,
        }
    }

    fn start(&mut self, key: &str) {
        if !self.first {
            self.out.push(' ');
        }
        self.first = false;
        self.out.push_str(key);
        self.out.push('=');
    }
}

const NO_CAP: usize = usize::MAX;

/// Encodes one indicator as a CEF line into `out` (appending). Returns how many values were cut
/// to their length limits: the Signature ID (1023 bytes, both profiles) and, in `extended`, the
/// ArcSight per-key limits.
pub fn encode(ind: &Indicator, act: Act, opts: &CefOptions, out: &mut String) -> usize {
    encode_with_slot(ind, Action::Sent(act), opts, out).0
}

/// Encodes a lifecycle event of `ind` as a CEF line into `out` (appending): the line [`encode`]
/// gives for it in `opts.profile`, with the Name `Expired <Label> Indicator` or `Revoked <Label>
/// Indicator` (refresh keeps `Malicious <Label> Indicator`), `act=expire|revoke|refresh`, and for
/// expire and revoke `end` = `end` in epoch milliseconds (left out when `None` or before 1970,
/// like any missing time; a refresh has no end, so it is not written there). In `socdefenders`
/// `act` and `end` follow `rt`; in `extended` `act` stays where add/update lines have it and
/// `end` comes last. Returns how many values were cut, as [`encode`] does.
pub fn encode_lifecycle(
    ind: &Indicator,
    action: Lifecycle,
    end: Option<DateTime<Utc>>,
    opts: &CefOptions,
    out: &mut String,
) -> usize {
    encode_with_slot(ind, Action::Lifecycle(action, end), opts, out).0
}

/// Encodes as [`Act::Add`] for the queue, before the store has decided whether this version
/// is an addition or an update: returns the values cut and, when the profile writes `act`,
/// where its value starts, for [`set_act`].
pub fn encode_queued(
    ind: &Indicator,
    opts: &CefOptions,
    out: &mut String,
) -> (usize, Option<usize>) {
    encode_with_slot(ind, Action::Sent(Act::Add), opts, out)
}

/// Rewrites the `act` value of a line from [`encode_queued`] (`at` is what it returned):
/// the same line as encoding with `act` in the first place.
pub fn set_act(line: &mut String, at: usize, act: Act) {
    if line.get(at..at + 3) == Some("add") {
        line.replace_range(at..at + 3, act.as_str());
    }
}

/// `CEF:0|vendor|product|version|`: the part of the header every line of this agent shares.
fn push_device(out: &mut String, opts: &CefOptions) {
    out.push_str("CEF:0|");
    push_header(out, &opts.device_vendor);
    out.push('|');
    push_header(out, &opts.device_product);
    out.push('|');
    push_header(out, &opts.device_version);
    out.push('|');
}

/// The line `test-destination` sends: this agent's device fields, Signature ID `test`,
/// severity 0, and the agent's version in `msg`, so a SIEM search finds it and nobody takes it
/// for an indicator.
pub fn test_event(opts: &CefOptions) -> String {
    let mut line = String::new();
    push_device(&mut line, opts);
    line.push_str("test|ioc-forwarder test event|0|msg=test event from ioc-forwarder ");
    line.push_str(env!("CARGO_PKG_VERSION"));
    line
}

fn encode_with_slot(
    ind: &Indicator,
    action: Action,
    opts: &CefOptions,
    out: &mut String,
) -> (usize, Option<usize>) {
    push_device(out, opts);
    let sig = match trim_header(&ind.type_raw) {
        "" => "unknown",
        t => t,
    };
    let cut_sig = prefix_within(sig, SIGNATURE_ID_MAX);
    let cuts = usize::from(cut_sig.len() < sig.len());
    push_header(out, cut_sig);
    out.push('|');
    out.push_str(action.verdict());
    out.push(' ');
    if let Some(label) = ind.ioc_type.label() {
        out.push_str(label);
        out.push(' ');
    }
    out.push_str("Indicator|");
    push_int(out, i64::from(severity(ind, &opts.severity)));
    out.push('|');
    let mut p = Pairs {
        out,
        first: true,
        cuts,
        act_at: None,
    };
    match opts.profile {
        CefProfile::SocDefenders => socdefenders_extension(ind, action, &mut p),
        CefProfile::Extended => extended_extension(ind, action, &mut p),
    }
    (p.cuts, p.act_at)
}

/// Severity from confidence; an unknown or missing confidence gets the `low` severity.
fn severity(ind: &Indicator, map: &SeverityMap) -> u8 {
    match ind.confidence.as_deref().map(trim_ext_value) {
        Some("high") => map.high,
        Some("medium") => map.medium,
        _ => map.low,
    }
}

fn socdefenders_extension(ind: &Indicator, action: Action, p: &mut Pairs) {
    p.put("src", &ind.value, NO_CAP);
    if let Some(c) = &ind.confidence {
        p.labelled("cs1", c, NO_CAP, "cs1Label", "confidence");
    }
    if let Some(feed) = &ind.source.feed_name {
        p.labelled("cs2", feed, NO_CAP, "cs2Label", "source");
    }
    p.millis("rt", ind.first_seen);
    // Add and update lines stay the documented ones: only lifecycle lines say what happened.
    if let Action::Lifecycle(..) = action {
        p.put("act", action.act(), NO_CAP);
        p.millis("end", action.end());
    }
}

/// `items` joined with `,`, borrowed when there is only one.
fn joined(items: &[String]) -> Cow<'_, str> {
    match items {
        [] => Cow::Borrowed(""),
        [one] => Cow::Borrowed(one.as_str()),
        many => Cow::Owned(many.join(",")),
    }
}

/// The lengths ArcSight's CEF implementation standard allows per key (longer values are cut by
/// its parser), in bytes so that no receiver's way of counting exceeds them.
const STRING: usize = 1023;
const CUSTOM_STRING: usize = 4000;
const FILE_HASH: usize = 255;
const EXTERNAL_ID: usize = 40;

fn extended_extension(ind: &Indicator, action: Action, p: &mut Pairs) {
    // Typed address keys only take what parses as that address: a CIDR range, a bracketed
    // IPv6 or garbage in `src` would make strict parsers drop the field or the event, so such
    // a value goes to the generic `cs6` like an unknown type.
    let v = trim_ext_value(&ind.value);
    match ind.ioc_type {
        IocType::Ipv4 if v.parse::<Ipv4Addr>().is_ok() => {
            p.put("src", v, NO_CAP);
        }
        IocType::Ipv6 if v.parse::<Ipv6Addr>().is_ok() => {
            p.labelled("c6a1", v, NO_CAP, "c6a1Label", "indicator");
        }
        IocType::Domain => {
            p.put("dhost", v, STRING);
        }
        IocType::Url => {
            p.put("request", v, STRING);
        }
        IocType::Md5 | IocType::Sha1 | IocType::Sha256 | IocType::Sha512 => {
            p.put("fileHash", v, FILE_HASH);
        }
        IocType::Email => {
            p.put("duser", v, STRING);
        }
        IocType::Ipv4 | IocType::Ipv6 | IocType::Cve | IocType::MitreAttack | IocType::Other => {
            p.labelled("cs6", v, CUSTOM_STRING, "cs6Label", "indicator")
        }
    }
    if let Some(c) = &ind.confidence {
        p.labelled("cs1", c, CUSTOM_STRING, "cs1Label", "confidence");
    }
    if let Some(feed) = &ind.source.feed_name {
        p.labelled("cs2", feed, CUSTOM_STRING, "cs2Label", "source");
    }
    p.labelled("cs3", &joined(&ind.tags), CUSTOM_STRING, "cs3Label", "tags");
    p.labelled(
        "cs4",
        &joined(&ind.mitre_techniques),
        CUSTOM_STRING,
        "cs4Label",
        "mitreTechniques",
    );
    if let Some(url) = &ind.source.article_url {
        p.labelled("cs5", url, CUSTOM_STRING, "cs5Label", "reference");
    }
    if let Some(origin) = &ind.source.origin {
        p.labelled("flexString1", origin, STRING, "flexString1Label", "origin");
    }
    if let Some(cat) = &ind.source.category {
        p.put("cat", cat, STRING);
    }
    if let Some(msg) = &ind.context {
        p.put("msg", msg, STRING);
    }
    if let Some(id) = &ind.id {
        p.put("externalId", id, EXTERNAL_ID);
    }
    let value = action.act();
    if p.put("act", value, NO_CAP) {
        p.act_at = Some(p.out.len() - value.len());
    }
    if p.millis("deviceCustomDate1", ind.first_seen) {
        p.start("deviceCustomDate1Label");
        p.out.push_str("firstSeen");
    }
    if p.millis("deviceCustomDate2", ind.last_seen) {
        p.start("deviceCustomDate2Label");
        p.out.push_str("lastSeen");
    }
    p.millis("rt", ind.first_seen);
    p.millis("end", action.end());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(super) fn opts(profile: CefProfile) -> CefOptions {
        CefOptions {
            device_vendor: "SOC Defenders".into(),
            device_product: "Threat Intelligence".into(),
            device_version: "1.0".into(),
            profile,
            severity: SeverityMap::default(),
        }
    }

    pub(super) fn line(v: serde_json::Value, profile: CefProfile) -> String {
        let ind = crate::decode::item(&v).unwrap();
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

    fn lifecycle_line(
        v: serde_json::Value,
        action: Lifecycle,
        end: Option<&str>,
        profile: CefProfile,
    ) -> String {
        let ind = crate::decode::item(&v).unwrap();
        let end = end.map(|e| e.parse::<DateTime<Utc>>().unwrap());
        let mut s = String::new();
        encode_lifecycle(&ind, action, end, &opts(profile), &mut s);
        s
    }

    #[test]
    fn seed_indicator_lifecycle_lines_append_act_and_end_after_rt() {
        let v = json!({"type": "ipv4", "value": "203.0.113.42", "confidence": "high",
            "first_seen": "2025-05-17T00:00:00Z", "source": {"feed_name": "CISA Alerts"}});
        let head = "CEF:0|SOC Defenders|Threat Intelligence|1.0|ipv4|";
        let pairs = "|9|src=203.0.113.42 cs1=high cs1Label=confidence cs2=CISA Alerts cs2Label=source rt=1747440000000";
        let end = Some("2026-05-17T08:00:00Z");
        let soc = CefProfile::SocDefenders;
        assert_eq!(
            lifecycle_line(v.clone(), Lifecycle::Expire, end, soc),
            format!("{head}Expired IPv4 Indicator{pairs} act=expire end=1779004800000")
        );
        assert_eq!(
            lifecycle_line(v.clone(), Lifecycle::Revoke, end, soc),
            format!("{head}Revoked IPv4 Indicator{pairs} act=revoke end=1779004800000")
        );
        // A refresh has no end, even when one is passed.
        assert_eq!(
            lifecycle_line(v.clone(), Lifecycle::Refresh, end, soc),
            format!("{head}Malicious IPv4 Indicator{pairs} act=refresh")
        );
        assert_eq!(
            lifecycle_line(v, Lifecycle::Expire, None, soc),
            format!("{head}Expired IPv4 Indicator{pairs} act=expire")
        );
    }

    #[test]
    fn extended_lifecycle_line_sets_act_in_place_and_appends_end() {
        let v = json!({"id": "u1", "type": "ja3", "value": "abc", "first_seen": "2025-05-17T00:00:00Z"});
        assert_eq!(
            lifecycle_line(v, Lifecycle::Revoke, Some("2026-05-17T08:00:00.123Z"), CefProfile::Extended),
            "CEF:0|SOC Defenders|Threat Intelligence|1.0|ja3|Revoked Indicator|3|cs6=abc cs6Label=indicator externalId=u1 act=revoke deviceCustomDate1=1747440000000 deviceCustomDate1Label=firstSeen rt=1747440000000 end=1779004800123"
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
    fn header_fields_escape_pipe_and_backslash_and_the_signature_id_is_trimmed() {
        let v = json!({"type": "we|ird\\type\n", "value": "x"});
        let l = line(v, CefProfile::SocDefenders);
        assert!(l.starts_with("CEF:0|SOC Defenders|Threat Intelligence|1.0|we\\|ird\\\\type|Malicious Indicator|3|src=x"), "{l}");
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
}
