//! The SOC Defenders source when the API misbehaves, through the real binary: 401/403 (one log
//! line, no retry within the cycle, queued events keep flowing), every transient fault (5xx,
//! timeouts, a stall mid-body, connection errors, truncated or invalid JSON, an HTML page with
//! status 200) retried with backoff without losing anything and without moving the cursor,
//! the lookback warning, and the bound on the seen-versions table.

mod support;

use std::path::Path;
use std::thread;
use std::time::Duration;

use chrono::{Duration as CDuration, Utc};
use support::*;

const SETTLE: Duration = Duration::from_millis(400);
const WAIT: Duration = Duration::from_secs(15);

fn opts() -> ConfigOpts {
    ConfigOpts {
        request_timeout: "1s".to_string(),
        shutdown_timeout: "2s".to_string(),
        ..ConfigOpts::default()
    }
}

fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

// ---------------------------------------------------------------------------------------------
// 401 / 403
// ---------------------------------------------------------------------------------------------

#[test]
fn a_refused_key_is_one_log_line_no_retry_and_queued_events_still_flow() {
    let now = now_secs();
    let n = 20;
    let api = FakeApi::start(ipv4_feed(
        n,
        now - CDuration::minutes(1),
        Duration::from_secs(5),
    ));
    let port = reserve_port();
    let dir = tempdir();
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", format!("127.0.0.1:{port}"))],
        &opts(),
    );
    // The receiver is down: the cycle commits, nothing is delivered.
    let out = run_once(&cfg);
    assert_exit(&out, 3);

    let rx = TcpReceiver::start_on(port, Framing::Lf);
    for (status, code) in [(401, "invalid_api_key"), (403, "insufficient_tier")] {
        if status == 401 {
            // The key was revoked.
            api.set_api_key("sk_live_ZZZZsomebody-elses-key");
        } else {
            api.set_api_key(API_KEY);
            api.push_fault(Fault::Status(403, "insufficient_tier"));
        }
        let before = api.ioc_requests().len();
        let out = run_once(&cfg);
        // The poll failed, but what was queued went out.
        assert_exit(&out, 1);
        let err = text(&out.stderr);
        let auth_lines = lines_with(&err, code);
        assert_eq!(
            auth_lines.len(),
            1,
            "HTTP {status}: one line with the API's error code\n{}",
            tail(&err, 3000)
        );
        assert!(
            auth_lines[0].contains(&format!("HTTP {status}"))
                && auth_lines[0].contains(&API_KEY[..12]),
            "the line names the status, the code and the key's 12-character prefix: {}",
            auth_lines[0]
        );
        assert!(!err.contains(&API_KEY[..13]), "more than the prefix leaked");
        assert_eq!(
            api.ioc_requests().len() - before,
            1,
            "HTTP {status} is not retried within the cycle\n{}",
            api.request_summary()
        );
        if status == 401 {
            rx.wait_for(n, WAIT);
            thread::sleep(SETTLE);
            let counts = value_counts(&rx.frames());
            assert_eq!(
                counts.len(),
                n,
                "the queued events were delivered despite the refused key"
            );
        }
    }
}

#[test]
fn run_tries_a_refused_key_again_only_at_the_next_interval() {
    let now = now_secs();
    let api = FakeApi::start(ipv4_feed(
        5,
        now - CDuration::minutes(1),
        Duration::from_secs(5),
    ));
    api.set_api_key("sk_live_ZZZZsomebody-elses-key");
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let o = ConfigOpts {
        poll_interval: "2s".to_string(),
        ..opts()
    };
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", rx.addr)],
        &o,
    );
    let mut agent = Agent::spawn(&cfg);
    let deadline = std::time::Instant::now() + WAIT;
    while api.ioc_requests().len() < 3 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let status = agent.terminate();
    assert_eq!(status.code(), Some(0));
    let reqs = api.ioc_requests();
    assert!(
        reqs.len() >= 3,
        "the refused cycle is tried again every interval\n{}",
        tail(&agent.stderr(), 3000)
    );
    for w in reqs.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(
            gap >= Duration::from_millis(1900),
            "a refused key was tried again after {gap:?}, before the 2 s interval"
        );
    }
    let err = agent.stderr();
    assert_eq!(
        lines_with(&err, "invalid_api_key").len(),
        reqs.len(),
        "one line per refused cycle\n{}",
        tail(&err, 3000)
    );
}

