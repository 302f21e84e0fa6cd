//! Golden CEF lines, byte for byte: one per IOC type and profile, the seed's own line, the
//! escaping, severity, missing-field and length-limit rules of the product's CEF contract (the
//! README's "Encoding"), and the lifecycle lines (expire, revoke, refresh) in both profiles, both
//! encoded from the indicator and relabelled from its queued line. Every expected line was
//! written by hand from those rules (epoch milliseconds computed with `date -u -d … +%s%3N`),
//! never copied from the program's output. Each line must also pass the strict CEF parser.

#[path = "interop/strict.rs"]
mod strict;

use ioc_forwarder::config::{CefProfile, SeverityMap};
use ioc_forwarder::decode;
use ioc_forwarder::encode::cef::{self, Act, CefOptions, Lifecycle};
use serde_json::{json, Value};

fn opts(profile: CefProfile) -> CefOptions {
    CefOptions {
        device_vendor: "SOC Defenders".into(),
        device_product: "Threat Intelligence".into(),
        device_version: "1.0".into(),
        profile,
        severity: SeverityMap::default(),
    }
}

/// Runs `encode` on a buffer that already holds text and returns what it appended (the text
/// must be left alone) and the count of cut values; the line must pass the strict CEF parser.
fn appended(encode: impl FnOnce(&mut String) -> usize) -> (String, usize) {
    let mut line = String::from("left alone: ");
    let cuts = encode(&mut line);
    let line = line
        .strip_prefix("left alone: ")
        .expect("encoding appends to the buffer")
        .to_string();
    if let Err(e) = strict::parse_cef(&line) {
        panic!("golden line fails the strict CEF parser ({e}): {line}");
    }
    (line, cuts)
}

/// Encodes with the library API; returns the line and the count of cut values.
fn encode_with(v: Value, act: Act, o: &CefOptions) -> (String, usize) {
    let ind = decode::item(&v).expect("an indicator");
    appended(|line| cef::encode(&ind, act, o, line))
}

fn soc(v: Value) -> String {
    let (line, cuts) = encode_with(v, Act::Add, &opts(CefProfile::SocDefenders));
    assert_eq!(cuts, 0, "socdefenders cuts nothing here");
    line
}

fn ext(v: Value, act: Act) -> (String, usize) {
    encode_with(v, act, &opts(CefProfile::Extended))
}

fn ind(ty: &str, value: &str, confidence: &str, first_seen: &str, feed: &str) -> Value {
    json!({"type": ty, "value": value, "confidence": confidence, "first_seen": first_seen,
           "source": {"feed_name": feed}})
}

const H: &str = "CEF:0|SOC Defenders|Threat Intelligence|1.0|";
const MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
const SHA1: &str = "da39a3ee5e6b4b0d3255bfef95601890afd80709";
const SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const SHA512: &str = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

// ---------------------------------------------------------------------------------------------
// Profile `socdefenders`

#[test]
fn socdefenders_seed_line_is_reproduced_byte_for_byte_with_the_table_severity() {
    let v = ind(
        "ipv4",
        "203.0.113.42",
        "high",
        "2025-05-17T00:00:00Z",
        "CISA Alerts",
    );
    assert_eq!(
        soc(v),
        "CEF:0|SOC Defenders|Threat Intelligence|1.0|ipv4|Malicious IPv4 Indicator|9|src=203.0.113.42 cs1=high cs1Label=confidence cs2=CISA Alerts cs2Label=source rt=1747440000000"
    );
}

#[test]
fn socdefenders_ipv6() {
    let v = ind(
        "ipv6",
        "2001:db8::dead:beef",
        "medium",
        "2025-06-01T12:30:00Z",
        "Spamhaus DROP",
    );
    assert_eq!(
        soc(v),
        format!("{H}ipv6|Malicious IPv6 Indicator|6|src=2001:db8::dead:beef cs1=medium cs1Label=confidence cs2=Spamhaus DROP cs2Label=source rt=1748781000000")
    );
}

#[test]
fn socdefenders_domain() {
    let v = ind(
        "domain",
        "update-check.example.org",
        "low",
        "2024-12-31T00:00:01Z",
        "URLhaus",
    );
    assert_eq!(
        soc(v),
        format!("{H}domain|Malicious Domain Indicator|3|src=update-check.example.org cs1=low cs1Label=confidence cs2=URLhaus cs2Label=source rt=1735603201000")
    );
}

