//! The SOC Defenders API client: one page request at a time, with authentication, rate-limit
//! pacing and retries of transient failures. Walking the pages of a cycle and the cursor live
//! in [`super`], so this file only knows HTTP.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, CONTENT_TYPE, DATE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use super::prepare::{Prep, PreparedPage};
use crate::backoff::{jitter, Backoff};
use crate::config::{ApiConfig, Secret};
use crate::decode::{self, Data};
use crate::liveness::Heartbeat;
use crate::store::Keyer;

/// How a request failed; `kind()` is the `ioc_forwarder_source_errors_total` label.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the API refused the key {key}: HTTP {status} {code}")]
    Auth {
        status: u16,
        code: String,
        /// The key as check-config shows it: its prefix only when it is long enough.
        key: String,
    },
    #[error("the API rate limit is still exhausted after {attempts} waits")]
    RateLimited { attempts: u32 },
    #[error("HTTP {status} from the API: {detail}")]
    Status { status: u16, detail: String },
    #[error("request to the API timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the API: {0}")]
    Connect(String),
    #[error("the API answered with a body that is not the expected JSON: {0}")]
    Decode(String),
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    #[error("TLS to the API failed: {0}")]
    Tls(String),
}

impl SourceError {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Auth { .. } => "auth",
            SourceError::RateLimited { .. } => "rate_limit",
            SourceError::Timeout(_) => "timeout",
            SourceError::Decode(_) => "decode",
            SourceError::Status { .. }
            | SourceError::Connect(_)
            | SourceError::Client(_)
            | SourceError::Tls(_) => "http",
        }
    }

    /// Worth retrying within the cycle (the server or the network may recover in seconds).
    fn transient(&self) -> bool {
        match self {
            SourceError::Status { status, .. } => *status >= 500 || *status == 408,
            SourceError::Timeout(_) | SourceError::Connect(_) | SourceError::Decode(_) => true,
            _ => false,
        }
    }
}

/// The rustls error somewhere in an error's chain (reqwest → hyper → io → rustls).
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        // io::Error's source() skips the error it wraps; step into it instead.
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// One operator-facing sentence for a TLS failure talking to the API.
fn describe_tls(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "the API's certificate is not issued by a trusted CA; for a private CA or a TLS-inspecting proxy set [source] ca_file".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => {
            format!("the API's certificate is not valid for the host in base_url ({e})")
        }
        rustls::Error::InvalidCertificate(C::Expired) | rustls::Error::InvalidCertificate(C::ExpiredContext { .. }) => {
            format!("the API's certificate has expired (or this host's clock is wrong): {e}")
        }
        other => other.to_string(),
    }
}

/// One page as served.
pub struct Page {
    /// The page's items, prepared for the queue as they were decoded.
    pub items: PreparedPage,
    /// `meta.generated_at`, else the HTTP `Date` header: the server's clock either way.
    pub server_time: Option<DateTime<Utc>>,
    /// `meta.limit`: how many items the server was willing to send (it caps by tier).
    pub limit: Option<u64>,
    pub total: Option<u64>,
    /// `meta.offset`: where the server says this page starts.
    pub offset: Option<u64>,
}

/// The `X-RateLimit-*` headers of the last response, as read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateBudget {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// How long until the window resets, measured on the server's clock (its `Date` header)
    /// when it sent one, so a skewed host clock does not stretch or shrink the wait.
    pub reset_in: Option<Duration>,
}

/// Query parameters the server applies for us.
#[derive(Debug, Clone, Default)]
pub struct ServerFilters {
    pub ioc_type: Option<String>,
    pub confidence: Option<String>,
    pub industry: Option<String>,
    pub category: Option<String>,
}