// ---------------------------------------------------------------------------------------------
// Transient faults
// ---------------------------------------------------------------------------------------------

/// For one kind of fault: (1) two faulty answers in a row are retried and the cycle delivers
/// everything once; (2) a cycle that keeps failing exits 1, does not move the cursor, and the
/// next good cycle asks from the old cursor and delivers what came meanwhile.
fn survives(fault: Fault, log_says: &str) {
    let g1 = now_secs();
    let n = 150;
    // Older than the 5-minute overlap, so a cursor wrongly moved would hide them.
    let api = FakeApi::start(ipv4_feed(
        n,
        g1 - CDuration::minutes(10),
        Duration::from_secs(1),
    ));
    api.set_max_limit(100);
    api.set_clock(g1);
    api.push_faults(fault.clone(), 2);
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", rx.addr)],
        &opts(),
    );

    let out = run_once(&cfg);
    assert_exit(&out, 0);
    rx.wait_for(n, WAIT);
    thread::sleep(SETTLE);
    let counts = value_counts(&rx.frames());
    assert_eq!(counts.len(), n, "{fault:?}: every value after the retries");
    assert_eq!(rx.count(), n, "{fault:?}: each once");
    assert_eq!(
        api.ioc_requests().len(),
        4,
        "{fault:?}: two failed attempts, then two pages\n{}",
        api.request_summary()
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("retrying") && err.contains(log_says),
        "{fault:?}: the retries are logged with the cause ({log_says:?})\n{}",
        tail(&err, 3000)
    );
    assert!(!err.contains("panicked"), "{}", tail(&err, 3000));

    // Cycle 2 fails on every request of its second page: exit 1, the cursor stays.
    {
        let mut feed = api.feed.lock().unwrap();
        for k in 0..120 {
            let i = 500 + k;
            feed.push(make_indicator(
                &uuid(i),
                "ipv4",
                &ipv4_value(i),
                "low",
                "2025-05-17T00:00:00Z",
                &iso(g1 + CDuration::seconds(30)),
            ));
        }
    }
    api.set_clock(g1 + CDuration::minutes(1));
    let f = fault.clone();
    api.set_fault_rule(move |r| (r.offset() > 0).then(|| f.clone()));
    let before = api.ioc_requests().len();
    let out = run_once(&cfg);
    assert_exit(&out, 1);
    let failed: Vec<RecordedRequest> = api.ioc_requests().into_iter().skip(before).collect();
    assert_eq!(
        failed.len(),
        1 + 5,
        "{fault:?}: the first page, then five attempts at the second\n{}",
        api.request_summary()
    );
    assert_eq!(failed[0].since(), Some(g1 - CDuration::minutes(5)));
    let err = text(&out.stderr);
    assert!(
        err.contains("the cursor did not move"),
        "{}",
        tail(&err, 2000)
    );

    // Cycle 3: the API is well again. It asks from the same cursor as cycle 2.
    api.clear_faults();
    api.set_clock(g1 + CDuration::minutes(2));
    let before = api.ioc_requests().len();
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    let reqs: Vec<RecordedRequest> = api.ioc_requests().into_iter().skip(before).collect();
    assert_eq!(
        reqs[0].since(),
        Some(g1 - CDuration::minutes(5)),
        "{fault:?}: the failed cycle did not move the cursor\n{}",
        api.request_summary()
    );
    rx.wait_for(n + 120, WAIT);
    thread::sleep(SETTLE);
    let counts = value_counts(&rx.frames());
    assert_eq!(
        counts.len(),
        n + 120,
        "{fault:?}: nothing lost across the failed cycle"
    );
    assert!(
        counts.values().all(|&c| c == 1),
        "{fault:?}: no value twice"
    );
}

