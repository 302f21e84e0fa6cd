//! Target `cef_encode`: an arbitrary indicator and options through both CEF profiles, then
//! `truncate_to` on the line (and on an arbitrary string). Checks the line parses back
//! strictly (`cef_check`), the header fields and the `socdefenders` values read back as
//! the SPEC's escaping says, `extended` values keep their per-key limits, `set_act` gives
//! the line `encode` gives, and a truncated line is within its limit and still valid CEF.
//! The indicator's expire, revoke and refresh lines (ended at its `last_seen`) go through
//! the same checks: each is the add/update line with its Name, `act` and `end` as the action
//! says, and relabelling the queued line (`encode_queued` + `set_act`) gives it byte for
//! byte. `relabel` must also refuse, not panic on, an arbitrary string. The input format is
//! unchanged, so the committed corpus keeps its meaning.

use arbitrary::{Arbitrary, Unstructured};
use ioc_forwarder::config::CefProfile;
use ioc_forwarder::encode::cef::{self, Act, CefOptions, Lifecycle};
use ioc_forwarder::indicator::Indicator;

use super::cef_check::{self, expected_ext_value, expected_header, unescape};
use super::gen::{ArbIndicator, ArbOptions};

#[derive(Debug, Arbitrary)]
struct Input {
    ind: ArbIndicator,
    opts: ArbOptions,
    update: bool,
    /// `truncate_to` limit, as a cut of this many bytes off the line (or, past its
    /// length, an absolute limit).
    cut: u16,
    raw_line: String,
    raw_max: u16,
}

pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let ind = input.ind.build();
    let opts = input.opts.build();
    let act = if input.update { Act::Update } else { Act::Add };
    let line = check_encode(&ind, act, &opts);
    let cut = usize::from(input.cut);
    let max = line.len().checked_sub(cut).unwrap_or(cut);
    check_truncate(&line, max);
    for action in [Lifecycle::Expire, Lifecycle::Revoke, Lifecycle::Refresh] {
        let lifecycle = check_lifecycle(&ind, action, &opts, &line);
        check_relabel(&ind, act, action, &opts, &lifecycle);
        check_truncate(&lifecycle, lifecycle.len().checked_sub(cut).unwrap_or(cut));
    }
    // Lines from the store are the encoder's, but `truncate_to` and `relabel` must not panic
    // on anything.
    let _ = cef::truncate_to(&input.raw_line, usize::from(input.raw_max));
    let _ = cef::relabel(
        &input.raw_line,
        Lifecycle::Expire,
        ind.last_seen,
        &mut String::new(),
    );
}

/// Relabelling the line the queue stores for `ind` (encoded, then `act` set) gives
/// `lifecycle`, the line `encode_lifecycle` gave for `action` (ended at `last_seen`).
fn check_relabel(ind: &Indicator, act: Act, action: Lifecycle, opts: &CefOptions, lifecycle: &str) {
    let mut queued = String::new();
    if let (_, Some(at)) = cef::encode_queued(ind, opts, &mut queued) {
        cef::set_act(&mut queued, at, act);
    }
    let mut relabelled = String::new();
    if let Err(e) = cef::relabel(&queued, action, ind.last_seen, &mut relabelled) {
        panic!("relabel refused a queued line ({e}): {queued:?}");
    }
    assert_eq!(relabelled, lifecycle, "relabelled from {queued:?}");
}

