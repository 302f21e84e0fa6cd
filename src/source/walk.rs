//! The API walk: one cycle's pages, newest first, from the cursor (or, on the first cycle,
//! from `lookback` ago) until a page comes back empty or shorter than the server's
//! `meta.limit`.
//!
//! The rules it keeps: the window is measured on the server's clock, which decides what
//! `since` means (a first walk that started on this host's clock starts again when the two
//! differ by more than [`OVERLAP`]); the cursor moves only with a time the server told, and
//! only with the last page; a page that repeats the previous one at a new offset (a cache
//! ignoring the query) ends the walk as an error instead of feeding it page one forever; and
//! a cursor older than what the API can still serve is warned about, with the hours lost.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::progress::{Progress, ProgressMode};
use super::socdefenders::{ApiClient, Page, SourceError};
use super::{chrono_duration, Committer, CycleError, CycleReport, Settings, OVERLAP};
use crate::store::{CycleEnd, Store};

impl Settings {
    /// Walks the API's window page by page, committing each (the last with the cycle's end).
    pub(super) async fn walk(
        &self,
        api: &mut ApiClient,
        store: &Store,
        cursor: Option<DateTime<Utc>>,
        report: &mut CycleReport,
        committer: &mut Committer,
    ) -> Result<(), CycleError> {
        let mut walk = Walk::new(cursor, self.lookback);
        let mode = if self.progress_bar {
            ProgressMode::Bar
        } else {
            ProgressMode::Log
        };
        let mut progress = Progress::new(mode, tokio::time::Instant::now());
        loop {
            let page = api
                .page(
                    Some(walk.since),
                    walk.offset,
                    self.page_size,
                    &self.server,
                    &self.prep,
                    store.keyer(),
                )
                .await?;
            walk.refuse_a_repeated_page(&page)?;
            if walk.first {
                walk.server_time = page.server_time;
                if walk.restart_on_server_clock() {
                    continue;
                }
                walk.first_page_told(store, page.total, self.lookback).await;
            }
            let n = page.items.decoded;
            let end = walk.end_if_last(n, &page);
            self.commit(store, page.items, end, report, committer)
                .await?;
            progress.page(n, page.total, tokio::time::Instant::now());
            if end.is_some() {
                committer.settle(report).await?;
                progress.finish(tokio::time::Instant::now());
                report.cursor = end.and_then(|e| e.cursor).or(cursor);
                return Ok(());
            }
            walk.offset += n;
        }
    }
}

/// Where a walk is.
struct Walk {
    /// The cursor the cycle started from (`None` on the first cycle).
    cursor: Option<DateTime<Utc>>,
    lookback: chrono::Duration,
    overlap: chrono::Duration,
    since: DateTime<Utc>,
    /// Whether `since` counts on the server's clock (always, once a page told its time).
    on_server_clock: bool,
    offset: u64,
    /// The server's time on the first page: where the next cycle starts.
    server_time: Option<DateTime<Utc>>,
    first: bool,
    /// The previous page's first and last items, to tell a repeated page.
    prev_edges: Option<(u64, u64)>,
}

impl Walk {
    fn new(cursor: Option<DateTime<Utc>>, lookback: Duration) -> Walk {
        let lookback = chrono_duration(lookback);
        let overlap = chrono_duration(OVERLAP);
        // Without a cursor this is the first cycle: reach back `lookback`, on our clock for the
        // first request (plus the overlap, so a server a few minutes behind loses nothing at the
        // far edge), then on the server's clock once its first page tells us the time.
        Walk {
            cursor,
            lookback,
            overlap,
            since: cursor.unwrap_or_else(|| Utc::now() - lookback - overlap),
            on_server_clock: cursor.is_some(),
            offset: 0,
            server_time: None,
            first: true,
            prev_edges: None,
        }
    }

    /// The same page again at a new offset: a cache or proxy that ignores the query would
    /// otherwise feed us page one forever.
    fn refuse_a_repeated_page(&mut self, page: &Page) -> Result<(), CycleError> {
        let edges = page.items.edges;
        if self.offset > 0 && page.items.decoded > 1 && edges == self.prev_edges {
            // The request itself succeeded, so the client did not count this failure.
            let e = SourceError::Decode(format!(
                "the API answered offset {} with the same page as before (meta.offset {:?}); is a cache ignoring the query string?",
                self.offset, page.offset
            ));
            crate::metrics::get().source_error(e.kind());
            return Err(e.into());
        }
        self.prev_edges = edges;
        Ok(())
    }

    /// On the first page of a first walk, which started on this host's clock: when the
    /// server's clock differs by more than the overlap, the walk starts again (`true`) from
    /// the server's time minus the lookback.
    fn restart_on_server_clock(&mut self) -> bool {
        let (Some(t), false) = (self.server_time, self.on_server_clock) else {
            return false;
        };
        self.on_server_clock = true;
        let skew = t - Utc::now();
        if skew.num_seconds().abs() <= self.overlap.num_seconds() {
            return false;
        }
        // Nothing is committed yet: start over from the server's clock, so the window is
        // `lookback` on the clock that decides what `since` means (a server behind ours
        // would otherwise lose the far edge).
        self.since = t - self.lookback;
        tracing::warn!(
            skew_s = skew.num_seconds(),
            since = %self.since.to_rfc3339(),
            "the API's clock differs from this host's by {}; the first walk restarts from the server's time minus the lookback",
            short_hours(skew)
        );
        true
    }

