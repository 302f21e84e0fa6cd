//! Shared helpers for the integration tests: a fake SOC Defenders API, TCP syslog receivers,
//! config writers, process runners with hang guards, and strict-enough RFC 5424 / CEF parsers.
//!
//! Everything here talks to the real binary through real sockets and real files; nothing
//! imports the library crate, so the tests keep working however `src/` is arranged.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};

/// The path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ioc-forwarder");

/// The API key the fake API accepts by default and the configs carry by default.
pub const API_KEY: &str = "sk_live_abcdefghijklmnop";

/// A hung process is killed after this long so that CI fails instead of hanging.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Time helpers
// ---------------------------------------------------------------------------------------------

/// Now, truncated to whole seconds (the fake API's clock has second precision).
pub fn now_secs() -> DateTime<Utc> {
    Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap()
}

/// ISO 8601 / RFC 3339 UTC with a `Z`, second precision, like the API's examples.
pub fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

// ---------------------------------------------------------------------------------------------
// Indicators
// ---------------------------------------------------------------------------------------------

/// A UUID-shaped id from a number, so tests can refer to indicators by index.
pub fn uuid(n: usize) -> String {
    format!("00000000-0000-4000-8000-{:012}", n)
}

/// One IOC object shaped like the list endpoint's items (the union of the documented examples).
pub fn make_indicator(
    id: &str,
    ioc_type: &str,
    value: &str,
    confidence: &str,
    first_seen: &str,
    last_seen: &str,
) -> Value {
    json!({
        "id": id,
        "type": ioc_type,
        "value": value,
        "confidence": confidence,
        "first_seen": first_seen,
        "last_seen": last_seen,
        "source": {
            "article_id": id,
            "article_title": "Test article",
            "article_url": format!("https://socdefenders.ai/item/{id}"),
            "reference_url": null,
            "feed_name": "CISA Alerts",
            "category": "government",
            "origin": "article"
        },
        "context": "C2 server seen in a test campaign",
        "tags": ["c2", "test"],
        "mitre_techniques": ["T1071"]
    })
}

/// `n` distinct IPv4 indicators `10.X.Y.Z`, newest first: item `i` has
/// `last_seen = newest - i * step`.
pub fn ipv4_feed(n: usize, newest: DateTime<Utc>, step: Duration) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let last = newest - chrono::Duration::from_std(step * i as u32).unwrap();
            make_indicator(
                &uuid(i),
                "ipv4",
                &ipv4_value(i),
                ["high", "medium", "low"][i % 3],
                "2025-05-17T00:00:00Z",
                &iso(last),
            )
        })
        .collect()
}

/// The value `ipv4_feed` gives to item `i`.
pub fn ipv4_value(i: usize) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

// ---------------------------------------------------------------------------------------------
// Fake SOC Defenders API
// ---------------------------------------------------------------------------------------------

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

type Head = (String, String, Vec<(String, String)>);

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
                    let _ = serve_connection(conn, addr, &feed, &state);
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

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// Reads one request head; returns (method, target, headers).
fn read_head(conn: &mut TcpStream) -> std::io::Result<Option<Head>> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).into_owned();
            let mut lines = head.split("\r\n");
            let request_line = lines.next().unwrap_or("");
            let mut parts = request_line.split(' ');
            let method = parts.next().unwrap_or("").to_string();
            let target = parts.next().unwrap_or("").to_string();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            return Ok(Some((method, target, headers)));
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return Ok(None);
        }
    }
}

