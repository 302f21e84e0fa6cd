//! Checks of the test harness itself (fake API, receivers, parsers, golden fixture), so a
//! failing pipeline test points at the binary and not at the helpers. No binary is run here.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn get(api: &FakeApi, target: &str, auth: Option<&str>) -> (u16, String, Value) {
    let mut s = TcpStream::connect(api.addr).unwrap();
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n", api.addr);
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, head.to_string(), json)
}

#[test]
fn fake_api_pages_filters_and_authenticates() {
    let now = now_secs();
    let api = FakeApi::start(ipv4_feed(250, now, Duration::from_secs(60)));
    api.set_clock(now);
    let bearer = format!("Bearer {API_KEY}");

    let (st, _, body) = get(&api, "/api/v1/iocs", None);
    assert_eq!(st, 401);
    assert_eq!(body["error"]["code"], "missing_api_key");
    let (st, _, body) = get(&api, "/api/v1/iocs", Some("Bearer sk_live_wrong"));
    assert_eq!(st, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");

    let (st, head, body) = get(&api, "/api/v1/iocs?limit=1000&offset=200", Some(&bearer));
    assert_eq!(st, 200);
    assert!(head.contains("X-RateLimit-Remaining: 999"));
    assert_eq!(body["meta"]["limit"], 100);
    assert_eq!(body["meta"]["total"], 250);
    assert_eq!(body["data"].as_array().unwrap().len(), 50);
    assert_eq!(body["data"][0]["value"], ipv4_value(200));
    assert!(body["links"].get("next").is_none());
    assert_eq!(body["meta"]["generated_at"], iso(now));

    let (_, _, body) = get(&api, "/api/v1/iocs?offset=0", Some(&bearer));
    assert!(body["links"]["next"]
        .as_str()
        .unwrap()
        .ends_with("offset=100"));

    // since: strictly newer last_seen; `+00:00` percent-encoded and raw.
    let since = iso(now - chrono::Duration::minutes(5));
    let enc = since.replace('Z', "%2B00:00");
    let (_, _, body) = get(&api, &format!("/api/v1/iocs?since={enc}"), Some(&bearer));
    assert_eq!(body["meta"]["total"], 5, "{body}");
    let raw = since.replace('Z', "+00:00");
    let (_, _, body) = get(&api, &format!("/api/v1/iocs?since={raw}"), Some(&bearer));
    assert_eq!(body["meta"]["total"], 5);
    let (st, _, _) = get(&api, "/api/v1/iocs?since=yesterday", Some(&bearer));
    assert_eq!(st, 400);

    let (_, _, body) = get(
        &api,
        "/api/v1/iocs?confidence=high&type=ipv4",
        Some(&bearer),
    );
    assert_eq!(body["meta"]["total"], 84);

    api.push_fault(Fault::Status(503, "unavailable"));
    let (st, _, _) = get(&api, "/api/v1/iocs", Some(&bearer));
    assert_eq!(st, 503);
    api.set_fault_rule(|r| (r.offset() > 0).then_some(Fault::Status(500, "internal_error")));
    assert_eq!(get(&api, "/api/v1/iocs?offset=0", Some(&bearer)).0, 200);
    assert_eq!(get(&api, "/api/v1/iocs?offset=100", Some(&bearer)).0, 500);
    api.clear_faults();
    api.push_fault(Fault::MalformedJson);
    let (st, _, body) = get(&api, "/api/v1/iocs", Some(&bearer));
    assert_eq!((st, body), (200, Value::Null));

    let reqs = api.ioc_requests();
    assert_eq!(reqs[0].header("Authorization"), None);
    assert_eq!(reqs[2].param("limit"), Some("1000"));
    assert_eq!(reqs[4].since(), Some(now - chrono::Duration::minutes(5)));
}

#[test]
fn receiver_splits_lf_and_octet_counted_frames() {
    let rx = TcpReceiver::start(Framing::Lf);
    let mut c = TcpStream::connect(rx.addr).unwrap();
    c.write_all(b"<36>1 - h a 1 m - one\n<36>1 - h a 1 m - two\n<36>1 - h a 1 m - par")
        .unwrap();
    drop(c);
    let mut c = TcpStream::connect(rx.addr).unwrap();
    c.write_all(b"<36>1 - h a 1 m - three\n").unwrap();
    assert_eq!(rx.wait_for(3, Duration::from_secs(5)), 3);
    assert_eq!(rx.frames()[2], "<36>1 - h a 1 m - three");

    let ok = "7 <1>1 ü5 hello";
    let (frames, partial) = parse_octet_counted(ok.as_bytes()).unwrap();
    assert_eq!(frames, vec![b"<1>1 \xc3\xbc".to_vec(), b"hello".to_vec()]);
    assert_eq!(partial, 0);
    assert_eq!(parse_octet_counted(b"10 abc").unwrap().1, 6);
    assert!(parse_octet_counted(b"abc\n").is_err());
}

#[test]
fn golden_fixture_parses_into_the_seed_fields() {
    let golden = include_str!("fixtures/golden_frames.txt");
    let lines: Vec<&str> = golden.lines().collect();
    assert_eq!(lines.len(), 5);
    let mut srcs = Vec::new();
    for l in &lines {
        // The placeholders are not valid header values; put real ones in for parsing.
        let f = l
            .replacen("TIMESTAMP", "2026-05-17T00:00:00.000000Z", 1)
            .replacen(" PID ", " 4242 ", 1);
        let s = parse_rfc5424(&f).unwrap_or_else(|e| panic!("{e}: {f}"));
        assert_eq!((s.pri, s.facility(), s.severity()), (36, 4, 4));
        assert_eq!(s.hostname, "collector01");
        assert_eq!(s.app_name, "ioc-forwarder");
        assert_eq!(s.structured_data, "-");
        assert!(is_rfc3339_micros_utc(&s.timestamp));
        let cef = parse_cef(&s.msg).unwrap();
        assert_eq!(
            cef.header[1..4],
            ["SOC Defenders", "Threat Intelligence", "1.0"]
        );
        assert_eq!(cef.header[4], s.msgid);
        assert_eq!(
            cef.keys(),
            ["src", "cs1", "cs1Label", "cs2", "cs2Label", "rt"]
        );
        srcs.push(cef.get("src").unwrap().to_string());
        if s.msgid == "cve" {
            assert_eq!(cef.get("cs2"), Some("NVD \\ CISA KEV"));
        }
    }
    assert_eq!(
        srcs[2], "http://malware.example.net/gate.php?id=42&k=a|b",
        "extension unescaping"
    );
    assert!(!is_rfc3339_micros_utc("2026-05-17T00:00:00.000Z"));
    assert!(!is_rfc3339_micros_utc("2026-05-17T00:00:00.000000+00:00"));
    assert!(parse_rfc5424("<36>1 2026-05-17T00:00:00Z h a 1 m [x a=\"b\\]\"][y] msg").is_ok());
    assert!(parse_rfc5424("<192>1 - h a 1 m - msg").is_err());
    assert!(parse_rfc5424("<36>1 - h a 1 m msg").is_err());
    assert!(parse_rfc5424("<36>1 - h\u{e9} a 1 m - msg").is_err());
}
