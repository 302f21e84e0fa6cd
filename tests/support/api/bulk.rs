//! A fast fake of the list endpoint for large, fixed feeds (tens of thousands of
//! indicators), where [`super::FakeApi`]'s per-request filtering would dominate a test's time.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use super::API_KEY;
use crate::support::feed::{iso, now_secs, parse_time};
use crate::support::http::{error_body, parse_query, read_head};

/// The query of every request a [`BulkApi`] answered, in order.
type QueryLog = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// The list endpoint of the SOC Defenders API for a large, fixed feed: items are serialized
/// once and pages are cut from them, so a 50,000-item feed costs microseconds per page (the
/// general [`FakeApi`](super::FakeApi) filters, sorts and clones the whole feed on every request, about
/// two seconds per page at that size in a debug build). It honours `since` (strictly newer
/// `last_seen`), `offset` and `limit` capped at `max_limit`, requires the standard key, and
/// records each request's query. Items must be newest first, as `ipv4_feed` makes them.
pub struct BulkApi {
    pub addr: std::net::SocketAddr,
    requests: QueryLog,
    stop: Arc<AtomicBool>,
}

impl BulkApi {
    pub fn start(feed: &[serde_json::Value], max_limit: usize) -> BulkApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind bulk API");
        let addr = listener.local_addr().unwrap();
        let items: Arc<Vec<(i64, String)>> = Arc::new(
            feed.iter()
                .map(|v| {
                    let t = v["last_seen"]
                        .as_str()
                        .and_then(parse_time)
                        .map(|t| t.timestamp())
                        .unwrap_or(0);
                    (t, v.to_string())
                })
                .collect(),
        );
        assert!(
            items.windows(2).all(|w| w[0].0 >= w[1].0),
            "BulkApi wants the feed newest first"
        );
        let requests: QueryLog = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (items, r) = (items.clone(), r.clone());
                thread::spawn(move || {
                    let _ = serve_bulk(conn, addr, &items, max_limit, &r);
                });
            }
        });
        BulkApi {
            addr,
            requests,
            stop,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// The query of every request, in order.
    pub fn requests(&self) -> Vec<Vec<(String, String)>> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for BulkApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_bulk(
    mut conn: TcpStream,
    addr: std::net::SocketAddr,
    items: &[(i64, String)],
    max_limit: usize,
    requests: &Mutex<Vec<Vec<(String, String)>>>,
) -> std::io::Result<()> {
    use std::io::Write;
    let Some((_method, target, headers)) = read_head(&mut conn)? else {
        return Ok(());
    };
    let query = target
        .split_once('?')
        .map(|(_, q)| parse_query(q))
        .unwrap_or_default();
    requests.lock().unwrap().push(query.clone());
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let now = now_secs();
    let authorized = headers.iter().any(|(k, v)| {
        (k == "authorization" && v.strip_prefix("Bearer ") == Some(API_KEY))
            || (k == "x-api-key" && v == API_KEY)
    });
    let (status, body) = if !authorized {
        (
            "401 Unauthorized",
            error_body("invalid_api_key", "Invalid API key"),
        )
    } else {
        let limit = param("limit")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(100)
            .clamp(1, max_limit);
        let offset = param("offset")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let since = param("since")
            .and_then(|v| parse_time(&v).or_else(|| parse_time(&v.replace(' ', "+"))))
            .map(|t| t.timestamp());
        // Newest first: the items newer than `since` are a prefix.
        let total = match since {
            Some(s) => items.partition_point(|(t, _)| *t > s),
            None => items.len(),
        };
        let page: Vec<&str> = items[..total]
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(_, j)| j.as_str())
            .collect();
        let base = format!("http://{addr}/api/v1/iocs");
        let next = if offset + limit < total {
            format!(
                ",\"next\":\"{base}?limit={limit}&offset={}\"",
                offset + limit
            )
        } else {
            String::new()
        };
        (
            "200 OK",
            format!(
                "{{\"meta\":{{\"total\":{total},\"limit\":{limit},\"offset\":{offset},\"generated_at\":\"{}\",\"feed_version\":\"1.0\",\"source\":\"SOC Defenders\"}},\"data\":[{}],\"links\":{{\"self\":\"{base}?limit={limit}&offset={offset}\"{next}}}}}",
                iso(now),
                page.join(",")
            ),
        )
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-RateLimit-Limit: 100000\r\nX-RateLimit-Remaining: 99999\r\nX-RateLimit-Reset: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        now.timestamp() + 60,
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}