fn error_body(code: &str, message: &str) -> String {
    json!({"error": {"code": code, "message": message, "request_id": "req_1"}}).to_string()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// What every answer of one request shares: the fake's clock and its rate-limit headers.
struct Reply {
    clock: DateTime<Utc>,
    rate: Option<RateHeaders>,
    /// Leave `X-RateLimit-Reset` out.
    no_reset: bool,
    /// Leave `Date` out.
    no_date: bool,
}

/// An HTTP-date (IMF-fixdate), as in `Date` and `Retry-After`.
pub fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn write_response_ex(
    conn: &mut TcpStream,
    reply: &Reply,
    status: u16,
    content_type: &str,
    extra: &[(String, String)],
    body: &[u8],
    content_length: usize,
) -> std::io::Result<()> {
    let (limit, remaining, reset) = match &reply.rate {
        Some(r) => (r.limit, r.remaining, reply.clock.timestamp() + r.reset_in),
        None => (1000, 999, reply.clock.timestamp() + 60),
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n",
        reason(status)
    );
    if !reply.no_date {
        head.push_str(&format!("Date: {}\r\n", http_date(reply.clock)));
    }
    let has = |name: &str| extra.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("X-RateLimit-Limit") {
        head.push_str(&format!("X-RateLimit-Limit: {limit}\r\n"));
    }
    if !has("X-RateLimit-Remaining") {
        head.push_str(&format!("X-RateLimit-Remaining: {remaining}\r\n"));
    }
    if !has("X-RateLimit-Reset") && !reply.no_reset {
        head.push_str(&format!("X-RateLimit-Reset: {reset}\r\n"));
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
    ));
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

/// CRC-32 (IEEE), for the gzip trailer.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

/// A valid gzip member made of stored (uncompressed) deflate blocks: no compressor needed,
/// and every gzip decoder must accept it.
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut chunks = data.chunks(0xffff).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        let last = chunks.peek().is_none();
        out.push(if last { 1 } else { 0 });
        let len = c.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn norm_type(t: &str) -> String {
    t.replace('_', "-").to_ascii_lowercase()
}

fn serve_connection(
    mut conn: TcpStream,
    addr: SocketAddr,
    feed: &Mutex<Vec<Value>>,
    state: &Mutex<ApiState>,
) -> std::io::Result<()> {
    let Some((method, target, headers)) = read_head(&mut conn)? else {
        return Ok(());
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_query(q)),
        None => (target.clone(), Vec::new()),
    };
    let mut req = RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        query,
        headers,
        at: Instant::now(),
        clock: now_secs(),
    };

    // Record, then decide on a fault while holding the state lock only briefly.
    let (fault, api_key, max_limit, clock, tier_lookback, rate, gzip, hook, ioc_index, timeless) = {
        let mut s = state.lock().unwrap();
        let clock = s.clock.unwrap_or_else(|| now_secs() + s.clock_offset);
        req.clock = clock;
        let ioc_index = s
            .requests
            .iter()
            .filter(|r| r.path == "/api/v1/iocs")
            .count();
        s.requests.push(req.clone());
        let fault = match s.faults.pop_front() {
            Some(f) => Some(f),
            None => s.fault_rule.clone().and_then(|rule| rule(&req)),
        };
        let rate = s.rate_headers.pop_front();
        (
            fault,
            s.api_key.clone(),
            s.max_limit,
            s.clock,
            s.tier_lookback,
            rate,
            s.gzip,
            s.feed_hook.clone(),
            ioc_index,
            s.no_server_time,
        )
    };
    let reply = Reply {
        clock: req.clock,
        rate,
        no_reset: false,
        no_date: timeless,
    };
    if path == "/api/v1/iocs" {
        if let Some(hook) = hook {
            hook(ioc_index, &req, &mut feed.lock().unwrap());
        }
    }
    let json_reply = |conn: &mut TcpStream, status: u16, body: &str| {
        write_response_ex(
            conn,
            &reply,
            status,
            "application/json",
            &[],
            body.as_bytes(),
            body.len(),
        )
    };

    let mut delay = None;
    match &fault {
        Some(Fault::Status(status, code)) => {
            let body = error_body(code, "injected failure");
            return json_reply(&mut conn, *status, &body);
        }
        Some(Fault::Delay(d)) => delay = Some(*d),
        Some(Fault::RateLimited {
            retry_after,
            reset_in,
        }) => {
            let mut extra = vec![("X-RateLimit-Remaining".to_string(), "0".to_string())];
            if let Some(r) = reset_in {
                extra.push((
                    "X-RateLimit-Reset".to_string(),
                    (reply.clock.timestamp() + r).to_string(),
                ));
            }
            let reply = Reply {
                clock: reply.clock,
                rate: None,
                no_reset: reset_in.is_none(),
                no_date: timeless,
            };
            match retry_after {
                Some(RetryAfter::Secs(n)) => extra.push(("Retry-After".to_string(), n.to_string())),
                Some(RetryAfter::DateIn(n)) => extra.push((
                    "Retry-After".to_string(),
                    http_date(reply.clock + chrono::Duration::seconds(*n)),
                )),
                None => {}
            }
            let body = error_body("rate_limit_exceeded", "Rate limit exceeded");
            return write_response_ex(
                &mut conn,
                &reply,
                429,
                "application/json",
                &extra,
                body.as_bytes(),
                body.len(),
            );
        }
        Some(Fault::Html) => {
            let body = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body><form action=\"/login\"></form></body></html>\n";
            return write_response_ex(
                &mut conn,
                &reply,
                200,
                "text/html; charset=utf-8",
                &[],
                body.as_bytes(),
                body.len(),
            );
        }
        Some(Fault::Raw {
            status,
            content_type,
            body,
        }) => {
            return write_response_ex(
                &mut conn,
                &reply,
                *status,
                content_type,
                &[],
                body.as_bytes(),
                body.len(),
            );
        }
        Some(Fault::Close) => {
            let _ = conn.shutdown(Shutdown::Both);
            return Ok(());
        }
        _ => {}
    }

    if method != "GET" || path != "/api/v1/iocs" {
        let body = error_body("not_found", "no such endpoint");
        return json_reply(&mut conn, 404, &body);
    }

    // Authentication: Bearer (recommended) or X-API-Key.
    let presented = match (req.header("authorization"), req.header("x-api-key")) {
        (Some(a), _) => Some(a.strip_prefix("Bearer ").unwrap_or("").trim().to_string()),
        (None, Some(k)) => Some(k.trim().to_string()),
        (None, None) => None,
    };
    match presented {
        None => {
            let body = error_body("missing_api_key", "API key required");
            return json_reply(&mut conn, 401, &body);
        }
        Some(k) if k != api_key => {
            let body = error_body("invalid_api_key", "Invalid API key");
            return json_reply(&mut conn, 401, &body);
        }
        Some(_) => {}
    }

    let now = clock.unwrap_or(reply.clock);
    let bad = |what: &str| error_body("invalid_parameter", what);

    let limit = match req.param("limit") {
        None => 100,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                let body = bad("limit must be a positive integer");
                return json_reply(&mut conn, 400, &body);
            }
        },
    }
    .min(max_limit);
    let offset = match req.param("offset") {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                let body = bad("offset must be a non-negative integer");
                return json_reply(&mut conn, 400, &body);
            }
        },
    };
    let mut since = match req.param("since") {
        None => None,
        Some(v) => {
            // A raw `+` in an offset decodes as a space; accept that form too.
            match parse_time(v).or_else(|| parse_time(&v.replace(' ', "+"))) {
                Some(t) => Some(t),
                None => {
                    let body = bad("since must be an ISO 8601 datetime");
                    return json_reply(&mut conn, 400, &body);
                }
            }
        }
    };
    if let Some(lb) = tier_lookback {
        // Older than the tier's window is silently clamped, as the API does.
        let floor = now - lb;
        since = Some(since.map_or(floor, |s| s.max(floor)));
    }
    let type_filter = req.param("type").map(norm_type);
    let conf_filter = req.param("confidence").map(|s| s.to_string());
    let cat_filter = req.param("category").map(|s| s.to_string());

    let mut items: Vec<Value> = {
        let feed = feed.lock().unwrap();
        feed.iter()
            .filter(|it| {
                let last = it["last_seen"].as_str().and_then(parse_time);
                if let Some(since) = since {
                    match last {
                        Some(l) if l > since => {}
                        _ => return false,
                    }
                }
                if let Some(t) = &type_filter {
                    if it["type"].as_str().map(norm_type).as_deref() != Some(t.as_str()) {
                        return false;
                    }
                }
                if let Some(c) = &conf_filter {
                    if it["confidence"].as_str() != Some(c.as_str()) {
                        return false;
                    }
                }
                if let Some(c) = &cat_filter {
                    if it["source"]["category"].as_str() != Some(c.as_str()) {
                        return false;
                    }
                }
                true
            })
            .cloned()
            .collect()
    };
    // Newest first; ties broken by id so the order is stable.
    items.sort_by(|a, b| {
        let la = a["last_seen"].as_str().and_then(parse_time);
        let lb = b["last_seen"].as_str().and_then(parse_time);
        lb.cmp(&la).then_with(|| {
            a["id"]
                .as_str()
                .unwrap_or("")
                .cmp(b["id"].as_str().unwrap_or(""))
        })
    });
    let total = items.len();
    let data: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();

    let base = format!("http://{addr}/api/v1/iocs");
    let mut links = json!({ "self": format!("{base}?limit={limit}&offset={offset}") });
    if offset + limit < total {
        links["next"] = json!(format!("{base}?limit={limit}&offset={}", offset + limit));
    }
    let mut body = json!({
        "meta": {
            "total": total,
            "limit": limit,
            "offset": offset,
            "generated_at": iso(now),
            "feed_version": "1.0",
            "source": "SOC Defenders",
            "filters": {
                "type": req.param("type").unwrap_or("all"),
                "category": req.param("category").unwrap_or("all"),
                "confidence": req.param("confidence").unwrap_or("all"),
                "since": since.map(iso).map(Value::from).unwrap_or(Value::Null),
                "until": iso(now),
            }
        },
        "data": data,
        "links": links,
    });
    if timeless {
        if let Some(meta) = body["meta"].as_object_mut() {
            meta.remove("generated_at");
        }
    }
    let body = body.to_string();

    if let Some(d) = delay {
        thread::sleep(d);
    }
    match fault {
        Some(Fault::MalformedJson) => {
            let cut = &body.as_bytes()[..body.len() / 2];
            write_response_ex(
                &mut conn,
                &reply,
                200,
                "application/json",
                &[],
                cut,
                cut.len(),
            )
        }
        Some(Fault::CutConnection) => {
            let cut = &body.as_bytes()[..body.len() / 2];
            let r = write_response_ex(
                &mut conn,
                &reply,
                200,
                "application/json",
                &[],
                cut,
                body.len(),
            );
            let _ = conn.shutdown(Shutdown::Both);
            r
        }
        Some(Fault::StallBody(d)) => {
            let cut = &body.as_bytes()[..body.len() / 2];
            let r = write_response_ex(
                &mut conn,
                &reply,
                200,
                "application/json",
                &[],
                cut,
                body.len(),
            );
            thread::sleep(d);
            let _ = conn.shutdown(Shutdown::Both);
            r
        }
        _ => {
            let accepts_gzip = req
                .header("accept-encoding")
                .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
            if gzip && accepts_gzip {
                let gz = gzip_stored(body.as_bytes());
                write_response_ex(
                    &mut conn,
                    &reply,
                    200,
                    "application/json",
                    &[("Content-Encoding".to_string(), "gzip".to_string())],
                    &gz,
                    gz.len(),
                )
            } else {
                json_reply(&mut conn, 200, &body)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TCP syslog receiver
// ---------------------------------------------------------------------------------------------

/// Every connection's bytes, in accept order.
type Connections = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// How a receiver splits its byte stream into frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Lf,
    OctetCounting,
}

/// Reads a connection at most `chunk` bytes every `pause`.
#[derive(Clone, Copy, Debug)]
pub struct SlowRead {
    pub chunk: usize,
    pub pause: Duration,
}

/// A TCP listener that keeps every byte of every connection, in connection order.
pub struct TcpReceiver {
    pub addr: SocketAddr,
    pub framing: Framing,
    conns: Connections,
    stop: Arc<AtomicBool>,
}

/// Binds 127.0.0.1:0, notes the port and drops the listener, so nothing listens there (yet).
pub fn reserve_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("reserve port");
    l.local_addr().unwrap().port()
}

impl TcpReceiver {
    pub fn start(framing: Framing) -> TcpReceiver {
        Self::start_with(0, framing, None)
    }

    pub fn start_on(port: u16, framing: Framing) -> TcpReceiver {
        Self::start_with(port, framing, None)
    }

    pub fn start_slow(framing: Framing, slow: SlowRead) -> TcpReceiver {
        Self::start_with(0, framing, Some(slow))
    }

    pub fn start_with(port: u16, framing: Framing, slow: Option<SlowRead>) -> TcpReceiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let conns: Connections = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let buf = Arc::new(Mutex::new(Vec::new()));
                c.lock().unwrap().push(buf.clone());
                let s = s.clone();
                thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                    let size = slow.map(|s| s.chunk).unwrap_or(64 * 1024);
                    let mut chunk = vec![0u8; size];
                    loop {
                        match conn.read(&mut chunk) {
                            Ok(0) => break,
                            Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut =>
                            {
                                if s.load(Ordering::SeqCst) {
                                    break;
                                }
                                continue;
                            }
                            Err(_) => break,
                        }
                        if let Some(slow) = slow {
                            thread::sleep(slow.pause);
                        }
                    }
                });
            }
        });
        TcpReceiver {
            addr,
            framing,
            conns,
            stop,
        }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Every byte received, per connection, in accept order.
    pub fn raw(&self) -> Vec<Vec<u8>> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.lock().unwrap().clone())
            .collect()
    }

    /// Complete LF-terminated frames (without the LF); a trailing partial frame of a
    /// connection (cut by a crash) is left out.
    pub fn frames_lf(&self) -> Vec<String> {
        let mut out = Vec::new();
        for bytes in self.raw() {
            let mut rest = &bytes[..];
            while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
                out.push(utf8(&rest[..pos]));
                rest = &rest[pos + 1..];
            }
        }
        out
    }

    /// Complete `LEN SP FRAME` frames; panics on bytes that are not octet-counted framing.
    pub fn frames_octet_counted(&self) -> Vec<String> {
        let mut out = Vec::new();
        for bytes in self.raw() {
            match parse_octet_counted(&bytes) {
                Ok((frames, _partial)) => out.extend(frames.iter().map(|f| utf8(f))),
                Err(e) => panic!("receiver got bytes that are not octet-counted frames: {e}"),
            }
        }
        out
    }

    pub fn frames(&self) -> Vec<String> {
        match self.framing {
            Framing::Lf => self.frames_lf(),
            Framing::OctetCounting => self.frames_octet_counted(),
        }
    }

    pub fn count(&self) -> usize {
        self.frames().len()
    }

    /// Polls until at least `n` frames arrived or `timeout` passed; returns the count seen.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.count();
            if c >= n || Instant::now() >= deadline {
                return c;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Polls until `pred(frames)` holds or `timeout` passed; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.frames()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for TcpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap_or_else(|e| {
        panic!(
            "frame is not valid UTF-8 ({e}): {:?}",
            String::from_utf8_lossy(b)
        )
    })
}

