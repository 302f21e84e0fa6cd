//! Property tests of the encoders against strict parsers written from the specs
//! (`tests/interop/strict.rs`) and a model of the product's CEF rules written here, not taken
//! from the encoder.
//!
//! The model of an extension value, from those rules and the CEF standard's escaping: every C0
//! control
//! character other than CR/LF, and DEL, becomes a space; the value is trimmed of spaces at both
//! ends (a trailing space of the last pair is lost by CEF parsers and an inner one is
//! ambiguous); a value that ends up empty leaves its key out. Header fields turn every C0
//! control (CR/LF included) and DEL into a space. The ArcSight limits of `extended` cut at a
//! character boundary, in bytes, and the cut is trimmed again.

#[path = "interop/strict.rs"]
mod strict;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use ioc_forwarder::config::{
    CefProfile, Config, DestinationConfig, Framing, Oversize, Protocol, SeverityMap, SyslogFormat,
};
use ioc_forwarder::deliver::{frame_event, Framed};
use ioc_forwarder::encode::cef::{self, Act, CefOptions, Lifecycle};
use ioc_forwarder::encode::rfc5424::{self, Header};
use ioc_forwarder::indicator::{Indicator, IocType, Provenance};
use ioc_forwarder::store::Event;
use proptest::prelude::*;
use strict::{expected_header_field, parse_cef, parse_rfc3164, parse_rfc5424, Cef};

// ---------------------------------------------------------------------------------------------
// Strategies

/// Characters that break naive encoders, mixed with arbitrary Unicode and plain ASCII.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        5 => prop::sample::select(vec![
            '|', '=', '\\', '\r', '\n', '"', ']', '[', ' ', ' ', '\t', '\0', '\u{7f}', '\u{1b}',
            '\u{b}', '\u{c}', '#', '%', '<', '>', 'n', 'r', 'é', '€', '😀', '\u{85}',
            '\u{2028}', '\u{feff}', '\u{a0}', 'ß', '-', ':',
        ]),
        3 => any::<char>(),
        6 => prop::char::range('a', 'z'),
    ]
}

fn hostile(max_len: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(hostile_char(), 0..max_len).prop_map(|v| v.into_iter().collect())
}

/// Mostly short, sometimes longer than every ArcSight limit (4000 bytes for cs1-cs6). Long
/// strings repeat a generated piece (generating thousands of characters one by one makes the
/// file too slow in debug builds) and end with a fresh piece, so cuts land anywhere.
fn value_text() -> BoxedStrategy<String> {
    prop_oneof![
        14 => hostile(40),
        1 => (hostile(24), 1usize..300, hostile(24)).prop_map(|(a, n, b)| a.repeat(n) + &b),
    ]
    .boxed()
}

fn ioc_value() -> BoxedStrategy<String> {
    prop_oneof![
        3 => value_text(),
        1 => any::<Ipv4Addr>().prop_map(|a| a.to_string()),
        1 => any::<Ipv6Addr>().prop_map(|a| a.to_string()),
        1 => (any::<Ipv4Addr>(), " {0,2}", " {0,2}").prop_map(|(a, l, r)| format!("{l}{a}{r}")),
    ]
    .boxed()
}

fn type_raw() -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "ipv4", "ipv6", "domain", "url", "md5", "sha1", "sha256", "sha512", "cve", "email",
            "mitre-attack", "mitre_attack", "MITRE_ATTACK", " ipv4 ", "SHA256", "ja3", "",
        ])
        .prop_map(String::from),
        1 => hostile(30),
        1 => (hostile(8), 100usize..200).prop_map(|(a, n)| a.repeat(n)),
    ]
    .boxed()
}

/// Any instant chrono can hold between year 1 and 9999, with sub-millisecond digits.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        (-62_135_596_800i64..253_402_300_799, 0u32..1_000_000_000),
        (1_600_000_000i64..1_900_000_000, 0u32..1_000_000_000),
    ]
    .prop_map(|(s, n)| Utc.timestamp_opt(s, n).single().expect("in range"))
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    prop_oneof![1 => Just(None), 3 => s.prop_map(Some)].boxed()
}

fn confidence() -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::sample::select(vec!["low", "medium", "high", " high\t", "critical"])
            .prop_map(String::from),
        1 => hostile(10),
    ]
    .boxed()
}

