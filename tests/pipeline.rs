//! Core pipeline, end to end: a fake SOC Defenders API → the real `ioc-forwarder` binary →
//! real TCP syslog receivers. Every test drives the binary through its command line and
//! checks what arrives on the wire and what the API was asked.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::thread;
use std::time::Duration;

use chrono::{Duration as CDuration, Utc};
use serde_json::json;
use support::*;

const SETTLE: Duration = Duration::from_millis(400);
const WAIT: Duration = Duration::from_secs(15);

fn mins(n: i64) -> CDuration {
    CDuration::minutes(n)
}

/// Requests to the IOC list endpoint made after the first `from` requests of the log.
fn ioc_requests_from(api: &FakeApi, from: usize) -> Vec<RecordedRequest> {
    api.requests()
        .into_iter()
        .skip(from)
        .filter(|r| r.path == "/api/v1/iocs")
        .collect()
}

/// Tally of `src` values that arrived beyond the first `skip` frames.
fn new_values(rx: &TcpReceiver, skip: usize) -> HashMap<String, usize> {
    let frames = rx.frames();
    value_counts(&frames[skip.min(frames.len())..])
}

#[test]
fn every_indicator_reaches_the_tcp_receiver_exactly_once() {
    let now = now_secs();
    let api = FakeApi::start(ipv4_feed(250, now - mins(1), Duration::from_secs(1)));
    api.set_max_limit(100);
    api.set_clock(now);
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    // page_size 1000 > the server's cap of 100: the client must keep paging on meta.limit.
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem1", rx.addr)]);

    let out = run_once(&cfg);
    assert_exit(&out, 0);
    rx.wait_for(250, WAIT);
    thread::sleep(SETTLE);

    let frames = rx.frames();
    let counts = value_counts(&frames);
    let missing: Vec<String> = (0..250)
        .map(ipv4_value)
        .filter(|v| !counts.contains_key(v))
        .collect();
    let dups: Vec<(&String, &usize)> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(missing.is_empty(), "values never delivered: {missing:?}");
    assert!(dups.is_empty(), "values delivered more than once: {dups:?}");
    assert_eq!(frames.len(), 250, "frame count");

    let reqs = api.ioc_requests();
    assert!(!reqs.is_empty(), "no request reached /api/v1/iocs");
    assert_eq!(
        reqs[0].param("limit"),
        Some("1000"),
        "the first page asks for page_size\n{}",
        api.request_summary()
    );
    let offsets: BTreeSet<usize> = reqs.iter().map(|r| r.offset()).collect();
    for o in [0, 100, 200] {
        assert!(
            offsets.contains(&o),
            "offset {o} never requested\n{}",
            api.request_summary()
        );
    }
    assert!(
        offsets.is_subset(&[0, 100, 200, 300].into_iter().collect()),
        "unexpected offsets {offsets:?}\n{}",
        api.request_summary()
    );
    for r in &reqs {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {API_KEY}").as_str()),
            "every request carries the Bearer key"
        );
        assert!(
            r.param("api_key").is_none(),
            "the key must never go in the query string"
        );
    }
}

/// A backfill does not wait for its last page before delivering: each page goes out as soon
/// as it is committed. The API holds the second page for a minute; the first page's events
/// must reach the receiver meanwhile (no timing is asserted: the process is still waiting on
/// that request when they arrive, and is killed then).
#[test]
fn each_page_is_delivered_as_soon_as_it_is_committed() {
    let now = now_secs();
    let api = FakeApi::start(ipv4_feed(25, now - mins(1), Duration::from_secs(1)));
    api.set_max_limit(10);
    api.set_clock(now);
    api.set_fault_rule(|r| (r.offset() >= 10).then_some(Fault::Delay(Duration::from_secs(60))));
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let opts = ConfigOpts {
        request_timeout: "120s".to_string(),
        ..ConfigOpts::default()
    };
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", rx.addr)],
        &opts,
    );
    let mut once = Agent::spawn_cmd(command(&cfg, &["once"]));
    let got = rx.wait_for(10, WAIT);
    let offsets: Vec<usize> = api.ioc_requests().iter().map(|r| r.offset()).collect();
    assert!(
        once.is_running(),
        "once ended before the held page was served: {}",
        once.stderr()
    );
    assert_eq!(
        got,
        10,
        "the first page was not delivered while the second was held (requests at offsets {offsets:?}): {}",
        once.stderr()
    );
    assert_eq!(
        offsets,
        vec![0, 10],
        "the second page is the one being held"
    );
    once.kill9();
}