/// Parses RFC 6587 octet counting: `LEN SP FRAME` repeated. Returns the complete frames and
/// the number of trailing bytes that form an incomplete frame; any malformed prefix is an error.
pub fn parse_octet_counted(bytes: &[u8]) -> Result<(Vec<Vec<u8>>, usize), String> {
    let mut frames = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == bytes.len() {
            return Ok((frames, bytes.len() - start)); // partial length prefix
        }
        if i == start || bytes[i] != b' ' {
            return Err(format!(
                "expected `LEN SP` at byte {start}, found {:?}",
                String::from_utf8_lossy(&bytes[start..bytes.len().min(start + 40)])
            ));
        }
        let digits = std::str::from_utf8(&bytes[start..i]).unwrap();
        if digits.len() > 1 && digits.starts_with('0') {
            return Err(format!(
                "length with a leading zero at byte {start}: {digits}"
            ));
        }
        let len: usize = digits
            .parse()
            .map_err(|e| format!("bad length {digits:?}: {e}"))?;
        if len == 0 {
            return Err(format!("zero-length frame at byte {start}"));
        }
        i += 1;
        if i + len > bytes.len() {
            return Ok((frames, bytes.len() - start));
        }
        frames.push(bytes[i..i + len].to_vec());
        i += len;
    }
    Ok((frames, 0))
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// One `[[destinations]]` entry.
#[derive(Clone, Debug)]
pub struct Dest {
    pub name: String,
    pub protocol: String,
    pub address: String,
    pub framing: String,
    /// Raw `key = value` TOML lines added to the table.
    pub extra: Vec<String>,
}

