//! The SOC Defenders API client: one page request at a time, with authentication, rate-limit
//! pacing and retries of transient failures. Walking the pages of a cycle and the cursor live
//! in [`super`], so this file only knows HTTP.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, CONTENT_TYPE, DATE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use crate::backoff::{jitter, Backoff};
use crate::config::{ApiConfig, Secret};

/// How a request failed; `kind()` is the `ioc_forwarder_source_errors_total` label.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the API refused the key {key_prefix}…: HTTP {status} {code}")]
    Auth {
        status: u16,
        code: String,
        key_prefix: String,
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
}

impl SourceError {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceError::Auth { .. } => "auth",
            SourceError::RateLimited { .. } => "rate_limit",
            SourceError::Timeout(_) => "timeout",
            SourceError::Decode(_) => "decode",
            SourceError::Status { .. } | SourceError::Connect(_) | SourceError::Client(_) => "http",
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

/// One page as served.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
    /// `meta.generated_at`, else the HTTP `Date` header: the server's clock either way.
    pub server_time: Option<DateTime<Utc>>,
    /// `meta.limit`: how many items the server was willing to send (it caps by tier).
    pub limit: Option<u64>,
    pub total: Option<u64>,
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
    /// Retries of transient failures per page request.
    attempts: u32,
    backoff: Backoff,
}

const MAX_RATE_LIMIT_WAITS: u32 = 10;
/// Never sleep longer than this for one rate-limit wait, whatever the server says.
const MAX_RATE_LIMIT_SLEEP: Duration = Duration::from_secs(3600);

impl ApiClient {
    pub fn new(cfg: &ApiConfig, retry_max: Duration) -> Result<ApiClient, SourceError> {
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
            http,
            base_url: cfg.base_url.clone(),
            key: cfg.api_key.clone(),
            timeout: cfg.request_timeout,
            not_before: None,
            attempts: 5,
            backoff: Backoff::new(
                Duration::from_secs(1),
                retry_max.min(Duration::from_secs(60)),
            ),
        })
    }

    /// Fetches one page, retrying transient failures with backoff and waiting out rate limits.
    pub async fn page(
        &mut self,
        since: Option<DateTime<Utc>>,
        offset: u64,
        limit: u32,
        filters: &ServerFilters,
    ) -> Result<Page, SourceError> {
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
        let mut failures = 0u32;
        let mut rate_waits = 0u32;
        self.backoff.reset();
        loop {
            if let Some(t) = self.not_before.take() {
                tokio::time::sleep_until(t).await;
            }
            match self.request(&query).await {
                Ok(page) => return Ok(page),
                Err(Attempt::RateLimited(wait)) => {
                    rate_waits += 1;
                    if rate_waits > MAX_RATE_LIMIT_WAITS {
                        return Err(SourceError::RateLimited {
                            attempts: rate_waits - 1,
                        });
                    }
                    let wait = wait.min(MAX_RATE_LIMIT_SLEEP) + jitter(Duration::from_secs(1));
                    tracing::warn!(wait = ?wait, "API rate limit reached (HTTP 429); waiting");
                    tokio::time::sleep(wait).await;
                }
                Err(Attempt::Failed(e)) if e.transient() && failures + 1 < self.attempts => {
                    failures += 1;
                    let wait = self.backoff.next_delay();
                    tracing::warn!(error = %e, attempt = failures, retry_in = ?wait, offset, "API request failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(Attempt::Failed(e)) => return Err(e),
            }
        }
    }

    async fn request(&mut self, query: &[(&str, String)]) -> Result<Page, Attempt> {
        let url = format!("{}/iocs", self.base_url);
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
        self.pace(&headers);
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Attempt::RateLimited(retry_after(&headers)));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| Attempt::Failed(self.transport_error(e)))?;
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Attempt::Failed(SourceError::Auth {
                status: status.as_u16(),
                code: error_code(&body).unwrap_or_else(|| "no error code".into()),
                key_prefix: self.key.prefix(),
            }));
        }
        if !status.is_success() {
            let detail = error_code(&body).unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("unexpected status")
                    .to_string()
            });
            return Err(Attempt::Failed(SourceError::Status {
                status: status.as_u16(),
                detail,
            }));
        }
        parse_page(&body, &headers).map_err(Attempt::Failed)
    }

    fn transport_error(&self, e: reqwest::Error) -> SourceError {
        // reqwest errors carry the URL (never the key: it travels in a header).
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

    /// Reads `X-RateLimit-*` and, when the budget is spent, holds the next request until the
    /// window resets instead of provoking a 429.
    fn pace(&mut self, h: &HeaderMap) {
        let num = |name: &str| h.get(name)?.to_str().ok()?.trim().parse::<i64>().ok();
        if num("x-ratelimit-remaining") == Some(0) {
            if let Some(reset) = num("x-ratelimit-reset") {
                let wait = until_unix(reset).min(MAX_RATE_LIMIT_SLEEP);
                tracing::info!(wait = ?wait, "API rate-limit budget spent; pacing the next request until the window resets");
                self.not_before = Some(Instant::now() + wait + jitter(Duration::from_millis(500)));
            }
        }
    }
}

