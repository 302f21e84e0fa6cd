//! How the fake API answers one request: record it, serve a fault if one is due, check the
//! key and the parameters as the API does, then send one page of the feed, newest first.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{ApiState, Fault, FeedHook, RateHeaders, RecordedRequest, RetryAfter};
use crate::support::feed::{iso, now_secs, parse_time};
use crate::support::http::{error_body, gzip_stored, http_date, parse_query, read_head, reason};

/// The path of the one endpoint the fake serves.
const IOCS: &str = "/api/v1/iocs";

const JSON: &str = "application/json";

/// What every answer of one request shares: the fake's clock and its rate-limit headers.
struct Reply {
    clock: DateTime<Utc>,
    rate: Option<RateHeaders>,
    /// Leave `X-RateLimit-Reset` out.
    no_reset: bool,
    /// Leave `Date` out.
    no_date: bool,
}

/// Everything the answer to one request depends on, read from [`ApiState`] in one go.
struct Decision {
    fault: Option<Fault>,
    api_key: String,
    max_limit: usize,
    /// A fixed server clock (`set_clock`): the "now" of `meta`.
    fixed_clock: Option<DateTime<Utc>>,
    tier_lookback: Option<chrono::Duration>,
    gzip: bool,
    hook: Option<FeedHook>,
    /// How many IOC requests came before this one.
    ioc_index: usize,
    reply: Reply,
}

pub(super) fn serve_connection(
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
        method,
        path,
        query,
        headers,
        at: Instant::now(),
        clock: now_secs(),
    };
    let d = decide(state, &mut req);
    if req.path == IOCS {
        if let Some(hook) = &d.hook {
            hook(d.ioc_index, &req, &mut feed.lock().unwrap());
        }
    }
    if let Some(answered) = serve_fault(&mut conn, &d.reply, d.fault.as_ref()) {
        return answered;
    }
    if req.method != "GET" || req.path != IOCS {
        let body = error_body("not_found", "no such endpoint");
        return write_json(&mut conn, &d.reply, 404, &body);
    }
    if let Err(body) = authenticate(&req, &d.api_key) {
        return write_json(&mut conn, &d.reply, 401, &body);
    }
    let now = d.fixed_clock.unwrap_or(d.reply.clock);
    let q = match PageQuery::parse(&req, d.max_limit, d.tier_lookback, now) {
        Ok(q) => q,
        Err(what) => {
            let body = error_body("invalid_parameter", what);
            return write_json(&mut conn, &d.reply, 400, &body);
        }
    };
    let items: Vec<Value> = {
        let feed = feed.lock().unwrap();
        feed.iter().filter(|it| q.matches(it)).cloned().collect()
    };
    let body = page_body(addr, &req, &q, items, now, d.reply.no_date);
    if let Some(Fault::Delay(delay)) = d.fault {
        thread::sleep(delay);
    }
    let gzip = d.gzip && accepts_gzip(&req);
    send_page(&mut conn, &d.reply, d.fault, &body, gzip)
}

/// Records the request and reads what its answer depends on, holding the state lock only
/// briefly.
fn decide(state: &Mutex<ApiState>, req: &mut RecordedRequest) -> Decision {
    let mut s = state.lock().unwrap();
    req.clock = s.clock.unwrap_or_else(|| now_secs() + s.clock_offset);
    let ioc_index = s.requests.iter().filter(|r| r.path == IOCS).count();
    s.requests.push(req.clone());
    let fault = match s.faults.pop_front() {
        Some(f) => Some(f),
        None => s.fault_rule.clone().and_then(|rule| rule(req)),
    };
    let rate = s.rate_headers.pop_front();
    Decision {
        fault,
        api_key: s.api_key.clone(),
        max_limit: s.max_limit,
        fixed_clock: s.clock,
        tier_lookback: s.tier_lookback,
        gzip: s.gzip,
        hook: s.feed_hook.clone(),
        ioc_index,
        reply: Reply {
            clock: req.clock,
            rate,
            no_reset: false,
            no_date: s.no_server_time,
        },
    }
}

/// Answers the faults that take the place of the whole answer; `None` for the others (no
/// fault, a delay, or a fault in the page's body).
fn serve_fault(
    conn: &mut TcpStream,
    reply: &Reply,
    fault: Option<&Fault>,
) -> Option<std::io::Result<()>> {
    let answered = match fault? {
        Fault::Status(status, code) => {
            let body = error_body(code, "injected failure");
            write_json(conn, reply, *status, &body)
        }
        Fault::RateLimited {
            retry_after,
            reset_in,
        } => rate_limited(conn, reply, retry_after.as_ref(), *reset_in),
        Fault::Html => {
            let body = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body><form action=\"/login\"></form></body></html>\n";
            let html = "text/html; charset=utf-8";
            write_response(conn, reply, 200, html, &[], body.as_bytes(), body.len())
        }
        Fault::Raw {
            status,
            content_type,
            body,
        } => write_response(
            conn,
            reply,
            *status,
            content_type,
            &[],
            body.as_bytes(),
            body.len(),
        ),
        Fault::Close => {
            let _ = conn.shutdown(Shutdown::Both);
            Ok(())
        }
        Fault::Delay(_) | Fault::MalformedJson | Fault::CutConnection | Fault::StallBody(_) => {
            return None
        }
    };
    Some(answered)
}

/// HTTP 429 `rate_limit_exceeded` with `X-RateLimit-Remaining: 0`, and `X-RateLimit-Reset` and
/// `Retry-After` when the fault has them.
fn rate_limited(
    conn: &mut TcpStream,
    reply: &Reply,
    retry_after: Option<&RetryAfter>,
    reset_in: Option<i64>,
) -> std::io::Result<()> {
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
        no_date: reply.no_date,
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
    write_response(conn, &reply, 429, JSON, &extra, body.as_bytes(), body.len())
}