impl Dest {
    pub fn tcp(name: &str, address: impl ToString) -> Dest {
        Dest::new(name, "tcp", address)
    }

    pub fn new(name: &str, protocol: &str, address: impl ToString) -> Dest {
        Dest {
            name: name.to_string(),
            protocol: protocol.to_string(),
            address: address.to_string(),
            framing: "lf".to_string(),
            extra: Vec::new(),
        }
    }

    /// `key = <raw TOML value>`.
    pub fn set(mut self, key: &str, raw_value: &str) -> Dest {
        self.extra.push(format!("{key} = {raw_value}"));
        self
    }

    pub fn framing(mut self, framing: &str) -> Dest {
        self.framing = framing.to_string();
        self
    }
}

/// The knobs the tests turn; `Default` is the config most tests run with.
#[derive(Clone, Debug)]
pub struct ConfigOpts {
    pub api_key: String,
    pub shutdown_timeout: String,
    pub poll_interval: String,
    pub page_size: u32,
    pub lookback: String,
    pub request_timeout: String,
    /// Raw TOML lines appended to `[source]`.
    pub source_extra: String,
    /// Raw TOML lines for `[syslog]` (hostname is always set).
    pub syslog_extra: String,
    pub retry_initial: String,
    pub retry_max: String,
}