pub struct ApiClient {
    http: reqwest::Client,
    base_url: String,
    key: Secret,
    timeout: Duration,
    /// Do not send before this instant (rate-limit pacing).
    not_before: Option<Instant>,
    /// What the last response said about the rate-limit budget.
    budget: Option<RateBudget>,
    /// Retries of transient failures per page request.
    attempts: u32,
    backoff: Backoff,
    /// The last page's body buffer, reused for the next page of the same walk: a fresh 6 MB
    /// allocation per page is a fresh mapping to fault in (and the default collect copies
    /// the body once more). Released at the end of every cycle.
    spare: Vec<u8>,
    /// [`MAX_BODY_BYTES`] (smaller in tests).
    max_body: usize,
    /// Where each request and wait promises its bound, for the watchdog.
    beat: Option<Heartbeat>,
}

/// A response body larger than this is refused (a page of 10,000 indicators is ~6 MB; even
/// 10,000 8 KiB URLs stay far below): a broken or hostile server must not exhaust memory.
pub const MAX_BODY_BYTES: usize = 512 * 1024 * 1024;

const MAX_RATE_LIMIT_WAITS: u32 = 10;
/// Never sleep longer than this for one rate-limit wait, whatever the server says.
const MAX_RATE_LIMIT_SLEEP: Duration = Duration::from_secs(3600);
/// The longest floor of the exponential wait between consecutive 429s (1 s, 2 s, 4 s, ...).
const MAX_RATE_LIMIT_FLOOR: Duration = Duration::from_secs(64);
/// Random extra on top of every rate-limit wait, so agents sharing a key do not return in step.
const RATE_LIMIT_JITTER: Duration = Duration::from_secs(1);