/// Encodes `ind`, checks the line, and returns it. Also used on decoded indicators.
pub fn check_encode(ind: &Indicator, act: Act, opts: &CefOptions) -> String {
    let mut line = String::new();
    let cuts = cef::encode(ind, act, opts, &mut line);
    let parsed = cef_check::parse(&line);

    // Header: CEF:0|vendor|product|version|signature|name|severity|
    let h = &parsed.header;
    assert_eq!(h[0], "CEF:0");
    assert_eq!(h[1], expected_header(&opts.device_vendor), "{line:?}");
    assert_eq!(h[2], expected_header(&opts.device_product), "{line:?}");
    assert_eq!(h[3], expected_header(&opts.device_version), "{line:?}");
    // Signature ID: the type trimmed of spaces and controls ("unknown" when nothing is
    // left), cut to 1023 bytes at a character boundary, controls inside it as spaces.
    let sig = ind
        .type_raw
        .trim_matches(|c: char| c == ' ' || c.is_ascii_control());
    let sig = if sig.is_empty() { "unknown" } else { sig };
    let mut end = sig.len().min(cef::SIGNATURE_ID_MAX);
    while !sig.is_char_boundary(end) {
        end -= 1;
    }
    assert_eq!(h[4], expected_header(&sig[..end]), "{line:?}");
    assert!(h[5].starts_with("Malicious ") && h[5].ends_with("Indicator"));
    let severity: u8 = h[6]
        .parse()
        .unwrap_or_else(|_| panic!("severity {:?}", h[6]));
    let s = &opts.severity;
    assert!([s.low, s.medium, s.high].contains(&severity), "{line:?}");

    let value = |key: &str| {
        parsed
            .pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| unescape(v))
    };
    let millis = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.timestamp_millis())
            .filter(|ms| *ms >= 0)
            .map(|ms| ms.to_string())
    };
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    assert_eq!(value("rt"), millis(ind.first_seen), "{line:?}");
    match opts.profile {
        CefProfile::SocDefenders => {
            assert!(cuts <= 1, "{cuts} cuts in socdefenders");
            let keys: Vec<&str> = parsed.pairs.iter().map(|(k, _)| *k).collect();
            for k in &keys {
                assert!(
                    ["src", "cs1", "cs1Label", "cs2", "cs2Label", "rt"].contains(k),
                    "unexpected key {k}: {line:?}"
                );
            }
            assert_eq!(
                value("src"),
                nonempty(expected_ext_value(&ind.value)),
                "{line:?}"
            );
            let cs1 = ind.confidence.as_deref().map(expected_ext_value);
            assert_eq!(value("cs1"), cs1.and_then(nonempty), "{line:?}");
            let cs2 = ind.source.feed_name.as_deref().map(expected_ext_value);
            assert_eq!(value("cs2"), cs2.and_then(nonempty), "{line:?}");
        }
        CefProfile::Extended => {
            for (k, v) in &parsed.pairs {
                let limit = match *k {
                    "dhost" | "request" | "duser" | "cat" | "msg" | "flexString1" => 1023,
                    "fileHash" => 255,
                    "externalId" => 40,
                    "act" => 63,
                    k if k.starts_with("cs") && k.len() == 3 => 4000,
                    _ => usize::MAX,
                };
                let raw = unescape(v);
                assert!(raw.len() <= limit, "{k} has {} bytes: {line:?}", raw.len());
            }
            let want = match act {
                Act::Add => "add",
                Act::Update => "update",
            };
            assert_eq!(value("act").as_deref(), Some(want), "{line:?}");
            // The queue's way: encode as `add`, then rewrite `act` in place.
            let mut queued = String::new();
            let (queued_cuts, at) = cef::encode_queued(ind, opts, &mut queued);
            assert_eq!(queued_cuts, cuts);
            let at = at.expect("extended writes act");
            cef::set_act(&mut queued, at, act);
            assert_eq!(queued, line, "set_act differs from encode");
        }
    }
    line
}