impl Default for ConfigOpts {
    fn default() -> Self {
        ConfigOpts {
            api_key: API_KEY.to_string(),
            shutdown_timeout: "5s".to_string(),
            poll_interval: "1s".to_string(),
            page_size: 1000,
            lookback: "24h".to_string(),
            request_timeout: "5s".to_string(),
            source_extra: String::new(),
            syslog_extra: String::new(),
            retry_initial: "50ms".to_string(),
            retry_max: "500ms".to_string(),
        }
    }
}

/// A TOML basic string.
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn render_config(dir: &Path, api_base: &str, dests: &[Dest], o: &ConfigOpts) -> String {
    let state = dir.join("state");
    let mut s = format!(
        "state_dir = {}\nshutdown_timeout = {}\n\n[source]\nkind = \"socdefenders\"\nbase_url = {}\napi_key = {}\npoll_interval = {}\npage_size = {}\nlookback = {}\nrequest_timeout = {}\n{}\n\n[syslog]\nhostname = \"collector01\"\n{}\n",
        toml_str(state.to_str().unwrap()),
        toml_str(&o.shutdown_timeout),
        toml_str(api_base),
        toml_str(&o.api_key),
        toml_str(&o.poll_interval),
        o.page_size,
        toml_str(&o.lookback),
        toml_str(&o.request_timeout),
        o.source_extra,
        o.syslog_extra,
    );
    for d in dests {
        s.push_str(&format!(
            "\n[[destinations]]\nname = {}\nprotocol = {}\naddress = {}\nframing = {}\n",
            toml_str(&d.name),
            toml_str(&d.protocol),
            toml_str(&d.address),
            toml_str(&d.framing),
        ));
        for line in &d.extra {
            s.push_str(line);
            s.push('\n');
        }
    }
    s.push_str(&format!(
        "\n[queue]\nretry_initial = {}\nretry_max = {}\n",
        toml_str(&o.retry_initial),
        toml_str(&o.retry_max)
    ));
    s
}

/// Writes `DIR/config.toml` with the standard options; `state_dir` is `DIR/state`.
pub fn write_config(dir: &Path, api_base: &str, destinations: &[Dest]) -> PathBuf {
    write_config_with(dir, api_base, destinations, &ConfigOpts::default())
}