/// The golden feed: five types, distinct `last_seen` so the served order (newest first) is
/// the order of `tests/fixtures/golden_frames.txt`.
fn golden_feed() -> Vec<serde_json::Value> {
    let now = now_secs();
    let at = |m: i64| iso(now - mins(m));
    let mut items = vec![
        make_indicator(
            &uuid(1),
            "ipv4",
            "203.0.113.42",
            "high",
            "2025-05-17T00:00:00Z",
            &at(1),
        ),
        make_indicator(
            &uuid(2),
            "domain",
            "update-check.example.org",
            "medium",
            "2025-06-01T12:30:00Z",
            &at(2),
        ),
        make_indicator(
            &uuid(3),
            "url",
            "http://malware.example.net/gate.php?id=42&k=a|b",
            "low",
            "2025-11-03T08:15:30Z",
            &at(3),
        ),
        make_indicator(
            &uuid(4),
            "sha256",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "high",
            "2026-01-20T23:59:59Z",
            &at(4),
        ),
        make_indicator(
            &uuid(5),
            "cve",
            "CVE-2024-3400",
            "medium",
            "2024-12-31T00:00:01Z",
            &at(5),
        ),
    ];
    items[1]["source"]["feed_name"] = json!("URLhaus");
    items[2]["source"]["feed_name"] = json!("Krebs on Security");
    items[3]["source"]["feed_name"] = json!("ThreatFox");
    items[4]["source"]["feed_name"] = json!("NVD \\ CISA KEV");
    // Shuffle the feed's storage order: the server sorts, the client must not.
    items.swap(0, 3);
    items
}

#[test]
fn frames_match_the_golden_fixture_byte_for_byte() {
    let api = FakeApi::start(golden_feed());
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let opts = ConfigOpts {
        syslog_extra: "facility = \"auth\"\nseverity = \"warning\"\n".to_string(),
        ..ConfigOpts::default()
    };
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", rx.addr)],
        &opts,
    );

    let started = Utc::now();
    let (out, pid) = run_once_with_pid(&cfg);
    assert_exit(&out, 0);
    rx.wait_for(5, WAIT);
    thread::sleep(SETTLE);
    let finished = Utc::now();

    let golden = include_str!("fixtures/golden_frames.txt");
    let expected: Vec<&str> = golden.lines().collect();
    let frames = rx.frames();
    assert_eq!(
        frames.len(),
        expected.len(),
        "frame count; got:\n{}",
        frames.join("\n")
    );

    for (i, (frame, want)) in frames.iter().zip(&expected).enumerate() {
        let parsed = parse_rfc5424(frame)
            .unwrap_or_else(|e| panic!("frame {i} is not RFC 5424 ({e}): {frame:?}"));
        assert!(
            is_rfc3339_micros_utc(&parsed.timestamp),
            "frame {i}: TIMESTAMP {:?} is not RFC 3339 UTC with 6 fractional digits and Z",
            parsed.timestamp
        );
        let ts = parse_time(&parsed.timestamp).unwrap();
        assert!(
            ts >= started - CDuration::seconds(2) && ts <= finished + CDuration::seconds(2),
            "frame {i}: TIMESTAMP {ts} is not from this run ({started} .. {finished})"
        );
        assert!(
            !parsed.procid.is_empty() && parsed.procid.bytes().all(|b| b.is_ascii_digit()),
            "frame {i}: PROCID {:?} is not a number",
            parsed.procid
        );
        assert_eq!(
            parsed.procid,
            pid.to_string(),
            "frame {i}: PROCID is the sender's pid"
        );
        assert!(
            !parsed.msg.starts_with('\u{feff}'),
            "frame {i}: MSG starts with a BOM"
        );

        // Replace exactly the TIMESTAMP and PROCID fields (4th... by position, not by search).
        let mut fields: Vec<&str> = frame.splitn(6, ' ').collect();
        assert_eq!(fields.len(), 6, "frame {i}: too few fields: {frame:?}");
        fields[1] = "TIMESTAMP";
        fields[4] = "PID";
        let normalised = fields.join(" ");
        assert_eq!(
            normalised,
            *want,
            "frame {i} differs from tests/fixtures/golden_frames.txt line {}",
            i + 1
        );
    }
}