#[test]
fn socdefenders_url_escapes_equals_and_backslash_but_not_pipe() {
    let v = ind(
        "url",
        r"http://malware.example.net/gate.php?id=42&k=a|b\c",
        "high",
        "2026-01-20T23:59:59Z",
        "abuse.ch | URLhaus",
    );
    assert_eq!(
        soc(v),
        format!(
            r"{H}url|Malicious URL Indicator|9|src=http://malware.example.net/gate.php?id\=42&k\=a|b\\c cs1=high cs1Label=confidence cs2=abuse.ch | URLhaus cs2Label=source rt=1768953599000"
        )
    );
}

#[test]
fn socdefenders_md5() {
    let v = ind("md5", MD5, "high", "2026-01-20T23:59:59Z", "MalwareBazaar");
    assert_eq!(
        soc(v),
        format!("{H}md5|Malicious MD5 Hash Indicator|9|src={MD5} cs1=high cs1Label=confidence cs2=MalwareBazaar cs2Label=source rt=1768953599000")
    );
}

#[test]
fn socdefenders_sha1() {
    let v = ind("sha1", SHA1, "medium", "2025-11-03T08:15:30Z", "VirusShare");
    assert_eq!(
        soc(v),
        format!("{H}sha1|Malicious SHA1 Hash Indicator|6|src={SHA1} cs1=medium cs1Label=confidence cs2=VirusShare cs2Label=source rt=1762157730000")
    );
}

#[test]
fn socdefenders_sha256_keeps_milliseconds_of_first_seen() {
    let v = ind(
        "sha256",
        SHA256,
        "high",
        "2025-02-28T06:00:00.250Z",
        "ThreatFox",
    );
    assert_eq!(
        soc(v),
        format!("{H}sha256|Malicious SHA256 Hash Indicator|9|src={SHA256} cs1=high cs1Label=confidence cs2=ThreatFox cs2Label=source rt=1740722400250")
    );
}

#[test]
fn socdefenders_sha512() {
    let v = ind(
        "sha512",
        SHA512,
        "low",
        "2025-03-01T10:20:30Z",
        "Hybrid Analysis",
    );
    assert_eq!(
        soc(v),
        format!("{H}sha512|Malicious SHA512 Hash Indicator|3|src={SHA512} cs1=low cs1Label=confidence cs2=Hybrid Analysis cs2Label=source rt=1740824430000")
    );
}

#[test]
fn socdefenders_cve_with_a_backslash_in_the_feed_name() {
    let v = ind(
        "cve",
        "CVE-2024-3400",
        "medium",
        "2024-12-31T00:00:01Z",
        r"NVD \ CISA KEV",
    );
    assert_eq!(
        soc(v),
        format!(
            r"{H}cve|Malicious CVE Indicator|6|src=CVE-2024-3400 cs1=medium cs1Label=confidence cs2=NVD \\ CISA KEV cs2Label=source rt=1735603201000"
        )
    );
}

#[test]
fn socdefenders_email_without_first_seen_has_no_rt() {
    let v = json!({"type": "email", "value": "phish@example.com", "confidence": "low",
                   "source": {"feed_name": "PhishTank"}});
    assert_eq!(
        soc(v),
        format!("{H}email|Malicious Email Indicator|3|src=phish@example.com cs1=low cs1Label=confidence cs2=PhishTank cs2Label=source")
    );
}

#[test]
fn socdefenders_mitre_attack() {
    let v = ind(
        "mitre-attack",
        "T1566.001",
        "high",
        "2025-05-17T00:00:00Z",
        "MITRE ATT&CK",
    );
    assert_eq!(
        soc(v),
        format!("{H}mitre-attack|Malicious MITRE ATT&CK Technique Indicator|9|src=T1566.001 cs1=high cs1Label=confidence cs2=MITRE ATT&CK cs2Label=source rt=1747440000000")
    );
}

#[test]
fn socdefenders_mitre_attack_underscore_spelling_keeps_its_signature_id() {
    let v = ind(
        "mitre_attack",
        "T1071",
        "medium",
        "2025-05-17T00:00:00Z",
        "CISA Alerts",
    );
    assert_eq!(
        soc(v),
        format!("{H}mitre_attack|Malicious MITRE ATT&CK Technique Indicator|6|src=T1071 cs1=medium cs1Label=confidence cs2=CISA Alerts cs2Label=source rt=1747440000000")
    );
}

