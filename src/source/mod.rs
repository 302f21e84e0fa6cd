//! Where indicators come from, and the poll cycle that turns them into committed queue pages.
//!
//! A cycle walks the API newest-first with `offset`/`limit` until a page comes back empty or
//! shorter than the server's `meta.limit`. Every page is committed on its own (events + seen
//! versions in one transaction); the since-cursor — the server's `generated_at` of the cycle's
//! first page minus [`OVERLAP`] — is committed with the last page only. A cycle that fails
//! half-way therefore leaves the cursor where it was, and the retry re-walks the window;
//! dedup by version makes the re-walk harmless.

pub mod file;
pub mod socdefenders;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::config::{Config, SourceKind};
use crate::encode::cef::{self, Act, CefOptions};
use crate::indicator::{Indicator, IocType};
use crate::store::{Store, StoreError};
use socdefenders::{ApiClient, ServerFilters, SourceError};

/// How far behind the server's clock the next cycle starts, so that indicators committed on
/// the server while we were paging are not missed.
pub const OVERLAP: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot read the indicator file: {0}")]
    File(#[from] file::FileError),
    #[error("cannot commit to the queue: {0}")]
    Store(#[from] StoreError),
}

impl CycleError {
    pub fn kind(&self) -> &'static str {
        match self {
            CycleError::Source(e) => e.kind(),
            CycleError::File(_) => "decode",
            CycleError::Store(_) => "store",
        }
    }
}

/// What one cycle did, for the one log line per cycle.
#[derive(Debug, Default, Clone)]
pub struct CycleReport {
    pub pages: u64,
    pub fetched: u64,
    pub added: u64,
    pub updated: u64,
    pub duplicates: u64,
    pub skipped: u64,
    pub filtered: u64,
    pub duration: Duration,
    pub cursor: Option<DateTime<Utc>>,
}

impl CycleReport {
    pub fn new_versions(&self) -> u64 {
        self.added + self.updated
    }
}

enum Backend {
    Api(ApiClient),
    File(file::FileSource),
}

/// A configured source plus everything a cycle needs to encode and filter.
pub struct Source {
    backend: Backend,
    cef: CefOptions,
    page_size: u32,
    lookback: Duration,
    /// Types/confidences filtered here (when the server cannot do it in one query).
    local_types: Vec<IocType>,
    local_confidence: Vec<String>,
    server: ServerFilters,
}

impl Source {
    pub fn new(cfg: &Config) -> Result<Source, CycleError> {
        let s = &cfg.source;
        let (backend, page_size) = match &s.kind {
            SourceKind::SocDefenders(api) => (
                Backend::Api(ApiClient::new(api, cfg.queue.retry_max)?),
                api.page_size,
            ),
            SourceKind::File { path } => (Backend::File(file::FileSource::new(path.clone())), 0),
        };
        // The API takes one value per parameter: one value goes to the server; several are
        // filtered here on one walk, which costs fewer requests than one walk per value.
        let mut server = ServerFilters::default();
        let mut local_types = Vec::new();
        let mut local_confidence = Vec::new();
        let is_api = matches!(backend, Backend::Api(_));
        if s.types.len() == 1 && is_api {
            server.ioc_type = Some(s.types[0].clone());
        } else {
            local_types = s.types.iter().map(|t| IocType::parse(t)).collect();
        }
        if s.confidence.len() == 1 && is_api {
            server.confidence = Some(s.confidence[0].clone());
        } else {
            local_confidence = s.confidence.clone();
        }
        if !s.industry.is_empty() {
            server.industry = Some(s.industry.clone());
        }
        if !s.category.is_empty() {
            server.category = Some(s.category.clone());
        }
        Ok(Source {
            backend,
            cef: CefOptions::from_config(&cfg.cef),
            page_size,
            lookback: s.lookback,
            local_types,
            local_confidence,
            server,
        })
    }

    fn wanted(&self, i: &Indicator) -> bool {
        (self.local_types.is_empty() || self.local_types.contains(&i.ioc_type))
            && (self.local_confidence.is_empty()
                || i.confidence
                    .as_ref()
                    .is_some_and(|c| self.local_confidence.contains(c)))
    }

    /// Parses, filters and commits one page; `cursor` goes in with it when this is the last.
    async fn commit(
        &self,
        store: &Store,
        items: Vec<serde_json::Value>,
        cursor: Option<DateTime<Utc>>,
        report: &mut CycleReport,
    ) -> Result<(), CycleError> {
        report.pages += 1;
        report.fetched += items.len() as u64;
        let mut indicators = Vec::with_capacity(items.len());
        for v in &items {
            match Indicator::from_json(v) {
                Ok(i) if self.wanted(&i) => indicators.push(i),
                Ok(_) => report.filtered += 1,
                Err(skip) => {
                    report.skipped += 1;
                    tracing::debug!(reason = skip.reason(), "skipped an item of the feed");
                }
            }
        }
        let opts = self.cef.clone();
        let outcome = store
            .call(move |s| {
                let mut line = String::with_capacity(256);
                s.commit_page(
                    &indicators,
                    |ind, act: Act| {
                        line.clear();
                        cef::encode(ind, act, &opts, &mut line);
                        Some((ind.type_raw.clone(), line.clone()))
                    },
                    cursor,
                )
            })
            .await?;
        report.added += outcome.added as u64;
        report.updated += outcome.updated as u64;
        report.duplicates += outcome.duplicates as u64;
        Ok(())
    }