pub fn write_config_with(
    dir: &Path,
    api_base: &str,
    destinations: &[Dest],
    opts: &ConfigOpts,
) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, render_config(dir, api_base, destinations, opts)).unwrap();
    path
}

/// A temporary directory with a short path under /tmp: unix socket paths are limited to 107
/// bytes.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("iocfw")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

/// The process exited with `code`; otherwise fails with its output.
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}\n{}",
        describe(out)
    );
}

/// `GET /metrics` on 127.0.0.1:port: the body of a 200, `None` otherwise (also while nothing
/// answers yet).
pub fn scrape(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// Writes arbitrary TOML to `DIR/NAME`.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// A command for the binary with a clean environment for the variables it reads.
pub fn command(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("IOC_FORWARDER_CONFIG")
        .env_remove("SOCDEFENDERS_API_KEY")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null());
    cmd
}

/// Runs to completion; the process is killed and the test fails after `HANG_GUARD`.
/// Returns the output and the child's pid.
pub fn run_cmd(mut cmd: Command) -> (Output, u32) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ioc-forwarder");
    let pid = child.id();
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + HANG_GUARD;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            thread::sleep(Duration::from_millis(100));
            panic!(
                "ioc-forwarder did not exit within {HANG_GUARD:?}; killed it.\nstderr:\n{}",
                tail(&String::from_utf8_lossy(&err.lock().unwrap()), 4000)
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    // The reader threads finish when the pipes close; give them a moment.
    let stdout = wait_pipe(&out);
    let stderr = wait_pipe(&err);
    (
        Output {
            status,
            stdout,
            stderr,
        },
        pid,
    )
}

fn collect<R: Read + Send + 'static>(mut r: R) -> Arc<Mutex<Vec<u8>>> {
    let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
    let b = buf.clone();
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => b.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    buf
}

fn wait_pipe(buf: &Arc<Mutex<Vec<u8>>>) -> Vec<u8> {
    // Reader threads hold a clone of the Arc until EOF.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(buf) > 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    buf.lock().unwrap().clone()
}

/// `ioc-forwarder --config PATH once`, with the hang guard.
pub fn run_once(config: &Path) -> Output {
    run_cmd(command(config, &["once"])).0
}

/// Like `run_once`, also returning the pid of the process.
pub fn run_once_with_pid(config: &Path) -> (Output, u32) {
    run_cmd(command(config, &["once"]))
}

/// `ioc-forwarder --config PATH check-config`.
pub fn check_config(config: &Path) -> Output {
    run_cmd(command(config, &["check-config"])).0
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The last `n` bytes of a log, for assertion messages.
pub fn tail(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &s[start..])
}

/// A short description of an exit for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        tail(&text(&out.stdout), 2000),
        tail(&text(&out.stderr), 4000)
    )
}

/// A long-running `ioc-forwarder run`, killed on drop if still alive.
pub struct Agent {
    child: Option<Child>,
    pub pid: u32,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout: Arc<Mutex<Vec<u8>>>,
}