prop_compose! {
    fn indicator()(
        id in opt(value_text()),
        type_raw in type_raw(),
        value in ioc_value(),
        confidence in opt(confidence()),
        first_seen in opt(instant()),
        last_seen in opt(instant()),
        feed_name in opt(value_text()),
        category in opt(value_text()),
        article_url in opt(value_text()),
        origin in opt(value_text()),
        context in opt(value_text()),
        tags in prop::collection::vec(hostile(12), 0..4),
        mitre in prop::collection::vec(hostile(12), 0..3),
    ) -> Indicator {
        Indicator {
            id,
            ioc_type: IocType::parse(&type_raw),
            type_raw,
            value,
            confidence,
            first_seen,
            last_seen,
            source: Provenance { feed_name, category, article_url, reference_url: None, origin },
            context,
            tags,
            mitre_techniques: mitre,
        }
    }
}

fn options() -> impl Strategy<Value = CefOptions> {
    (
        prop_oneof![3 => Just("SOC Defenders".to_string()), 1 => hostile(20)],
        prop_oneof![3 => Just("Threat Intelligence".to_string()), 1 => hostile(20)],
        prop_oneof![3 => Just("1.0".to_string()), 1 => hostile(8)],
        prop_oneof![Just(CefProfile::SocDefenders), Just(CefProfile::Extended)],
        (0u8..=10, 0u8..=10, 0u8..=10),
    )
        .prop_map(|(v, p, dv, profile, (low, medium, high))| CefOptions {
            // An empty vendor/product/version is a config error, not the encoder's business.
            device_vendor: if v.is_empty() { "V".into() } else { v },
            device_product: if p.is_empty() { "P".into() } else { p },
            device_version: if dv.is_empty() { "1".into() } else { dv },
            profile,
            severity: SeverityMap { low, medium, high },
        })
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![Just(Act::Add), Just(Act::Update)]
}

fn lifecycle() -> impl Strategy<Value = Lifecycle> {
    prop_oneof![
        Just(Lifecycle::Expire),
        Just(Lifecycle::Revoke),
        Just(Lifecycle::Refresh)
    ]
}

// ---------------------------------------------------------------------------------------------
// The model of the CEF rules

fn header_model(s: &str) -> String {
    s.chars()
        .map(|c| if c < ' ' || c == '\u{7f}' { ' ' } else { c })
        .collect()
}

fn value_model(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if (c < ' ' && c != '\r' && c != '\n') || c == '\u{7f}' {
                ' '
            } else {
                c
            }
        })
        .collect();
    mapped.trim_matches(' ').to_string()
}

/// The longest prefix of at most `max` bytes made of whole characters.
fn bytes_prefix(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

fn millis(t: Option<DateTime<Utc>>) -> Option<String> {
    let t = t?;
    let ms = t.timestamp() * 1000 + i64::from(t.timestamp_subsec_millis());
    (ms >= 0).then(|| ms.to_string())
}

/// The type table (signature ID, name label, extended key), keyed by the API's spelling (case
/// and surrounding spaces ignored).
fn label_of(type_raw: &str) -> Option<&'static str> {
    Some(match type_raw.trim().to_ascii_lowercase().as_str() {
        "ipv4" => "IPv4",
        "ipv6" => "IPv6",
        "domain" => "Domain",
        "url" => "URL",
        "md5" => "MD5 Hash",
        "sha1" => "SHA1 Hash",
        "sha256" => "SHA256 Hash",
        "sha512" => "SHA512 Hash",
        "cve" => "CVE",
        "email" => "Email",
        "mitre-attack" | "mitre_attack" => "MITRE ATT&CK Technique",
        _ => return None,
    })
}

struct Expected {
    signature_id: String,
    name: String,
    severity: String,
    pairs: Vec<(String, String)>,
    cuts: usize,
}

#[derive(Default)]
struct ModelPairs {
    pairs: Vec<(String, String)>,
    cuts: usize,
}

impl ModelPairs {
    fn put(&mut self, key: &str, raw: &str, cap: Option<usize>) -> bool {
        let mut v = value_model(raw);
        if let Some(cap) = cap {
            if v.len() > cap {
                v = bytes_prefix(&v, cap).trim_end_matches(' ').to_string();
                self.cuts += 1;
            }
        }
        if v.is_empty() {
            return false;
        }
        self.pairs.push((key.into(), v));
        true
    }
    fn labelled(&mut self, key: &str, raw: &str, cap: Option<usize>, lkey: &str, label: &str) {
        if self.put(key, raw, cap) {
            self.pairs.push((lkey.into(), label.into()));
        }
    }
    fn time(&mut self, key: &str, t: Option<DateTime<Utc>>) -> bool {
        match millis(t) {
            Some(ms) => {
                self.pairs.push((key.into(), ms));
                true
            }
            None => false,
        }
    }
}