#[test]
fn socdefenders_unknown_type_gets_the_generic_name() {
    let v = ind(
        "ja3",
        "e7d705a3286e19ea42f587b344ee6865",
        "medium",
        "2025-05-17T00:00:00Z",
        "SSLBL",
    );
    assert_eq!(
        soc(v),
        format!("{H}ja3|Malicious Indicator|6|src=e7d705a3286e19ea42f587b344ee6865 cs1=medium cs1Label=confidence cs2=SSLBL cs2Label=source rt=1747440000000")
    );
}

#[test]
fn socdefenders_missing_type_is_unknown_and_missing_fields_leave_their_keys_out() {
    assert_eq!(
        soc(json!({"value": "198.51.100.7"})),
        format!("{H}unknown|Malicious Indicator|3|src=198.51.100.7")
    );
    assert_eq!(
        soc(
            json!({"type": "ipv4", "value": "198.51.100.7", "confidence": null,
                   "first_seen": "not a time", "source": {"feed_name": ""}})
        ),
        format!("{H}ipv4|Malicious IPv4 Indicator|3|src=198.51.100.7")
    );
}

#[test]
fn socdefenders_unknown_confidence_gets_the_low_severity_but_is_still_sent() {
    assert_eq!(
        soc(json!({"type": "domain", "value": "a.example", "confidence": "Critical"})),
        format!(
            "{H}domain|Malicious Domain Indicator|3|src=a.example cs1=critical cs1Label=confidence"
        )
    );
}

#[test]
fn severity_mapping_is_configurable_and_header_fields_escape_pipe_and_backslash() {
    let o = CefOptions {
        device_vendor: r"Acme|Corp\".into(),
        device_product: "TI\r\nFeed".into(),
        device_version: "2=1".into(),
        profile: CefProfile::SocDefenders,
        severity: SeverityMap {
            low: 1,
            medium: 5,
            high: 10,
        },
    };
    let expect = |confidence: &str, sev: u8| {
        format!(
            r"CEF:0|Acme\|Corp\\|TI  Feed|2=1|ipv4|Malicious IPv4 Indicator|{sev}|src=192.0.2.1 cs1={confidence} cs1Label=confidence"
        )
    };
    for (c, sev) in [("low", 1), ("medium", 5), ("high", 10)] {
        let (line, _) = encode_with(
            json!({"type": "ipv4", "value": "192.0.2.1", "confidence": c}),
            Act::Add,
            &o,
        );
        assert_eq!(line, expect(c, sev));
    }
}

#[test]
fn hostile_value_keeps_cr_lf_as_escapes_turns_other_controls_into_spaces_and_is_trimmed() {
    let v = json!({"type": "url", "value": "  \thttp://x.example/a\r\nb=c\\d|e\tf\u{0}g\u{7f}h\n \u{1b}",
                   "confidence": " high ", "source": {"feed_name": "A|B=C\\D \"q\" ]"}});
    assert_eq!(
        soc(v),
        format!(
            r#"{H}url|Malicious URL Indicator|9|src=http://x.example/a\r\nb\=c\\d|e f g h\n cs1=high cs1Label=confidence cs2=A|B\=C\\D "q" ] cs2Label=source"#
        )
    );
}

#[test]
fn non_ascii_values_pass_through_unchanged() {
    let v = ind(
        "domain",
        "bücher-bestellung.example",
        "medium",
        "2025-05-17T00:00:00Z",
        "Bundesamt für Sicherheit – Lagebericht 🔒",
    );
    assert_eq!(
        soc(v),
        format!("{H}domain|Malicious Domain Indicator|6|src=bücher-bestellung.example cs1=medium cs1Label=confidence cs2=Bundesamt für Sicherheit – Lagebericht 🔒 cs2Label=source rt=1747440000000")
    );
}

#[test]
fn first_seen_before_1970_counts_as_missing() {
    let v = ind("ipv4", "192.0.2.1", "low", "0001-01-01T00:00:00Z", "Feed");
    assert_eq!(
        soc(v),
        format!("{H}ipv4|Malicious IPv4 Indicator|3|src=192.0.2.1 cs1=low cs1Label=confidence cs2=Feed cs2Label=source")
    );
}