impl Agent {
    pub fn spawn(config: &Path) -> Agent {
        let mut cmd = command(config, &["run"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ioc-forwarder run");
        let pid = child.id();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Agent {
            child: Some(child),
            pid,
            stderr,
            stdout,
        }
    }

    /// Like `spawn`, for a command built by the caller (extra environment, a wrapper that
    /// `exec`s the binary, other arguments): stdout and stderr are captured.
    pub fn spawn_cmd(mut cmd: Command) -> Agent {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ioc-forwarder");
        let pid = child.id();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Agent {
            child: Some(child),
            pid,
            stderr,
            stdout,
        }
    }

    pub fn stderr(&self) -> String {
        text(&self.stderr.lock().unwrap())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Polls until `pred(frames)` holds, the agent exits on its own, or `timeout` passes.
    /// Returns whether `pred` held.
    pub fn wait_frames(
        &mut self,
        rx: &TcpReceiver,
        timeout: Duration,
        pred: impl Fn(&[String]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&rx.frames()) {
                return true;
            }
            if Instant::now() >= deadline || !self.is_running() {
                thread::sleep(Duration::from_millis(200));
                return pred(&rx.frames());
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends `kill -SIG` (e.g. "HUP") to the agent.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid);
    }

    /// SIGTERM, then wait (with the hang guard) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) -> ExitStatus {
        self.signal("KILL");
        self.wait()
    }

    pub fn wait(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("agent already reaped");
        let deadline = Instant::now() + HANG_GUARD;
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "agent did not exit within {HANG_GUARD:?}; killed it.\nstderr:\n{}",
                    tail(&self.stderr(), 4000)
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        wait_pipe(&self.stdout);
        wait_pipe(&self.stderr);
        st
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 5424 and CEF parsing
// ---------------------------------------------------------------------------------------------

/// The fields of one RFC 5424 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Syslog5424 {
    pub pri: u8,
    pub version: u32,
    pub timestamp: String,
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
    pub msgid: String,
    pub structured_data: String,
    pub msg: String,
}

impl Syslog5424 {
    pub fn facility(&self) -> u8 {
        self.pri / 8
    }
    pub fn severity(&self) -> u8 {
        self.pri % 8
    }
}

fn header_field<'a>(rest: &mut &'a str, name: &str, max: usize) -> Result<&'a str, String> {
    let end = rest
        .find(' ')
        .ok_or_else(|| format!("{name}: missing (no SP after it)"))?;
    let field = &rest[..end];
    if field.is_empty() {
        return Err(format!("{name}: empty"));
    }
    if field.len() > max {
        return Err(format!("{name}: {} octets, more than {max}", field.len()));
    }
    if let Some(c) = field.bytes().find(|b| !(33..=126).contains(b)) {
        return Err(format!("{name}: byte {c:#04x} is not PRINTUSASCII"));
    }
    *rest = &rest[end + 1..];
    Ok(field)
}

fn sd_name(s: &str, i: &mut usize, what: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let start = *i;
    while *i < b.len() && (33..=126).contains(&b[*i]) && !matches!(b[*i], b'=' | b']' | b'"' | b' ')
    {
        *i += 1;
    }
    let n = *i - start;
    if n == 0 || n > 32 {
        return Err(format!("{what}: bad length {n} at {start}"));
    }
    Ok(())
}

/// Parses `STRUCTURED-DATA` at the start of `s`, returning its length.
fn parse_sd(s: &str) -> Result<usize, String> {
    let b = s.as_bytes();
    if b.first() == Some(&b'-') {
        return Ok(1);
    }
    let mut i = 0;
    while i < b.len() && b[i] == b'[' {
        i += 1;
        sd_name(s, &mut i, "SD-ID")?;
        while i < b.len() && b[i] == b' ' {
            i += 1;
            sd_name(s, &mut i, "PARAM-NAME")?;
            if b.get(i) != Some(&b'=') || b.get(i + 1) != Some(&b'"') {
                return Err(format!("SD-PARAM: expected =\" at {i}"));
            }
            i += 2;
            loop {
                match b.get(i) {
                    None => return Err("SD-PARAM: unterminated value".into()),
                    Some(b'\\') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b']') => return Err(format!("SD-PARAM: unescaped ] at {i}")),
                    Some(_) => i += 1,
                }
            }
        }
        if b.get(i) != Some(&b']') {
            return Err(format!("SD-ELEMENT: expected ] at {i}"));
        }
        i += 1;
    }
    if i == 0 {
        return Err("STRUCTURED-DATA: neither `-` nor `[`".into());
    }
    Ok(i)
}

