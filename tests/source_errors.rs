//! Source errors as an operator sees them: the one log line of a refused key, which shows the
//! key exactly as `check-config` does and never more of it; and
//! `ioc_forwarder_source_errors_total{kind}`, which counts every failed API request (also one
//! that is waited out or retried and then succeeds), scraped from a running agent over a real
//! socket.

mod support;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// Hang guard for waits (never asserted as a duration).
const WAIT: Duration = Duration::from_secs(30);

/// A config for `api` with `key` and a destination nobody listens on (nothing gets queued).
fn config_with_key(dir: &Path, api: &FakeApi, key: &str) -> std::path::PathBuf {
    write_config_with(
        dir,
        &api.base_url(),
        &[Dest::tcp("siem1", format!("127.0.0.1:{}", reserve_port()))],
        &ConfigOpts {
            api_key: key.to_string(),
            ..ConfigOpts::default()
        },
    )
}

/// The `api_key` value `check-config` prints for this config.
fn key_as_check_config_shows_it(config: &Path) -> String {
    let out = check_config(config);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("api_key = "))
        .unwrap_or_else(|| panic!("no api_key line in\n{stdout}"));
    line.trim_matches('"').to_string()
}

/// Every run of `len` characters of `key` that `shown` does not contain itself.
fn hidden_pieces(key: &str, shown: &str, len: usize) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    chars
        .windows(len)
        .map(|w| w.iter().collect::<String>())
        .filter(|p| !shown.contains(p.as_str()))
        .collect()
}

#[test]
fn a_refused_key_is_logged_exactly_as_check_config_shows_it() {
    // A short key check-config hides entirely, and a long one it shows the prefix of; the
    // fake API accepts neither.
    for key in ["sk_live_Q7x9Kp", "sk_live_ZZZZsomebody-elses-key"] {
        let api = FakeApi::start(ipv4_feed(3, now_secs(), std::time::Duration::from_secs(1)));
        let dir = tempdir();
        let cfg = config_with_key(dir.path(), &api, key);
        let shown = key_as_check_config_shows_it(&cfg);
        let out = run_once(&cfg);
        assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
        let err = text(&out.stderr);
        let auth: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("invalid_api_key"))
            .collect();
        assert_eq!(auth.len(), 1, "one line for the 401\n{err}");
        assert!(
            auth[0].contains(&format!("refused the key {shown}: HTTP 401")),
            "the 401 line shows the key as check-config does ({shown:?}): {}",
            auth[0]
        );
        for piece in hidden_pieces(key, &shown, 5) {
            assert!(
                !err.contains(&piece) && !text(&out.stdout).contains(&piece),
                "{piece:?} of the key {shown:?} is in the output\n{}",
                describe(&out)
            );
        }
    }
}

/// The value of the sample written exactly as `series` (name and labels), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn errors(body: &str, kind: &str) -> Option<f64> {
    sample(
        body,
        &format!("ioc_forwarder_source_errors_total{{kind=\"{kind}\"}}"),
    )
}

/// Scrapes until `done(body)` holds (or the hang guard passes); returns the last body.
fn scrape_until(port: u16, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let body = scrape(port).unwrap_or_default();
        if done(&body) || Instant::now() >= deadline {
            return body;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The agent's first poll cycle has finished: its duration was observed.
fn polled_once(body: &str) -> bool {
    sample(body, "ioc_forwarder_poll_duration_seconds_count") == Some(1.0)
}

/// `run` against `api`, delivering to `rx`, one poll cycle in the test's lifetime, metrics on
/// `port`.
fn start_agent(dir: &Path, api: &FakeApi, rx: &TcpReceiver, port: u16) -> Agent {
    let cfg = write_config_with(
        dir,
        &api.base_url(),
        &[Dest::tcp("siem1", rx.addr)],
        &ConfigOpts {
            poll_interval: "1h".to_string(),
            metrics_port: Some(port),
            ..ConfigOpts::default()
        },
    );
    Agent::spawn(&cfg)
}

/// Only `kind` (with `n`) among the source error counters.
fn assert_only_counted(body: &str, kind: &str, n: f64, agent: &Agent) {
    for k in ["auth", "rate_limit", "http", "timeout", "decode"] {
        let want = (k == kind).then_some(n);
        assert_eq!(
            errors(body, k),
            want,
            "source_errors_total{{kind={k:?}}}\n{body}\nagent:\n{}",
            tail(&agent.stderr(), 3000)
        );
    }
}

/// One fault served, then the feed: the cycle recovers, delivers the page, and the fault is
/// counted exactly once under `kind`.
fn a_recovered_fault_is_counted_once(fault: Fault, kind: &str) {
    let api = FakeApi::start(ipv4_feed(5, now_secs(), Duration::from_secs(1)));
    api.push_fault(fault);
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let port = reserve_port();
    let mut agent = start_agent(dir.path(), &api, &rx, port);
    assert!(
        agent.wait_frames(&rx, WAIT, |f| f.len() >= 5),
        "the page after the {kind} failure is delivered\n{}",
        tail(&agent.stderr(), 3000)
    );
    let body = scrape_until(port, polled_once);
    assert!(
        sample(
            &body,
            "ioc_forwarder_last_successful_poll_timestamp_seconds"
        )
        .is_some_and(|t| t > 0.0),
        "the cycle succeeded\n{body}"
    );
    assert_only_counted(&body, kind, 1.0, &agent);
    assert_eq!(api.ioc_requests().len(), 2, "{}", api.request_summary());
    agent.terminate();
}

#[test]
fn a_429_waited_out_counts_as_rate_limit_and_the_cycle_succeeds() {
    a_recovered_fault_is_counted_once(
        Fault::RateLimited {
            retry_after: Some(RetryAfter::Secs(1)),
            reset_in: Some(1),
        },
        "rate_limit",
    );
}

#[test]
fn a_503_retried_then_success_counts_as_http_and_the_cycle_succeeds() {
    a_recovered_fault_is_counted_once(Fault::Status(503, "unavailable"), "http");
}

#[test]
fn a_401_counts_once_as_auth() {
    let api = FakeApi::start(ipv4_feed(5, now_secs(), Duration::from_secs(1)));
    api.set_api_key("sk_live_somebody-elses-key-0000");
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let port = reserve_port();
    let mut agent = start_agent(dir.path(), &api, &rx, port);
    // Counted as the request fails; the cycle that failed with it is not counted again.
    let body = scrape_until(port, polled_once);
    assert!(
        polled_once(&body),
        "{body}\n{}",
        tail(&agent.stderr(), 3000)
    );
    let body = scrape(port).unwrap_or_default();
    assert_only_counted(&body, "auth", 1.0, &agent);
    assert_eq!(api.ioc_requests().len(), 1, "{}", api.request_summary());
    agent.terminate();
}