#[test]
fn server_errors_are_retried() {
    survives(Fault::Status(503, "service_unavailable"), "HTTP 503");
}

#[test]
fn a_gateway_error_page_is_retried() {
    survives(
        Fault::Raw {
            status: 502,
            content_type: "text/html",
            body: "<html><body><h1>502 Bad Gateway</h1></body></html>",
        },
        "HTTP 502",
    );
}

#[test]
fn a_stalled_answer_hits_request_timeout_and_is_retried() {
    survives(Fault::Delay(Duration::from_secs(3)), "timed out after 1s");
}

#[test]
fn a_body_that_stalls_halfway_hits_request_timeout_and_is_retried() {
    survives(
        Fault::StallBody(Duration::from_secs(3)),
        "timed out after 1s",
    );
}

#[test]
fn a_closed_connection_is_retried() {
    survives(Fault::Close, "cannot reach the API");
}

#[test]
fn a_truncated_body_is_retried() {
    survives(Fault::CutConnection, "body cut short");
}

#[test]
fn invalid_json_is_retried() {
    survives(Fault::MalformedJson, "invalid JSON");
}

#[test]
fn an_html_page_with_status_200_is_retried() {
    survives(Fault::Html, "instead of JSON");
}

#[test]
fn html_labelled_as_json_is_retried() {
    survives(
        Fault::Raw {
            status: 200,
            content_type: "application/json",
            body: "<!DOCTYPE html><html><body>Please sign in</body></html>",
        },
        "invalid JSON",
    );
}

#[test]
fn nothing_listening_is_retried_and_reported() {
    let refused = RefusedPort::new();
    let port = refused.port;
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config_with(
        dir.path(),
        &format!("http://127.0.0.1:{port}/api/v1"),
        &[Dest::tcp("siem1", rx.addr)],
        &opts(),
    );
    let out = run_once(&cfg);
    assert_exit(&out, 1);
    let err = text(&out.stderr);
    assert_eq!(
        lines_with(&err, "retrying").len(),
        4,
        "five attempts, four retries\n{}",
        tail(&err, 3000)
    );
    assert!(err.contains("cannot reach the API"), "{}", tail(&err, 3000));
    assert!(!err.contains("panicked"));
}

// ---------------------------------------------------------------------------------------------
// Lookback gap
// ---------------------------------------------------------------------------------------------

/// Rewrites the state file as if the last successful cycle had started `hours_ago` (its
/// cursor is that minus the 5-minute overlap) and committed then.
fn pretend_last_poll(state_dir: &Path, hours_ago: i64) {
    let db = rusqlite::Connection::open(state_dir.join("state.db")).unwrap();
    let at = Utc::now() - CDuration::hours(hours_ago);
    let cursor = (at - CDuration::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    db.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'since'",
        [cursor.as_str()],
    )
    .unwrap();
    db.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'last_success_us'",
        [at.timestamp_micros().to_string()],
    )
    .unwrap();
}