fn expected(ind: &Indicator, act: Act, o: &CefOptions) -> Expected {
    let mut m = ModelPairs::default();
    let sig_full = header_model(&ind.type_raw).trim_matches(' ').to_string();
    let sig_full = if sig_full.is_empty() {
        "unknown".to_string()
    } else {
        sig_full
    };
    let signature_id = bytes_prefix(&sig_full, 1023);
    m.cuts += usize::from(signature_id.len() < sig_full.len());
    let label = label_of(&ind.type_raw);
    let name = match label {
        Some(l) => format!("Malicious {l} Indicator"),
        None => "Malicious Indicator".to_string(),
    };
    let conf = ind.confidence.as_deref().map(value_model);
    let severity = match conf.as_deref() {
        Some("high") => o.severity.high,
        Some("medium") => o.severity.medium,
        _ => o.severity.low,
    }
    .to_string();
    match o.profile {
        CefProfile::SocDefenders => {
            m.put("src", &ind.value, None);
            if let Some(c) = &ind.confidence {
                m.labelled("cs1", c, None, "cs1Label", "confidence");
            }
            if let Some(f) = &ind.source.feed_name {
                m.labelled("cs2", f, None, "cs2Label", "source");
            }
            m.time("rt", ind.first_seen);
        }
        CefProfile::Extended => {
            let v = value_model(&ind.value);
            let is_v4 = v.parse::<Ipv4Addr>().is_ok();
            let is_v6 = v.parse::<Ipv6Addr>().is_ok();
            match (label, is_v4, is_v6) {
                (Some("IPv4"), true, _) => {
                    m.put("src", &v, None);
                }
                (Some("IPv6"), _, true) => m.labelled("c6a1", &v, None, "c6a1Label", "indicator"),
                (Some("Domain"), ..) => {
                    m.put("dhost", &v, Some(1023));
                }
                (Some("URL"), ..) => {
                    m.put("request", &v, Some(1023));
                }
                (Some("MD5 Hash" | "SHA1 Hash" | "SHA256 Hash" | "SHA512 Hash"), ..) => {
                    m.put("fileHash", &v, Some(255));
                }
                (Some("Email"), ..) => {
                    m.put("duser", &v, Some(1023));
                }
                _ => m.labelled("cs6", &v, Some(4000), "cs6Label", "indicator"),
            }
            if let Some(c) = &ind.confidence {
                m.labelled("cs1", c, Some(4000), "cs1Label", "confidence");
            }
            if let Some(f) = &ind.source.feed_name {
                m.labelled("cs2", f, Some(4000), "cs2Label", "source");
            }
            m.labelled("cs3", &ind.tags.join(","), Some(4000), "cs3Label", "tags");
            m.labelled(
                "cs4",
                &ind.mitre_techniques.join(","),
                Some(4000),
                "cs4Label",
                "mitreTechniques",
            );
            if let Some(u) = &ind.source.article_url {
                m.labelled("cs5", u, Some(4000), "cs5Label", "reference");
            }
            if let Some(x) = &ind.source.origin {
                m.labelled("flexString1", x, Some(1023), "flexString1Label", "origin");
            }
            if let Some(x) = &ind.source.category {
                m.put("cat", x, Some(1023));
            }
            if let Some(x) = &ind.context {
                m.put("msg", x, Some(1023));
            }
            if let Some(x) = &ind.id {
                m.put("externalId", x, Some(40));
            }
            m.put(
                "act",
                match act {
                    Act::Add => "add",
                    Act::Update => "update",
                },
                None,
            );
            if m.time("deviceCustomDate1", ind.first_seen) {
                m.pairs
                    .push(("deviceCustomDate1Label".into(), "firstSeen".into()));
            }
            if m.time("deviceCustomDate2", ind.last_seen) {
                m.pairs
                    .push(("deviceCustomDate2Label".into(), "lastSeen".into()));
            }
            m.time("rt", ind.first_seen);
        }
    }
    Expected {
        signature_id,
        name,
        severity,
        pairs: m.pairs,
        cuts: m.cuts,
    }
}

fn encode(ind: &Indicator, act: Act, o: &CefOptions) -> (String, usize) {
    let mut line = String::new();
    let cuts = cef::encode(ind, act, o, &mut line);
    (line, cuts)
}

fn encode_lifecycle(
    ind: &Indicator,
    action: Lifecycle,
    end: Option<DateTime<Utc>>,
    o: &CefOptions,
) -> (String, usize) {
    let mut line = String::new();
    let cuts = cef::encode_lifecycle(ind, action, end, o, &mut line);
    (line, cuts)
}

/// Text made of the bytes and words relabel looks for, and hostile characters.
fn relabel_piece() -> BoxedStrategy<String> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            "|", "\\", "Malicious ", " act=", "act=", "add", "update", "refresh", "expire", "=",
            " ", "é",
        ])
        .prop_map(String::from),
        1 => hostile(4),
    ];
    prop::collection::vec(piece, 0..6)
        .prop_map(|p| p.concat())
        .boxed()
}