    /// What the first page tells about the whole cycle: a gap the API can no longer serve, a
    /// cursor that will not move, the window's size.
    async fn first_page_told(&mut self, store: &Store, total: Option<u64>, lookback: Duration) {
        match (self.cursor, self.server_time) {
            (Some(c), Some(t)) => warn_about_gap(c, t, lookback),
            (Some(c), None) => {
                tracing::warn!("the API sent neither meta.generated_at nor a Date header; the cursor will not move this cycle");
                warn_about_gap_local(store, c, lookback).await;
            }
            (None, None) => tracing::warn!("the API sent neither meta.generated_at nor a Date header; the cursor will not move this cycle"),
            (None, Some(_)) => {}
        }
        if let Some(total) = total {
            tracing::debug!(total, "API reports the size of this cycle's window");
        }
        self.first = false;
    }

    /// The cycle's end when `page` (`n` items) is the last. The last page ends the cycle,
    /// and its commit records the success whether or not the server told its time. The
    /// cursor moves only with that time, taken as is even when it is earlier than the old
    /// cursor (a server clock set back): re-reading a window costs only duplicates, skipping
    /// one loses data.
    fn end_if_last(&self, n: u64, page: &Page) -> Option<CycleEnd> {
        is_last_page(n, self.offset, page.limit, page.total).then(|| CycleEnd {
            cursor: self.server_time.map(|t| t - self.overlap),
        })
    }
}

/// Warns when the cursor is older than what the API can still serve: `lookback` back from the
/// server's clock (the API clamps `since` to its tier's window, Free: 1 day). Both times are
/// the server's, so a skewed host clock can neither fake nor hide a gap.
fn warn_about_gap(cursor: DateTime<Utc>, server_now: DateTime<Utc>, lookback: Duration) {
    if let Some(lost) = lost_span(cursor, server_now, lookback) {
        warn_lost(cursor, lost, lookback);
    }
}

/// The same when the API tells us no time: the last successful poll against our clock.
async fn warn_about_gap_local(store: &Store, cursor: DateTime<Utc>, lookback: Duration) {
    let Ok(Some(last)) = store.call(|s| s.last_success()).await else {
        return;
    };
    let lost = Utc::now() - last - chrono_duration(lookback);
    if lost >= chrono::Duration::minutes(1) {
        warn_lost(cursor, lost, lookback);
    }
}

fn warn_lost(cursor: DateTime<Utc>, lost: chrono::Duration, lookback: Duration) {
    let hours = lost.num_seconds() as f64 / 3600.0;
    tracing::warn!(
        since = %cursor.to_rfc3339(),
        lost_hours = format!("{hours:.1}"),
        lookback = %humantime::format_duration(lookback),
        "the last successful poll is older than the lookback the API can serve; indicators from about {hours:.1} hours cannot be recovered"
    );
}

/// How much of the feed between the previous cycle and now the API can no longer serve, when
/// it only reaches `lookback` back from `server_now`. The cursor is the previous cycle's first
/// `generated_at` minus the overlap, and everything up to that `generated_at` was fetched
/// then: the loss lies between it and the window's edge. `None` below a minute.
pub fn lost_span(
    cursor: DateTime<Utc>,
    server_now: DateTime<Utc>,
    lookback: Duration,
) -> Option<chrono::Duration> {
    let fetched_up_to = cursor + chrono_duration(OVERLAP);
    let edge = server_now - chrono_duration(lookback);
    let lost = edge - fetched_up_to;
    (lost >= chrono::Duration::minutes(1)).then_some(lost)
}

/// The end of a walk: an empty page, or one shorter than what the server said it would send
/// (`meta.limit`; it caps `limit` by tier). Without `meta.limit` we cannot tell a short page
/// from a capped one: then `meta.total` decides, and without that only an empty page does
/// (one request more, never a page less).
fn is_last_page(n: u64, offset: u64, limit: Option<u64>, total: Option<u64>) -> bool {
    if n == 0 {
        return true;
    }
    match (limit.filter(|l| *l > 0), total) {
        (Some(limit), _) => n < limit,
        (None, Some(total)) => offset + n >= total,
        (None, None) => false,
    }
}

/// `3.0 h` / `-2.5 h` / `12 min`, for log messages.
fn short_hours(d: chrono::Duration) -> String {
    if d.num_minutes().abs() >= 60 {
        format!("{:+.1} h", d.num_seconds() as f64 / 3600.0)
    } else {
        format!("{:+} min", d.num_minutes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::tests::{t, DAY};

    #[test]
    fn a_page_is_last_when_empty_or_short_of_the_servers_limit() {
        assert!(is_last_page(0, 0, Some(100), Some(500)));
        assert!(is_last_page(99, 0, Some(100), Some(500)));
        assert!(!is_last_page(100, 0, Some(100), Some(100)));
        // No meta.limit: a capped page is not mistaken for the last one.
        assert!(!is_last_page(100, 0, None, Some(250)));
        assert!(is_last_page(50, 200, None, Some(250)));
        assert!(!is_last_page(100, 0, None, None));
        assert!(!is_last_page(3, 0, Some(0), None));
    }

    #[test]
    fn lost_hours_count_from_what_the_last_cycle_fetched_to_the_windows_edge() {
        let now = t("2026-05-17T12:00:00Z");
        // The previous cycle started 30 h ago: its cursor is that minus the overlap.
        let cursor = t("2026-05-16T06:00:00Z") - chrono::Duration::minutes(5);
        assert_eq!(
            lost_span(cursor, now, DAY),
            Some(chrono::Duration::hours(6))
        );
        // 23 h away: nothing lost; exactly at the edge: nothing either.
        let cursor = t("2026-05-16T13:00:00Z") - chrono::Duration::minutes(5);
        assert_eq!(lost_span(cursor, now, DAY), None);
        let cursor = t("2026-05-16T12:00:00Z") - chrono::Duration::minutes(5);
        assert_eq!(lost_span(cursor, now, DAY), None);
    }
}