#[test]
fn a_gap_longer_than_the_lookback_is_a_warning_that_says_how_many_hours_are_lost() {
    let now = now_secs();
    let api = FakeApi::start(ipv4_feed(
        5,
        now - CDuration::minutes(1),
        Duration::from_secs(5),
    ));
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem1", rx.addr)]);
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    assert!(
        !text(&out.stderr).contains("cannot be recovered"),
        "no warning on the first cycle"
    );

    // Away 20 h with a 24 h lookback: nothing lost, no warning.
    pretend_last_poll(&dir.path().join("state"), 20);
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    let err = text(&out.stderr);
    assert!(!err.contains("cannot be recovered"), "{}", tail(&err, 2000));

    // Away 30 h: 6 hours are beyond what the API can serve.
    pretend_last_poll(&dir.path().join("state"), 30);
    let before = api.ioc_requests().len();
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    let err = text(&out.stderr);
    let warn = lines_with(&err, "cannot be recovered");
    assert_eq!(warn.len(), 1, "{}", tail(&err, 3000));
    assert!(
        warn[0].contains("about 6.0 hours"),
        "the warning says how many hours are lost: {}",
        warn[0]
    );
    // It still asks from its cursor; the API decides what it can serve.
    let reqs = api.ioc_requests();
    let since = reqs[before].since().unwrap();
    let want = Utc::now() - CDuration::hours(30) - CDuration::minutes(5);
    assert!(
        (since - want).num_seconds().abs() < 60,
        "since {since} is the stored cursor"
    );
}

// ---------------------------------------------------------------------------------------------
// The seen-versions table
// ---------------------------------------------------------------------------------------------

/// `once` from cron through a three-day API outage (a Pro key: the API serves far more than
/// the configured 24 h lookback). The versions seen before the outage must survive it: the
/// first good cycle afterwards re-reads everything since the old cursor.
#[test]
fn versions_seen_before_an_outage_are_not_forgotten_during_it() {
    let now = now_secs();
    let old = now - CDuration::hours(60);
    let n = 10;
    let api = FakeApi::start(ipv4_feed(n, old, Duration::from_secs(60)));
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let dests = [Dest::tcp("siem1", rx.addr)];
    // The first cycle reaches back 96 h so it can see indicators last seen 60 h ago.
    let wide = ConfigOpts {
        lookback: "96h".to_string(),
        ..opts()
    };
    let cfg = write_config_with(dir.path(), &api.base_url(), &dests, &wide);
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    rx.wait_for(n, WAIT);

    // Pretend that cycle ran 72 h ago (and its versions were recorded 61 h ago).
    let state = dir.path().join("state");
    pretend_last_poll(&state, 72);
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    db.execute(
        "UPDATE seen_log SET recorded_us = ?1",
        [(Utc::now() - CDuration::hours(61)).timestamp_micros()],
    )
    .unwrap();
    drop(db);

    // Back to the default lookback; the API is down for this cycle.
    let cfg = write_config_with(dir.path(), &api.base_url(), &dests, &opts());
    api.set_fault_rule(|_| Some(Fault::Status(503, "service_unavailable")));
    let out = run_once(&cfg);
    assert_exit(&out, 1);

    // The API is back: it serves everything since the old cursor, the same versions.
    api.clear_faults();
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    thread::sleep(SETTLE);
    assert_eq!(
        rx.count(),
        n,
        "versions seen before the outage were sent again:\n{}",
        rx.frames()[n..].join("\n")
    );
}

#[test]
fn an_api_that_ignores_offset_does_not_page_forever() {
    // A cache in front of the API that keys on the path only: every offset gets page one.
    let now = now_secs();
    let items = ipv4_feed(3, now - CDuration::minutes(1), Duration::from_secs(1));
    let body = serde_json::json!({"meta": {"total": 3000, "limit": 3, "offset": 0}, "data": items});
    let body: &'static str = Box::leak(body.to_string().into_boxed_str());
    let api = FakeApi::start(vec![]);
    api.set_fault_rule(move |_| {
        Some(Fault::Raw {
            status: 200,
            content_type: "application/json",
            body,
        })
    });
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", rx.addr)],
        &opts(),
    );
    let out = run_once(&cfg);
    assert_exit(&out, 1);
    let err = text(&out.stderr);
    assert!(err.contains("same page"), "{}", tail(&err, 3000));
    assert_eq!(
        api.ioc_requests().len(),
        2,
        "page one, then page one again as \"page two\": the cycle stops\n{}",
        api.request_summary()
    );
    rx.wait_for(3, WAIT);
    thread::sleep(SETTLE);
    assert_eq!(rx.count(), 3, "page one was delivered once");
}
