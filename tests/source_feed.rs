//! The SOC Defenders source against a feed that behaves like a live one, proved on the frames a
//! real TCP receiver got from the real binary: indicators arriving and changing while pages
//! are walked, a server clock hours off the host's, versions, filters and type spellings.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::thread;
use std::time::Duration;

use chrono::{DateTime, Duration as CDuration, Utc};
use serde_json::{json, Value};
use support::*;

const SETTLE: Duration = Duration::from_millis(400);
const WAIT: Duration = Duration::from_secs(15);

fn secs(n: i64) -> CDuration {
    CDuration::seconds(n)
}

/// (src, cs1) of every frame, in arrival order.
fn src_and_confidence(frames: &[String]) -> Vec<(String, String)> {
    frames
        .iter()
        .map(|f| {
            let s = parse_rfc5424(f).unwrap_or_else(|e| panic!("bad frame ({e}): {f:?}"));
            let c = parse_cef(&s.msg).unwrap_or_else(|e| panic!("bad CEF ({e}): {f:?}"));
            (
                c.get("src").unwrap_or_default().to_string(),
                c.get("cs1").unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Runs `once` and waits until the receiver has `want` frames in total.
fn once_until(cfg: &std::path::Path, rx: &TcpReceiver, want: usize) -> std::process::Output {
    let out = run_once(cfg);
    rx.wait_for(want, WAIT);
    thread::sleep(SETTLE);
    out
}

#[test]
fn a_feed_that_moves_while_it_is_paged_loses_nothing_and_repeats_nothing() {
    let g1 = now_secs();
    let n = 250;
    let api = FakeApi::start(ipv4_feed(
        n,
        g1 - CDuration::minutes(1),
        Duration::from_secs(1),
    ));
    api.set_max_limit(100);
    api.set_clock(g1);
    let flip = |c: &Value| json!(if c == &json!("high") { "low" } else { "high" });
    let conf5_before = api.feed.lock().unwrap()[5]["confidence"].clone();
    let conf5_after = flip(&conf5_before);
    let conf120_after = flip(&api.feed.lock().unwrap()[120]["confidence"].clone());
    let new_value = |k: usize| format!("198.51.100.{k}");
    let (c5, c120) = (conf5_after.clone(), conf120_after.clone());
    // Newest first: everything new or re-seen lands at the head and shifts later pages.
    api.set_feed_hook(move |req_no, _req, feed| {
        let fresh = |k: usize, at: DateTime<Utc>| {
            make_indicator(
                &uuid(1000 + k),
                "ipv4",
                &new_value(k),
                "medium",
                "2025-05-17T00:00:00Z",
                &iso(at),
            )
        };
        match req_no {
            // Before page 2: 30 new indicators, one unwalked indicator seen again (it jumps
            // from page 3 to the head), one walked and one about-to-be-served indicator change
            // confidence.
            1 => {
                for k in 0..30 {
                    feed.push(fresh(k, g1 - secs(40) + secs(k as i64)));
                }
                feed[220]["last_seen"] = json!(iso(g1 - secs(5)));
                feed[5]["confidence"] = c5.clone();
                feed[120]["confidence"] = c120.clone();
            }
            // Before page 3: ten more.
            2 => {
                for k in 30..40 {
                    feed.push(fresh(k, g1 - secs(3)));
                }
            }
            _ => {}
        }
    });
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem1", rx.addr)]);

    // Cycle 1: 249 of the 250 versions present at the start are still there when their page
    // is read (item 220's changed before its page was reached; item 120's changed just before).
    let out = once_until(&cfg, &rx, 249);
    assert_exit(&out, 0);
    let first = src_and_confidence(&rx.frames());
    let reqs = api.ioc_requests();
    assert!(
        reqs.len() >= 3 && reqs.iter().skip(1).all(|r| r.offset() > 0),
        "one walk of several pages\n{}",
        api.request_summary()
    );
    let counts = tally(&first.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>());
    let missing: Vec<String> = (0..n)
        .filter(|&i| i != 220)
        .map(ipv4_value)
        .filter(|v| !counts.contains_key(v))
        .collect();
    assert!(missing.is_empty(), "lost while the feed moved: {missing:?}");
    let dups: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).collect();
    assert!(dups.is_empty(), "shifted pages were re-sent: {dups:?}");
    assert_eq!(first.len(), 249, "frames of cycle 1");
    let conf_of = |frames: &[(String, String)], v: &str| -> Vec<String> {
        frames
            .iter()
            .filter(|(s, _)| s == v)
            .map(|(_, c)| c.clone())
            .collect()
    };
    assert_eq!(
        conf_of(&first, &ipv4_value(120)),
        vec![conf120_after.as_str().unwrap().to_string()],
        "item 120 is served once, already changed"
    );

    // Cycle 2 (the server clock a minute on): what arrived or changed during the walk, once.
    api.set_clock(g1 + CDuration::minutes(1));
    let out = once_until(&cfg, &rx, 249 + 42);
    assert_exit(&out, 0);
    let all = src_and_confidence(&rx.frames());
    let second: Vec<(String, String)> = all[249.min(all.len())..].to_vec();
    let got: BTreeSet<String> = second.iter().map(|(s, _)| s.clone()).collect();
    let mut want: BTreeSet<String> = (0..40).map(new_value).collect();
    want.insert(ipv4_value(220));
    want.insert(ipv4_value(5));
    assert_eq!(
        got, want,
        "cycle 2 sends the 40 new indicators, item 220's new last_seen and item 5's new confidence, and nothing else"
    );
    assert_eq!(second.len(), 42, "each once: {second:?}");
    assert_eq!(
        conf_of(&all, &ipv4_value(5)),
        vec![
            conf5_before.as_str().unwrap().to_string(),
            conf5_after.as_str().unwrap().to_string()
        ],
        "both versions of item 5, in order"
    );
}

/// A feed laid out on the server's clock `server_now`: `(label, age)` pairs.
fn aged_feed(server_now: DateTime<Utc>, ages: &[(usize, CDuration)]) -> Vec<Value> {
    ages.iter()
        .map(|(i, age)| {
            make_indicator(
                &uuid(*i),
                "ipv4",
                &ipv4_value(*i),
                "high",
                "2025-05-17T00:00:00Z",
                &iso(server_now - *age),
            )
        })
        .collect()
}

#[test]
fn a_server_clock_three_hours_off_loses_nothing_and_repeats_nothing() {
    for skew_h in [-3i64, 3] {
        let skew = CDuration::hours(skew_h);
        let s = now_secs() + skew;
        // On the server's clock: two near the far edge of a 24 h lookback (a client that
        // trusted its own clock while the server is 3 h behind would cut them off), one
        // outside the window, and recent ones.
        let mut ages = vec![
            (1, CDuration::hours(23)),
            (2, CDuration::minutes(22 * 60 + 30)),
            (3, CDuration::hours(25)),
        ];
        for i in 10..30 {
            ages.push((i, CDuration::minutes(i as i64)));
        }
        let api = FakeApi::start(aged_feed(s, &ages));
        api.set_clock_offset(skew);
        api.set_tier_lookback(CDuration::hours(24));
        let rx = TcpReceiver::start(Framing::Lf);
        let dir = tempdir();
        let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem1", rx.addr)]);

        let out = once_until(&cfg, &rx, 22);
        assert_exit(&out, 0);
        let values: Vec<String> = src_values(&rx.frames());
        let mut want: Vec<String> = [1, 2].into_iter().chain(10..30).map(ipv4_value).collect();
        let mut got = values.clone();
        want.sort();
        got.sort();
        assert_eq!(
            got,
            want,
            "server clock {skew_h:+} h: the window is 24 h on the server's clock\n{}",
            api.request_summary()
        );
        // The walk that committed started from the server's time minus the lookback.
        // The first request could only guess from the host's clock; after its answer the walk
        // restarted from the server's time (that answer's generated_at) minus the lookback.
        let reqs = api.ioc_requests();
        let anchored = (1..reqs.len())
            .find(|&k| reqs[k].since() == Some(reqs[k - 1].clock - CDuration::hours(24)))
            .unwrap_or_else(|| {
                panic!(
                    "no request asked for since = server time - 24 h\n{}",
                    api.request_summary()
                )
            });
        let mut cursor_clock = reqs[anchored].clock;
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("clock differs"),
            "the skew is logged\n{}",
            tail(&stderr, 2000)
        );

        // Further cycles: new indicators on the server's clock, each sent once; the cursor is
        // the server's generated_at minus 5 minutes, never the host's clock.
        let mut total = 22;
        for round in 0..2 {
            let before = api.ioc_requests().len();
            let now_s = api.clock_now();
            {
                let mut feed = api.feed.lock().unwrap();
                for k in 0..5 {
                    let i = 100 + round * 10 + k;
                    feed.push(make_indicator(
                        &uuid(i),
                        "ipv4",
                        &ipv4_value(i),
                        "medium",
                        "2025-05-17T00:00:00Z",
                        &iso(now_s - secs(1 + k as i64)),
                    ));
                }
            }
            total += 5;
            let out = once_until(&cfg, &rx, total);
            assert_exit(&out, 0);
            let reqs: Vec<RecordedRequest> = api.ioc_requests().into_iter().skip(before).collect();
            assert_eq!(
                reqs[0].since(),
                Some(cursor_clock - CDuration::minutes(5)),
                "round {round}: since = the last cycle's generated_at (server clock {}) - 5 min\n{}",
                iso(cursor_clock),
                api.request_summary()
            );
            cursor_clock = reqs[0].clock;
        }
        let counts = value_counts(&rx.frames());
        assert_eq!(counts.len(), total, "every indicator arrived: {counts:?}");
        assert!(
            counts.values().all(|&c| c == 1),
            "server clock {skew_h:+} h: repeats {counts:?}"
        );
    }
}

#[test]
fn a_version_is_id_last_seen_and_confidence() {
    let g1 = now_secs();
    let api = FakeApi::start(ipv4_feed(
        10,
        g1 - CDuration::minutes(1),
        Duration::from_secs(10),
    ));
    api.set_clock(g1);
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem1", rx.addr)]);
    let out = once_until(&cfg, &rx, 10);
    assert_exit(&out, 0);
    assert_eq!(rx.count(), 10);

    let conf = |f: &Vec<Value>, i: usize| f[i]["confidence"].as_str().unwrap().to_string();
    let orig4 = {
        let mut f = api.feed.lock().unwrap();
        let o4 = conf(&f, 4);
        f[1]["last_seen"] = json!(iso(g1 + secs(20))); // seen again: new version
        f[2]["confidence"] = json!(if conf(&f, 2) == "high" { "low" } else { "high" }); // new version
        f[3]["last_seen"] = json!(iso(g1 - CDuration::minutes(2))); // a stale copy: older last_seen
        f[4]["confidence"] = json!(if o4 == "high" { "medium" } else { "high" }); // changes now...
        f[5]["tags"] = json!(["changed", "but", "same", "version"]); // not part of the version
        f[5]["context"] = json!("new context");
        o4
    };
    api.set_clock(g1 + CDuration::minutes(1));
    let out = once_until(&cfg, &rx, 13);
    assert_exit(&out, 0);
    let second = src_values(&rx.frames()[10..]);
    let want: BTreeSet<String> = [1, 2, 4].into_iter().map(ipv4_value).collect();
    assert_eq!(second.iter().cloned().collect::<BTreeSet<_>>(), want);
    assert_eq!(second.len(), 3, "{second:?}");

    // ...and back: the old confidence is again a new version relative to the last one sent.
    api.feed.lock().unwrap()[4]["confidence"] = json!(orig4);
    api.set_clock(g1 + CDuration::minutes(2));
    let out = once_until(&cfg, &rx, 14);
    assert_exit(&out, 0);
    let frames = rx.frames();
    let third = src_and_confidence(&frames[13..]);
    assert_eq!(third, vec![(ipv4_value(4), orig4.clone())]);
    // An unchanged feed on a fourth cycle sends nothing.
    api.set_clock(g1 + CDuration::minutes(3));
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    thread::sleep(SETTLE);
    assert_eq!(rx.count(), 14, "nothing new, nothing sent");
}

/// A 200 page with exactly `items` (no `generated_at`: the server's time comes from `Date`).
fn raw_page(items: &[Value]) -> Fault {
    let body = json!({"meta": {"total": items.len(), "limit": 100, "offset": 0}, "data": items});
    Fault::Raw {
        status: 200,
        content_type: "application/json",
        body: Box::leak(body.to_string().into_boxed_str()),
    }
}

/// One feed item of type `t` (as the API spells it) with a value unique to `i`.
fn typed(i: usize, t: &str, confidence: &str, at: DateTime<Utc>) -> Value {
    let value = match t {
        "ipv4" => format!("10.9.0.{i}"),
        "domain" => format!("d{i}.example.org"),
        "sha256" => format!("{i:064x}"),
        "sha512" => format!("{i:0128x}"),
        "mitre_attack" | "mitre-attack" => format!("T{}", 1000 + i),
        _ => format!("ja3-{i}"),
    };
    make_indicator(
        &uuid(i),
        t,
        &value,
        confidence,
        "2025-05-17T00:00:00Z",
        &iso(at),
    )
}

const TYPES: [&str; 7] = [
    "ipv4",
    "domain",
    "sha256",
    "mitre_attack",
    "mitre-attack",
    "sha512",
    "ja3",
];
const CONFIDENCES: [&str; 3] = ["high", "medium", "low"];

fn mixed_feed(now: DateTime<Utc>) -> Vec<Value> {
    (0..84)
        .map(|i| {
            typed(
                i,
                TYPES[i % TYPES.len()],
                CONFIDENCES[i % 3],
                now - CDuration::minutes(1) - secs(i as i64),
            )
        })
        .collect()
}

/// The MSG (CEF line) of every frame one `once` run delivers with the given filters.
fn delivered_with(api: &FakeApi, types: &[&str], confidence: &[&str]) -> Vec<String> {
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let opts = ConfigOpts {
        source_extra: format!(
            "types = {}\nconfidence = {}\n",
            toml_list(types),
            toml_list(confidence)
        ),
        ..ConfigOpts::default()
    };
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", rx.addr)],
        &opts,
    );
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    thread::sleep(SETTLE);
    rx.frames()
        .iter()
        .map(|f| parse_rfc5424(f).unwrap().msg)
        .collect()
}

#[test]
fn several_filter_values_deliver_the_union_of_single_value_queries() {
    let now = now_secs();
    let api = FakeApi::start(mixed_feed(now));
    api.set_clock(now);
    let types = ["ipv4", "domain", "mitre-attack", "sha512"];
    let confidence = ["high", "low"];

    let before = api.request_count();
    let multi = delivered_with(&api, &types, &confidence);
    let multi_reqs: Vec<RecordedRequest> = api
        .requests()
        .into_iter()
        .skip(before)
        .filter(|r| r.path == "/api/v1/iocs")
        .collect();
    assert!(
        multi_reqs
            .iter()
            .all(|r| r.param("type").is_none() && r.param("confidence").is_none()),
        "several values are filtered locally on one walk\n{}",
        api.request_summary()
    );

    let mut union = BTreeSet::new();
    let mut server_filtered: HashMap<String, bool> = HashMap::new();
    for t in types {
        for c in confidence {
            let before = api.request_count();
            let single = delivered_with(&api, &[t], &[c]);
            let reqs: Vec<RecordedRequest> = api.requests().into_iter().skip(before).collect();
            server_filtered.insert(
                t.to_string(),
                reqs.iter().all(|r| r.param("type") == Some(t)),
            );
            assert!(
                reqs.iter().all(|r| r.param("confidence") == Some(c)),
                "one confidence goes to the server"
            );
            union.extend(single);
        }
    }
    let multi_set: BTreeSet<String> = multi.iter().cloned().collect();
    assert_eq!(multi.len(), multi_set.len(), "no duplicates");
    assert_eq!(
        multi_set, union,
        "types {types:?} × confidence {confidence:?}: one walk with local filters = the union of single-value queries"
    );
    // The union is not trivially empty, and holds both spellings of the MITRE type.
    assert!(multi_set.len() >= 20, "{} lines", multi_set.len());
    for sig in ["|mitre_attack|", "|mitre-attack|", "|sha512|"] {
        assert!(
            multi_set.iter().any(|m| m.contains(sig)),
            "{sig} delivered: {multi_set:#?}"
        );
    }
    assert!(server_filtered["ipv4"] && server_filtered["domain"]);
    // The API spells the MITRE type two ways and documents sha512 on one page only: a single
    // value of those is filtered here, so no spelling is missed.
    assert!(!server_filtered["mitre-attack"] && !server_filtered["sha512"]);
}

#[test]
fn type_spellings_unknown_types_and_sloppy_items_are_all_forwarded() {
    let now = now_secs();
    let at = |m: i64| iso(now - CDuration::minutes(m));
    let items = vec![
        json!({"id": uuid(1), "type": "mitre_attack", "value": "T1071", "confidence": "high", "last_seen": at(1)}),
        json!({"id": uuid(2), "type": "mitre-attack", "value": "T1566", "confidence": "medium", "last_seen": at(2)}),
        json!({"id": uuid(3), "type": "sha512", "value": "ab".repeat(64), "confidence": "low", "last_seen": at(3)}),
        json!({"id": uuid(4), "type": "ja3", "value": "771,4865-4866,0-23", "confidence": "HIGH", "last_seen": at(4)}),
        // Nulls, wrong JSON types, extra fields, no id, no source: still forwarded.
        json!({"type": "domain", "value": "sloppy.example", "confidence": null, "first_seen": "not a date",
               "last_seen": at(5), "source": "a string, not an object", "tags": "one-tag", "extra": {"x": [1, 2]},
               "mitre_techniques": [{"id": "T1071", "name": "Application Layer Protocol"}, null, 5]}),
        json!({"id": 42, "type": null, "value": "no-type.example", "last_seen": at(6)}),
        // No value: skipped, and the page around it is not failed.
        json!({"id": uuid(7), "type": "ipv4", "value": null, "last_seen": at(7)}),
        json!({"id": uuid(8), "type": "ipv4", "last_seen": at(8)}),
        json!("not even an object"),
        json!({"id": uuid(9), "type": "ipv4", "value": "192.0.2.9", "confidence": "high", "last_seen": at(9)}),
    ];
    // Served as one hand-written page, exactly as listed (the fake's own filtering would drop
    // the items that have no last_seen).
    let api = FakeApi::start(vec![]);
    api.push_fault(raw_page(&items));
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem1", rx.addr)]);
    let out = once_until(&cfg, &rx, 7);
    assert_exit(&out, 0);
    let frames = rx.frames();
    let by_src: HashMap<String, Cef> = frames
        .iter()
        .map(|f| {
            let c = parse_cef(&parse_rfc5424(f).unwrap().msg).unwrap();
            (c.get("src").unwrap_or_default().to_string(), c)
        })
        .collect();
    assert_eq!(by_src.len(), 7, "{frames:#?}");
    assert_eq!(frames.len(), 7);
    let mitre = "Malicious MITRE ATT&CK Technique Indicator";
    assert_eq!(by_src["T1071"].header[4..6], ["mitre_attack", mitre]);
    assert_eq!(by_src["T1566"].header[4..6], ["mitre-attack", mitre]);
    assert_eq!(
        by_src[&"ab".repeat(64)].header[4..6],
        ["sha512", "Malicious SHA512 Hash Indicator"]
    );
    assert_eq!(
        by_src["771,4865-4866,0-23"].header[4..6],
        ["ja3", "Malicious Indicator"]
    );
    assert!(by_src.contains_key("sloppy.example"));
    assert!(by_src.contains_key("no-type.example"));
    assert!(by_src.contains_key("192.0.2.9"));
}

#[test]
fn fetched_indicators_are_counted_by_type_and_skipped_ones_by_reason() {
    let now = now_secs();
    let at = |m: i64| iso(now - CDuration::minutes(m));
    let items = vec![
        json!({"id": uuid(1), "type": "mitre_attack", "value": "T1071", "last_seen": at(1)}),
        json!({"id": uuid(2), "type": "mitre-attack", "value": "T1566", "last_seen": at(2)}),
        json!({"id": uuid(3), "type": "ja3", "value": "771,4865", "last_seen": at(3)}),
        json!({"id": uuid(4), "type": "ipv4", "value": "192.0.2.4", "last_seen": at(4)}),
        json!({"id": uuid(5), "type": "ipv4", "last_seen": at(5)}),
        json!(17),
    ];
    let api = FakeApi::start(vec![]);
    api.push_fault(raw_page(&items));
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let port = reserve_port();
    let opts = ConfigOpts {
        metrics_port: Some(port),
        ..ConfigOpts::default()
    };
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", rx.addr)],
        &opts,
    );

    let mut agent = Agent::spawn(&cfg);
    agent.wait_frames(&rx, WAIT, |f| f.len() >= 4);
    thread::sleep(SETTLE);
    let body = scrape(port).expect("/metrics answers");
    agent.terminate();
    for line in [
        "ioc_forwarder_indicators_fetched_total{type=\"mitre-attack\"} 2",
        "ioc_forwarder_indicators_fetched_total{type=\"other\"} 1",
        "ioc_forwarder_indicators_fetched_total{type=\"ipv4\"} 1",
        "ioc_forwarder_indicators_skipped_total{reason=\"no_value\"} 1",
        "ioc_forwarder_indicators_skipped_total{reason=\"malformed\"} 1",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "{line} missing in\n{body}\nagent:\n{}",
            tail(&agent.stderr(), 2000)
        );
    }
    assert_eq!(rx.count(), 4);
}