/// Parses `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [SP MSG]` strictly enough to
/// catch framing and header mistakes.
pub fn parse_rfc5424(frame: &str) -> Result<Syslog5424, String> {
    let rest = frame
        .strip_prefix('<')
        .ok_or_else(|| "PRI: frame does not start with `<`".to_string())?;
    let close = rest.find('>').ok_or("PRI: no `>`")?;
    let pri_s = &rest[..close];
    if pri_s.is_empty() || pri_s.len() > 3 || !pri_s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("PRI: {pri_s:?} is not 1-3 digits"));
    }
    if pri_s.len() > 1 && pri_s.starts_with('0') {
        return Err(format!("PRI: {pri_s:?} has a leading zero"));
    }
    let pri: u16 = pri_s.parse().unwrap();
    if pri > 191 {
        return Err(format!("PRI: {pri} > 191"));
    }
    let mut rest = &rest[close + 1..];
    let version = header_field(&mut rest, "VERSION", 2)?;
    if version != "1" {
        return Err(format!("VERSION: {version:?}, expected 1"));
    }
    let timestamp = header_field(&mut rest, "TIMESTAMP", 64)?;
    if timestamp != "-" && parse_time(timestamp).is_none() {
        return Err(format!("TIMESTAMP: {timestamp:?} is not RFC 3339"));
    }
    let hostname = header_field(&mut rest, "HOSTNAME", 255)?;
    let app_name = header_field(&mut rest, "APP-NAME", 48)?;
    let procid = header_field(&mut rest, "PROCID", 128)?;
    let msgid = header_field(&mut rest, "MSGID", 32)?;
    let sd_len = parse_sd(rest)?;
    let sd = &rest[..sd_len];
    let after = &rest[sd_len..];
    let msg = if after.is_empty() {
        ""
    } else {
        after
            .strip_prefix(' ')
            .ok_or_else(|| format!("no SP between STRUCTURED-DATA and MSG: {after:?}"))?
    };
    Ok(Syslog5424 {
        pri: pri as u8,
        version: 1,
        timestamp: timestamp.to_string(),
        hostname: hostname.to_string(),
        app_name: app_name.to_string(),
        procid: procid.to_string(),
        msgid: msgid.to_string(),
        structured_data: sd.to_string(),
        msg: msg.to_string(),
    })
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`: RFC 3339 UTC with exactly six fractional digits.
pub fn is_rfc3339_micros_utc(ts: &str) -> bool {
    let b = ts.as_bytes();
    let shape = "dddd-dd-ddTdd:dd:dd.ddddddZ".as_bytes();
    b.len() == shape.len()
        && b.iter().zip(shape).all(|(&c, &s)| match s {
            b'd' => c.is_ascii_digit(),
            s => c == s,
        })
        && parse_time(ts).is_some()
}

/// A parsed CEF line: the seven header fields (unescaped) and the extension pairs in order
/// (values unescaped).
#[derive(Clone, Debug)]
pub struct Cef {
    pub header: Vec<String>,
    pub ext: Vec<(String, String)>,
}

impl Cef {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.ext
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn keys(&self) -> Vec<&str> {
        self.ext.iter().map(|(k, _)| k.as_str()).collect()
    }
}

pub fn parse_cef(line: &str) -> Result<Cef, String> {
    let rest = line
        .strip_prefix("CEF:")
        .ok_or_else(|| format!("not a CEF line: {line:?}"))?;
    let mut header = Vec::new();
    let mut cur = String::new();
    let mut chars = rest.char_indices();
    let mut ext_start = None;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, n)) => cur.push(n),
                None => return Err("CEF header ends in a lone backslash".into()),
            },
            '|' => {
                header.push(std::mem::take(&mut cur));
                if header.len() == 7 {
                    ext_start = Some(i + 1);
                    break;
                }
            }
            c => cur.push(c),
        }
    }
    let ext_start =
        ext_start.ok_or_else(|| format!("CEF line has fewer than 8 fields: {line:?}"))?;
    let ext = parse_cef_extension(&rest[ext_start..])?;
    Ok(Cef { header, ext })
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'[' || c == b']'
}

/// Splits a CEF extension into (key, unescaped value) pairs.
pub fn parse_cef_extension(ext: &str) -> Result<Vec<(String, String)>, String> {
    let b = ext.as_bytes();
    // A key starts at 0 or after a space, runs over key chars and ends at an unescaped `=`.
    let key_at = |i: usize| -> Option<usize> {
        if i != 0 && b[i - 1] != b' ' {
            return None;
        }
        let mut j = i;
        while j < b.len() && is_key_char(b[j]) {
            j += 1;
        }
        (j > i && j < b.len() && b[j] == b'=').then_some(j)
    };
    let mut starts = Vec::new();
    let mut i = 0;
    let mut escaped = false;
    while i < b.len() {
        if escaped {
            escaped = false;
        } else if b[i] == b'\\' {
            escaped = true;
        } else if let Some(eq) = key_at(i) {
            starts.push((i, eq));
            i = eq + 1;
            continue;
        }
        i += 1;
    }
    if ext.is_empty() {
        return Ok(Vec::new());
    }
    if starts.first().map(|s| s.0) != Some(0) {
        return Err(format!("extension does not start with key=: {ext:?}"));
    }
    let mut out = Vec::new();
    for (n, &(k, eq)) in starts.iter().enumerate() {
        let end = match starts.get(n + 1) {
            Some(&(next, _)) => next - 1, // drop the separating space
            None => ext.len(),
        };
        let raw = &ext[eq + 1..end];
        let mut v = String::new();
        let mut it = raw.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('\\') => v.push('\\'),
                    Some('=') => v.push('='),
                    Some('n') => v.push('\n'),
                    Some('r') => v.push('\r'),
                    Some(o) => return Err(format!("bad escape \\{o} in {raw:?}")),
                    None => return Err(format!("lone backslash at the end of {raw:?}")),
                }
            } else if c == '=' {
                return Err(format!("unescaped `=` in value {raw:?}"));
            } else {
                v.push(c);
            }
        }
        out.push((ext[k..eq].to_string(), v));
    }
    Ok(out)
}

/// Parses every frame as RFC 5424 + CEF and returns the `src` values, panicking with the
/// offending frame on any parse error.
pub fn src_values(frames: &[String]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            let s = parse_rfc5424(f).unwrap_or_else(|e| panic!("bad RFC 5424 frame ({e}): {f:?}"));
            let cef = parse_cef(&s.msg).unwrap_or_else(|e| panic!("bad CEF ({e}): {f:?}"));
            cef.get("src")
                .unwrap_or_else(|| panic!("no src= in {f:?}"))
                .to_string()
        })
        .collect()
}

/// Counts of each value.
pub fn tally(values: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for v in values {
        *m.entry(v.clone()).or_insert(0) += 1;
    }
    m
}

// Misbehaving receivers, a private network namespace and wrapped commands for tests/delivery.rs.
pub mod faults;

// TLS certificates and a rustls receiver; UDP and unix-socket receivers (tests/transports.rs).
pub mod sockets;
pub mod tls;
