//! A fake SOC Defenders API: a hand-written HTTP/1.1 server on 127.0.0.1 that answers
//! `GET /api/v1/iocs` the way the real API does (keys, `limit`/`offset`/`since`/filters, the
//! tier's caps, newest-first pages with `links.next`, rate-limit headers), records every
//! request, and can be told to fail in the ways real servers fail ([`Fault`]).
//!
//! Every answer closes its connection (`Connection: close`), so each request a test sees is
//! one connection. How one request is answered is in `serve.rs`; [`BulkApi`] is a faster
//! fake of the same endpoint for feeds of tens of thousands of indicators.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::feed::{now_secs, parse_time};

mod bulk;
mod serve;

#[allow(unused_imports)]
pub use bulk::BulkApi;

/// The API key the fake API accepts by default and the configs carry by default.
pub const API_KEY: &str = "sk_live_abcdefghijklmnop";

/// One request as the fake API saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Decoded query parameters in the order sent.
    pub query: Vec<(String, String)>,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub at: Instant,
    /// The fake server's clock when it answered (its `meta.generated_at` and `Date`).
    pub clock: DateTime<Utc>,
}

impl RecordedRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn offset(&self) -> usize {
        self.param("offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn since(&self) -> Option<DateTime<Utc>> {
        self.param("since").map(|s| {
            parse_time(s).unwrap_or_else(|| panic!("since parameter is not RFC 3339: {s:?}"))
        })
    }
}

/// A failure the fake API can be told to produce instead of a normal answer.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An error status with the documented JSON error envelope.
    Status(u16, &'static str),
    /// A 200 whose JSON body is cut in half (Content-Length matches the cut body).
    MalformedJson,
    /// A 200 whose Content-Length promises the full body but the connection closes halfway.
    CutConnection,
    /// Sleep this long before answering normally (drives request timeouts).
    Delay(Duration),
    /// HTTP 429 `rate_limit_exceeded` with `X-RateLimit-Remaining: 0`, an optional
    /// `Retry-After` and an optional `X-RateLimit-Reset` (`reset_in` seconds after the fake's
    /// clock; without it the header is left out).
    RateLimited {
        retry_after: Option<RetryAfter>,
        reset_in: Option<i64>,
    },
    /// A 200 with an HTML body and `Content-Type: text/html` (a captive portal, a login page).
    Html,
    /// Any status, content type and body, with the usual headers.
    Raw {
        status: u16,
        content_type: &'static str,
        body: &'static str,
    },
    /// Reads the request, then closes the connection without a byte of answer.
    Close,
    /// Sends the head (full Content-Length) and half the body, then stalls this long before
    /// closing (a server that hangs mid-body).
    StallBody(Duration),
}

/// How a 429 says when to come back.
#[derive(Clone, Debug)]
pub enum RetryAfter {
    /// `Retry-After: N` (delta seconds).
    Secs(u64),
    /// `Retry-After: <HTTP-date>` this many seconds after the fake's clock.
    DateIn(i64),
}

/// `X-RateLimit-*` values for one response; `reset_in` is relative to the fake's clock.
#[derive(Clone, Debug)]
pub struct RateHeaders {
    pub limit: u64,
    pub remaining: u64,
    pub reset_in: i64,
}

type FaultRule = Arc<dyn Fn(&RecordedRequest) -> Option<Fault> + Send + Sync>;

/// Called with the feed locked before the IOC request number `n` (0-based, counting every
/// request to `/api/v1/iocs`) is answered: inserts or updates indicators mid-walk.
type FeedHook = Arc<dyn Fn(usize, &RecordedRequest, &mut Vec<Value>) + Send + Sync>;

pub struct ApiState {
    /// The key the server accepts (`Authorization: Bearer` or `X-API-Key`).
    pub api_key: String,
    /// The tier's cap on `limit` (Free: 100).
    pub max_limit: usize,
    /// The server clock used for `meta.generated_at`; `None` = the real clock.
    pub clock: Option<DateTime<Utc>>,
    /// Faults served to the next requests, one each, before any rule.
    pub faults: VecDeque<Fault>,
    /// A fault decided per request, e.g. "every request with offset > 0 gets a 500".
    pub fault_rule: Option<FaultRule>,
    pub requests: Vec<RecordedRequest>,
    /// Added to the real clock when `clock` is `None` (a server clock that runs ahead or behind).
    pub clock_offset: chrono::Duration,
    /// The tier's lookback: `since` older than `now - lookback` is raised to it, as the API does.
    pub tier_lookback: Option<chrono::Duration>,
    /// `X-RateLimit-*` overrides for the next responses, one each.
    pub rate_headers: VecDeque<RateHeaders>,
    /// Serve gzip bodies to clients that send `Accept-Encoding: gzip`.
    pub gzip: bool,
    pub feed_hook: Option<FeedHook>,
    /// Tell no time: no `Date` header and no `meta.generated_at` (a proxy that strips both).
    pub no_server_time: bool,
}