/// 20 indicators, one per minute before `g1`, so the 4 newest sit inside the 5-minute overlap
/// that the second poll asks for again.
fn minute_feed(g1: chrono::DateTime<Utc>) -> Vec<serde_json::Value> {
    ipv4_feed(20, g1 - mins(1), Duration::from_secs(60))
}

/// Runs `once` against a fresh receiver and returns (api, receiver, dir, config path) after
/// asserting the first run delivered all 20.
fn first_run(
    g1: chrono::DateTime<Utc>,
) -> (FakeApi, TcpReceiver, tempfile::TempDir, std::path::PathBuf) {
    let api = FakeApi::start(minute_feed(g1));
    api.set_clock(g1);
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem1", rx.addr)]);
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    rx.wait_for(20, WAIT);
    thread::sleep(SETTLE);
    assert_eq!(rx.count(), 20, "first run delivers the whole feed");
    (api, rx, dir, cfg)
}

fn assert_since_is_overlap(reqs: &[RecordedRequest], g1: chrono::DateTime<Utc>, log: &str) {
    assert!(!reqs.is_empty(), "the second run made no request");
    assert_eq!(
        reqs[0].since(),
        Some(g1 - mins(5)),
        "second run's since = first run's generated_at ({}) minus 5 minutes\n{log}",
        iso(g1)
    );
}

#[test]
fn second_once_on_unchanged_feed_sends_nothing() {
    let g1 = now_secs();
    let (api, rx, _dir, cfg) = first_run(g1);

    let before = api.request_count();
    api.set_clock(g1 + mins(1));
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    thread::sleep(SETTLE);

    let reqs = ioc_requests_from(&api, before);
    assert_since_is_overlap(&reqs, g1, &api.request_summary());
    let again = new_values(&rx, 20);
    assert!(
        again.is_empty(),
        "unchanged indicators (4 of them served again in the overlap) were re-sent: {again:?}"
    );
}

#[test]
fn changed_last_seen_is_sent_again() {
    let g1 = now_secs();
    let (api, rx, _dir, cfg) = first_run(g1);

    {
        let mut feed = api.feed.lock().unwrap();
        // Item 7 (last seen 8 minutes before g1) is seen again: a new version.
        feed[7]["last_seen"] = json!(iso(g1 + CDuration::seconds(30)));
        // And a brand-new indicator.
        feed.push(make_indicator(
            &uuid(100),
            "ipv4",
            "198.51.100.7",
            "high",
            "2025-05-17T00:00:00Z",
            &iso(g1 + CDuration::seconds(40)),
        ));
    }
    let before = api.request_count();
    api.set_clock(g1 + mins(1));
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    rx.wait_for(22, WAIT);
    thread::sleep(SETTLE);

    let reqs = ioc_requests_from(&api, before);
    assert_since_is_overlap(&reqs, g1, &api.request_summary());
    let again = new_values(&rx, 20);
    let want: HashMap<String, usize> = [(ipv4_value(7), 1), ("198.51.100.7".to_string(), 1)]
        .into_iter()
        .collect();
    assert_eq!(
        again, want,
        "second run sends exactly the new version and the new indicator"
    );
}

