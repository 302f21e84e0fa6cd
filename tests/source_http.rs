//! HTTP details of the API client, through the real binary: User-Agent, gzip, and which proxy
//! variables are honoured for which URL scheme.
//!
//! What reqwest 0.12 (hyper-util's proxy matcher) does with the environment, read once when the
//! client is built: an `http://` base_url goes through `HTTP_PROXY` (or `http_proxy`), an
//! `https://` one through `HTTPS_PROXY` (or `https_proxy`, by a `CONNECT` tunnel), either falls
//! back to `ALL_PROXY`/`all_proxy`; the upper-case name wins over the lower-case one.
//! `NO_PROXY`/`no_proxy` (comma-separated host names that also match their subdomains, IP
//! addresses, CIDR ranges, or `*`) bypasses the proxy; it is matched against the URL's host as
//! written, and loopback is not exempt unless listed. With `REQUEST_METHOD` set (CGI) all of
//! these are ignored.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use chrono::Duration as CDuration;
use support::*;

const WAIT: Duration = Duration::from_secs(15);
/// `once` with exactly the given proxy variables in its environment.
fn once_with_env(config: &std::path::Path, env: &[(&str, String)]) -> std::process::Output {
    let mut cmd = command(config, &["once"]);
    without_proxies(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_cmd(cmd).0
}

fn feed() -> Vec<serde_json::Value> {
    ipv4_feed(
        30,
        now_secs() - CDuration::minutes(1),
        Duration::from_secs(1),
    )
}

#[test]
fn requests_name_the_agent_and_accept_gzip_and_a_gzip_body_is_decoded() {
    let api = FakeApi::start(feed());
    api.set_gzip(true);
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem1", rx.addr)]);
    let out = once_with_env(&cfg, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    rx.wait_for(30, WAIT);
    assert_eq!(
        value_counts(&rx.frames()).len(),
        30,
        "the gzip body was decoded"
    );
    let reqs = api.ioc_requests();
    // The fake really answered with gzip (stored deflate blocks, which any decoder reads).
    let mut s = TcpStream::connect(api.addr).unwrap();
    s.write_all(
        format!(
            "GET /api/v1/iocs HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {API_KEY}\r\nAccept-Encoding: gzip\r\n\r\n",
            api.addr
        )
        .as_bytes(),
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(String::from_utf8_lossy(&raw[..split]).contains("Content-Encoding: gzip"));
    assert_eq!(&raw[split + 4..split + 6], &[0x1f, 0x8b]);

    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(
            r.header("user-agent"),
            Some(concat!("ioc-forwarder/", env!("CARGO_PKG_VERSION")))
        );
        assert!(
            r.header("accept-encoding")
                .is_some_and(|v| v.split(',').any(|e| e.trim() == "gzip")),
            "Accept-Encoding: {:?}",
            r.header("accept-encoding")
        );
        assert_eq!(r.header("accept"), Some("application/json"));
    }
}

/// A forward proxy on 127.0.0.1: records each request line; forwards absolute-form `GET`s to
/// their origin and refuses `CONNECT` (no TLS server here), so a tunnel attempt is visible.
struct FakeProxy {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeProxy {
    fn start() -> FakeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let s = seen.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || {
                    let _ = proxy_one(conn, &s);
                });
            }
        });
        FakeProxy { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

fn proxy_one(mut client: TcpStream, seen: &Mutex<Vec<String>>) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    seen.lock().unwrap().push(request_line.clone());
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method == "CONNECT" {
        client.write_all(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    // Absolute form: http://host:port/path?query
    let rest = target.strip_prefix("http://").unwrap_or(target);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut upstream = TcpStream::connect(authority)?;
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    for l in lines.filter(|l| !l.is_empty()) {
        if !l.to_ascii_lowercase().starts_with("proxy-") {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    upstream.write_all(out.as_bytes())?;
    let mut body = Vec::new();
    upstream.read_to_end(&mut body)?;
    client.write_all(&body)?;
    client.shutdown(Shutdown::Both)
}

#[test]
fn http_proxy_carries_an_http_base_url_and_no_proxy_bypasses_it() {
    let api = FakeApi::start(feed());
    let proxy = FakeProxy::start();
    let rx = TcpReceiver::start(Framing::Lf);
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem1", rx.addr)]);

    let out = once_with_env(&cfg, &[("HTTP_PROXY", proxy.url())]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    rx.wait_for(30, WAIT);
    assert_eq!(value_counts(&rx.frames()).len(), 30);
    let seen = proxy.seen();
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|l| l.starts_with(&format!("GET {}/iocs?", api.base_url()))),
        "every request went through the proxy in absolute form: {seen:?}"
    );
    assert_eq!(seen.len(), api.ioc_requests().len());

    // NO_PROXY names the API's host: straight there.
    let before_api = api.ioc_requests().len();
    let out = once_with_env(
        &cfg,
        &[
            ("HTTP_PROXY", proxy.url()),
            ("NO_PROXY", "localhost,127.0.0.1".to_string()),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(api.ioc_requests().len() > before_api, "the API was asked");
    assert_eq!(
        proxy.seen().len(),
        seen.len(),
        "NO_PROXY bypassed the proxy"
    );

    // The lower-case spellings are honoured too, and a CIDR in no_proxy matches.
    let out = once_with_env(&cfg, &[("http_proxy", proxy.url())]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let after_lower = proxy.seen().len();
    assert!(after_lower > seen.len(), "http_proxy was used");
    let out = once_with_env(
        &cfg,
        &[
            ("http_proxy", proxy.url()),
            ("no_proxy", "127.0.0.0/8".to_string()),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(proxy.seen().len(), after_lower, "no_proxy CIDR bypassed it");
}

#[test]
fn https_proxy_tunnels_an_https_base_url_and_is_not_used_for_http() {
    let api = FakeApi::start(feed());
    let proxy = FakeProxy::start();
    let rx = TcpReceiver::start(Framing::Lf);

    // An https:// API: the client asks the proxy for a CONNECT tunnel (refused here).
    let dir = tempdir();
    let https_port = reserve_port();
    let opts = ConfigOpts {
        request_timeout: "2s".to_string(),
        shutdown_timeout: "2s".to_string(),
        ..ConfigOpts::default()
    };
    let cfg = write_config_with(
        dir.path(),
        &format!("https://127.0.0.1:{https_port}/api/v1"),
        &[Dest::tcp("siem1", rx.addr)],
        &opts,
    );
    let out = once_with_env(&cfg, &[("HTTPS_PROXY", proxy.url())]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let seen = proxy.seen();
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|l| l.starts_with(&format!("CONNECT 127.0.0.1:{https_port} "))),
        "the https API was reached through a CONNECT tunnel: {seen:?}"
    );

    // HTTPS_PROXY does not apply to an http:// base_url.
    let dir = tempdir();
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem1", rx.addr)]);
    let before = proxy.seen().len();
    let out = once_with_env(&cfg, &[("HTTPS_PROXY", proxy.url())]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        proxy.seen().len(),
        before,
        "HTTPS_PROXY is for https:// only"
    );
    assert!(!api.ioc_requests().is_empty());

    // ALL_PROXY is the fallback for both schemes.
    let out = once_with_env(&cfg, &[("ALL_PROXY", proxy.url())]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        proxy.seen().len() > before,
        "ALL_PROXY carried the http request"
    );
}