enum Attempt {
    RateLimited(Duration),
    Failed(SourceError),
}

fn until_unix(reset: i64) -> Duration {
    let now = Utc::now().timestamp();
    Duration::from_secs(reset.saturating_sub(now).max(1) as u64)
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
            return until_unix(t.timestamp());
        }
    }
    if let Some(reset) = text("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok()) {
        return until_unix(reset);
    }
    Duration::from_secs(60)
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

fn parse_page(body: &[u8], headers: &HeaderMap) -> Result<Page, SourceError> {
    let ctype = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ctype.contains("text/html") {
        return Err(SourceError::Decode(format!(
            "got {ctype} instead of JSON (a proxy or login page?)"
        )));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        SourceError::Decode(format!("invalid JSON ({e}) in a {}-byte body", body.len()))
    })?;
    let data = match v.get("data") {
        Some(Value::Array(items)) => items.clone(),
        Some(Value::Null) | None if v.get("meta").is_some() => vec![],
        _ => {
            return Err(SourceError::Decode(
                "the body has no `data` array".to_string(),
            ))
        }
    };
    let meta = v.get("meta");
    let server_time = meta
        .and_then(|m| m.get("generated_at"))
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            headers
                .get(DATE)
                .and_then(|d| d.to_str().ok())
                .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
                .map(|t| t.with_timezone(&Utc))
        });
    let num = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_u64);
    Ok(Page {
        items: data,
        server_time,
        limit: num("limit"),
        total: num("total"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn html_and_broken_json_are_decode_errors() {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(matches!(
            parse_page(b"<html>", &h),
            Err(SourceError::Decode(_))
        ));
        let h = HeaderMap::new();
        assert!(matches!(
            parse_page(b"{\"data\": [", &h),
            Err(SourceError::Decode(_))
        ));
        assert!(matches!(parse_page(b"[]", &h), Err(SourceError::Decode(_))));
    }

    #[test]
    fn generated_at_and_meta_limit_are_read() {
        let body = br#"{"meta":{"total":5,"limit":100,"offset":0,"generated_at":"2026-05-17T00:00:00Z"},"data":[{"value":"x"}]}"#;
        let p = parse_page(body, &HeaderMap::new()).unwrap();
        assert_eq!(p.items.len(), 1);
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
    fn auth_error_shows_only_the_key_prefix() {
        let e = SourceError::Auth {
            status: 401,
            code: "invalid_api_key".into(),
            key_prefix: Secret::new("sk_live_abcdefghijkl").prefix(),
        };
        let s = e.to_string();
        assert!(s.contains("sk_live_abcd") && !s.contains("efghijkl"), "{s}");
        assert_eq!(e.kind(), "auth");
    }
}