/// Encodes the lifecycle event `action` of `ind` (ended at its `last_seen`), checks it against
/// `line`, the indicator's add or update line from [`check_encode`], and returns it: the same
/// header but the Name's first word (`Expired`, `Revoked`; a refresh keeps `Malicious`), the
/// same pairs with `act` the action's — after the last pair in `socdefenders`, in place in
/// `extended` — and, for expire and revoke, `end` last when `last_seen` is not before 1970.
fn check_lifecycle(ind: &Indicator, action: Lifecycle, opts: &CefOptions, line: &str) -> String {
    let mut out = String::new();
    let cuts = cef::encode_lifecycle(ind, action, ind.last_seen, opts, &mut out);
    let mut again = String::new();
    assert_eq!(
        cuts,
        cef::encode(ind, Act::Add, opts, &mut again),
        "cuts differ"
    );
    let sent = cef_check::parse(line);
    let got = cef_check::parse(&out);
    let (verdict, act) = match action {
        Lifecycle::Expire => ("Expired", "expire"),
        Lifecycle::Revoke => ("Revoked", "revoke"),
        Lifecycle::Refresh => ("Malicious", "refresh"),
    };
    let mut want_header = sent.header.clone();
    want_header[5] = want_header[5].replacen("Malicious", verdict, 1);
    assert_eq!(got.header, want_header, "{out:?}");
    let mut want = sent.pairs.clone();
    match want.iter_mut().find(|(k, _)| *k == "act") {
        Some(pair) if opts.profile == CefProfile::Extended => pair.1 = act,
        _ => want.push(("act", act)),
    }
    let end = match action {
        Lifecycle::Refresh => None,
        Lifecycle::Expire | Lifecycle::Revoke => ind.last_seen.map(|t| t.timestamp_millis()),
    };
    let end = end.filter(|ms| *ms >= 0).map(|ms| ms.to_string());
    if let Some(ms) = &end {
        want.push(("end", ms));
    }
    assert_eq!(got.pairs, want, "{out:?}");
    out
}

/// After the first pair (the indicator): the pairs a SIEM rule keys on, which a cut line
/// keeps whole as long as another pair can go instead.
fn rule_pair(i: usize, key: &str) -> bool {
    i > 0 && ["act", "end", "externalId"].contains(&key)
}

/// A pair as `cef_check` gives it: key and value as on the wire.
type Pair<'a> = (&'a str, &'a str);

/// `pairs` split into the rule pairs and the others, each in order.
fn split_rules<'a>(pairs: &[Pair<'a>]) -> (Vec<Pair<'a>>, Vec<Pair<'a>>) {
    let mut rules = Vec::new();
    let mut rest = Vec::new();
    for (i, &(k, v)) in pairs.iter().enumerate() {
        if rule_pair(i, k) {
            rules.push((k, v));
        } else {
            rest.push((k, v));
        }
    }
    (rules, rest)
}

/// `truncate_to(line, max)`: the whole line when it fits; else a line of at most `max`
/// bytes with the same header, the pairs in their order with trailing ones removed (the
/// rule pairs counted apart, removed only when no other pair but the first is left, and
/// never cut), each value a prefix of its own (cut at a character and escape boundary),
/// still valid CEF; `None` only when it did not fit.
pub fn check_truncate(line: &str, max: usize) {
    let Some(cut) = cef::truncate_to(line, max) else {
        assert!(line.len() > max, "None for a line that fits");
        return;
    };
    if line.len() <= max {
        assert_eq!(cut, line);
        return;
    }
    assert!(
        cut.len() <= max,
        "truncated to {} bytes > {max}: {cut:?}",
        cut.len()
    );
    let whole = cef_check::parse(line);
    let short = cef_check::parse(&cut);
    assert_eq!(
        &cut[..short.ext_start],
        &line[..whole.ext_start],
        "header changed"
    );
    assert!(!short.pairs.is_empty(), "no pair left: {cut:?}");
    assert!(short.pairs.len() <= whole.pairs.len());
    let (short_rules, short_rest) = split_rules(&short.pairs);
    let (whole_rules, whole_rest) = split_rules(&whole.pairs);
    for ((k, v), (wk, wv)) in short_rest.iter().zip(&whole_rest) {
        assert_eq!(k, wk, "pairs reordered: {cut:?}");
        assert!(wv.starts_with(v), "{k}: {v:?} is not a prefix of {wv:?}");
    }
    assert_eq!(
        short_rules,
        whole_rules[..short_rules.len()],
        "rule pairs reordered or cut: {cut:?}"
    );
    if short_rules.len() < whole_rules.len() {
        assert_eq!(
            short_rest.len(),
            1,
            "a rule pair went before the context: {cut:?}"
        );
    }
    let keys = |p: &[(&str, &str)]| p.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>();
    let kept = keys(&short.pairs);
    let in_order: Vec<String> = keys(&whole.pairs)
        .into_iter()
        .filter(|k| kept.contains(k))
        .collect();
    assert_eq!(kept, in_order, "pairs reordered: {cut:?}");
}
