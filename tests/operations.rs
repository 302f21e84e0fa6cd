//! Operations, end to end against the real binary: SIGHUP reload under a running agent, the
//! Prometheus endpoint after a run, the systemd notify protocol against a socket bound by the
//! test, log format under the journal, and the warning about a world-readable config file that
//! holds the API key.
//!
//! No timing assertions: every wait is a hang guard that fails the test instead of hanging it.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{Duration as CDuration, Utc};
use serde_json::Value;
use support::*;

/// Hang guard for one wait inside a test.
const WAIT: Duration = Duration::from_secs(15);
const SETTLE: Duration = Duration::from_millis(400);

/// Waits until the agent's stderr contains `needle` (or it exits, or `WAIT` passes).
fn wait_log(agent: &mut Agent, needle: &str) -> bool {
    wait_until(WAIT, || {
        agent.stderr().contains(needle) || !agent.is_running()
    }) && agent.stderr().contains(needle)
}

/// An IPv4 indicator whose `last_seen` is now (so every later cycle's `since` window has it).
fn fresh_ipv4(n: usize, value: &str) -> Value {
    let now = iso(now_secs());
    make_indicator(
        &uuid(n),
        "ipv4",
        value,
        "high",
        "2025-05-17T00:00:00Z",
        &now,
    )
}

fn set_of(values: &[String]) -> HashMap<String, usize> {
    values.iter().map(|v| (v.clone(), 1)).collect()
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client and Prometheus text parser
// ---------------------------------------------------------------------------------------------

/// `GET path` on 127.0.0.1:port: (status code, content type, body). `None` when nothing
/// listens yet or the answer is not HTTP.
fn http_get(port: u16, path: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: operations-test\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let ctype = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    Some((status, ctype, body.to_string()))
}

/// `http_get`, retried until the endpoint answers (hang guard `WAIT`).
fn get(port: u16, path: &str) -> (u16, String, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(r) = http_get(port, path) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "nothing answered GET {path} on 127.0.0.1:{port}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let eq = match s[i..].find('=') {
            Some(e) => i + e,
            None => break,
        };
        let key = s[i..eq].trim_start_matches(',').trim().to_string();
        let mut j = eq + 2; // skip `="`
        let mut val = String::new();
        while j < b.len() && b[j] != b'"' {
            if b[j] == b'\\' && j + 1 < b.len() {
                j += 1;
                val.push(match b[j] {
                    b'n' => '\n',
                    c => c as char,
                });
            } else {
                val.push(b[j] as char);
            }
            j += 1;
        }
        out.insert(key, val);
        i = j + 1;
    }
    out
}

/// Every sample of a Prometheus / OpenMetrics text body.
fn samples(body: &str) -> Vec<Sample> {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            Some(Sample {
                name: name.to_string(),
                labels,
                value,
            })
        })
        .collect()
}

