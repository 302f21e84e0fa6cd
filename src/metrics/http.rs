//! The small HTTP endpoint: `GET /metrics` (Prometheus text), `/healthz`, `/readyz`.
//!
//! Queue depth, bytes and lag are read from the store instead of being tracked on every commit:
//! they are then right, including after a restart or `queue purge` from another process. Those
//! readings take the store's writer lock, which delivery's acknowledgements and the poller's
//! commits need too, so scrapes share one reading per [`STORE_READ_EVERY`] ([`StoreGauges`])
//! and at most [`MAX_CONNECTIONS`] are served at once: a flood of scrapes cannot starve the
//! pipeline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{dest, get, Metrics};
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Sets the queue gauges (events and lag per destination, bytes) from the store. A store error
/// leaves the previous values.
pub fn read_store(m: &Metrics, s: &Store) {
    let now = chrono::Utc::now();
    if let Ok(rows) = s.stats() {
        for r in rows {
            m.queue_events.get_or_create(&dest(&r.name)).set(r.events);
            let lag = r
                .oldest
                .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            m.destination_lag.get_or_create(&dest(&r.name)).set(lag);
        }
    }
    if let Ok(b) = s.queue_bytes() {
        m.queue_bytes.set(b);
    }
}

/// How old the store-derived gauges may be before a scrape reads the store again.
pub const STORE_READ_EVERY: Duration = Duration::from_secs(1);

/// Connections answered at once; further ones wait in the listen backlog until one is done.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a connection may take to send its request.
const REQUEST_WITHIN: Duration = Duration::from_secs(2);

/// The store-derived gauges as a snapshot: read at most once per `every`, by one reading at a
/// time, on a blocking thread. Scrapes that come while a reading is under way serve the last
/// snapshot instead of queueing for the store (only before the first one do they wait for it).
pub struct StoreGauges {
    every: Duration,
    /// When the last snapshot was taken; held for the whole of a reading.
    taken: Mutex<Option<Instant>>,
    /// A snapshot exists.
    ready: AtomicBool,
    /// Readings of the store so far.
    reads: AtomicU64,
}

impl StoreGauges {
    pub fn new(every: Duration) -> StoreGauges {
        StoreGauges {
            every,
            taken: Mutex::new(None),
            ready: AtomicBool::new(false),
            reads: AtomicU64::new(0),
        }
    }