impl ApiClient {
    pub fn new(cfg: &ApiConfig, retry_max: Duration) -> Result<ApiClient, SourceError> {
        // Config load refuses this unless allow_insecure_http is set; every start says it again.
        if let Some(host) = cfg.cleartext_host() {
            tracing::warn!(
                host = %host,
                "base_url is http:// to another host (allow_insecure_http = true): the API key crosses the network in clear text; use https:// where you can"
            );
        }
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("ioc-forwarder/", env!("CARGO_PKG_VERSION")))
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(Duration::from_secs(30)))
            .gzip(true)
            .https_only(cfg.base_url.starts_with("https://"));
        if let Some(ca) = &cfg.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| SourceError::Client(format!("cannot read {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                SourceError::Client(format!(
                    "{} holds no usable PEM certificate: {e}",
                    ca.display()
                ))
            })?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b.build().map_err(|e| SourceError::Client(e.to_string()))?;
        Ok(ApiClient {
            spare: Vec::new(),
            max_body: MAX_BODY_BYTES,
            beat: None,
            http,
            base_url: cfg.base_url.clone(),
            key: cfg.api_key.clone(),
            timeout: cfg.request_timeout,
            not_before: None,
            budget: None,
            attempts: 5,
            backoff: Backoff::new(
                Duration::from_secs(1),
                retry_max.min(Duration::from_secs(60)),
            ),
        })
    }

    pub fn watched_by(&mut self, beat: Heartbeat) {
        self.beat = Some(beat);
    }

    /// Promises the watchdog to be back within `wait` plus one request (decoding included).
    fn step(&self, wait: Duration) {
        if let Some(b) = &self.beat {
            b.expect_within(wait + self.timeout + super::STEP_ALLOWANCE);
        }
    }

    /// The rate-limit budget the last response announced (`None` before the first response).
    pub fn rate_budget(&self) -> Option<RateBudget> {
        self.budget
    }

    /// Fetches one page, retrying transient failures with backoff and waiting out rate limits.
    pub async fn page(
        &mut self,
        since: Option<DateTime<Utc>>,
        offset: u64,
        limit: u32,
        filters: &ServerFilters,
        prep: &Arc<Prep>,
        keyer: Keyer,
    ) -> Result<Page, SourceError> {
        let query = page_query(since, offset, limit, filters);
        let mut failures = 0u32;
        let mut rate_waits = 0u32;
        self.backoff.reset();
        loop {
            if let Some(t) = self.not_before.take() {
                self.step(t.saturating_duration_since(Instant::now()));
                tokio::time::sleep_until(t).await;
            }
            self.step(Duration::ZERO);
            let attempt = self.request(&query, prep, keyer).await;
            // Every failed request counts, also one that is waited out or retried below and
            // then succeeds: a 429 the agent recovered from still tells of a tight budget.
            if let Err(a) = &attempt {
                crate::metrics::get().source_error(a.kind());
            }
            match attempt {
                Ok(page) => return Ok(page),
                Err(Attempt::RateLimited(wait)) => {
                    rate_waits += 1;
                    if rate_waits > MAX_RATE_LIMIT_WAITS {
                        return Err(SourceError::RateLimited {
                            attempts: rate_waits - 1,
                        });
                    }
                    // What the server asked for, but never less than an exponential floor: a
                    // server whose Reset is already past must not be asked again at once.
                    let floor =
                        Duration::from_secs(1 << (rate_waits - 1).min(6)).min(MAX_RATE_LIMIT_FLOOR);
                    let wait =
                        wait.max(floor).min(MAX_RATE_LIMIT_SLEEP) + jitter(RATE_LIMIT_JITTER);
                    tracing::warn!(wait = ?wait, attempt = rate_waits, offset, "API rate limit reached (HTTP 429); waiting before the next request");
                    self.not_before = None;
                    self.step(wait);
                    tokio::time::sleep(wait).await;
                }
                Err(Attempt::Failed(e)) if e.transient() && failures + 1 < self.attempts => {
                    failures += 1;
                    let wait = self.backoff.next_delay();
                    tracing::warn!(error = %e, attempt = failures, retry_in = ?wait, offset, "API request failed; retrying");
                    self.step(wait);
                    tokio::time::sleep(wait).await;
                }
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
    }

    async fn request(
        &mut self,
        query: &[(&str, String)],
        prep: &Arc<Prep>,
        keyer: Keyer,
    ) -> Result<Page, Attempt> {
        let url = format!("{}/iocs", self.base_url);
        let sent = Instant::now();
        let resp = self
            .http
            .get(&url)
            .bearer_auth(self.key.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .query(query)
            .send()
            .await
            .map_err(|e| Attempt::Failed(self.transport_error(e)))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if let Ok(asked) = reqwest::Url::parse(&url) {
            if resp.url().host_str() != asked.host_str() {
                // reqwest drops the Authorization header on a redirect to another host, so a
                // 401 that follows is about the redirect, not the key.
                tracing::warn!(from = %url, to = %resp.url(), "the API redirected to another host; set [source].base_url to it");
            }
        }
        self.pace(&headers, sent);
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Attempt::RateLimited(retry_after(&headers)));
        }
        let body = self.read_body(resp).await?;
        self.refused(status, &body).map_err(Attempt::Failed)?;
        // Decoding a full page takes tens of milliseconds of CPU: off the async workers, so
        // delivery keeps running meanwhile (and a backfill decodes on one core while the
        // previous page commits on the other).
        let prep = Arc::clone(prep);
        let (parsed, body) =
            tokio::task::spawn_blocking(move || (parse_page(&body, &headers, &prep, &keyer), body))
                .await
                .map_err(|e| {
                    Attempt::Failed(SourceError::Decode(format!(
                        "the page decoder stopped: {e}"
                    )))
                })?;
        self.spare = body;
        parsed.map_err(Attempt::Failed)
    }

    /// The error a response's status stands for: a key the API refused, or any other status
    /// that is not a success (with the API's error code when the body has one).
    fn refused(&self, status: StatusCode, body: &[u8]) -> Result<(), SourceError> {
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(SourceError::Auth {
                status: status.as_u16(),
                code: error_code(body).unwrap_or_else(|| "no error code".into()),
                key: self.key.to_string(),
            });
        }
        if !status.is_success() {
            let detail = error_code(body).unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("unexpected status")
                    .to_string()
            });
            return Err(SourceError::Status {
                status: status.as_u16(),
                detail,
            });
        }
        Ok(())
    }

    /// Reads a whole body into the reused buffer, refusing one over [`MAX_BODY_BYTES`].
    async fn read_body(&mut self, mut resp: reqwest::Response) -> Result<Vec<u8>, Attempt> {
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        if let Some(n) = resp.content_length() {
            // Exact: `reserve` would double a buffer a few bytes too small for this page.
            buf.reserve_exact(usize::try_from(n).unwrap_or(usize::MAX).min(self.max_body));
        }
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Attempt::Failed(self.transport_error(e)))?
        {
            if buf.len() + chunk.len() > self.max_body {
                return Err(Attempt::Failed(SourceError::Decode(format!(
                    "the response body is larger than {} MiB; refusing it",
                    self.max_body >> 20
                ))));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }

    /// Frees the body buffer kept between the pages of a walk.
    pub fn release_buffer(&mut self) {
        self.spare = Vec::new();
    }

    fn transport_error(&self, e: reqwest::Error) -> SourceError {
        // reqwest errors carry the URL (never the key: it travels in a header).
        if let Some(r) = rustls_error(&e) {
            // A certificate the client refuses will be refused again in a second: not transient.
            return SourceError::Tls(describe_tls(r));
        }
        if e.is_timeout() {
            SourceError::Timeout(self.timeout)
        } else if e.is_decode() || e.is_body() {
            SourceError::Decode(format!("body cut short or unreadable: {e}"))
        } else {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            SourceError::Connect(msg)
        }
    }

    /// Reads `X-RateLimit-*` on every response and, when the budget is spent, holds the next
    /// request until the window resets instead of provoking a 429. `sent` is when the request
    /// left: the wait is counted from there, the server's answer being at least that recent.
    fn pace(&mut self, h: &HeaderMap, sent: Instant) {
        let num = |name: &str| h.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        let budget = RateBudget {
            limit: num("x-ratelimit-limit"),
            remaining: num("x-ratelimit-remaining"),
            reset_in: num("x-ratelimit-reset").map(|r| until_reset(h, r)),
        };
        if budget != RateBudget::default() {
            tracing::trace!(limit = ?budget.limit, remaining = ?budget.remaining, reset_in = ?budget.reset_in, "API rate-limit budget");
        }
        self.budget = Some(budget);
        if budget.remaining == Some(0) {
            // Without a Reset, the documented window is one minute.
            let wait = budget
                .reset_in
                .unwrap_or(Duration::from_secs(60))
                .min(MAX_RATE_LIMIT_SLEEP);
            tracing::info!(wait = ?wait, limit = ?budget.limit, "API rate-limit budget spent; holding the next request until the window resets");
            self.not_before = Some(sent + wait + jitter(RATE_LIMIT_JITTER));
        }
    }
}