#[test]
fn changed_confidence_is_sent_again() {
    let g1 = now_secs();
    let (api, rx, _dir, cfg) = first_run(g1);

    // Item 1 (2 minutes before g1, inside the overlap) changes confidence only: (id, last_seen,
    // confidence) is a new version.
    let old = api.feed.lock().unwrap()[1]["confidence"].clone();
    let new = if old == json!("high") { "low" } else { "high" };
    api.feed.lock().unwrap()[1]["confidence"] = json!(new);
    api.set_clock(g1 + mins(1));
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    rx.wait_for(21, WAIT);
    thread::sleep(SETTLE);

    let frames = rx.frames();
    assert_eq!(
        frames.len(),
        21,
        "exactly one new frame; got after the first 20:\n{}",
        frames[20.min(frames.len())..].join("\n")
    );
    let cef = parse_cef(&parse_rfc5424(&frames[20]).unwrap().msg).unwrap();
    assert_eq!(cef.get("src"), Some(ipv4_value(1).as_str()));
    assert_eq!(cef.get("cs1"), Some(new));
}

#[test]
fn octet_counting_framing_counts_bytes() {
    let now = now_secs();
    let mut feed = ipv4_feed(8, now - mins(1), Duration::from_secs(10));
    let mut idn = make_indicator(
        &uuid(50),
        "domain",
        "bücher-bestellung.example",
        "medium",
        "2025-05-17T00:00:00Z",
        &iso(now - mins(3)),
    );
    idn["source"]["feed_name"] = json!("Bundesamt für Sicherheit – Lagebericht");
    feed.push(idn);
    feed.push(make_indicator(
        &uuid(51),
        "email",
        "phish@example.com",
        "low",
        "2025-05-17T00:00:00Z",
        &iso(now - mins(4)),
    ));
    let api = FakeApi::start(feed);
    let rx = TcpReceiver::start(Framing::OctetCounting);
    let dir = tempdir();
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", rx.addr).framing("octet-counting")],
    );

    let out = run_once(&cfg);
    assert_exit(&out, 0);
    rx.wait_for(10, WAIT);
    thread::sleep(SETTLE);

    let mut frames = Vec::new();
    for (n, bytes) in rx.raw().iter().enumerate() {
        let (f, partial) = parse_octet_counted(bytes)
            .unwrap_or_else(|e| panic!("connection {n}: not octet-counted ({e})"));
        assert_eq!(
            partial, 0,
            "connection {n}: {partial} bytes left over after the last complete frame"
        );
        frames.extend(f);
    }
    assert_eq!(frames.len(), 10, "frame count");
    for f in &frames {
        let s = String::from_utf8(f.clone()).expect("frame is UTF-8");
        assert!(
            !s.ends_with('\n') && !s.ends_with('\r'),
            "octet-counted frame carries a trailing line ending: {s:?}"
        );
        parse_rfc5424(&s).unwrap_or_else(|e| panic!("bad RFC 5424 ({e}): {s:?}"));
    }
    let idn_frame = frames
        .iter()
        .map(|f| String::from_utf8(f.clone()).unwrap())
        .find(|s| s.contains("bücher-bestellung.example"))
        .expect("the IDN domain arrived verbatim");
    assert!(idn_frame.contains("cs2=Bundesamt für Sicherheit – Lagebericht"));
    // LEN counted octets, not characters: the parse above consumed the stream exactly, and
    // this frame is one where the two differ.
    assert!(idn_frame.len() > idn_frame.chars().count());
    let counts = value_counts(&rx.frames());
    assert_eq!(counts.len(), 10, "ten distinct values: {counts:?}");
    assert!(counts.values().all(|&n| n == 1), "duplicates: {counts:?}");
}

