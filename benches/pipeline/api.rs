//! A minimal, fast fake of `GET /api/v1/iocs`: HTTP/1.1 with keep-alive on 127.0.0.1, one
//! thread per connection, every page a slice of the pre-rendered [`Feed`] written straight to
//! the socket. It honours `offset`, `limit` (capped at [`MAX_LIMIT`], reported in
//! `meta.limit`) and `since` (items with `last_seen` after it), and stamps `meta.generated_at`
//! and `Date` with the real clock. No authentication, no faults: this is a benchmark.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use chrono::{DateTime, Utc};

use crate::feed::Feed;

/// The tier's cap on `limit` (the daemon's `page_size` may not exceed it either).
pub const MAX_LIMIT: usize = 10_000;

pub struct FakeApi {
    pub addr: SocketAddr,
    /// Requests answered so far (any path).
    pub requests: Arc<AtomicU64>,
    /// Body bytes served so far.
    pub bytes: Arc<AtomicU64>,
}

impl FakeApi {
    pub fn start(feed: Arc<Feed>) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake API");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (r, b) = (requests.clone(), bytes.clone());
        thread::Builder::new()
            .name("fake-api".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Ok(conn) = conn else { continue };
                    let (feed, r, b) = (feed.clone(), r.clone(), b.clone());
                    thread::spawn(move || {
                        let _ = serve(conn, addr, &feed, &r, &b);
                    });
                }
            })
            .unwrap();
        FakeApi {
            addr,
            requests,
            bytes,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
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
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
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

fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn serve(
    mut conn: TcpStream,
    addr: SocketAddr,
    feed: &Feed,
    requests: &AtomicU64,
    bytes: &AtomicU64,
) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        // One request head (GET has no body).
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let n = conn.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let mut parts = lines.next().unwrap_or("").split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let close = lines.any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
            })
        });
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        requests.fetch_add(1, Ordering::Relaxed);
        let now = Utc::now();
        if method != "GET" || !path.ends_with("/iocs") {
            let body = br#"{"error":{"code":"not_found","message":"no such endpoint"}}"#;
            write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )?;
            conn.write_all(body)?;
            continue;
        }
        let (mut limit, mut offset, mut since) = (100usize, 0usize, None);
        for p in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let v = percent_decode(v);
            match k {
                "limit" => limit = v.parse().unwrap_or(100).max(1),
                "offset" => offset = v.parse().unwrap_or(0),
                "since" => {
                    since = DateTime::parse_from_rfc3339(&v)
                        .or_else(|_| DateTime::parse_from_rfc3339(&v.replace(' ', "+")))
                        .ok()
                        .map(|t| t.timestamp())
                }
                _ => {}
            }
        }
        let limit = limit.min(MAX_LIMIT);
        let total = feed.count_since(since);
        let (a, b) = (offset.min(total), (offset + limit).min(total));
        let generated = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let prefix = Feed::prefix(total, limit, offset, &generated);
        let items = feed.items(a, b);
        let suffix = Feed::suffix(&format!("http://{addr}/api/v1/iocs"), total, limit, offset);
        let len = prefix.len() + items.len() + suffix.len();
        let mut head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nDate: {}\r\nX-RateLimit-Limit: 1000000\r\nX-RateLimit-Remaining: 999999\r\nX-RateLimit-Reset: {}\r\n",
            http_date(now),
            now.timestamp() + 60
        );
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        head.push_str(&prefix);
        conn.write_all(head.as_bytes())?;
        conn.write_all(items)?;
        conn.write_all(suffix.as_bytes())?;
        bytes.fetch_add(len as u64, Ordering::Relaxed);
        if close {
            return Ok(());
        }
    }
}