#[test]
fn a_value_of_only_spaces_and_controls_leaves_its_key_out() {
    let v = json!({"type": "ipv4", "value": "1.2.3.4", "confidence": " \t ",
                   "source": {"feed_name": "\u{1}"}});
    assert_eq!(
        soc(v),
        format!("{H}ipv4|Malicious IPv4 Indicator|3|src=1.2.3.4")
    );
}

#[test]
fn signature_id_is_sanitized_and_cut_to_1023_bytes_and_the_cut_is_counted() {
    let (line, cuts) = encode_with(
        json!({"type": " weird|type\\\n", "value": "x"}),
        Act::Add,
        &opts(CefProfile::SocDefenders),
    );
    assert_eq!(
        line,
        format!(r"{H}weird\|type\\|Malicious Indicator|3|src=x")
    );
    assert_eq!(cuts, 0);
    // 1022 ASCII bytes and a 2-byte character: the character does not fit in 1023 bytes.
    let ty = format!("{}é", "t".repeat(1022));
    let (line, cuts) = encode_with(
        json!({"type": ty, "value": "x"}),
        Act::Add,
        &opts(CefProfile::SocDefenders),
    );
    assert_eq!(
        line,
        format!("{H}{}|Malicious Indicator|3|src=x", "t".repeat(1022))
    );
    assert_eq!(cuts, 1);
}

// ---------------------------------------------------------------------------------------------
// Profile `extended`

#[test]
fn extended_ipv4_with_every_context_key_in_spec_order() {
    let v = json!({
        "id": "5f0c6a2e-1d2b-4c3a-9e8f-0a1b2c3d4e5f", "type": "ipv4", "value": "203.0.113.42",
        "confidence": "high", "first_seen": "2025-05-17T00:00:00Z",
        "last_seen": "2025-06-01T12:30:00Z", "tags": ["c2", "cobalt-strike"],
        "mitre_techniques": [{"id": "T1071", "name": "Application Layer Protocol"}, "T1105"],
        "context": "Beacon C2 seen in campaign X; see report",
        "source": {"feed_name": "CISA Alerts", "category": "government",
                   "article_url": "https://www.cisa.gov/news-events/alerts/aa25-001a?x=1",
                   "origin": "article"}});
    assert_eq!(
        ext(v, Act::Add),
        (
            format!(
                r"{H}ipv4|Malicious IPv4 Indicator|9|src=203.0.113.42 cs1=high cs1Label=confidence cs2=CISA Alerts cs2Label=source cs3=c2,cobalt-strike cs3Label=tags cs4=T1071,T1105 cs4Label=mitreTechniques cs5=https://www.cisa.gov/news-events/alerts/aa25-001a?x\=1 cs5Label=reference flexString1=article flexString1Label=origin cat=government msg=Beacon C2 seen in campaign X; see report externalId=5f0c6a2e-1d2b-4c3a-9e8f-0a1b2c3d4e5f act=add deviceCustomDate1=1747440000000 deviceCustomDate1Label=firstSeen deviceCustomDate2=1748781000000 deviceCustomDate2Label=lastSeen rt=1747440000000"
            ),
            0
        )
    );
}

/// The shape every remaining `extended` golden shares: id, confidence, feed, both dates.
fn ext_typical(ty: &str, value: &str) -> Value {
    json!({"id": "ioc-1", "type": ty, "value": value, "confidence": "medium",
           "first_seen": "2025-05-17T00:00:00Z", "last_seen": "2025-06-01T12:30:00Z",
           "source": {"feed_name": "F", "origin": "feed"}})
}

fn ext_tail(act: &str) -> String {
    format!("cs1=medium cs1Label=confidence cs2=F cs2Label=source flexString1=feed flexString1Label=origin externalId=ioc-1 act={act} deviceCustomDate1=1747440000000 deviceCustomDate1Label=firstSeen deviceCustomDate2=1748781000000 deviceCustomDate2Label=lastSeen rt=1747440000000")
}

