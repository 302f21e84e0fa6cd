//! The Prometheus counters and gauges (names in the README's "Metrics and health"); the HTTP
//! endpoint that serves them is [`http`].
//!
//! The metrics live in one process-wide registry ([`get`]) so that any module can count
//! without threading handles through every call. This module depends on nothing else of the
//! crate: whoever knows a number sets it here.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
pub mod http;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestLabel {
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestReasonLabel {
    pub destination: String,
    pub reason: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub fetched: Family<TypeLabel, Counter>,
    pub skipped: Family<ReasonLabel, Counter>,
    pub enqueued: Counter,
    pub delivered: Family<DestLabel, Counter>,
    pub dropped: Family<DestReasonLabel, Counter>,
    pub truncated: Family<DestLabel, Counter>,
    pub queue_events: Family<DestLabel, Gauge>,
    pub queue_bytes: Gauge,
    pub destination_up: Family<DestLabel, Gauge>,
    pub source_errors: Family<KindLabel, Counter>,
    pub poll_duration: Histogram,
    pub last_successful_poll: Gauge,
    pub destination_lag: Family<DestLabel, FloatGauge>,
    pub tls_expiry: Family<DestLabel, Gauge>,
    /// Values cut to ArcSight's per-key limits by the `extended` profile: a cut value is
    /// information lost, so it is counted.
    pub cef_values_cut: Counter,
    /// Unix seconds of the last successful poll in this process (for `/readyz`); 0 = never.
    last_success: AtomicI64,
}

pub(crate) fn dest(name: &str) -> DestLabel {
    DestLabel {
        destination: name.to_string(),
    }
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            fetched: Family::default(),
            skipped: Family::default(),
            enqueued: Counter::default(),
            delivered: Family::default(),
            dropped: Family::default(),
            truncated: Family::default(),
            queue_events: Family::default(),
            queue_bytes: Gauge::default(),
            destination_up: Family::default(),
            source_errors: Family::default(),
            poll_duration: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            last_successful_poll: Gauge::default(),
            destination_lag: Family::default(),
            tls_expiry: Family::default(),
            cef_values_cut: Counter::default(),
            last_success: AtomicI64::new(0),
            registry: Registry::default(),
        };
        // Counters get their `_total` suffix from the encoder.
        m.register_source(&mut registry);
        m.register_queue(&mut registry);
        m.register_delivery(&mut registry);
        Metrics { registry, ..m }
    }

    /// What the source read and how polling went.
    fn register_source(&self, r: &mut Registry) {
        r.register(
            "ioc_forwarder_indicators_fetched",
            "Indicators received from the source, by IOC type",
            self.fetched.clone(),
        );
        r.register(
            "ioc_forwarder_indicators_skipped",
            "Items of the feed not forwarded, by reason",
            self.skipped.clone(),
        );
        r.register(
            "ioc_forwarder_source_errors",
            "Failed API requests (also those retried) and failed file imports, by kind (auth, rate_limit, http, timeout, decode)",
            self.source_errors.clone(),
        );
        r.register(
            "ioc_forwarder_poll_duration_seconds",
            "Duration of poll cycles",
            self.poll_duration.clone(),
        );
        r.register(
            "ioc_forwarder_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful poll cycle",
            self.last_successful_poll.clone(),
        );
    }

    /// What went into the queue and what it holds.
    fn register_queue(&self, r: &mut Registry) {
        r.register(
            "ioc_forwarder_events_enqueued",
            "Events committed to the durable queue",
            self.enqueued.clone(),
        );
        r.register(
            "ioc_forwarder_cef_values_cut",
            "Values cut to ArcSight's per-key length limits (extended profile)",
            self.cef_values_cut.clone(),
        );
        r.register(
            "ioc_forwarder_queue_events",
            "Events queued and not yet acknowledged, per destination",
            self.queue_events.clone(),
        );
        r.register(
            "ioc_forwarder_queue_bytes",
            "Bytes of CEF lines in the queue",
            self.queue_bytes.clone(),
        );
        r.register(
            "ioc_forwarder_events_dropped",
            "Events dropped, by destination and reason (queue_full, oversize, removed)",
            self.dropped.clone(),
        );
    }

    /// What each destination received and how its connection is.
    fn register_delivery(&self, r: &mut Registry) {
        r.register(
            "ioc_forwarder_events_delivered",
            "Events the destination acknowledged",
            self.delivered.clone(),
        );
        r.register(
            "ioc_forwarder_events_truncated",
            "Events truncated to max_message_size",
            self.truncated.clone(),
        );
        r.register(
            "ioc_forwarder_destination_up",
            "1 while the destination is connected",
            self.destination_up.clone(),
        );
        r.register(
            "ioc_forwarder_destination_lag_seconds",
            "Age of the oldest unacknowledged event, per destination",
            self.destination_lag.clone(),
        );
        r.register(
            "ioc_forwarder_tls_certificate_expiry_seconds",
            "The destination's TLS certificate notAfter, Unix seconds",
            self.tls_expiry.clone(),
        );
    }

    pub fn destination_up(&self, name: &str, up: bool) {
        self.destination_up
            .get_or_create(&dest(name))
            .set(i64::from(up));
    }

    /// Removes the per-destination gauges of a destination taken out of the config, so
    /// dashboards and alerts do not see a frozen lag or a "down" that no longer exists.
    pub fn forget_destination(&self, name: &str) {
        let d = dest(name);
        self.queue_events.remove(&d);
        self.destination_lag.remove(&d);
        self.destination_up.remove(&d);
        self.tls_expiry.remove(&d);
    }

    pub fn delivered(&self, name: &str, n: u64) {
        if n > 0 {
            self.delivered.get_or_create(&dest(name)).inc_by(n);
        }
    }

    pub fn dropped(&self, name: &str, reason: &str, n: u64) {
        let l = DestReasonLabel {
            destination: name.to_string(),
            reason: reason.to_string(),
        };
        self.dropped.get_or_create(&l).inc_by(n);
    }

    pub fn truncated(&self, name: &str) {
        self.truncated.get_or_create(&dest(name)).inc();
    }

    pub fn source_error(&self, kind: &str) {
        let l = KindLabel {
            kind: kind.to_string(),
        };
        self.source_errors.get_or_create(&l).inc();
    }

    pub fn fetched(&self, ioc_type: &str, n: u64) {
        let l = TypeLabel {
            r#type: ioc_type.to_string(),
        };
        self.fetched.get_or_create(&l).inc_by(n);
    }

    pub fn skipped(&self, reason: &str, n: u64) {
        let l = ReasonLabel {
            reason: reason.to_string(),
        };
        self.skipped.get_or_create(&l).inc_by(n);
    }

    /// A poll cycle finished; `ok` when it committed its last page.
    pub fn poll_finished(&self, duration: Duration, ok: bool) {
        self.poll_duration.observe(duration.as_secs_f64());
        if ok {
            self.mark_success(chrono::Utc::now().timestamp());
        }
    }

    /// Records a successful poll at `unix` seconds (also used at start-up from the store).
    pub fn mark_success(&self, unix: i64) {
        self.last_success.fetch_max(unix, Ordering::Relaxed);
        self.last_successful_poll
            .set(self.last_success.load(Ordering::Relaxed));
    }

    /// `/readyz`: the last poll succeeded within `window`.
    pub fn ready(&self, window: Duration) -> bool {
        let last = self.last_success.load(Ordering::Relaxed);
        last > 0 && chrono::Utc::now().timestamp() - last <= window.as_secs() as i64
    }

    /// The registry in the text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