/// `start`, three to five header fields, a Name, and an extension, all from [`relabel_piece`]:
/// close enough to a CEF line that relabel gets past its checks now and then.
fn cef_like_text() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["CEF:0|", "CEF:", ""]),
        prop::collection::vec(relabel_piece(), 3..6),
        prop::sample::select(vec!["Malicious ", "Malicious", "Expired ", ""]),
        relabel_piece(),
        prop::collection::vec(relabel_piece(), 0..6),
    )
        .prop_map(|(start, fields, verdict, name, ext)| {
            format!(
                "{start}{}|{verdict}{name}|{}",
                fields.join("|"),
                ext.join(" ")
            )
        })
}

/// The line the queue stores: encoded before add and update are known, then `act` set.
fn queued(ind: &Indicator, act: Act, o: &CefOptions) -> (String, usize) {
    let mut line = String::new();
    let (cuts, at) = cef::encode_queued(ind, o, &mut line);
    if let Some(at) = at {
        cef::set_act(&mut line, at, act);
    }
    (line, cuts)
}

/// [`cef::relabel`], failing the case (with the line) when it refuses one of our lines.
fn relabel(
    line: &str,
    action: Lifecycle,
    end: Option<DateTime<Utc>>,
    out: &mut String,
) -> Result<(), TestCaseError> {
    cef::relabel(line, action, end, out).map_err(|e| TestCaseError::fail(format!("{e}: {line:?}")))
}

/// What a lifecycle line must be, from the add line of the same indicator (itself checked
/// against the model): the same header but the Name, whose first word says what happened
/// (`Expired`, `Revoked`; a refresh keeps `Malicious`), and the same pairs with `act` set to
/// the action — in `socdefenders` appended after the last pair, in `extended` in place — and
/// `end` appended for expire and revoke when the time is one the line can carry.
fn check_lifecycle_against_add(
    ind: &Indicator,
    action: Lifecycle,
    end: Option<DateTime<Utc>>,
    o: &CefOptions,
) -> Result<(), TestCaseError> {
    let (add, add_cuts) = encode(ind, Act::Add, o);
    let add = check_line_against_model(ind, Act::Add, o, &add, add_cuts)?;
    let (line, cuts) = encode_lifecycle(ind, action, end, o);
    let got = parse_strict(&line)?;
    prop_assert_eq!(cuts, add_cuts);

    let (verdict, act, end_ms) = match action {
        Lifecycle::Expire => ("Expired", "expire", millis(end)),
        Lifecycle::Revoke => ("Revoked", "revoke", millis(end)),
        Lifecycle::Refresh => ("Malicious", "refresh", None),
    };
    let name = match label_of(&ind.type_raw) {
        Some(l) => format!("{verdict} {l} Indicator"),
        None => format!("{verdict} Indicator"),
    };
    let mut want = add.clone();
    want.name = name;
    let pair = |key: &str, value: String| strict::ExtPair {
        key: key.into(),
        raw: value.clone(),
        value,
    };
    match o.profile {
        CefProfile::SocDefenders => {
            prop_assert!(add.get("act").is_none(), "add line with act: {add:?}");
            want.ext.push(pair("act", act.into()));
        }
        CefProfile::Extended => {
            let at = want.ext.iter().position(|p| p.key == "act");
            let at = at.ok_or_else(|| TestCaseError::fail("extended add line without act"))?;
            want.ext[at] = pair("act", act.into());
        }
    }
    if let Some(ms) = end_ms {
        want.ext.push(pair("end", ms));
    }
    prop_assert_eq!(got, want, "{}", line);
    Ok(())
}

/// `line` through the strict CEF parser, with no raw CR or LF anywhere.
fn parse_strict(line: &str) -> Result<Cef, TestCaseError> {
    prop_assert!(
        !line.contains('\r') && !line.contains('\n'),
        "raw CR/LF in {line:?}"
    );
    parse_cef(line).map_err(|e| TestCaseError::fail(format!("strict CEF parser: {e}\n{line:?}")))
}