#[test]
fn extended_ipv6_goes_to_c6a1_with_its_label() {
    assert_eq!(
        ext(ext_typical("ipv6", "2001:db8::1"), Act::Update).0,
        format!(
            "{H}ipv6|Malicious IPv6 Indicator|6|c6a1=2001:db8::1 c6a1Label=indicator {}",
            ext_tail("update")
        )
    );
}

#[test]
fn extended_domain_goes_to_dhost() {
    assert_eq!(
        ext(ext_typical("domain", "evil.example.com"), Act::Add).0,
        format!(
            "{H}domain|Malicious Domain Indicator|6|dhost=evil.example.com {}",
            ext_tail("add")
        )
    );
}

#[test]
fn extended_url_goes_to_request() {
    assert_eq!(
        ext(ext_typical("url", "https://evil.example/x?a=1"), Act::Add).0,
        format!(
            r"{H}url|Malicious URL Indicator|6|request=https://evil.example/x?a\=1 {}",
            ext_tail("add")
        )
    );
}

#[test]
fn extended_hashes_go_to_file_hash() {
    for (ty, label, h) in [
        ("md5", "MD5 Hash", MD5),
        ("sha1", "SHA1 Hash", SHA1),
        ("sha256", "SHA256 Hash", SHA256),
        ("sha512", "SHA512 Hash", SHA512),
    ] {
        assert_eq!(
            ext(ext_typical(ty, h), Act::Add),
            (
                format!(
                    "{H}{ty}|Malicious {label} Indicator|6|fileHash={h} {}",
                    ext_tail("add")
                ),
                0
            )
        );
    }
}

#[test]
fn extended_email_goes_to_duser() {
    assert_eq!(
        ext(ext_typical("email", "phish@example.com"), Act::Add).0,
        format!(
            "{H}email|Malicious Email Indicator|6|duser=phish@example.com {}",
            ext_tail("add")
        )
    );
}

#[test]
fn extended_cve_goes_to_cs6() {
    assert_eq!(
        ext(ext_typical("cve", "CVE-2024-3400"), Act::Add).0,
        format!(
            "{H}cve|Malicious CVE Indicator|6|cs6=CVE-2024-3400 cs6Label=indicator {}",
            ext_tail("add")
        )
    );
}

#[test]
fn extended_mitre_attack_both_spellings_go_to_cs6() {
    for ty in ["mitre-attack", "mitre_attack"] {
        assert_eq!(
            ext(ext_typical(ty, "T1566.001"), Act::Add).0,
            format!(
                "{H}{ty}|Malicious MITRE ATT&CK Technique Indicator|6|cs6=T1566.001 cs6Label=indicator {}",
                ext_tail("add")
            )
        );
    }
}

#[test]
fn extended_unknown_type_goes_to_cs6_with_the_generic_name() {
    assert_eq!(
        ext(ext_typical("ja3", "e7d705a3286e19ea42f587b344ee6865"), Act::Add).0,
        format!(
            "{H}ja3|Malicious Indicator|6|cs6=e7d705a3286e19ea42f587b344ee6865 cs6Label=indicator {}",
            ext_tail("add")
        )
    );
}

#[test]
fn extended_address_types_take_only_addresses_in_their_typed_keys() {
    // A CIDR range in `src` or a bracketed IPv6 in `c6a1` breaks ArcSight's typed fields.
    assert_eq!(
        ext(
            json!({"type": "ipv4", "value": "198.51.100.0/24"}),
            Act::Add
        )
        .0,
        format!(
            "{H}ipv4|Malicious IPv4 Indicator|3|cs6=198.51.100.0/24 cs6Label=indicator act=add"
        )
    );
    assert_eq!(
        ext(json!({"type": "ipv6", "value": "[2001:db8::1]"}), Act::Add).0,
        format!("{H}ipv6|Malicious IPv6 Indicator|3|cs6=[2001:db8::1] cs6Label=indicator act=add")
    );
    assert_eq!(
        ext(json!({"type": "ipv4", "value": " 192.0.2.1 "}), Act::Add).0,
        format!("{H}ipv4|Malicious IPv4 Indicator|3|src=192.0.2.1 act=add")
    );
}

#[test]
fn extended_minimal_indicator_has_only_the_value_and_act() {
    assert_eq!(
        ext(json!({"type": "domain", "value": "a.example"}), Act::Update),
        (
            format!("{H}domain|Malicious Domain Indicator|3|dhost=a.example act=update"),
            0
        )
    );
}