    /// How many times the store was read.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn fresh(&self, taken: &Option<Instant>) -> bool {
        taken.is_some_and(|t| t.elapsed() < self.every)
    }

    /// Brings the gauges up to date when the snapshot is older than `every`. Returns at once
    /// when it is fresh or another reading is under way.
    pub async fn refresh(self: &Arc<Self>, store: &Store) {
        match self.taken.try_lock() {
            Ok(t) if self.fresh(&t) => return,
            Err(TryLockError::WouldBlock) if self.ready.load(Ordering::Acquire) => return,
            _ => {}
        }
        // The reading holds `taken` on the blocking thread: a scrape that gives up (its
        // connection timed out) cannot let a second reading start beside the first.
        let me = Arc::clone(self);
        store.call(move |s| me.read(s)).await;
    }

    fn read(&self, s: &Store) {
        let mut taken = match self.taken.try_lock() {
            Ok(t) => t,
            Err(TryLockError::WouldBlock) if self.ready.load(Ordering::Acquire) => return,
            Err(TryLockError::WouldBlock) => self.taken.lock().unwrap_or_else(|p| p.into_inner()),
            // A reading that panicked left nothing half-done: the gauges are plain values.
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
        };
        if self.fresh(&taken) {
            return;
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        read_store(get(), s);
        *taken = Some(Instant::now());
        self.ready.store(true, Ordering::Release);
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `stop` fires.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    ready_window: Duration,
    mut stop: Shutdown,
) {
    let gauges = Arc::new(StoreGauges::new(STORE_READ_EVERY));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A free slot first, then the next connection: the rest wait in the backlog.
        let slot = tokio::select! {
            s = Arc::clone(&slots).acquire_owned() => s,
            _ = stop.stopped() => return,
        };
        let Ok(slot) = slot else { return };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.stopped() => return,
        };
        match accepted {
            Ok((conn, _)) => {
                let store = store.clone();
                let gauges = Arc::clone(&gauges);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        answer(conn, &store, &gauges, ready_window),
                    )
                    .await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One request, one answer, connection closed (scrapers and health probes need no more).
async fn answer(
    mut conn: TcpStream,
    store: &Store,
    gauges: &Arc<StoreGauges>,
    ready_window: Duration,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    // A scraper sends its request at once; a client that connects and sends nothing must not
    // hold one of the few connection slots for long.
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(REQUEST_WITHIN, read_head).await {
        Ok(r) => r?,
        Err(_) => return Ok(()),
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default();
    let path = parts
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default();
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => {
            gauges.refresh(store).await;
            let body = get().render();
            (
                "200 OK",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            )
        }
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/readyz") if get().ready(ready_window) => {
            ("200 OK", "text/plain", "ready\n".to_string())
        }
        ("GET", "/readyz") => (
            "503 Service Unavailable",
            "text/plain",
            "not ready: no successful poll within 3 x poll_interval\n".to_string(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    conn.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_name_is_exposed_with_its_type() {
        let m = get();
        m.delivered("siem", 3);
        m.dropped("siem", "oversize", 1);
        m.truncated("siem");
        m.destination_up("siem", true);
        m.source_error("auth");
        m.fetched("ipv4", 2);
        m.skipped("no_value", 1);
        m.enqueued.inc();
        m.poll_finished(Duration::from_millis(20), true);
        m.tls_expiry.get_or_create(&dest("siem")).set(1);
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.sync_destinations(&["siem".into()]).unwrap();
        read_store(m, &s);
        let text = m.render();
        for needle in [
            "# TYPE ioc_forwarder_indicators_fetched counter",
            "ioc_forwarder_indicators_fetched_total{type=\"ipv4\"} 2",
            "ioc_forwarder_indicators_skipped_total{reason=\"no_value\"} 1",
            "ioc_forwarder_events_enqueued_total",
            "ioc_forwarder_events_delivered_total{destination=\"siem\"} 3",
            "ioc_forwarder_events_dropped_total{destination=\"siem\",reason=\"oversize\"} 1",
            "ioc_forwarder_events_truncated_total{destination=\"siem\"} 1",
            "ioc_forwarder_queue_events{destination=\"siem\"} 0",
            "# TYPE ioc_forwarder_queue_bytes gauge",
            "ioc_forwarder_destination_up{destination=\"siem\"} 1",
            "ioc_forwarder_source_errors_total{kind=\"auth\"} 1",
            "# TYPE ioc_forwarder_poll_duration_seconds histogram",
            "ioc_forwarder_poll_duration_seconds_count 1",
            "ioc_forwarder_last_successful_poll_timestamp_seconds",
            "ioc_forwarder_destination_lag_seconds{destination=\"siem\"} 0",
            "ioc_forwarder_tls_certificate_expiry_seconds{destination=\"siem\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(m.ready(Duration::from_secs(60)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_store_reading_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.sync_destinations(&["flood".into()]).unwrap();
        // One interval spans the whole test.
        let gauges = Arc::new(StoreGauges::new(Duration::from_secs(3600)));
        let scrapes: Vec<_> = (0..64)
            .map(|_| {
                let (g, s) = (Arc::clone(&gauges), s.clone());
                tokio::spawn(async move {
                    g.refresh(&s).await;
                    get().render()
                })
            })
            .collect();
        for scrape in scrapes {
            let body = scrape.await.unwrap();
            assert!(
                body.contains("ioc_forwarder_queue_events{destination=\"flood\"} 0"),
                "every scrape shows the snapshot\n{body}"
            );
        }
        assert_eq!(
            gauges.reads(),
            1,
            "64 concurrent scrapes, one store reading"
        );
        gauges.refresh(&s).await;
        assert_eq!(gauges.reads(), 1, "a later scrape in the same interval");
        // An interval of zero: every scrape is in a new one and reads again.
        let every_time = Arc::new(StoreGauges::new(Duration::ZERO));
        for n in 1..=3 {
            every_time.refresh(&s).await;
            assert_eq!(every_time.reads(), n);
        }
    }
}
