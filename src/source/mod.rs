//! Where indicators come from, and the poll cycle that turns them into committed queue pages.
//!
//! A cycle walks the API newest-first with `offset`/`limit` until a page comes back empty or
//! shorter than the server's `meta.limit`. Every page is committed on its own (events + seen
//! versions in one transaction); the since-cursor — the server's `generated_at` of the cycle's
//! first page minus [`OVERLAP`] — is committed with the last page only. A cycle that fails
//! half-way therefore leaves the cursor where it was, and the retry re-walks the window;
//! dedup by version makes the re-walk harmless.
//!
//! The feed moves while we walk: new and re-seen indicators go to the head of the newest-first
//! order and push everything after them one place further, so a later page starts with items
//! an earlier page already had. Items are never pushed the other way, so offset paging plus
//! dedup by version misses nothing that was in the window when the walk began; what arrived
//! during the walk is newer than the first page's `generated_at` and comes with the next
//! cycle, whose `since` reaches back [`OVERLAP`] before it.
//!
//! The walk's own rules (the server's clock, a repeated page, the lost-window warning) are in
//! `walk`; a file is imported in pages like the API's, committed the same way.

pub mod file;
pub mod prepare;
pub mod progress;
pub mod socdefenders;
mod walk;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::config::{Config, SourceKind};
use crate::encode::cef::CefOptions;
use crate::indicator::IocType;
use crate::liveness::Heartbeat;
use crate::store::{CycleEnd, Store, StoreError};
use prepare::{Prep, PreparedPage};
use socdefenders::{ApiClient, ServerFilters, SourceError};
pub use walk::lost_span;

/// How far behind the server's clock the next cycle starts, so that indicators committed on
/// the server while we were paging are not missed.
pub const OVERLAP: Duration = Duration::from_secs(300);