    /// One poll cycle: fetch everything new since the cursor and commit it.
    pub async fn cycle(&mut self, store: &Store) -> Result<CycleReport, CycleError> {
        let started = Instant::now();
        let mut report = CycleReport::default();
        let since = store.call(|s| s.cursor()).await?;
        match &mut self.backend {
            Backend::File(f) => {
                let items = f.read()?;
                let now = Utc::now();
                report.cursor = Some(now);
                let me = &*self;
                me.commit(store, items, Some(now), &mut report).await?;
            }
            Backend::Api(_) => self.walk(store, since, &mut report).await?,
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    async fn walk(
        &mut self,
        store: &Store,
        cursor: Option<DateTime<Utc>>,
        report: &mut CycleReport,
    ) -> Result<(), CycleError> {
        // Without a cursor this is the first cycle: reach back `lookback` on our own clock
        // (the only time the local clock is used; the API clamps it to the tier's window).
        let since = cursor.unwrap_or_else(|| {
            Utc::now()
                - chrono::Duration::from_std(self.lookback).unwrap_or(chrono::Duration::days(1))
        });
        self.warn_about_gap(store, since).await;
        let mut offset = 0u64;
        let mut server_time: Option<DateTime<Utc>> = None;
        loop {
            let Backend::Api(api) = &mut self.backend else {
                unreachable!("walk is only called for the API backend")
            };
            let page = api
                .page(Some(since), offset, self.page_size, &self.server)
                .await?;
            if report.pages == 0 {
                server_time = page.server_time;
                if server_time.is_none() {
                    tracing::warn!("the API sent neither meta.generated_at nor a Date header; the cursor will not move this cycle");
                }
            }
            let n = page.items.len() as u64;
            let server_limit = page
                .limit
                .filter(|l| *l > 0)
                .unwrap_or(self.page_size as u64);
            let last = n == 0 || n < server_limit;
            if report.pages == 0 {
                if let Some(total) = page.total {
                    tracing::debug!(total, "API reports the size of this cycle's window");
                }
            }
            let next_cursor = if last {
                // Taken as is even when it is earlier than the old cursor (a server clock set
                // back): re-reading a window costs only duplicates, skipping one loses data.
                server_time.map(|t| t - chrono::Duration::from_std(OVERLAP).unwrap_or_default())
            } else {
                None
            };
            let me = &*self;
            me.commit(store, page.items, next_cursor, report).await?;
            if last {
                report.cursor = next_cursor.or(cursor);
                return Ok(());
            }
            offset += n;
        }
    }

    /// Warns when the agent was away longer than the API can reach back.
    async fn warn_about_gap(&self, store: &Store, since: DateTime<Utc>) {
        let Ok(Some(last)) = store.call(|s| s.last_success()).await else {
            return;
        };
        let away = Utc::now() - last;
        let lookback =
            chrono::Duration::from_std(self.lookback).unwrap_or(chrono::Duration::days(1));
        if away > lookback {
            let lost = (away - lookback).num_minutes() as f64 / 60.0;
            tracing::warn!(
                since = %since.to_rfc3339(),
                lost_hours = format!("{lost:.1}"),
                "the last successful poll is older than the lookback the API can serve; indicators from about {lost:.1} hours cannot be recovered"
            );
        }
    }
}

/// Runs a cycle and writes the one log line per cycle.
pub async fn poll_and_log(source: &mut Source, store: &Store) -> Result<CycleReport, CycleError> {
    match source.cycle(store).await {
        Ok(r) => {
            tracing::info!(
                fetched = r.fetched,
                new_versions = r.new_versions(),
                added = r.added,
                updated = r.updated,
                duplicates = r.duplicates,
                skipped = r.skipped,
                filtered = r.filtered,
                pages = r.pages,
                duration_ms = r.duration.as_millis() as u64,
                cursor = r.cursor.map(|c| c.to_rfc3339()).unwrap_or_default(),
                "poll cycle complete"
            );
            Ok(r)
        }
        Err(e) => {
            match &e {
                CycleError::Source(SourceError::Auth { .. }) => tracing::error!(
                    kind = e.kind(),
                    "{e}; queued events keep flowing, next try at the next interval (fix the key and send SIGHUP)"
                ),
                // A full queue is back-pressure working as configured, not a failure.
                CycleError::Store(StoreError::QueueFull { .. }) => {
                    tracing::warn!(error = %e, "queue full: polling paused")
                }
                _ => tracing::error!(kind = e.kind(), error = %e, "poll cycle failed; the cursor did not move"),
            }
            Err(e)
        }
    }
}