/// The value of the series `name{labels}` (exactly these labels), if present.
fn value(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples(body)
        .into_iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// The `# TYPE` of a metric family, if declared.
fn declared_type(body: &str, family: &str) -> Option<String> {
    body.lines().find_map(|l| {
        let rest = l.strip_prefix("# TYPE ")?;
        let (name, ty) = rest.split_once(' ')?;
        (name == family).then(|| ty.trim().to_string())
    })
}

/// Collects mismatches so one run reports every wrong metric, not just the first.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }

    /// `name{labels}` must be present and equal to `want`.
    fn eq(&mut self, body: &str, name: &str, labels: &[(&str, &str)], want: f64) {
        match value(body, name, labels) {
            Some(v) if v == want => {}
            got => self
                .0
                .push(format!("{name}{labels:?}: expected {want}, got {got:?}")),
        }
    }

    fn finish(self, context: &str) {
        assert!(
            self.0.is_empty(),
            "{} metric problem(s):\n  {}\n{context}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

/// What the metrics must show after the reload of `reload_adds_changes_and_keeps_destinations`:
/// the removed destination's events counted as dropped, no series left for the removed ones,
/// the new one up with nothing queued.
fn reload_metric_problems(after: &str, n0: usize) -> Problems {
    let mut p = Problems::default();
    p.eq(
        after,
        "ioc_forwarder_events_dropped_total",
        &[("destination", "echo"), ("reason", "removed")],
        n0 as f64,
    );
    // A removed destination's gauges must not linger: a frozen lag or queue depth keeps lag
    // alerts firing, and `destination_up 0` keeps "destination down" alerts firing, until the
    // process restarts. (Counters such as dropped_total may stay.)
    for gone in ["charlie", "echo"] {
        for name in [
            "ioc_forwarder_queue_events",
            "ioc_forwarder_destination_lag_seconds",
        ] {
            let stale = value(after, name, &[("destination", gone)]);
            p.check(
                stale.is_none() || stale == Some(0.0),
                format!(
                    "{name}{{destination=\"{gone}\"}} = {stale:?} after {gone} was removed \
                     (expected no series, or 0)"
                ),
            );
        }
        let up = value(
            after,
            "ioc_forwarder_destination_up",
            &[("destination", gone)],
        );
        p.check(
            up.is_none(),
            format!(
                "ioc_forwarder_destination_up{{destination=\"{gone}\"}} = {up:?} after {gone} \
                 was removed (expected no series)"
            ),
        );
    }
    p.eq(
        after,
        "ioc_forwarder_queue_events",
        &[("destination", "delta")],
        0.0,
    );
    p.eq(
        after,
        "ioc_forwarder_destination_up",
        &[("destination", "delta")],
        1.0,
    );
    p
}

// ---------------------------------------------------------------------------------------------
// 1. SIGHUP reload
// ---------------------------------------------------------------------------------------------

#[test]
fn reload_adds_changes_and_keeps_destinations() {
    let now = now_secs();
    let n0 = 5;
    let api = FakeApi::start(ipv4_feed(
        n0,
        now - CDuration::minutes(1),
        Duration::from_secs(1),
    ));
    let a = TcpReceiver::start(Framing::Lf); // untouched
    let b = TcpReceiver::start(Framing::Lf); // changed: lf -> octet-counting, same address
    let c = TcpReceiver::start(Framing::Lf); // removed (live)
    let echo = RefusedPort::new(); // removed (dead, with events queued for it)
    let d = TcpReceiver::start(Framing::Lf); // added
    let metrics_port = reserve_port();
    let dir = tempdir();
    let opts = ConfigOpts {
        shutdown_timeout: "3s".to_string(),
        metrics_port: Some(metrics_port),
        ..ConfigOpts::default()
    };
    let first = [
        Dest::tcp("alpha", a.addr),
        Dest::tcp("bravo", b.addr),
        Dest::tcp("charlie", c.addr),
        Dest::tcp("echo", format!("127.0.0.1:{}", echo.port)),
    ];
    let cfg = write_config_with(dir.path(), &api.base_url(), &first, &opts);

    let mut agent = Agent::spawn(&cfg);
    for (name, rx) in [("alpha", &a), ("bravo", &b), ("charlie", &c)] {
        assert!(
            agent.wait_frames(rx, WAIT, |f| f.len() >= n0),
            "{name} did not get the first {n0} events\n{}",
            tail(&agent.stderr(), 3000)
        );
    }
    // The dead destination holds all n0 events; let the metrics endpoint see it once.
    let (_, _, before) = get(metrics_port, "/metrics");
    assert_eq!(
        value(
            &before,
            "ioc_forwarder_queue_events",
            &[("destination", "echo")]
        ),
        Some(n0 as f64),
        "before the reload the dead destination has every event queued\n{before}"
    );
    thread::sleep(SETTLE);
    assert_eq!(
        a.connection_count(),
        1,
        "alpha: one connection before the reload"
    );
    assert_eq!(
        b.connection_count(),
        1,
        "bravo: one connection before the reload"
    );
    let c_before = c.count();

    // The new config: alpha untouched, bravo re-framed, charlie and echo removed, delta added.
    let second = [
        Dest::tcp("alpha", a.addr),
        Dest::tcp("bravo", b.addr).framing("octet-counting"),
        Dest::tcp("delta", d.addr),
    ];
    write_config_with(dir.path(), &api.base_url(), &second, &opts);
    agent.signal("HUP");
    assert!(
        wait_log(&mut agent, "configuration reloaded"),
        "no `configuration reloaded` log line after SIGHUP\n{}",
        tail(&agent.stderr(), 3000)
    );

    // Removed destinations: their positions and queued events are dropped, and logged.
    let log = agent.stderr();
    let dropped_line = |name: &str| {
        log.lines()
            .find(|l| {
                l.contains("no longer configured") && l.contains(&format!("destination={name}"))
            })
            .map(str::to_string)
    };
    let echo_line = dropped_line("echo").unwrap_or_else(|| {
        panic!(
            "no log line says the removed destination echo was dropped\n{}",
            tail(&log, 3000)
        )
    });
    assert!(
        echo_line.contains(&format!("dropped={n0}")),
        "the log counts echo's {n0} queued events: {echo_line}"
    );
    let charlie_line = dropped_line("charlie").unwrap_or_else(|| {
        panic!(
            "no log line says the removed destination charlie was dropped\n{}",
            tail(&log, 3000)
        )
    });
    assert!(
        !charlie_line.contains("dropped=") || charlie_line.contains("dropped=0"),
        "charlie had everything delivered, nothing may be counted as dropped: {charlie_line}"
    );

    // Events committed after the reload.
    let new_values: Vec<String> = (0..4).map(|i| format!("192.0.2.{}", 10 + i)).collect();
    {
        let mut feed = api.feed.lock().unwrap();
        for (i, v) in new_values.iter().enumerate() {
            feed.push(fresh_ipv4(1000 + i, v));
        }
    }
    let b_new = |rx: &TcpReceiver| -> Vec<String> {
        // Connection 2 (after the reload) must be octet-counted; connection 1 was LF.
        rx.raw()
            .get(1)
            .map(|bytes| match parse_octet_counted(bytes) {
                Ok((frames, _)) => frames
                    .into_iter()
                    .map(|f| String::from_utf8_lossy(&f).into_owned())
                    .collect(),
                Err(e) => panic!(
                    "bravo's connection after the reload is not octet-counted ({e}): {:?}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            })
            .unwrap_or_default()
    };
    let all_new =
        |want: usize| a.count() >= n0 + want && d.count() >= want && b_new(&b).len() >= want;
    assert!(
        wait_until(WAIT, || all_new(new_values.len()) || !agent.is_running()) && all_new(4),
        "new events did not reach alpha ({}), bravo ({}) and delta ({})\n{}",
        a.count(),
        b_new(&b).len(),
        d.count(),
        tail(&agent.stderr(), 3000)
    );
    thread::sleep(SETTLE);

    let want_new = set_of(&new_values);
    // alpha: the same connection carried old and new events.
    assert_eq!(
        a.connection_count(),
        1,
        "alpha's settings did not change, so it keeps its connection\n{}",
        tail(&agent.stderr(), 3000)
    );
    let a_vals = value_counts(&a.frames());
    assert_eq!(
        a.count(),
        n0 + new_values.len(),
        "alpha: each event once: {a_vals:?}"
    );
    assert!(
        new_values.iter().all(|v| a_vals.get(v) == Some(&1)),
        "alpha got the new events: {a_vals:?}"
    );
    // bravo: a new connection with the new framing, carrying the new events (and no replay
    // of events it had before: the old task stopped gracefully and recorded its position).
    assert_eq!(
        b.connection_count(),
        2,
        "bravo's framing changed, so it reconnects once\n{}",
        tail(&agent.stderr(), 3000)
    );
    let b_lf_old = {
        let raw = b.raw();
        let first = String::from_utf8_lossy(&raw[0]).into_owned();
        first.lines().map(str::to_string).collect::<Vec<_>>()
    };
    assert_eq!(
        b_lf_old.len(),
        n0,
        "bravo's first connection: the first events, LF-framed"
    );
    assert_eq!(
        value_counts(&b_new(&b)),
        want_new,
        "bravo's new connection carries exactly the new events, octet-counted"
    );
    // charlie: removed, nothing new, no reconnect.
    assert_eq!(
        c.count(),
        c_before,
        "charlie was removed and got nothing new"
    );
    assert_eq!(c.connection_count(), 1, "charlie was not reconnected");
    // delta: only events committed after the reload (new destinations start at the end).
    assert_eq!(
        value_counts(&d.frames()),
        want_new,
        "delta gets exactly the events committed after it was added"
    );

    // Metrics: the drop is counted, and the removed destinations' queue series do not linger.
    // The queue gauges are read from the store at most once a second, so the scrape is repeated
    // until it shows the state after the reload (or WAIT runs out and the problems are shown).
    let deadline = std::time::Instant::now() + WAIT;
    let (after, p) = loop {
        let after = get(metrics_port, "/metrics").2;
        let p = reload_metric_problems(&after, n0);
        if p.0.is_empty() || std::time::Instant::now() >= deadline {
            break (after, p);
        }
        thread::sleep(Duration::from_millis(200));
    };

    // An invalid config is rejected and the running one keeps delivering.
    let misspelt = ConfigOpts {
        source_extra: "pol_interval = \"1s\"".to_string(),
        ..opts.clone()
    };
    write_config_with(dir.path(), &api.base_url(), &second, &misspelt);
    agent.signal("HUP");
    assert!(
        wait_log(&mut agent, "rejected"),
        "no `rejected` log line after SIGHUP with an unknown key\n{}",
        tail(&agent.stderr(), 3000)
    );
    let log = agent.stderr();
    let rejected: Vec<&str> = log.lines().filter(|l| l.contains("rejected")).collect();
    assert!(
        rejected.iter().any(|l| l.contains("pol_interval")),
        "the rejection names the unknown key: {rejected:?}"
    );
    let later: Vec<String> = (0..2).map(|i| format!("192.0.2.{}", 50 + i)).collect();
    {
        let mut feed = api.feed.lock().unwrap();
        for (i, v) in later.iter().enumerate() {
            feed.push(fresh_ipv4(2000 + i, v));
        }
    }
    let total_new = new_values.len() + later.len();
    assert!(
        wait_until(WAIT, || all_new(total_new) || !agent.is_running()) && all_new(total_new),
        "after the rejected reload the old config stopped delivering: alpha {}, bravo {}, delta {}\n{}",
        a.count(),
        b_new(&b).len(),
        d.count(),
        tail(&agent.stderr(), 3000)
    );
    thread::sleep(SETTLE);
    assert_eq!(
        a.connection_count(),
        1,
        "alpha still on its first connection"
    );
    assert_eq!(
        b.connection_count(),
        2,
        "bravo not reconnected by a rejected reload"
    );
    assert_eq!(
        d.connection_count(),
        1,
        "delta not reconnected by a rejected reload"
    );
    assert_eq!(c.count(), c_before, "charlie stays removed");

    let status = agent.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM\n{}",
        tail(&agent.stderr(), 3000)
    );
    // Checked last so that a metrics problem does not hide the reload behaviour above.
    p.finish(&format!(
        "--- /metrics after the reload ---\n{}",
        tail(&after, 3000)
    ));
}

// ---------------------------------------------------------------------------------------------
// 2. Metrics and health
// ---------------------------------------------------------------------------------------------

/// The documented metric names (README "Metrics and health") with their Prometheus types
/// (counters without `_total`, as the
/// OpenMetrics `# TYPE` line names the family).
const DOCUMENTED_METRICS: &[(&str, &str)] = &[
    ("ioc_forwarder_indicators_fetched", "counter"),
    ("ioc_forwarder_indicators_skipped", "counter"),
    ("ioc_forwarder_events_enqueued", "counter"),
    ("ioc_forwarder_events_delivered", "counter"),
    ("ioc_forwarder_events_dropped", "counter"),
    ("ioc_forwarder_events_truncated", "counter"),
    ("ioc_forwarder_queue_events", "gauge"),
    ("ioc_forwarder_queue_bytes", "gauge"),
    ("ioc_forwarder_destination_up", "gauge"),
    ("ioc_forwarder_source_errors", "counter"),
    ("ioc_forwarder_poll_duration_seconds", "histogram"),
    (
        "ioc_forwarder_last_successful_poll_timestamp_seconds",
        "gauge",
    ),
    ("ioc_forwarder_destination_lag_seconds", "gauge"),
    ("ioc_forwarder_tls_certificate_expiry_seconds", "gauge"),
];

/// Several types, one unknown type (forwarded, counted as `other`) and one item without a
/// value (skipped, counted as `no_value`).
fn mixed_feed() -> Vec<Value> {
    let t = |m: i64| iso(now_secs() - CDuration::minutes(m));
    let mut feed = vec![
        make_indicator(&uuid(1), "ipv4", "203.0.113.1", "high", &t(60), &t(1)),
        make_indicator(&uuid(2), "ipv4", "203.0.113.2", "medium", &t(60), &t(2)),
        make_indicator(&uuid(3), "ipv4", "203.0.113.3", "low", &t(60), &t(3)),
        make_indicator(&uuid(4), "domain", "evil.example", "high", &t(60), &t(4)),
        make_indicator(&uuid(5), "domain", "bad.example", "high", &t(60), &t(5)),
        make_indicator(
            &uuid(6),
            "sha256",
            &"ab".repeat(32),
            "medium",
            &t(60),
            &t(6),
        ),
        make_indicator(
            &uuid(7),
            "weird-type",
            "something odd",
            "low",
            &t(60),
            &t(7),
        ),
    ];
    let mut no_value = make_indicator(&uuid(8), "md5", "", "high", &t(60), &t(8));
    no_value.as_object_mut().unwrap().remove("value");
    feed.push(no_value);
    feed
}

#[test]
fn metrics_match_what_was_delivered() {
    let api = FakeApi::start(mixed_feed());
    let live = TcpReceiver::start(Framing::Lf);
    let dead = RefusedPort::new();
    let metrics_port = reserve_port();
    let dir = tempdir();
    // One poll cycle during the test, so fetched counts are exact (a later cycle re-reads the
    // overlap window and would count the same items again).
    let opts = ConfigOpts {
        poll_interval: "1h".to_string(),
        shutdown_timeout: "2s".to_string(),
        metrics_port: Some(metrics_port),
        ..ConfigOpts::default()
    };
    let dests = [
        Dest::tcp("live", live.addr),
        Dest::tcp("dead", format!("127.0.0.1:{}", dead.port)),
    ];
    let cfg = write_config_with(dir.path(), &api.base_url(), &dests, &opts);
    let forwarded = 7usize;

    let mut agent = Agent::spawn(&cfg);
    assert!(
        agent.wait_frames(&live, WAIT, |f| f.len() >= forwarded),
        "the live destination did not get {forwarded} events\n{}",
        tail(&agent.stderr(), 3000)
    );
    assert_eq!(
        get(metrics_port, "/healthz").0,
        200,
        "/healthz answers 200 while the process runs"
    );
    // Delivered counts acknowledged events: wait until the agent saw the acknowledgements.
    // (If it never settles, the checks below say which value is wrong.)
    wait_until(WAIT, || {
        let body = get(metrics_port, "/metrics").2;
        value(
            &body,
            "ioc_forwarder_events_delivered_total",
            &[("destination", "live")],
        ) == Some(forwarded as f64)
            && value(
                &body,
                "ioc_forwarder_destination_up",
                &[("destination", "dead")],
            )
            .is_some()
    });
    let (status, ctype, body) = get(metrics_port, "/metrics");
    assert_eq!(status, 200, "/metrics status");
    assert!(
        ctype.starts_with("text/plain") || ctype.starts_with("application/openmetrics-text"),
        "/metrics content type: {ctype}"
    );
    if ctype.starts_with("application/openmetrics-text") {
        assert!(
            body.ends_with("# EOF\n"),
            "an OpenMetrics body ends with `# EOF`: {}",
            tail(&body, 300)
        );
    }

    let mut p = Problems::default();
    for (family, ty) in DOCUMENTED_METRICS {
        let got = declared_type(&body, family);
        p.check(
            got.as_deref() == Some(*ty),
            format!("# TYPE {family}: expected {ty}, got {got:?}"),
        );
    }
    // Every sample belongs to a documented family (or to the one addition, the count of
    // values the extended profile cut to ArcSight's limits).
    for s in samples(&body) {
        let known = s.name == "ioc_forwarder_cef_values_cut_total"
            || DOCUMENTED_METRICS.iter().any(|(f, _)| {
                s.name == *f
                    || s.name == format!("{f}_total")
                    || ["_bucket", "_sum", "_count", "_created"]
                        .iter()
                        .any(|suf| s.name == format!("{f}{suf}"))
            });
        p.check(known, format!("sample of an undocumented name: {}", s.name));
    }

    let n = forwarded as f64;
    // Source side.
    for (ty, want) in [
        ("ipv4", 3.0),
        ("domain", 2.0),
        ("sha256", 1.0),
        ("other", 1.0),
    ] {
        p.eq(
            &body,
            "ioc_forwarder_indicators_fetched_total",
            &[("type", ty)],
            want,
        );
    }
    p.eq(
        &body,
        "ioc_forwarder_indicators_skipped_total",
        &[("reason", "no_value")],
        1.0,
    );
    p.eq(&body, "ioc_forwarder_events_enqueued_total", &[], n);
    // Delivery side.
    p.eq(
        &body,
        "ioc_forwarder_events_delivered_total",
        &[("destination", "live")],
        n,
    );
    let dead_delivered = value(
        &body,
        "ioc_forwarder_events_delivered_total",
        &[("destination", "dead")],
    );
    p.check(
        dead_delivered.is_none() || dead_delivered == Some(0.0),
        format!("nothing was delivered to dead, got {dead_delivered:?}"),
    );
    p.eq(
        &body,
        "ioc_forwarder_queue_events",
        &[("destination", "dead")],
        n,
    );
    p.eq(
        &body,
        "ioc_forwarder_queue_events",
        &[("destination", "live")],
        0.0,
    );
    p.eq(
        &body,
        "ioc_forwarder_destination_up",
        &[("destination", "live")],
        1.0,
    );
    p.eq(
        &body,
        "ioc_forwarder_destination_up",
        &[("destination", "dead")],
        0.0,
    );
    match value(
        &body,
        "ioc_forwarder_destination_lag_seconds",
        &[("destination", "dead")],
    ) {
        Some(v) if v > 0.0 => {}
        got => {
            p.0.push(format!("destination_lag_seconds{{dead}} > 0, got {got:?}"))
        }
    }
    p.eq(
        &body,
        "ioc_forwarder_destination_lag_seconds",
        &[("destination", "live")],
        0.0,
    );
    match value(&body, "ioc_forwarder_queue_bytes", &[]) {
        Some(v) if v > 0.0 => {}
        got => p.0.push(format!(
            "queue_bytes > 0 while dead holds events, got {got:?}"
        )),
    }
    // Polling.
    match value(&body, "ioc_forwarder_poll_duration_seconds_count", &[]) {
        Some(v) if v >= 1.0 => {}
        got => {
            p.0.push(format!("poll_duration_seconds_count >= 1, got {got:?}"))
        }
    }
    let inf = value(
        &body,
        "ioc_forwarder_poll_duration_seconds_bucket",
        &[("le", "+Inf")],
    );
    p.check(
        inf == value(&body, "ioc_forwarder_poll_duration_seconds_count", &[]),
        format!("the +Inf bucket equals _count, got {inf:?}"),
    );
    let now = Utc::now().timestamp() as f64;
    match value(
        &body,
        "ioc_forwarder_last_successful_poll_timestamp_seconds",
        &[],
    ) {
        Some(t) if t <= now + 1.0 && now - t <= 60.0 => {}
        got => p.0.push(format!(
            "last_successful_poll_timestamp_seconds within the last minute of {now}, got {got:?}"
        )),
    }
    for kind in ["auth", "rate_limit", "http", "timeout", "decode"] {
        let v = value(
            &body,
            "ioc_forwarder_source_errors_total",
            &[("kind", kind)],
        );
        p.check(
            v.is_none() || v == Some(0.0),
            format!("no source error happened, source_errors_total{{kind={kind}}} = {v:?}"),
        );
    }
    let (ready, _, ready_body) = get(metrics_port, "/readyz");
    p.check(
        ready == 200,
        format!("/readyz after a successful poll: {ready} {ready_body:?}"),
    );
    let context = format!(
        "--- /metrics ---\n{body}\n--- stderr ---\n{}",
        tail(&agent.stderr(), 2000)
    );
    let status = agent.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM\n{}",
        tail(&agent.stderr(), 2000)
    );

    // A source that has failed since the start: alive, but not ready.
    let failing = FakeApi::start(mixed_feed());
    failing.set_fault_rule(|_| Some(Fault::Status(500, "internal_error")));
    let dir2 = tempdir();
    let port2 = reserve_port();
    let opts2 = ConfigOpts {
        poll_interval: "1s".to_string(),
        shutdown_timeout: "1s".to_string(),
        metrics_port: Some(port2),
        ..ConfigOpts::default()
    };
    let cfg2 = write_config_with(
        dir2.path(),
        &failing.base_url(),
        &[Dest::tcp("live", live.addr)],
        &opts2,
    );
    let mut agent2 = Agent::spawn(&cfg2);
    assert!(
        wait_until(WAIT, || failing.request_count() >= 2
            || !agent2.is_running()),
        "the agent never asked the failing API twice\n{}",
        tail(&agent2.stderr(), 2000)
    );
    assert_eq!(
        get(port2, "/healthz").0,
        200,
        "/healthz is 200 while the process runs"
    );
    let (ready, _, ready_body) = get(port2, "/readyz");
    assert_eq!(
        ready,
        503,
        "/readyz with no successful poll ever: {ready_body:?}\n{}",
        tail(&agent2.stderr(), 2000)
    );
    // A failed request may be retried within the cycle; the failed cycle is counted at the
    // latest when it gives up (5 attempts, backoff capped by retry_max = 500ms here).
    let mut body = String::new();
    let counted = wait_until(WAIT, || {
        body = get(port2, "/metrics").2;
        value(
            &body,
            "ioc_forwarder_source_errors_total",
            &[("kind", "http")],
        )
        .is_some_and(|v| v >= 1.0)
    });
    p.check(
        counted,
        format!("HTTP 500s are counted in source_errors_total{{kind=\"http\"}}:\n{body}"),
    );
    let (ready, _, ready_body) = get(port2, "/readyz");
    p.check(
        ready == 503,
        format!("/readyz after a failed cycle and no success ever: {ready} {ready_body:?}"),
    );
    let status = agent2.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM\n{}",
        tail(&agent2.stderr(), 2000)
    );
    // Checked last so that a missing metric does not hide the health checks above.
    p.finish(&context);
}

// ---------------------------------------------------------------------------------------------
// 3. systemd notify protocol
// ---------------------------------------------------------------------------------------------

/// Every datagram received on a `NOTIFY_SOCKET` bound by the test, in order.
struct NotifySocket {
    path: PathBuf,
    got: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind NOTIFY_SOCKET");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let got: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while !s.load(Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    g.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        NotifySocket { path, got, stop }
    }

    /// One entry per `KEY=VALUE` line, in arrival order.
    fn lines(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .flat_map(|d| d.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }

    /// Index of the first `line` at or after `from`.
    fn position(&self, line: &str, from: usize) -> Option<usize> {
        self.lines()
            .iter()
            .skip(from)
            .position(|l| l == line)
            .map(|i| i + from)
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn systemd_gets_ready_status_watchdog_reloading_and_stopping_in_order() {
    let api = FakeApi::start(ipv4_feed(
        5,
        now_secs() - CDuration::minutes(1),
        Duration::from_secs(1),
    ));
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem", rx.addr)]);
    let sock = NotifySocket::bind(dir.path());

    // systemd sets WATCHDOG_PID to the main pid along with WATCHDOG_USEC, and the sd-notify
    // crate only enables the watchdog when WATCHDOG_PID is this process: a shell exports its
    // own pid, then `exec`s the agent, which keeps that pid.
    let mut cmd = command(&cfg, &["run"]);
    let args: Vec<std::ffi::OsString> = std::iter::once(std::ffi::OsString::from(BIN))
        .chain(cmd.get_args().map(|a| a.to_os_string()))
        .collect();
    cmd = {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg("WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$@\"")
            .arg("sh")
            .args(&args);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        sh.stdin(Stdio::null());
        sh
    };
    cmd.env("NOTIFY_SOCKET", &sock.path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID");
    let mut agent = Agent::spawn_cmd(cmd);
    let ctx = |agent: &Agent, sock: &NotifySocket| {
        format!(
            "datagrams: {:?}\nstderr:\n{}",
            sock.lines(),
            tail(&agent.stderr(), 2000)
        )
    };

    assert!(
        wait_until(WAIT, || sock.count("READY=1") >= 1),
        "no READY=1\n{}",
        ctx(&agent, &sock)
    );
    assert!(
        agent.wait_frames(&rx, WAIT, |f| f.len() >= 5),
        "events were not delivered\n{}",
        ctx(&agent, &sock)
    );
    let status_ok = |sock: &NotifySocket| {
        sock.lines()
            .iter()
            .any(|l| l.starts_with("STATUS=") && l.contains("poll") && l.contains("queue"))
    };
    assert!(
        wait_until(WAIT, || status_ok(&sock)),
        "no STATUS= line with the last poll result and the queue\n{}",
        ctx(&agent, &sock)
    );
    let ready_at = sock.position("READY=1", 0).unwrap();
    assert!(
        wait_until(WAIT, || {
            sock.lines()[ready_at..]
                .iter()
                .filter(|l| *l == "WATCHDOG=1")
                .count()
                >= 3
        }),
        "WATCHDOG=1 did not arrive repeatedly with WATCHDOG_USEC=400000\n{}",
        ctx(&agent, &sock)
    );

    // Reload: RELOADING=1, then READY=1 again.
    let mark = sock.lines().len();
    agent.signal("HUP");
    assert!(
        wait_until(WAIT, || {
            sock.position("RELOADING=1", mark)
                .is_some_and(|r| sock.position("READY=1", r + 1).is_some())
        }),
        "after SIGHUP: no RELOADING=1 followed by READY=1\n{}",
        ctx(&agent, &sock)
    );
    let after_reload = sock.lines().len();
    assert!(
        wait_until(WAIT, || sock.position("WATCHDOG=1", after_reload).is_some()),
        "WATCHDOG=1 stopped after the reload\n{}",
        ctx(&agent, &sock)
    );

    // Stop: STOPPING=1 and exit 0.
    let mark = sock.lines().len();
    let status = agent.terminate();
    thread::sleep(SETTLE);
    assert_eq!(
        status.code(),
        Some(0),
        "exit after SIGTERM\n{}",
        ctx(&agent, &sock)
    );
    assert!(
        sock.position("STOPPING=1", mark).is_some(),
        "no STOPPING=1 after SIGTERM\n{}",
        ctx(&agent, &sock)
    );
    // The stop may take shutdown_timeout (5 s here) plus its grace: systemd is asked to wait
    // that long even where the unit's TimeoutStopSec is shorter.
    assert!(
        sock.lines()[mark..]
            .iter()
            .any(|l| l == "EXTEND_TIMEOUT_USEC=10000000"),
        "no EXTEND_TIMEOUT_USEC covering the stop\n{}",
        ctx(&agent, &sock)
    );
    for l in sock.lines() {
        let key = l.split('=').next().unwrap_or("");
        assert!(
            [
                "READY",
                "STATUS",
                "WATCHDOG",
                "RELOADING",
                "STOPPING",
                "EXTEND_TIMEOUT_USEC",
                "MONOTONIC_USEC",
                "MAINPID",
                "ERRNO"
            ]
            .contains(&key),
            "unexpected notify line {l:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Log format
// ---------------------------------------------------------------------------------------------

/// Runs `cmd` to completion with stderr going to `path` (hang guard); returns the exit status
/// and what it wrote.
fn run_to_file(mut cmd: Command, path: &Path, env: &[(&str, String)]) -> (ExitStatus, String) {
    let file = File::create(path).unwrap();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::from(file));
    let mut child = cmd.spawn().expect("spawn ioc-forwarder");
    let status = wait_guarded(&mut child, || {
        std::fs::read_to_string(path).unwrap_or_default()
    });
    (status, std::fs::read_to_string(path).unwrap())
}

/// `2026-05-17T00:00:00...` at the start of a line.
fn starts_with_timestamp(line: &str) -> bool {
    let b = line.trim_start().as_bytes();
    b.len() > 19
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
}

#[test]
fn journal_stream_drops_timestamps() {
    let api = FakeApi::start(ipv4_feed(
        3,
        now_secs() - CDuration::minutes(1),
        Duration::from_secs(1),
    ));
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem", rx.addr)]);

    // Under systemd, JOURNAL_STREAM is `DEV:INODE` of the journal stream that stderr is
    // connected to (systemd.exec(5)). Give the real values of the file stderr goes to, so the
    // test holds whether the agent only checks that the variable is set or also compares it
    // with fstat(2) of stderr as systemd recommends.
    let journal_log = dir.path().join("journal.log");
    File::create(&journal_log).unwrap();
    let meta = std::fs::metadata(&journal_log).unwrap();
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let (status, log) = run_to_file(
        command(&cfg, &["once"]),
        &journal_log,
        &[("JOURNAL_STREAM", stream.clone())],
    );
    assert_eq!(status.code(), Some(0), "once under the journal\n{log}");
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().any(|l| l.contains("INFO")),
        "under the journal the text log still has INFO lines:\n{log}"
    );
    let stamped: Vec<&&str> = lines.iter().filter(|l| starts_with_timestamp(l)).collect();
    assert!(
        stamped.is_empty(),
        "with JOURNAL_STREAM={stream} (stderr's own dev:inode) text lines carry no timestamp \
         (the journal adds its own); these do:\n{stamped:#?}"
    );

    // Not under the journal: every line starts with a timestamp.
    let plain_log = dir.path().join("plain.log");
    let mut cmd = command(&cfg, &["once"]);
    cmd.env_remove("JOURNAL_STREAM");
    let (status, log) = run_to_file(cmd, &plain_log, &[]);
    assert_eq!(status.code(), Some(0), "once\n{log}");
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "once logged nothing");
    let bare: Vec<&&str> = lines.iter().filter(|l| !starts_with_timestamp(l)).collect();
    assert!(
        bare.is_empty(),
        "without JOURNAL_STREAM every text line starts with a timestamp; these do not:\n{bare:#?}"
    );

    // JSON: one object per line.
    let json_log = dir.path().join("json.log");
    let mut cmd = command(&cfg, &["--log-format", "json", "once"]);
    cmd.env_remove("JOURNAL_STREAM");
    let (status, log) = run_to_file(cmd, &json_log, &[]);
    assert_eq!(status.code(), Some(0), "once --log-format json\n{log}");
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "once logged nothing");
    for l in &lines {
        let v: Value = serde_json::from_str(l)
            .unwrap_or_else(|e| panic!("a --log-format json line is not JSON ({e}): {l:?}"));
        assert!(v.is_object(), "each JSON line is an object: {l:?}");
        assert!(
            v.get("level").is_some(),
            "each JSON line has a level: {l:?}"
        );
    }
    assert!(
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v.get("message").and_then(Value::as_str).is_some()),
        "JSON lines carry their message:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Config file permissions
// ---------------------------------------------------------------------------------------------

#[test]
fn world_readable_config_with_key_warns() {
    let api = FakeApi::start(Vec::new());
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem", rx.addr)]);
    let shown = cfg.display().to_string();
    let exposure = |err: &str| err.contains("chmod") || err.contains("readable by");

    // A literal key in a file everyone can read.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_once(&cfg);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let warning: Vec<&str> = err.lines().filter(|l| l.contains("chmod 0640")).collect();
    assert!(
        !warning.is_empty(),
        "a 0644 config holding api_key warns with `chmod 0640`\n{err}"
    );
    assert!(
        warning.iter().any(|l| l.contains(&shown)),
        "the warning names the file {shown}: {warning:?}"
    );
    assert!(
        !err.contains(API_KEY),
        "the key itself never appears in the log\n{err}"
    );

    // The same file, readable by owner and group only.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = run_once(&cfg);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(!exposure(&err), "no permission warning at mode 0640\n{err}");

    // A world-readable file that only names an environment variable holds no secret.
    let opts = ConfigOpts {
        api_key: "${IOC_FORWARDER_TEST_KEY}".to_string(),
        ..ConfigOpts::default()
    };
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem", rx.addr)],
        &opts,
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = command(&cfg, &["once"]);
    cmd.env("IOC_FORWARDER_TEST_KEY", API_KEY);
    let (out, _) = run_cmd(cmd);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        !exposure(&err),
        "no permission warning when the key comes from ${{VAR}}\n{err}"
    );
}