#[test]
fn two_destinations_each_get_everything_and_a_dead_one_does_not_block_the_other() {
    let now = now_secs();
    let n = 30;
    let api = FakeApi::start(ipv4_feed(n, now - mins(1), Duration::from_secs(5)));
    let live = TcpReceiver::start(Framing::Lf);
    let dead_port = reserve_port();
    let dir = tempdir();
    let opts = ConfigOpts {
        shutdown_timeout: "2s".to_string(),
        ..ConfigOpts::default()
    };
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[
            Dest::tcp("live", live.addr),
            Dest::tcp("dead", format!("127.0.0.1:{dead_port}")),
        ],
        &opts,
    );

    let out = run_once(&cfg);
    assert_exit(&out, 3);
    live.wait_for(n, WAIT);
    thread::sleep(SETTLE);
    let got = value_counts(&live.frames());
    assert_eq!(got.len(), n, "the live destination got every value");
    assert_eq!(live.count(), n, "the live destination got each value once");

    // The dead destination comes up; the queued events reach it, and only it.
    let revived = TcpReceiver::start_on(dead_port, Framing::Lf);
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    revived.wait_for(n, WAIT);
    thread::sleep(SETTLE);
    let got = value_counts(&revived.frames());
    let missing: Vec<String> = (0..n)
        .map(ipv4_value)
        .filter(|v| !got.contains_key(v))
        .collect();
    assert!(
        missing.is_empty(),
        "the revived destination is missing {missing:?}"
    );
    assert_eq!(
        live.count(),
        n,
        "the live destination got nothing new on the second run"
    );
}

#[test]
fn receiver_down_at_start_then_up_later_gets_everything() {
    let now = now_secs();
    let n = 50;
    let api = FakeApi::start(ipv4_feed(n, now - mins(1), Duration::from_secs(5)));
    let port = reserve_port();
    let dir = tempdir();
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", format!("127.0.0.1:{port}"))],
    );

    let mut agent = Agent::spawn(&cfg);
    thread::sleep(Duration::from_secs(1));
    let rx = TcpReceiver::start_on(port, Framing::Lf);
    agent.wait_frames(&rx, WAIT, |f| f.len() >= n);
    let got = rx.count();
    assert!(
        agent.is_running(),
        "the agent exited on its own\n{}",
        tail(&agent.stderr(), 3000)
    );
    let status = agent.terminate();
    thread::sleep(SETTLE);
    assert_eq!(
        got,
        n,
        "frames received before SIGTERM\n{}",
        tail(&agent.stderr(), 3000)
    );
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM\n{}",
        tail(&agent.stderr(), 3000)
    );
    let counts = value_counts(&rx.frames());
    assert_eq!(counts.len(), n, "every value arrived");
    assert!(
        counts.values().all(|&c| c == 1),
        "a refused connection never carried data, so nothing is duplicated: {counts:?}"
    );
}

#[test]
fn agent_restarted_mid_delivery_loses_nothing() {
    let now = now_secs();
    let n = 2000;
    let api = FakeApi::start(ipv4_feed(n, now - mins(1), Duration::from_secs(1)));
    api.set_max_limit(1000);
    let rx = TcpReceiver::start_slow(
        Framing::Lf,
        SlowRead {
            chunk: 256,
            pause: Duration::from_millis(2),
        },
    );
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem1", rx.addr)]);

    let mut first = Agent::spawn(&cfg);
    first.wait_frames(&rx, Duration::from_secs(20), |f| f.len() >= 300);
    let before_kill = rx.count();
    assert!(
        before_kill >= 300,
        "only {before_kill} frames arrived before the kill\n{}",
        tail(&first.stderr(), 3000)
    );
    first.kill9();
    eprintln!("killed the first agent after {before_kill} frames had arrived");

    let mut second = Agent::spawn(&cfg);
    let all: BTreeSet<String> = (0..n).map(ipv4_value).collect();
    let complete = second.wait_frames(&rx, Duration::from_secs(40), |frames| {
        let seen: BTreeSet<String> = src_values(frames).into_iter().collect();
        all.is_subset(&seen)
    });
    let seen: BTreeSet<String> = src_values(&rx.frames()).into_iter().collect();
    let missing: Vec<&String> = all.difference(&seen).take(20).collect();
    assert!(
        complete,
        "{} values never arrived, e.g. {missing:?}\nsecond agent:\n{}",
        all.difference(&seen).count(),
        tail(&second.stderr(), 3000)
    );
    assert!(
        second.is_running(),
        "the restarted agent exited on its own\n{}",
        tail(&second.stderr(), 3000)
    );
    let status = second.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM\n{}",
        tail(&second.stderr(), 3000)
    );
}