/// Items per committed page when reading a file.
const FILE_PAGE: usize = 5000;

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot read the indicator file: {0}")]
    File(#[from] file::FileError),
    #[error("cannot commit to the queue: {0}")]
    Store(#[from] StoreError),
    #[error("a page commit was interrupted (the runtime is shutting down)")]
    Interrupted,
}

impl CycleError {
    pub fn kind(&self) -> &'static str {
        match self {
            CycleError::Source(e) => e.kind(),
            CycleError::File(_) => "decode",
            CycleError::Store(_) | CycleError::Interrupted => "store",
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
    Api(Box<ApiClient>),
    File(file::FileSource),
}

/// A configured source plus everything a cycle needs to encode and filter.
pub struct Source {
    backend: Backend,
    settings: Settings,
}

/// What a cycle needs besides its backend: how pages are prepared, the API walk's paging and
/// window, and where progress goes. Kept apart from the backend so that a cycle decides the
/// backend once and hands it to the walk or the import along with these.
struct Settings {
    prep: Arc<Prep>,
    page_size: u32,
    lookback: Duration,
    server: ServerFilters,
    /// Draw a progress line on stderr (`once` on a terminal) instead of logging progress.
    progress_bar: bool,
    /// Where the poller promises its next step, for the watchdog.
    beat: Option<Heartbeat>,
}

/// What one step of a cycle besides its requests and waits (a page commit, which may first load
/// the dedup index) may take before the watchdog calls the poller stuck.
pub const STEP_ALLOWANCE: Duration = Duration::from_secs(60);

/// Types every page of the API's documentation spells the same way, so the server can filter
/// them. `sha512` is only in the OpenAPI enum and `mitre-attack` is spelled `mitre_attack`
/// there: those are filtered here, which is always right and costs only requests.
const SERVER_FILTERABLE_TYPES: &[IocType] = &[
    IocType::Ipv4,
    IocType::Ipv6,
    IocType::Domain,
    IocType::Url,
    IocType::Md5,
    IocType::Sha1,
    IocType::Sha256,
    IocType::Cve,
    IocType::Email,
];

impl Source {
    pub fn new(cfg: &Config) -> Result<Source, CycleError> {
        let s = &cfg.source;
        let (backend, page_size) = match &s.kind {
            SourceKind::SocDefenders(api) => (
                Backend::Api(Box::new(ApiClient::new(api, cfg.queue.retry_max)?)),
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
        let one_type = match s.types.as_slice() {
            [t] if SERVER_FILTERABLE_TYPES.contains(&IocType::parse(t)) => Some(t.clone()),
            _ => None,
        };
        if let (Some(t), true) = (one_type, is_api) {
            server.ioc_type = Some(t);
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
            settings: Settings {
                prep: Arc::new(Prep {
                    cef: CefOptions::from_config(&cfg.cef),
                    local_types,
                    local_confidence,
                }),
                page_size,
                lookback: s.lookback,
                server,
                progress_bar: false,
                beat: None,
            },
        })
    }

    /// Reports each step of every cycle to `beat`: every request, wait and page commit promises
    /// its own bound.
    pub fn watched_by(&mut self, beat: Heartbeat) {
        if let Backend::Api(api) = &mut self.backend {
            api.watched_by(beat.clone());
        }
        self.settings.beat = Some(beat);
    }

    /// For `once`: when stderr is a terminal, long walks draw a progress line there instead of
    /// logging progress every 10 seconds. `run` never calls this (its stderr is a log).
    pub fn progress_bar_if_terminal(&mut self) {
        self.settings.progress_bar = std::io::stderr().is_terminal();
    }

    /// One poll cycle: fetch everything new since the cursor and commit it.
    pub async fn cycle(&mut self, store: &Store) -> Result<CycleReport, CycleError> {
        let started = Instant::now();
        let mut report = CycleReport::default();
        let since = store.call(|s| s.cursor()).await?;
        let mut committer = Committer::default();
        let done = match &mut self.backend {
            Backend::File(f) => {
                let now = Utc::now();
                report.cursor = Some(now);
                self.settings
                    .import(f, store, now, &mut report, &mut committer)
                    .await
            }
            Backend::Api(api) => {
                let walked = self
                    .settings
                    .walk(api, store, since, &mut report, &mut committer)
                    .await;
                api.release_buffer();
                walked
            }
        };
        // Whatever ended the walk or the import, the page in flight finishes and is counted.
        committer.settle(&mut report).await?;
        done?;
        report.duration = started.elapsed();
        Ok(report)
    }
}

impl Settings {
    fn step(&self, bound: Duration) {
        if let Some(b) = &self.beat {
            b.expect_within(bound);
        }
    }

    /// Starts the commit of a prepared page once the previous page's commit has finished;
    /// `end` goes in with it when this is the last. The commit runs on a blocking thread
    /// while the caller fetches and decodes the next page ([`Committer::settle`] waits).
    async fn commit(
        &self,
        store: &Store,
        page: PreparedPage,
        end: Option<CycleEnd>,
        report: &mut CycleReport,
        committer: &mut Committer,
    ) -> Result<(), CycleError> {
        report.pages += 1;
        report.fetched += page.decoded;
        report.filtered += page.filtered;
        report.skipped += page.skipped;
        let m = crate::metrics::get();
        for (t, n) in page.by_type {
            m.fetched(t, n);
        }
        for (r, n) in page.by_reason {
            m.skipped(r, n);
        }
        self.step(STEP_ALLOWANCE);
        committer.settle(report).await?;
        let store = store.clone();
        let items = page.items;
        committer.pending = Some(tokio::task::spawn_blocking(move || {
            store.commit_page(&items, end)
        }));
        Ok(())
    }

    /// Commits a file in pages like the API's, so one huge file is not one huge transaction;
    /// the last page carries the cursor. A blocking thread reads the file and hands pages over
    /// one at a time, so memory holds a page or two whatever the file's size.
    async fn import(
        &self,
        f: &file::FileSource,
        store: &Store,
        now: DateTime<Utc>,
        report: &mut CycleReport,
        committer: &mut Committer,
    ) -> Result<(), CycleError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<PreparedPage>(1);
        let f = f.clone();
        let prep = Arc::clone(&self.prep);
        let keyer = store.keyer();
        // The reader thread prepares each page as it decodes it (as the API walk does), so
        // pages wait in the channel as queue entries, not as decoded indicators.
        let reader = tokio::task::spawn_blocking(move || {
            f.pages(FILE_PAGE, |p| {
                tx.blocking_send(prep.page(p, &keyer)).is_ok()
            })
        });
        // One page is held back: only when the reader is done is it known to be the last.
        let mut held: Option<PreparedPage> = None;
        while let Some(page) = rx.recv().await {
            if let Some(prev) = held.replace(page) {
                self.commit(store, prev, None, report, committer).await?;
            }
        }
        joined(reader).await??;
        self.commit(
            store,
            held.unwrap_or_default(),
            Some(CycleEnd::at(now)),
            report,
            committer,
        )
        .await
    }
}

/// What a blocking task returned; its panic goes on in the caller, and a task the runtime
/// dropped (shutting down) is `Interrupted`.
async fn joined<T>(h: tokio::task::JoinHandle<T>) -> Result<T, CycleError> {
    match h.await {
        Ok(v) => Ok(v),
        Err(e) => match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(_) => Err(CycleError::Interrupted),
        },
    }
}

/// The page commit in flight, if any: at most one runs (on a blocking thread) while the walk
/// fetches and decodes the next page, and pages commit in order.
#[derive(Default)]
struct Committer {
    pending: Option<tokio::task::JoinHandle<Result<crate::store::PageOutcome, StoreError>>>,
}

impl Committer {
    /// Waits for the commit in flight and adds what it did to the report.
    async fn settle(&mut self, report: &mut CycleReport) -> Result<(), CycleError> {
        let Some(h) = self.pending.take() else {
            return Ok(());
        };
        let outcome = joined(h).await??;
        let m = crate::metrics::get();
        m.enqueued.inc_by((outcome.added + outcome.updated) as u64);
        if outcome.cuts > 0 {
            m.cef_values_cut.inc_by(outcome.cuts as u64);
        }
        for (d, n) in &outcome.dropped {
            m.dropped(d, "queue_full", *n as u64);
        }
        report.added += outcome.added as u64;
        report.updated += outcome.updated as u64;
        report.duplicates += outcome.duplicates as u64;
        Ok(())
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(36500))
}

/// Seen versions recorded before this can be forgotten (the dedup table stays bounded), or
/// `None` when nothing may be pruned yet. The horizon counts back from the last successful
/// poll, not from now: after an outage the next cycle re-reads everything since the old
/// cursor, and the versions seen before the outage must still be known then. Both times are
/// this host's clock (`recorded` is ours), so skew does not matter. What the API can serve us
/// again has `last_seen` after the cursor, which is the last successful poll's start on the
/// server's clock; a day beyond `max(lookback, 1 day)` covers long cycles and a `since` that
/// matches on the server's update time rather than on `last_seen`.
pub fn seen_horizon(
    lookback: Duration,
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let keep = chrono_duration(lookback).max(chrono::Duration::days(1)) + chrono::Duration::days(1);
    Some(last_success?.min(now) - keep)
}

/// Forgets seen versions past [`seen_horizon`].
pub async fn prune_seen(lookback: Duration, store: &Store) {
    let last = match store.call(|s| s.last_success()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot prune old indicator versions");
            return;
        }
    };
    let Some(before) = seen_horizon(lookback, last, Utc::now()) else {
        return;
    };
    match store.call(move |s| s.prune_seen(before)).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::debug!(pruned = n, before = %before.to_rfc3339(), "forgot old indicator versions")
        }
        Err(e) => tracing::warn!(error = %e, "cannot prune old indicator versions"),
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub(super) const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn seen_versions_are_kept_a_horizon_past_the_last_successful_poll() {
        let now = t("2026-05-17T12:00:00Z");
        // Polling fine: two days (max(lookback, 1 day) + 1 day) back from now.
        assert_eq!(
            seen_horizon(DAY, Some(now - chrono::Duration::minutes(5)), now),
            Some(now - chrono::Duration::minutes(5) - chrono::Duration::days(2))
        );
        // The API has been failing for three days: nothing seen since before the outage may go,
        // because the next cycle reads from the old cursor again.
        let last = now - chrono::Duration::days(3);
        assert_eq!(
            seen_horizon(DAY, Some(last), now),
            Some(last - chrono::Duration::days(2))
        );
        assert_eq!(
            seen_horizon(DAY * 30, Some(now), now),
            Some(now - chrono::Duration::days(31))
        );
        // Never polled successfully: nothing to prune against.
        assert_eq!(seen_horizon(DAY, None, now), None);
        // A last success in the future (clock set back) counts as now.
        assert_eq!(
            seen_horizon(DAY, Some(now + chrono::Duration::days(1)), now),
            Some(now - chrono::Duration::days(2))
        );
    }
}