/// Bearer (recommended) or `X-API-Key`; `Err` is the body of the 401 answer.
fn authenticate(req: &RecordedRequest, api_key: &str) -> Result<(), String> {
    let presented = match (req.header("authorization"), req.header("x-api-key")) {
        (Some(a), _) => Some(a.strip_prefix("Bearer ").unwrap_or("").trim().to_string()),
        (None, Some(k)) => Some(k.trim().to_string()),
        (None, None) => None,
    };
    match presented {
        None => Err(error_body("missing_api_key", "API key required")),
        Some(k) if k != api_key => Err(error_body("invalid_api_key", "Invalid API key")),
        Some(_) => Ok(()),
    }
}

fn norm_type(t: &str) -> String {
    t.replace('_', "-").to_ascii_lowercase()
}

/// The list endpoint's parameters, checked the way the API checks them.
struct PageQuery {
    limit: usize,
    offset: usize,
    /// After the tier's lookback clamp.
    since: Option<DateTime<Utc>>,
    type_filter: Option<String>,
    confidence: Option<String>,
    category: Option<String>,
}

impl PageQuery {
    /// `Err` is the message of the 400 answer.
    fn parse(
        req: &RecordedRequest,
        max_limit: usize,
        tier_lookback: Option<chrono::Duration>,
        now: DateTime<Utc>,
    ) -> Result<PageQuery, &'static str> {
        let limit = match req.param("limit") {
            None => 100,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => return Err("limit must be a positive integer"),
            },
        }
        .min(max_limit);
        let offset = match req.param("offset") {
            None => 0,
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| "offset must be a non-negative integer")?,
        };
        let mut since = match req.param("since") {
            None => None,
            // A raw `+` in an offset decodes as a space; accept that form too.
            Some(v) => Some(
                parse_time(v)
                    .or_else(|| parse_time(&v.replace(' ', "+")))
                    .ok_or("since must be an ISO 8601 datetime")?,
            ),
        };
        if let Some(lb) = tier_lookback {
            // Older than the tier's window is silently clamped, as the API does.
            let floor = now - lb;
            since = Some(since.map_or(floor, |s| s.max(floor)));
        }
        Ok(PageQuery {
            limit,
            offset,
            since,
            type_filter: req.param("type").map(norm_type),
            confidence: req.param("confidence").map(|s| s.to_string()),
            category: req.param("category").map(|s| s.to_string()),
        })
    }

    /// Whether the filters select `it`: `last_seen` strictly after `since`, and the type,
    /// confidence and category asked for.
    fn matches(&self, it: &Value) -> bool {
        if let Some(since) = self.since {
            match it["last_seen"].as_str().and_then(parse_time) {
                Some(l) if l > since => {}
                _ => return false,
            }
        }
        if let Some(t) = &self.type_filter {
            if it["type"].as_str().map(norm_type).as_deref() != Some(t.as_str()) {
                return false;
            }
        }
        if let Some(c) = &self.confidence {
            if it["confidence"].as_str() != Some(c.as_str()) {
                return false;
            }
        }
        if let Some(c) = &self.category {
            if it["source"]["category"].as_str() != Some(c.as_str()) {
                return false;
            }
        }
        true
    }
}

/// The list endpoint's JSON for the selected `items`: newest first (ties broken by id so the
/// order is stable), one page of them, `meta` (without `generated_at` when the fake tells no
/// time) and `links` (with `next` while more follow).
fn page_body(
    addr: SocketAddr,
    req: &RecordedRequest,
    q: &PageQuery,
    mut items: Vec<Value>,
    now: DateTime<Utc>,
    timeless: bool,
) -> String {
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
    let (limit, offset) = (q.limit, q.offset);
    let total = items.len();
    let data: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();

    let base = format!("http://{addr}{IOCS}");
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
                "since": q.since.map(iso).map(Value::from).unwrap_or(Value::Null),
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
    body.to_string()
}

fn accepts_gzip(req: &RecordedRequest) -> bool {
    req.header("accept-encoding")
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")))
}

/// Sends the page: whole (gzipped when `gzip`), or as much of it as a body fault lets through.
fn send_page(
    conn: &mut TcpStream,
    reply: &Reply,
    fault: Option<Fault>,
    body: &str,
    gzip: bool,
) -> std::io::Result<()> {
    let half = &body.as_bytes()[..body.len() / 2];
    match fault {
        Some(Fault::MalformedJson) => write_response(conn, reply, 200, JSON, &[], half, half.len()),
        Some(Fault::CutConnection) => {
            let r = write_response(conn, reply, 200, JSON, &[], half, body.len());
            let _ = conn.shutdown(Shutdown::Both);
            r
        }
        Some(Fault::StallBody(d)) => {
            let r = write_response(conn, reply, 200, JSON, &[], half, body.len());
            thread::sleep(d);
            let _ = conn.shutdown(Shutdown::Both);
            r
        }
        _ if gzip => {
            let gz = gzip_stored(body.as_bytes());
            let encoding = [("Content-Encoding".to_string(), "gzip".to_string())];
            write_response(conn, reply, 200, JSON, &encoding, &gz, gz.len())
        }
        _ => write_json(conn, reply, 200, body),
    }
}

fn write_json(conn: &mut TcpStream, reply: &Reply, status: u16, body: &str) -> std::io::Result<()> {
    write_response(conn, reply, status, JSON, &[], body.as_bytes(), body.len())
}

/// One answer: the status line, `Date` and the rate-limit headers of `reply` (unless `extra`
/// sets them), `extra`, and `body` under a `Content-Length` that may promise more than it is.
fn write_response(
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