#[test]
fn api_failure_does_not_move_the_cursor() {
    let g1 = now_secs();
    let n = 250;
    // All older than the 5-minute overlap: a cursor wrongly moved to g1 - 5m would hide them.
    let api = FakeApi::start(ipv4_feed(n, g1 - mins(10), Duration::from_secs(10)));
    api.set_max_limit(100);
    api.set_clock(g1);
    // Every request past the first page fails, retries included.
    api.set_fault_rule(|r| (r.offset() > 0).then_some(Fault::Status(500, "internal_error")));
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let opts = ConfigOpts {
        request_timeout: "2s".to_string(),
        shutdown_timeout: "2s".to_string(),
        ..ConfigOpts::default()
    };
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", rx.addr)],
        &opts,
    );

    let out = run_once(&cfg);
    assert_exit(&out, 1);
    let text_err = text(&out.stderr);
    assert!(
        !text_err.contains("panicked"),
        "a failed poll must not panic\n{}",
        tail(&text_err, 3000)
    );
    thread::sleep(SETTLE);
    let after_first = rx.count();

    // The API recovers. The second run starts from where the first one started.
    api.clear_faults();
    api.set_clock(g1 + mins(1));
    let before = api.request_count();
    let out = run_once(&cfg);
    assert_exit(&out, 0);

    let reqs = ioc_requests_from(&api, before);
    assert!(!reqs.is_empty(), "the second run made no request");
    if let Some(since) = reqs[0].since() {
        assert!(
            since <= Utc::now() - CDuration::hours(23),
            "since = {} after a failed cycle: the cursor moved (first run's generated_at was {})\n{}",
            iso(since),
            iso(g1),
            api.request_summary()
        );
    }
    rx.wait_until(WAIT, |f| value_counts(f).len() >= n);
    let counts = value_counts(&rx.frames());
    let missing: Vec<String> = (0..n)
        .map(ipv4_value)
        .filter(|v| !counts.contains_key(v))
        .collect();
    assert!(
        missing.is_empty(),
        "{} values lost after the failed cycle ({after_first} frames arrived in the first run), e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

#[test]
fn malformed_and_cut_responses_are_retried_and_nothing_is_lost() {
    let now = now_secs();
    let n = 150;
    let api = FakeApi::start(ipv4_feed(n, now - mins(1), Duration::from_secs(1)));
    api.set_max_limit(100);
    api.push_fault(Fault::MalformedJson);
    api.push_fault(Fault::CutConnection);
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let opts = ConfigOpts {
        request_timeout: "2s".to_string(),
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
    rx.wait_for(n, WAIT);
    thread::sleep(SETTLE);
    let counts = value_counts(&rx.frames());
    assert_eq!(counts.len(), n, "every value arrived after the retries");
    assert!(counts.values().all(|&c| c == 1), "duplicates: {counts:?}");
    assert!(
        api.ioc_requests().len() >= 4,
        "two failed attempts plus two pages\n{}",
        api.request_summary()
    );
}

#[test]
fn unauthorized_key_logs_prefix_only() {
    let now = now_secs();
    let api = FakeApi::start(ipv4_feed(5, now - mins(1), Duration::from_secs(5)));
    api.set_api_key("sk_live_ZZZZthe-key-the-server-knows");
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let opts = ConfigOpts {
        shutdown_timeout: "2s".to_string(),
        ..ConfigOpts::default()
    };
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", rx.addr)],
        &opts,
    );

    let out = run_once(&cfg);
    assert_exit(&out, 1);
    let err = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert!(
        err.contains("invalid_api_key"),
        "stderr names the API's error code\n{}",
        tail(&err, 3000)
    );
    assert!(
        err.contains("sk_live_abcd"),
        "stderr shows the key's 12-character prefix\n{}",
        tail(&err, 3000)
    );
    for (name, s) in [("stderr", &err), ("stdout", &stdout)] {
        assert!(!s.contains(API_KEY), "{name} contains the full API key");
        assert!(
            !s.contains("sk_live_abcde"),
            "{name} shows more than the 12-character prefix"
        );
        assert!(!s.contains("panicked"), "{name} shows a panic");
    }
    let reqs = api.ioc_requests();
    assert!(!reqs.is_empty(), "no request was made");
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(rx.count(), 0, "nothing to deliver after a 401");
}