fn check_line_against_model(
    ind: &Indicator,
    act: Act,
    o: &CefOptions,
    line: &str,
    cuts: usize,
) -> Result<Cef, TestCaseError> {
    let parsed = parse_strict(line)?;
    let exp = expected(ind, act, o);
    prop_assert_eq!(&parsed.version, "0");
    prop_assert_eq!(&parsed.vendor, &header_model(&o.device_vendor));
    prop_assert_eq!(&parsed.product, &header_model(&o.device_product));
    prop_assert_eq!(&parsed.device_version, &header_model(&o.device_version));
    prop_assert_eq!(&parsed.signature_id, &exp.signature_id);
    prop_assert_eq!(&parsed.name, &exp.name);
    prop_assert_eq!(&parsed.severity, &exp.severity);
    let got: Vec<(String, String)> = parsed
        .ext
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    prop_assert_eq!(got, exp.pairs);
    prop_assert_eq!(cuts, exp.cuts);
    Ok(parsed)
}

/// After the first pair (the indicator): the pairs a SIEM rule keys on, which a cut line keeps
/// whole as long as another pair can go instead.
fn rule_pair(i: usize, key: &str) -> bool {
    i > 0 && ["act", "end", "externalId"].contains(&key)
}

/// What `truncate_to` promises for `line` cut to `max` bytes: within the limit, strict CEF,
/// the same header, the pairs in their original order with only trailing ones removed — the
/// rule pairs (`act`, `end`, `externalId`) counted apart and removed only once every other
/// pair but the first is gone — and at most one value cut, never a rule pair's, to a non-empty
/// prefix of its escaped original.
fn check_truncation(line: &str, max: usize, got: Option<&str>) -> Result<(), TestCaseError> {
    let orig = parse_cef(line).map_err(|e| TestCaseError::fail(format!("original: {e}")))?;
    let header_len = line.len()
        - orig
            .ext
            .iter()
            .map(|p| p.key.len() + 1 + p.raw.len())
            .sum::<usize>()
        - orig.ext.len().saturating_sub(1);
    if line.len() <= max {
        prop_assert_eq!(got, Some(line));
        return Ok(());
    }
    let Some(t) = got else {
        // Dropping is only allowed when not even the header and a cut first pair fit.
        let smallest = match orig.ext.first() {
            None => header_len,
            Some(p) => {
                let first_unit = if p.raw.starts_with('\\') {
                    2
                } else {
                    p.raw.chars().next().map_or(0, char::len_utf8)
                };
                header_len + p.key.len() + 1 + first_unit
            }
        };
        prop_assert!(
            smallest > max,
            "dropped although {smallest} bytes would fit in {max}"
        );
        return Ok(());
    };
    prop_assert!(t.len() <= max, "{} > {max}", t.len());
    let cut = parse_cef(t).map_err(|e| {
        TestCaseError::fail(format!(
            "truncated line fails the strict parser: {e}\n{t:?}"
        ))
    })?;
    prop_assert_eq!(&t[..header_len], &line[..header_len]);
    prop_assert!(!cut.ext.is_empty(), "the indicator's pair was removed");
    prop_assert!(cut.ext.len() <= orig.ext.len());
    let is_rule = |(i, p): &(usize, &strict::ExtPair)| rule_pair(*i, &p.key);
    let (orig_rules, orig_rest): (Vec<_>, Vec<_>) = orig.ext.iter().enumerate().partition(is_rule);
    let (cut_rules, cut_rest): (Vec<_>, Vec<_>) = cut.ext.iter().enumerate().partition(is_rule);
    let kept: Vec<&str> = cut.ext.iter().map(|p| p.key.as_str()).collect();
    let orig_kept: Vec<&str> = orig
        .ext
        .iter()
        .map(|p| p.key.as_str())
        .filter(|k| kept.contains(k))
        .collect();
    prop_assert_eq!(&kept, &orig_kept, "pairs reordered");
    if cut_rules.len() < orig_rules.len() {
        prop_assert_eq!(
            cut_rest.len(),
            1,
            "a rule pair went before the context: {}",
            t
        );
    }
    for ((_, c), (_, o)) in cut_rules.iter().zip(&orig_rules) {
        prop_assert_eq!(
            &c.key,
            &o.key,
            "rule pairs must be a prefix of the original ones"
        );
        prop_assert_eq!(&c.raw, &o.raw, "a rule pair's value was cut");
    }
    let mut cut_values = 0;
    for ((_, c), (_, o)) in cut_rest.iter().zip(&orig_rest) {
        prop_assert_eq!(
            &c.key,
            &o.key,
            "other pairs must be a prefix of the original ones"
        );
        if c.raw != o.raw {
            cut_values += 1;
            prop_assert!(
                o.raw.starts_with(&c.raw),
                "{:?} is not a prefix of {:?}",
                c.raw,
                o.raw
            );
        }
    }
    prop_assert!(cut_values <= 1, "{cut_values} values were cut");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Every value and header field survives a strict CEF parse exactly as the rules predict.
    #[test]
    fn strict_cef_parser_recovers_every_value_as_the_spec_predicts(
        ind in indicator(), act in act(), o in options(),
    ) {
        let (line, cuts) = encode(&ind, act, &o);
        check_line_against_model(&ind, act, &o, &line, cuts)?;
        // Encoding appends: a second encode into the same buffer leaves the first line alone.
        let mut buf = line.clone();
        cef::encode(&ind, act, &o, &mut buf);
        prop_assert_eq!(&buf[..line.len()], line.as_str());
        prop_assert_eq!(&buf[line.len()..], line.as_str());
    }

    /// A lifecycle line is the indicator's add line with its Name, `act` and `end` as the
    /// action says, in both profiles.
    #[test]
    fn a_lifecycle_line_is_the_add_line_with_its_name_act_and_end(
        ind in indicator(), action in lifecycle(), end in opt(instant()), o in options(),
    ) {
        check_lifecycle_against_add(&ind, action, end, &o)?;
    }

    /// The queue encodes before it knows add from update and rewrites `act` after: the result
    /// is the line encoding with that act would have given, in both profiles.
    #[test]
    fn a_queued_line_with_its_act_set_is_the_line_encoded_with_it(
        ind in indicator(), act in act(), o in options(),
    ) {
        let (direct, cuts) = encode(&ind, act, &o);
        let (queued, queued_cuts) = queued(&ind, act, &o);
        prop_assert_eq!(queued, direct);
        prop_assert_eq!(queued_cuts, cuts);
    }

    /// The live set keeps the queued line, not the indicator: relabelling that line gives,
    /// byte for byte, the lifecycle line encoded from the indicator, in both profiles, and so
    /// does relabelling the refresh line made from it (a refreshed indicator stays live).
    #[test]
    fn relabelling_the_queued_line_gives_the_lifecycle_line_of_its_indicator(
        ind in indicator(), act in act(), o in options(), action in lifecycle(),
        end in opt(instant()),
    ) {
        let (line, _) = queued(&ind, act, &o);
        let (want, _) = encode_lifecycle(&ind, action, end, &o);
        let mut got = String::from("kept ");
        relabel(&line, action, end, &mut got)?;
        prop_assert_eq!(got.strip_prefix("kept "), Some(want.as_str()));
        let mut refresh = String::new();
        relabel(&line, Lifecycle::Refresh, None, &mut refresh)?;
        let mut again = String::new();
        relabel(&refresh, action, end, &mut again)?;
        prop_assert_eq!(again, want);
    }

    /// Any text shaped more or less like a CEF line, made of the pieces relabel looks for: it
    /// never panics, and it either appends a line or leaves the buffer alone.
    #[test]
    fn relabel_refuses_or_relabels_any_text_without_panicking(
        text in cef_like_text(), action in lifecycle(), end in opt(instant()),
    ) {
        let mut out = String::from("kept");
        match cef::relabel(&text, action, end, &mut out) {
            Ok(()) => prop_assert!(out.len() > "kept".len() && out.starts_with("kept")),
            Err(_) => prop_assert_eq!(out, "kept"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn truncation_stays_within_the_limit_and_strict_cef(
        ind in indicator(), act in act(), o in options(), frac in 0.0f64..1.1, small in 0usize..200,
        action in lifecycle(), end in opt(instant()),
    ) {
        let (line, _) = encode(&ind, act, &o);
        let (lifecycle_line, _) = encode_lifecycle(&ind, action, end, &o);
        for line in [line, lifecycle_line] {
            for max in [(line.len() as f64 * frac) as usize, small, line.len(), line.len().saturating_sub(1)] {
                let got = cef::truncate_to(&line, max);
                check_truncation(&line, max, got.as_deref())?;
            }
        }
    }

    #[test]
    fn sequence_id_wraps_within_1_to_2147483647(seq in 1i64..i64::MAX / 2) {
        let id = rfc5424::sequence_id(seq);
        prop_assert!((1..=2_147_483_647).contains(&id));
        prop_assert_eq!(rfc5424::sequence_id(seq + 1), id % 2_147_483_647 + 1);
        prop_assert_eq!(id, (seq - 1) % 2_147_483_647 + 1);
    }
}

/// A destination parsed from TOML through the public config API (so fields added later get
/// their defaults), then adjusted per case.
fn base_destination() -> DestinationConfig {
    let text = r#"
state_dir = "/tmp/ioc-forwarder-props"
[source]
kind = "file"
path = "/tmp/ioc-forwarder-props/none.json"
[[destinations]]
name = "props"
protocol = "tcp"
address = "127.0.0.1:9"
"#;
    let cfg = Config::parse(text, Path::new("/tmp/props.toml"), &|_| None)
        .unwrap_or_else(|e| panic!("test config does not parse: {e:?}"));
    cfg.destinations
        .into_iter()
        .next()
        .expect("one destination")
}

prop_compose! {
    fn frame_case()(
        ind in indicator(), act in act(), o in options(),
        format in prop_oneof![4 => Just(SyslogFormat::Rfc5424), 1 => Just(SyslogFormat::Rfc3164)],
        protocol in prop_oneof![3 => Just(Protocol::Tcp), 1 => Just(Protocol::Udp)],
        framing in prop_oneof![Just(Framing::OctetCounting), Just(Framing::Lf)],
        oversize in prop_oneof![Just(Oversize::Truncate), Just(Oversize::Drop)],
        max in 480usize..=2048,
        facility in 0u8..=23, severity in 0u8..=7,
        hostname in prop_oneof![2 => Just("collector01".to_string()), 1 => hostile(300)],
        app_name in prop_oneof![2 => Just("ioc-forwarder".to_string()), 1 => hostile(60)],
        pid in any::<u32>(),
        msgid in opt(hostile(40)),
        sd in any::<bool>(),
        seq in prop_oneof![1i64..10_000, 2_147_483_640i64..2_147_483_660, 1i64..i64::MAX / 2],
        enqueued in instant(),
        prefix in prop::collection::vec(any::<u8>(), 0..8),
    ) -> (Indicator, Act, CefOptions, SyslogFormat, Protocol, Framing, Oversize, usize,
          (u8, u8, String, String, u32, Option<String>, bool), i64, DateTime<Utc>, Vec<u8>) {
        (ind, act, o, format, protocol, framing, oversize, max,
         (facility, severity, hostname, app_name, pid, msgid, sd), seq, enqueued, prefix)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// `frame_event` with small limits: the message stays within `max_message_size`, is one
    /// strict RFC 5424 (or RFC 3164) message whose MSG is strict CEF, carries no raw CR/LF, and
    /// octet counting's MSG-LEN is its exact byte length.
    #[test]
    fn frames_are_strict_syslog_within_the_limit(case in frame_case()) {
        let (ind, act, o, format, protocol, framing, oversize, max,
             (facility, severity, hostname, app_name, pid, msgid, sd), seq, enqueued, prefix) = case;
        let (line, _) = encode(&ind, act, &o);
        let mut dest = base_destination();
        dest.protocol = protocol;
        dest.framing = framing;
        dest.format = format;
        dest.max_message_size = max;
        dest.oversize = oversize;
        let header = Header::new(format, facility, severity, &hostname, &app_name, pid, msgid.as_deref(), sd);
        let ev = Event::new(seq, enqueued, &ind.type_raw, &line);
        let mut scratch = b"stale".to_vec();
        let mut buf = prefix.clone();
        let datagram = protocol == Protocol::Udp;
        let outcome = frame_event(&dest, &header, &ev, datagram, &mut scratch, &mut buf);
        prop_assert_eq!(&buf[..prefix.len()], &prefix[..], "frame_event must append");
        let out = &buf[prefix.len()..];

        // The whole message, as the model sees it, decides between whole and cut.
        let msgid_model = expected_header_field(msgid.as_deref().unwrap_or(&ind.type_raw), 32);
        let head_len = match format {
            SyslogFormat::Rfc5424 => {
                let sd_len = if sd {
                    format!("[meta sequenceId=\"{}\"][origin software=\"ioc-forwarder\" swVersion=\"{}\"]",
                        (seq - 1) % 2_147_483_647 + 1, env!("CARGO_PKG_VERSION")).len()
                } else { 1 };
                let ts_len = if (0..=9999).contains(&chrono::Datelike::year(&enqueued)) { 27 } else { 1 };
                format!("<{}>1 ", facility * 8 + severity).len() + ts_len + 1
                    + expected_header_field(&hostname, 255).len() + 1
                    + expected_header_field(&app_name, 48).len() + 1
                    + pid.to_string().len() + 1 + msgid_model.len() + 1 + sd_len + 1
            }
            SyslogFormat::Rfc3164 => {
                let tag: String = app_name.chars().filter(char::is_ascii_alphanumeric).take(32).collect();
                let tag = if tag.is_empty() { "iocforwarder".to_string() } else { tag };
                format!("<{}>", facility * 8 + severity).len() + 15 + 1
                    + expected_header_field(&hostname, 255).len() + 1 + tag.len()
                    + pid.to_string().len() + 4
            }
        };
        let whole_len = head_len + line.len();
        if outcome == Framed::Dropped {
            prop_assert!(out.is_empty(), "a dropped event wrote bytes");
            prop_assert!(whole_len > max);
            if oversize == Oversize::Truncate {
                check_truncation(&line, max.saturating_sub(head_len), None)?;
            }
            return Ok(());
        }
        prop_assert_eq!(outcome == Framed::Whole, whole_len <= max,
            "whole {} vs max {}", whole_len, max);

        let message: &[u8] = if protocol == Protocol::Udp {
            out
        } else {
            let frames = match framing {
                Framing::OctetCounting => strict::split_octet_counted(out),
                Framing::Lf => strict::split_lf(out),
            }.map_err(TestCaseError::fail)?;
            prop_assert_eq!(frames.len(), 1);
            frames[0]
        };
        prop_assert!(message.len() <= max, "{} > {max}", message.len());
        prop_assert!(!message.contains(&b'\n') && !message.contains(&b'\r'), "raw CR/LF in the frame");

        let msg_text = match format {
            SyslogFormat::Rfc5424 => {
                let m = parse_rfc5424(message).map_err(|e| TestCaseError::fail(format!(
                    "strict RFC 5424: {e}\n{:?}", String::from_utf8_lossy(message))))?;
                prop_assert_eq!(m.pri, facility * 8 + severity);
                prop_assert_eq!(m.version, 1);
                let want_ts = (0..=9999).contains(&chrono::Datelike::year(&enqueued))
                    .then(|| enqueued.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
                prop_assert_eq!(m.timestamp.map(|t| t.text), want_ts);
                let nil = |s: String| (s != "-").then_some(s);
                prop_assert_eq!(m.hostname, nil(expected_header_field(&hostname, 255)));
                prop_assert_eq!(m.app_name, nil(expected_header_field(&app_name, 48)));
                prop_assert_eq!(m.procid, Some(pid.to_string()));
                prop_assert_eq!(m.msgid, nil(msgid_model));
                if sd {
                    prop_assert_eq!(m.sd.len(), 2);
                    prop_assert_eq!(&m.sd[0].id, "meta");
                    prop_assert_eq!(&m.sd[0].params, &vec![("sequenceId".to_string(),
                        ((seq - 1) % 2_147_483_647 + 1).to_string())]);
                    prop_assert_eq!(&m.sd[1].id, "origin");
                    prop_assert_eq!(&m.sd[1].params, &vec![
                        ("software".to_string(), "ioc-forwarder".to_string()),
                        ("swVersion".to_string(), env!("CARGO_PKG_VERSION").to_string())]);
                } else {
                    prop_assert!(m.sd.is_empty());
                }
                m.msg.unwrap_or_default()
            }
            SyslogFormat::Rfc3164 => {
                let m = parse_rfc3164(message).map_err(|e| TestCaseError::fail(format!(
                    "strict RFC 3164: {e}\n{:?}", String::from_utf8_lossy(message))))?;
                prop_assert_eq!(m.pri, facility * 8 + severity);
                prop_assert_eq!(m.timestamp, enqueued.format("%b %e %H:%M:%S").to_string());
                prop_assert_eq!(m.pid, pid.to_string());
                m.msg
            }
        };
        if outcome == Framed::Whole {
            prop_assert_eq!(&msg_text, &line);
        } else {
            check_truncation(&line, max - head_len, Some(&msg_text))?;
        }
    }
}

#[test]
fn hostile_fixed_cases_round_trip() {
    // A few cases the generators may reach rarely, checked through the same model.
    let o = CefOptions {
        device_vendor: "SOC Defenders".into(),
        device_product: "Threat Intelligence".into(),
        device_version: "1.0".into(),
        profile: CefProfile::SocDefenders,
        severity: SeverityMap::default(),
    };
    for value in [
        "\\",
        "=",
        "\\=",
        "a\\",
        "a =b",
        "x a=b",
        " \\n",
        "\r",
        "\n\n",
        "|",
        "]\"",
        "a  b",
        "\u{0}\u{1f}\u{7f}",
        "\\\\=\\",
    ] {
        let ind = Indicator {
            id: None,
            ioc_type: IocType::Url,
            type_raw: "url".into(),
            value: value.into(),
            confidence: Some("high".into()),
            first_seen: None,
            last_seen: None,
            source: Provenance {
                feed_name: Some(value.into()),
                ..Provenance::default()
            },
            context: None,
            tags: vec![],
            mitre_techniques: vec![],
        };
        for profile in [CefProfile::SocDefenders, CefProfile::Extended] {
            let o = CefOptions {
                profile,
                ..o.clone()
            };
            let (line, cuts) = encode(&ind, Act::Add, &o);
            if let Err(e) = check_line_against_model(&ind, Act::Add, &o, &line, cuts) {
                panic!("{value:?}: {e}");
            }
        }
    }
}
