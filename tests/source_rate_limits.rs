//! Waiting, proved on tokio's paused clock: the library's `ApiClient` against the fake API on a
//! real 127.0.0.1 socket. Rate limits (`X-RateLimit-Remaining: 0` + Reset, 429 with
//! `Retry-After` in seconds or as an HTTP date, or with Reset only), backoff of server errors,
//! the request timeout — all without sleeping for real.
//!
//! How the clock is driven: a paused runtime auto-advances to the next timer whenever it is
//! idle, and it is idle while it waits for a socket — so the request timeout would fire at once.
//! [`Clock::hold`] keeps a blocking task running, which stops auto-advance for the whole test;
//! [`drive`] then lets real time pass in small slices (for the std-thread server and the
//! socket) and advances the virtual clock by [`STEP`] between slices, except for a quiet
//! period after every request (so the client has finished with the answer before time moves).
//!
//! Virtual time can only run ahead of the client, never behind it: a request observed at
//! virtual time T left at T or earlier, and the waits before it were at least what the client
//! slept. So the lower bounds below are exact. On a loaded machine a busy client can fall a few
//! steps behind the clock, so the upper bounds are generous: they only have to tell the right
//! wait from the wrong one (Retry-After 30 s against Reset 300 s, one minute against an hour).

mod support;

use std::future::Future;
use std::time::Duration;

use ioc_forwarder::config::{ApiConfig, Config, SourceKind};
use ioc_forwarder::encode::cef::CefOptions;
use ioc_forwarder::source::prepare::Prep;
use ioc_forwarder::source::socdefenders::{ApiClient, RateBudget, ServerFilters, SourceError};
use ioc_forwarder::store::Keyer;
use support::*;
use tokio::time::Instant;

const STEP: Duration = Duration::from_millis(250);
/// Real pauses without advancing the clock after every new request.
const QUIET: usize = 10;
/// The random extra the client adds to every rate-limit wait, at most.
const JITTER: Duration = Duration::from_secs(1);
/// No test here waits longer than this in virtual time.
const VIRTUAL_LIMIT: Duration = Duration::from_secs(2 * 3600);

/// Holds auto-advance off while it lives (a running blocking task inhibits it).
struct Clock {
    stop: Option<std::sync::mpsc::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Clock {
    fn hold() -> Clock {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let task = tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        });
        Clock {
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn release(mut self) {
        self.stop.take();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// Lets real time pass without letting the virtual clock move.
async fn real_pause() {
    let _ = tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(2))).await;
}

/// Runs `fut` to completion, advancing the virtual clock by `STEP` between short real pauses.
/// Returns its output and, for each IOC request the fake API received meanwhile, the virtual
/// time since the start by which it had arrived (the request left at most one step earlier).
/// The clock stands still while the fake API is still answering.
async fn drive<F: Future>(api: &FakeApi, fut: F) -> (F::Output, Vec<Duration>) {
    drive_with(api, fut, true).await
}

/// Like [`drive`]; with `hold_in_flight = false` the clock also runs while the server sits on
/// an answer (to let a request timeout fire).
async fn drive_with<F: Future>(
    api: &FakeApi,
    fut: F,
    hold_in_flight: bool,
) -> (F::Output, Vec<Duration>) {
    let start = Instant::now();
    let base = api.ioc_requests().len();
    let mut seen = Vec::new();
    let mut quiet = QUIET;
    tokio::pin!(fut);
    loop {
        let done = tokio::select! {
            biased;
            out = &mut fut => Some(out),
            _ = real_pause() => None,
        };
        let n = api.ioc_requests().len() - base;
        while seen.len() < n {
            seen.push(start.elapsed());
            quiet = QUIET;
        }
        if let Some(out) = done {
            return (out, seen);
        }
        if hold_in_flight && api.in_flight() > 0 {
            quiet = QUIET;
            continue;
        }
        if quiet > 0 {
            quiet -= 1;
            continue;
        }
        assert!(
            start.elapsed() < VIRTUAL_LIMIT,
            "still running after {VIRTUAL_LIMIT:?} of virtual time; requests:\n{}",
            api.request_summary()
        );
        tokio::time::advance(STEP).await;
    }
}

/// The `[source]` of a standard test config pointing at `api`, as the binary would load it.
fn api_config(api: &FakeApi, request_timeout: &str) -> (tempfile::TempDir, ApiConfig) {
    let dir = tempdir();
    let opts = ConfigOpts {
        request_timeout: request_timeout.to_string(),
        ..ConfigOpts::default()
    };
    let path = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem1", "127.0.0.1:9")],
        &opts,
    );
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("test config: {e}"));
    match cfg.source.kind {
        SourceKind::SocDefenders(a) => (dir, a),
        SourceKind::File { .. } => unreachable!("the test config is an API source"),
    }
}

fn client(api: &FakeApi) -> (tempfile::TempDir, ApiClient) {
    let (dir, cfg) = api_config(api, "10m");
    (dir, ApiClient::new(&cfg, Duration::from_secs(60)).unwrap())
}