enum Attempt {
    RateLimited(Duration),
    Failed(SourceError),
}

impl Attempt {
    /// The `ioc_forwarder_source_errors_total` label of this failed request.
    fn kind(&self) -> &'static str {
        match self {
            Attempt::RateLimited(_) => "rate_limit",
            Attempt::Failed(e) => e.kind(),
        }
    }
}

/// The server's clock as its `Date` header tells it, in Unix seconds.
fn server_now(h: &HeaderMap) -> Option<i64> {
    let d = h.get(DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(d.trim())
        .ok()
        .map(|t| t.timestamp())
}

/// Seconds from now until the Unix time `at`, both on the server's clock when it sent a `Date`
/// header (so a host clock hours off does not turn a one-minute wait into an hour or into
/// none), else on ours. At least one second.
fn until_unix(h: &HeaderMap, at: i64) -> Duration {
    let now = server_now(h).unwrap_or_else(|| Utc::now().timestamp());
    Duration::from_secs(at.saturating_sub(now).max(1) as u64)
}

/// `X-RateLimit-Reset` is documented as Unix seconds; a small number can only be a delta
/// (some gateways send seconds-until-reset), and is taken as one.
fn until_reset(h: &HeaderMap, reset: u64) -> Duration {
    const A_YEAR_2001: u64 = 1_000_000_000;
    if reset < A_YEAR_2001 {
        Duration::from_secs(reset.max(1))
    } else {
        until_unix(h, reset.min(i64::MAX as u64) as i64)
    }
}

/// How long a 429 asks us to wait: `Retry-After` (seconds or HTTP date), else
/// `X-RateLimit-Reset`, else one minute (the documented window).
fn retry_after(h: &HeaderMap) -> Duration {
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(v) = text(RETRY_AFTER.as_str()) {
        if let Ok(secs) = v.parse::<u64>() {
            return Duration::from_secs(secs.max(1));
        }
        if let Ok(t) = DateTime::parse_from_rfc2822(v) {
            return until_unix(h, t.timestamp());
        }
    }
    if let Some(reset) = text("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok()) {
        return until_reset(h, reset);
    }
    Duration::from_secs(60)
}

/// The query of one page request: paging, the window's start, and the filters the server
/// applies.
fn page_query(
    since: Option<DateTime<Utc>>,
    offset: u64,
    limit: u32,
    filters: &ServerFilters,
) -> Vec<(&'static str, String)> {
    let mut query: Vec<(&str, String)> =
        vec![("limit", limit.to_string()), ("offset", offset.to_string())];
    if let Some(s) = since {
        query.push((
            "since",
            s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
    }
    for (k, v) in [
        ("type", &filters.ioc_type),
        ("confidence", &filters.confidence),
        ("industry", &filters.industry),
        ("category", &filters.category),
    ] {
        if let Some(v) = v {
            query.push((k, v.clone()));
        }
    }
    query
}

/// `error.code` of the API's error envelope, when the body has one.
fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let code = v.get("error")?.get("code")?.as_str()?;
    // The code is shown in logs: keep it short and printable.
    Some(
        code.chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect(),
    )
}

fn parse_page(
    body: &[u8],
    headers: &HeaderMap,
    prep: &Prep,
    keyer: &Keyer,
) -> Result<Page, SourceError> {
    let ctype = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.contains("text/html") {
        return Err(SourceError::Decode(format!(
            "got {ctype} instead of JSON (a proxy or login page?)"
        )));
    }
    // Each item is filtered, hashed and encoded as soon as it is decoded.
    let mut items = PreparedPage::default();
    let mut line = String::with_capacity(1024);
    let parsed = decode::body_each(body, &mut |item| {
        prep.add(&mut items, item, keyer, &mut line)
    })
    .map_err(|e| {
        SourceError::Decode(format!("invalid JSON ({e}) in a {}-byte body", body.len()))
    })?;
    match parsed.data {
        Data::Items(_) => {}
        Data::Null | Data::Missing if parsed.has_meta => {}
        _ => {
            return Err(SourceError::Decode(
                "the body has no `data` array".to_string(),
            ))
        }
    }
    let server_time = parsed
        .generated_at
        .as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            headers
                .get(DATE)
                .and_then(|d| d.to_str().ok())
                .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
                .map(|t| t.with_timezone(&Utc))
        });
    Ok(Page {
        items,
        server_time,
        limit: parsed.limit,
        total: parsed.total,
        offset: parsed.offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn parse(body: &[u8], h: &HeaderMap) -> Result<Page, SourceError> {
        let prep = Prep {
            cef: crate::encode::cef::CefOptions {
                profile: crate::config::CefProfile::Extended,
                ..Default::default()
            },
            local_types: vec![],
            local_confidence: vec![],
        };
        parse_page(body, h, &prep, &Keyer::fixed())
    }

    /// A server that answers with a body larger than the cap: read up to the cap, then refused
    /// with a clear error (never buffered whole).
    #[tokio::test]
    async fn a_body_over_the_cap_is_refused_with_a_clear_error() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 8192];
            let _ = sock.read(&mut req).await;
            let len = 64 << 20;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
            );
            sock.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b' '; 64 << 10];
            let mut sent = 0;
            while sent < len && sock.write_all(&chunk).await.is_ok() {
                sent += chunk.len();
            }
            sent
        });
        let cfg = ApiConfig {
            base_url: format!("http://{addr}"),
            api_key: Secret::new("sk_test_0123456789"),
            page_size: 100,
            request_timeout: Duration::from_secs(30),
            ca_file: None,
            key_in_config_file: false,
            allow_insecure_http: false,
        };
        let mut c = ApiClient::new(&cfg, Duration::from_secs(1)).unwrap();
        c.max_body = 1 << 20;
        c.attempts = 1;
        let prep = Arc::new(Prep::unfiltered(Default::default()));
        let e = c
            .page(
                None,
                0,
                100,
                &ServerFilters::default(),
                &prep,
                Keyer::fixed(),
            )
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("larger than 1 MiB; refusing it")),
            "{e:?}"
        );
        drop(c);
        // The client stopped reading and closed: the server could not send the 64 MiB it meant
        // to (socket buffers hold a few MiB at most).
        assert!(server.await.unwrap() < 64 << 20);
    }

    #[test]
    fn a_body_with_two_data_arrays_is_refused() {
        let body = br#"{"data":[{"value":"a"}],"meta":{},"data":[{"value":"b"}]}"#;
        let e = parse(body, &HeaderMap::new()).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("two data keys")),
            "{e:?}"
        );
    }

    #[test]
    fn html_and_broken_json_are_decode_errors() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(matches!(parse(b"<html>", &h), Err(SourceError::Decode(_))));
        let h = HeaderMap::new();
        assert!(matches!(
            parse(b"{\"data\": [", &h),
            Err(SourceError::Decode(_))
        ));
        assert!(matches!(parse(b"[]", &h), Err(SourceError::Decode(_))));
    }

    #[test]
    fn generated_at_and_meta_limit_are_read() {
        let body = br#"{"meta":{"total":5,"limit":100,"offset":0,"generated_at":"2026-05-17T00:00:00Z"},"data":[{"value":"x"}]}"#;
        let p = parse(body, &HeaderMap::new()).unwrap();
        assert_eq!((p.items.decoded, p.items.items.len()), (1, 1));
        assert_eq!(p.limit, Some(100));
        assert_eq!(
            p.server_time.unwrap().to_rfc3339(),
            "2026-05-17T00:00:00+00:00"
        );
    }

    #[test]
    fn retry_after_takes_seconds_then_reset() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Duration::from_secs(7));
        let mut h = HeaderMap::new();
        let reset = (Utc::now().timestamp() + 30).to_string();
        h.insert("x-ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
        let d = retry_after(&h);
        assert!(
            d >= Duration::from_secs(28) && d <= Duration::from_secs(31),
            "{d:?}"
        );
    }

    #[test]
    fn waits_are_measured_on_the_servers_clock_when_it_sends_a_date() {
        // The server runs three hours ahead of us: its Reset is a minute after its Date.
        let server = Utc::now() + chrono::Duration::hours(3);
        let mut h = HeaderMap::new();
        let date = server.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        h.insert(DATE, HeaderValue::from_str(&date).unwrap());
        let reset = (server.timestamp() + 60).to_string();
        h.insert("x-ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(60));
        let later = (server + chrono::Duration::seconds(45))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(retry_after(&h), Duration::from_secs(45));
        // A small Reset is a delta, not a date in 1970.
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", HeaderValue::from_static("30"));
        assert_eq!(retry_after(&h), Duration::from_secs(30));
        // Nothing at all: the documented one-minute window.
        assert_eq!(retry_after(&HeaderMap::new()), Duration::from_secs(60));
    }

    #[test]
    fn auth_error_shows_the_key_as_check_config_does() {
        for key in ["sk_live_abcdefghijkl", "sk_live_abcdef"] {
            let secret = Secret::new(key);
            let e = SourceError::Auth {
                status: 401,
                code: "invalid_api_key".into(),
                key: secret.to_string(),
            };
            let s = e.to_string();
            assert!(s.contains(&format!("the key {secret}:")), "{s}");
            assert!(!s.contains(&key[..13]), "{s}");
            assert_eq!(e.kind(), "auth");
        }
    }
}