#[test]
fn extended_arcsight_length_limits_cut_at_a_character_boundary_and_are_counted() {
    // externalId 40, fileHash 255, request/dhost/duser/msg/cat 1023, cs1-cs6 4000 (bytes).
    let id = "0123456789".repeat(4) + "X";
    let v = json!({"id": id, "type": "sha256", "value": "f".repeat(300),
                   "context": format!("{}€tail", "m".repeat(1021)),
                   "source": {"feed_name": "s".repeat(4001), "category": "c".repeat(1023)}});
    let (line, cuts) = ext(v, Act::Add);
    assert_eq!(
        line,
        format!(
            "{H}sha256|Malicious SHA256 Hash Indicator|3|fileHash={} cs2={} cs2Label=source cat={} msg={} externalId={} act=add",
            "f".repeat(255),
            "s".repeat(4000),
            "c".repeat(1023),
            "m".repeat(1021),
            "0123456789".repeat(4)
        )
    );
    assert_eq!(
        cuts, 4,
        "fileHash, cs2, msg, externalId were cut; cat fits exactly"
    );

    // A cut that would end on a space drops it: the value must not end with a space.
    let v = json!({"type": "url", "value": format!("http://x/{} tail", "u".repeat(1013))});
    let (line, cuts) = ext(v, Act::Add);
    assert_eq!(
        line,
        format!(
            "{H}url|Malicious URL Indicator|3|request=http://x/{} act=add",
            "u".repeat(1013)
        )
    );
    assert_eq!(cuts, 1);
}