fn feed() -> Vec<serde_json::Value> {
    ipv4_feed(5, now_secs(), Duration::from_secs(1))
}

async fn one_page(c: &mut ApiClient) -> Result<usize, SourceError> {
    let prep = std::sync::Arc::new(Prep::unfiltered(CefOptions::default()));
    c.page(
        None,
        0,
        100,
        &ServerFilters::default(),
        &prep,
        Keyer::fixed(),
    )
    .await
    .map(|p| p.items.items.len())
}

/// Asserts `at` is at least `from` (exact) and clearly below `wrong` (the wait a wrong rule
/// would have produced).
fn assert_waited(at: Duration, from: Duration, wrong: Duration, what: &str, api: &FakeApi) {
    assert!(
        at >= from && at < from + (wrong.saturating_sub(from)) / 2,
        "{what}: the next request came at {at:?} of virtual time, expected {from:?} plus at most {JITTER:?} of jitter (and far from {wrong:?})\n{}",
        api.request_summary()
    );
}

#[tokio::test(start_paused = true)]
async fn remaining_zero_holds_the_next_request_until_reset() {
    let clock = Clock::hold();
    let api = FakeApi::start(feed());
    api.push_rate_headers(RateHeaders {
        limit: 10,
        remaining: 0,
        reset_in: 120,
    });
    let (_dir, mut c) = client(&api);
    let ((a, b), at) = drive(&api, async {
        let a = one_page(&mut c).await;
        let budget = c.rate_budget();
        let b = one_page(&mut c).await;
        ((a, budget), b)
    })
    .await;
    let (first, budget) = a;
    assert_eq!(first.unwrap(), 5);
    assert_eq!(
        budget,
        Some(RateBudget {
            limit: Some(10),
            remaining: Some(0),
            reset_in: Some(Duration::from_secs(120)),
        }),
        "X-RateLimit-Limit/Remaining/Reset are read from the response"
    );
    assert_eq!(b.unwrap(), 5);
    assert_eq!(at.len(), 2, "{}", api.request_summary());
    assert!(at[0] <= STEP, "the first request goes at once: {at:?}");
    assert_waited(
        at[1],
        Duration::from_secs(120),
        Duration::from_secs(600),
        "Remaining 0 + Reset in 120 s",
        &api,
    );
    // Budget left again: no waiting.
    let (r, at) = drive(&api, one_page(&mut c)).await;
    r.unwrap();
    assert!(at[0] <= STEP, "{at:?}");
    clock.release().await;
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_for_retry_after_in_seconds_before_reset() {
    let clock = Clock::hold();
    let api = FakeApi::start(feed());
    api.push_fault(Fault::RateLimited {
        retry_after: Some(RetryAfter::Secs(30)),
        reset_in: Some(300),
    });
    let (_dir, mut c) = client(&api);
    let (r, at) = drive(&api, one_page(&mut c)).await;
    assert_eq!(r.unwrap(), 5, "the page arrives after the wait");
    assert_eq!(at.len(), 2, "{}", api.request_summary());
    assert_waited(
        at[1],
        Duration::from_secs(30),
        Duration::from_secs(300),
        "429 Retry-After: 30 (Reset in 300)",
        &api,
    );
    clock.release().await;
}

#[tokio::test(start_paused = true)]
async fn a_429_waits_for_retry_after_as_an_http_date() {
    let clock = Clock::hold();
    let api = FakeApi::start(feed());
    api.push_fault(Fault::RateLimited {
        retry_after: Some(RetryAfter::DateIn(45)),
        reset_in: Some(300),
    });
    let (_dir, mut c) = client(&api);
    let (r, at) = drive(&api, one_page(&mut c)).await;
    assert_eq!(r.unwrap(), 5);
    assert_eq!(at.len(), 2, "{}", api.request_summary());
    assert_waited(
        at[1],
        Duration::from_secs(45),
        Duration::from_secs(300),
        "429 Retry-After: <date 45 s after Date> (Reset in 300)",
        &api,
    );
    clock.release().await;
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_waits_for_reset() {
    let clock = Clock::hold();
    let api = FakeApi::start(feed());
    api.push_fault(Fault::RateLimited {
        retry_after: None,
        reset_in: Some(90),
    });
    let (_dir, mut c) = client(&api);
    let (r, at) = drive(&api, one_page(&mut c)).await;
    assert_eq!(r.unwrap(), 5);
    assert_eq!(at.len(), 2, "{}", api.request_summary());
    assert_waited(
        at[1],
        Duration::from_secs(90),
        Duration::from_secs(600),
        "429 with Reset in 90 s",
        &api,
    );
    clock.release().await;
}

#[tokio::test(start_paused = true)]
async fn a_server_clock_hours_off_neither_stretches_nor_cancels_the_wait() {
    for hours in [3, -3] {
        let clock = Clock::hold();
        let api = FakeApi::start(feed());
        // Reset is on the server's clock; its Date header says what time that is.
        api.set_clock_offset(chrono::Duration::hours(hours));
        api.push_fault(Fault::RateLimited {
            retry_after: None,
            reset_in: Some(60),
        });
        let (_dir, mut c) = client(&api);
        let (r, at) = drive(&api, one_page(&mut c)).await;
        assert_eq!(r.unwrap(), 5);
        assert_eq!(at.len(), 2, "{}", api.request_summary());
        // Wrong: an hour (Reset read against our clock, capped) or one second.
        assert_waited(
            at[1],
            Duration::from_secs(60),
            Duration::from_secs(3600),
            &format!("server clock {hours:+} h, Reset one minute after its Date"),
            &api,
        );
        clock.release().await;
    }
}

#[tokio::test(start_paused = true)]
async fn repeated_429s_back_off_exponentially_and_then_give_up() {
    let clock = Clock::hold();
    let api = FakeApi::start(feed());
    // A Reset already in the past must not make the client hammer.
    api.push_faults(
        Fault::RateLimited {
            retry_after: None,
            reset_in: Some(-10),
        },
        11,
    );
    let (_dir, mut c) = client(&api);
    let (r, at) = drive(&api, one_page(&mut c)).await;
    match r {
        Err(e @ SourceError::RateLimited { .. }) => assert_eq!(e.kind(), "rate_limit"),
        other => panic!("expected the rate-limit error after ten waits, got {other:?}"),
    }
    assert_eq!(at.len(), 11, "{}", api.request_summary());
    let floors = [1u64, 2, 4, 8, 16, 32, 64, 64, 64, 64];
    for (k, floor) in floors.iter().enumerate() {
        let gap = at[k + 1].saturating_sub(at[k]);
        assert!(
            gap + STEP >= Duration::from_secs(*floor),
            "wait {k}: {gap:?}, expected at least {floor} s; all: {at:?}"
        );
    }
    let total: u64 = floors.iter().sum();
    assert!(
        at[10] < Duration::from_secs(total * 2),
        "the waits add up to about {total} s, not {:?}",
        at[10]
    );
    clock.release().await;
}

#[tokio::test(start_paused = true)]
async fn server_errors_are_retried_with_growing_jittered_backoff() {
    let clock = Clock::hold();
    let api = FakeApi::start(feed());
    api.push_faults(Fault::Status(503, "unavailable"), 3);
    let (_dir, mut c) = client(&api);
    let (r, at) = drive(&api, one_page(&mut c)).await;
    assert_eq!(r.unwrap(), 5, "the fourth attempt succeeds");
    assert_eq!(at.len(), 4, "{}", api.request_summary());
    // Equal jitter on a doubling step from 1 s: [0.5, 1], [1, 2], [2, 4] seconds.
    for (k, (lo, hi)) in [(500u64, 1000u64), (1000, 2000), (2000, 4000)]
        .iter()
        .enumerate()
    {
        let gap = at[k + 1].saturating_sub(at[k]);
        assert!(
            gap + STEP >= Duration::from_millis(*lo) && gap <= Duration::from_secs(30),
            "retry {k}: waited {gap:?}, expected {lo}..{hi} ms; all: {at:?}"
        );
    }
    clock.release().await;
}

#[tokio::test(start_paused = true)]
async fn auth_errors_are_not_retried_within_the_cycle() {
    let clock = Clock::hold();
    let api = FakeApi::start(feed());
    api.push_fault(Fault::Status(403, "insufficient_tier"));
    let (_dir, mut c) = client(&api);
    let (r, at) = drive(&api, one_page(&mut c)).await;
    match r {
        Err(SourceError::Auth { status, code, key }) => {
            assert_eq!((status, code.as_str()), (403, "insufficient_tier"));
            assert_eq!(key, format!("{}… (redacted)", &API_KEY[..12]));
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
    assert_eq!(at.len(), 1, "{}", api.request_summary());
    clock.release().await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_answer_hits_the_request_timeout_and_is_retried() {
    let clock = Clock::hold();
    let api = FakeApi::start(feed());
    // The server sits on the first answer far longer than the timeout (real seconds; the
    // client gives up after 5 virtual seconds).
    api.push_fault(Fault::Delay(Duration::from_secs(30)));
    let (_dir, cfg) = api_config(&api, "5s");
    let mut c = ApiClient::new(&cfg, Duration::from_secs(60)).unwrap();
    let (r, at) = drive_with(&api, one_page(&mut c), false).await;
    assert_eq!(r.unwrap(), 5);
    assert_eq!(at.len(), 2, "{}", api.request_summary());
    let gap = at[1] - at[0];
    assert!(
        gap + STEP >= Duration::from_millis(5500) && gap <= Duration::from_secs(20),
        "timeout 5 s + first backoff 0.5-1 s (not the server's 30 s), got {gap:?}"
    );
    clock.release().await;
}