/// A hand-written HTTP/1.1 server that serves `GET /api/v1/iocs` like the real API.
pub struct FakeApi {
    pub addr: SocketAddr,
    pub feed: Arc<Mutex<Vec<Value>>>,
    pub state: Arc<Mutex<ApiState>>,
    stop: Arc<AtomicBool>,
    /// Connections accepted whose answer is not finished yet.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeApi {
    pub fn start(feed: Vec<Value>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake API");
        let addr = listener.local_addr().unwrap();
        let api = FakeApi {
            addr,
            feed: Arc::new(Mutex::new(feed)),
            state: Arc::new(Mutex::new(ApiState {
                api_key: API_KEY.to_string(),
                max_limit: 100,
                clock: None,
                faults: VecDeque::new(),
                fault_rule: None,
                requests: Vec::new(),
                clock_offset: chrono::Duration::zero(),
                tier_lookback: None,
                rate_headers: VecDeque::new(),
                gzip: false,
                feed_hook: None,
                no_server_time: false,
            })),
            stop: Arc::new(AtomicBool::new(false)),
            in_flight: Arc::default(),
        };
        let (feed, state, stop) = (api.feed.clone(), api.state.clone(), api.stop.clone());
        let in_flight = api.in_flight.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (feed, state) = (feed.clone(), state.clone());
                in_flight.fetch_add(1, Ordering::SeqCst);
                let in_flight = in_flight.clone();
                thread::spawn(move || {
                    let _ = serve::serve_connection(conn, addr, &feed, &state);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        api
    }

    /// Connections accepted and not yet answered in full (paused-time tests hold the clock
    /// while the server is still working).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// `base_url` for the config: `http://127.0.0.1:PORT/api/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    pub fn set_max_limit(&self, n: usize) {
        self.state.lock().unwrap().max_limit = n;
    }

    pub fn set_api_key(&self, key: &str) {
        self.state.lock().unwrap().api_key = key.to_string();
    }

    pub fn set_clock(&self, t: DateTime<Utc>) {
        self.state.lock().unwrap().clock = Some(t);
    }

    pub fn push_fault(&self, f: Fault) {
        self.state.lock().unwrap().faults.push_back(f);
    }

    pub fn set_fault_rule(
        &self,
        rule: impl Fn(&RecordedRequest) -> Option<Fault> + Send + Sync + 'static,
    ) {
        self.state.lock().unwrap().fault_rule = Some(Arc::new(rule));
    }

    pub fn clear_faults(&self) {
        let mut s = self.state.lock().unwrap();
        s.faults.clear();
        s.fault_rule = None;
    }

    /// Queues `fault` for each of the next `k` requests.
    pub fn push_faults(&self, f: Fault, k: usize) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..k {
            s.faults.push_back(f.clone());
        }
    }

    /// A server clock that runs `offset` ahead of (or, negative, behind) the host's clock.
    /// Clears a fixed clock set by `set_clock`.
    pub fn set_clock_offset(&self, offset: chrono::Duration) {
        let mut s = self.state.lock().unwrap();
        s.clock = None;
        s.clock_offset = offset;
    }

    /// The fake server's current clock (second precision).
    pub fn clock_now(&self) -> DateTime<Utc> {
        let s = self.state.lock().unwrap();
        s.clock.unwrap_or_else(|| now_secs() + s.clock_offset)
    }

    /// Clamp `since` to `now - lookback` like the API's tier lookback (Free: 1 day).
    pub fn set_tier_lookback(&self, lookback: chrono::Duration) {
        self.state.lock().unwrap().tier_lookback = Some(lookback);
    }

    /// The next response (of any status) carries these `X-RateLimit-*` values.
    pub fn push_rate_headers(&self, h: RateHeaders) {
        self.state.lock().unwrap().rate_headers.push_back(h);
    }

    /// Answer with `Content-Encoding: gzip` when the client accepts it.
    /// Leave out `Date` and `meta.generated_at` from now on.
    pub fn without_server_time(&self) {
        self.state.lock().unwrap().no_server_time = true;
    }

    pub fn set_gzip(&self, on: bool) {
        self.state.lock().unwrap().gzip = on;
    }

    /// Runs `hook(n, request, feed)` before IOC request `n` (0-based) is answered, with the
    /// feed locked: the way to insert or update indicators between two pages of one walk.
    pub fn set_feed_hook(
        &self,
        hook: impl Fn(usize, &RecordedRequest, &mut Vec<Value>) + Send + Sync + 'static,
    ) {
        self.state.lock().unwrap().feed_hook = Some(Arc::new(hook));
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests to the IOC list endpoint only.
    pub fn ioc_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == "/api/v1/iocs")
            .collect()
    }

    pub fn request_count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// A one-line-per-request summary for assertion messages.
    pub fn request_summary(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                let q: Vec<String> = r.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{} {}?{}", r.method, r.path, q.join("&"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}