#[test]
fn extended_tags_and_techniques_join_with_commas_and_escape_like_any_value() {
    let v = json!({"type": "domain", "value": "a.example", "tags": ["a=b", "c\\d", "e|f"],
                   "mitre_techniques": ["T1"]});
    assert_eq!(
        ext(v, Act::Add).0,
        format!(
            r"{H}domain|Malicious Domain Indicator|3|dhost=a.example cs3=a\=b,c\\d,e|f cs3Label=tags cs4=T1 cs4Label=mitreTechniques act=add"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Lifecycle events: the indicator's own line, Name `Expired`/`Revoked` (refresh keeps
// `Malicious`), `act`, and for expire and revoke `end`. Profile `socdefenders` appends them
// after `rt`; `extended` has `act` in its place already and appends `end`.

/// 2026-05-17T08:00:00Z = 1779004800000 ms.
const EXPIRED_AT: &str = "2026-05-17T08:00:00Z";
/// 2026-05-17T08:00:00.123Z = 1779004800123 ms.
const REVOKED_AT: &str = "2026-05-17T08:00:00.123Z";

/// Encodes a lifecycle event (ended at `end`) with the library API; checks it is strict CEF,
/// nothing was cut, and relabelling the indicator's queued add or update line gives the same
/// line (the live set writes lifecycle lines from the stored line).
fn lifecycle_with(v: Value, action: Lifecycle, end: Option<&str>, profile: CefProfile) -> String {
    let ind = decode::item(&v).expect("an indicator");
    let end = end.map(|e| e.parse().expect("an RFC 3339 time"));
    let o = opts(profile);
    let (line, cuts) = appended(|line| cef::encode_lifecycle(&ind, action, end, &o, line));
    assert_eq!(cuts, 0, "nothing is cut here: {line}");
    for act in [Act::Add, Act::Update] {
        let mut queued = String::new();
        if let (_, Some(at)) = cef::encode_queued(&ind, &o, &mut queued) {
            cef::set_act(&mut queued, at, act);
        }
        let mut relabelled = String::new();
        cef::relabel(&queued, action, end, &mut relabelled).expect("a queued line");
        assert_eq!(relabelled, line, "relabelled from {queued}");
    }
    line
}

/// The lifecycle line with the end the tests use for `action` (none for refresh).
fn lifecycle(v: Value, action: Lifecycle, profile: CefProfile) -> String {
    let end = match action {
        Lifecycle::Expire => Some(EXPIRED_AT),
        Lifecycle::Revoke => Some(REVOKED_AT),
        Lifecycle::Refresh => None,
    };
    lifecycle_with(v, action, end, profile)
}

/// The four indicators of the lifecycle goldens in profile `socdefenders`: ipv4 (the seed's),
/// url (escapes), sha256 (milliseconds in `rt`), and a type without a label.
fn soc_lifecycle_inputs() -> [Value; 4] {
    [
        ind(
            "ipv4",
            "203.0.113.42",
            "high",
            "2025-05-17T00:00:00Z",
            "CISA Alerts",
        ),
        ind(
            "url",
            r"http://malware.example.net/gate.php?id=42&k=a|b\c",
            "medium",
            "2026-01-20T23:59:59Z",
            "URLhaus",
        ),
        ind(
            "sha256",
            SHA256,
            "low",
            "2025-02-28T06:00:00.250Z",
            "ThreatFox",
        ),
        ind(
            "ja3",
            "e7d705a3286e19ea42f587b344ee6865",
            "medium",
            "2025-05-17T00:00:00Z",
            "SSLBL",
        ),
    ]
}

fn assert_soc_lifecycle(action: Lifecycle, want: [String; 4]) {
    for (v, want) in soc_lifecycle_inputs().into_iter().zip(want) {
        assert_eq!(lifecycle(v, action, CefProfile::SocDefenders), want);
    }
}

#[test]
fn socdefenders_expire_lines_say_expired_and_append_act_and_end_after_rt() {
    assert_soc_lifecycle(
        Lifecycle::Expire,
        [
            format!("{H}ipv4|Expired IPv4 Indicator|9|src=203.0.113.42 cs1=high cs1Label=confidence cs2=CISA Alerts cs2Label=source rt=1747440000000 act=expire end=1779004800000"),
            format!(r"{H}url|Expired URL Indicator|6|src=http://malware.example.net/gate.php?id\=42&k\=a|b\\c cs1=medium cs1Label=confidence cs2=URLhaus cs2Label=source rt=1768953599000 act=expire end=1779004800000"),
            format!("{H}sha256|Expired SHA256 Hash Indicator|3|src={SHA256} cs1=low cs1Label=confidence cs2=ThreatFox cs2Label=source rt=1740722400250 act=expire end=1779004800000"),
            format!("{H}ja3|Expired Indicator|6|src=e7d705a3286e19ea42f587b344ee6865 cs1=medium cs1Label=confidence cs2=SSLBL cs2Label=source rt=1747440000000 act=expire end=1779004800000"),
        ],
    );
}

#[test]
fn socdefenders_revoke_lines_say_revoked_and_append_act_and_end_after_rt() {
    assert_soc_lifecycle(
        Lifecycle::Revoke,
        [
            format!("{H}ipv4|Revoked IPv4 Indicator|9|src=203.0.113.42 cs1=high cs1Label=confidence cs2=CISA Alerts cs2Label=source rt=1747440000000 act=revoke end=1779004800123"),
            format!(r"{H}url|Revoked URL Indicator|6|src=http://malware.example.net/gate.php?id\=42&k\=a|b\\c cs1=medium cs1Label=confidence cs2=URLhaus cs2Label=source rt=1768953599000 act=revoke end=1779004800123"),
            format!("{H}sha256|Revoked SHA256 Hash Indicator|3|src={SHA256} cs1=low cs1Label=confidence cs2=ThreatFox cs2Label=source rt=1740722400250 act=revoke end=1779004800123"),
            format!("{H}ja3|Revoked Indicator|6|src=e7d705a3286e19ea42f587b344ee6865 cs1=medium cs1Label=confidence cs2=SSLBL cs2Label=source rt=1747440000000 act=revoke end=1779004800123"),
        ],
    );
}

#[test]
fn socdefenders_refresh_lines_keep_the_name_and_append_only_act() {
    assert_soc_lifecycle(
        Lifecycle::Refresh,
        [
            format!("{H}ipv4|Malicious IPv4 Indicator|9|src=203.0.113.42 cs1=high cs1Label=confidence cs2=CISA Alerts cs2Label=source rt=1747440000000 act=refresh"),
            format!(r"{H}url|Malicious URL Indicator|6|src=http://malware.example.net/gate.php?id\=42&k\=a|b\\c cs1=medium cs1Label=confidence cs2=URLhaus cs2Label=source rt=1768953599000 act=refresh"),
            format!("{H}sha256|Malicious SHA256 Hash Indicator|3|src={SHA256} cs1=low cs1Label=confidence cs2=ThreatFox cs2Label=source rt=1740722400250 act=refresh"),
            format!("{H}ja3|Malicious Indicator|6|src=e7d705a3286e19ea42f587b344ee6865 cs1=medium cs1Label=confidence cs2=SSLBL cs2Label=source rt=1747440000000 act=refresh"),
        ],
    );
}

/// The four indicators of the lifecycle goldens in profile `extended` (the shape of
/// `ext_typical`: every line ends in `ext_tail`).
fn ext_lifecycle_inputs() -> [Value; 4] {
    [
        ext_typical("ipv4", "203.0.113.42"),
        ext_typical("url", "https://evil.example/x?a=1"),
        ext_typical("sha256", SHA256),
        ext_typical("ja3", "e7d705a3286e19ea42f587b344ee6865"),
    ]
}

fn assert_ext_lifecycle(action: Lifecycle, want: [String; 4]) {
    for (v, want) in ext_lifecycle_inputs().into_iter().zip(want) {
        assert_eq!(lifecycle(v, action, CefProfile::Extended), want);
    }
}

#[test]
fn extended_expire_lines_say_expired_set_act_in_place_and_append_end() {
    let tail = format!("{} end=1779004800000", ext_tail("expire"));
    assert_ext_lifecycle(
        Lifecycle::Expire,
        [
            format!("{H}ipv4|Expired IPv4 Indicator|6|src=203.0.113.42 {tail}"),
            format!(r"{H}url|Expired URL Indicator|6|request=https://evil.example/x?a\=1 {tail}"),
            format!("{H}sha256|Expired SHA256 Hash Indicator|6|fileHash={SHA256} {tail}"),
            format!("{H}ja3|Expired Indicator|6|cs6=e7d705a3286e19ea42f587b344ee6865 cs6Label=indicator {tail}"),
        ],
    );
}

#[test]
fn extended_revoke_lines_say_revoked_set_act_in_place_and_append_end() {
    let tail = format!("{} end=1779004800123", ext_tail("revoke"));
    assert_ext_lifecycle(
        Lifecycle::Revoke,
        [
            format!("{H}ipv4|Revoked IPv4 Indicator|6|src=203.0.113.42 {tail}"),
            format!(r"{H}url|Revoked URL Indicator|6|request=https://evil.example/x?a\=1 {tail}"),
            format!("{H}sha256|Revoked SHA256 Hash Indicator|6|fileHash={SHA256} {tail}"),
            format!("{H}ja3|Revoked Indicator|6|cs6=e7d705a3286e19ea42f587b344ee6865 cs6Label=indicator {tail}"),
        ],
    );
}

#[test]
fn extended_refresh_lines_keep_the_name_and_set_act_without_end() {
    let tail = ext_tail("refresh");
    assert_ext_lifecycle(
        Lifecycle::Refresh,
        [
            format!("{H}ipv4|Malicious IPv4 Indicator|6|src=203.0.113.42 {tail}"),
            format!(r"{H}url|Malicious URL Indicator|6|request=https://evil.example/x?a\=1 {tail}"),
            format!("{H}sha256|Malicious SHA256 Hash Indicator|6|fileHash={SHA256} {tail}"),
            format!("{H}ja3|Malicious Indicator|6|cs6=e7d705a3286e19ea42f587b344ee6865 cs6Label=indicator {tail}"),
        ],
    );
}

#[test]
fn lifecycle_end_missing_or_before_1970_is_left_out_and_refresh_never_has_one() {
    let v = || json!({"type": "domain", "value": "a.example"});
    for (action, end, name, act) in [
        (Lifecycle::Expire, None, "Expired", "expire"),
        (
            Lifecycle::Revoke,
            Some("1969-12-31T23:59:59Z"),
            "Revoked",
            "revoke",
        ),
        (Lifecycle::Refresh, Some(EXPIRED_AT), "Malicious", "refresh"),
    ] {
        assert_eq!(
            lifecycle_with(v(), action, end, CefProfile::SocDefenders),
            format!("{H}domain|{name} Domain Indicator|3|src=a.example act={act}")
        );
        assert_eq!(
            lifecycle_with(v(), action, end, CefProfile::Extended),
            format!("{H}domain|{name} Domain Indicator|3|dhost=a.example act={act}")
        );
    }
}
