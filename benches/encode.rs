//! Encoding throughput: CEF lines per second for a typical and a hostile indicator in both
//! profiles, the expire line of the typical one (encoded from the indicator, and relabelled
//! from its queued line as the live set does), and the full frame of the delivery path (CEF +
//! RFC 5424 header + octet counting). Every iteration writes into buffers reused across
//! iterations, as the pipeline does.
//!
//! `cargo bench --bench encode -- --warm-up-time 1 --measurement-time 3`
//! (criterion reports `thrpt` in elements/s = lines/s on one core).
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: the
//! figure is "per core" by construction and stays meaningful on a busy build machine, where
//! wall time also counts the moments other processes hold the CPU.

use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use ioc_forwarder::config::{CefProfile, Framing, SeverityMap, SyslogFormat};
use ioc_forwarder::decode;
use ioc_forwarder::encode::cef::{self, Act, CefOptions, Lifecycle};
use ioc_forwarder::encode::rfc5424::{self, Header};
use ioc_forwarder::indicator::Indicator;
use serde_json::{json, Value};

fn typical() -> Value {
    json!({"id": "5f0c6a2e-1d2b-4c3a-9e8f-0a1b2c3d4e5f", "type": "ipv4", "value": "203.0.113.42",
           "confidence": "high", "first_seen": "2025-05-17T00:00:00Z",
           "last_seen": "2025-06-01T12:30:00Z", "tags": ["c2", "cobalt-strike"],
           "mitre_techniques": ["T1071"], "context": "Beacon C2 seen in a phishing campaign",
           "source": {"feed_name": "CISA Alerts", "category": "government",
                      "article_url": "https://www.cisa.gov/news-events/alerts/aa25-001a",
                      "origin": "article"}})
}

/// Every escape and replacement path, non-ASCII text, and a value long enough to be cut by
/// the `extended` limits.
fn hostile() -> Value {
    let url = format!(
        "  http://malware.example.net/gate.php?id=42&k=a|b\\c\r\n{}\t\u{0}ü€😀 ",
        "x=y\\z|".repeat(180)
    );
    json!({"id": "an-identifier-that-is-longer-than-forty-characters", "type": "url",
           "value": url, "confidence": "medium", "first_seen": "2025-05-17T00:00:00Z",
           "last_seen": "2025-06-01T12:30:00Z", "tags": ["a=b", "c\\d", "e|f"],
           "context": "multi\nline \"context\" with = and \\ and ] ",
           "source": {"feed_name": "Feed|With=Odd\\Chars \"quoted\" ]", "category": "gov",
                      "article_url": "https://example.org/a?b=c&d=e", "origin": "feed"}})
}

/// CPU time this thread has used so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which lives for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Benchmarks `f` (one line per call) in thread CPU time.
fn bench_cpu(g: &mut BenchmarkGroup<WallTime>, name: String, mut f: impl FnMut()) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                f();
            }
            thread_cpu_time().saturating_sub(start)
        })
    });
}

fn options(profile: CefProfile) -> CefOptions {
    CefOptions {
        device_vendor: "SOC Defenders".into(),
        device_product: "Threat Intelligence".into(),
        device_version: "1.0".into(),
        profile,
        severity: SeverityMap::default(),
    }
}

fn indicator(v: &Value) -> Indicator {
    decode::item(v).expect("benchmark indicator")
}

fn cef_lines(c: &mut Criterion) {
    let mut g = c.benchmark_group("cef");
    g.throughput(Throughput::Elements(1));
    for (profile, pname) in [
        (CefProfile::SocDefenders, "socdefenders"),
        (CefProfile::Extended, "extended"),
    ] {
        let opts = options(profile);
        for (v, iname) in [(typical(), "typical"), (hostile(), "hostile")] {
            let ind = indicator(&v);
            let mut line = String::with_capacity(4096);
            bench_cpu(&mut g, format!("{pname}/{iname}"), || {
                line.clear();
                let cuts = cef::encode(black_box(&ind), Act::Add, &opts, &mut line);
                black_box((&line, cuts));
            });
        }
        // An expire line from the indicator's fields, and from its stored line: the live set
        // keeps the line, so an expiry wave relabels.
        let ind = indicator(&typical());
        let end = Utc.with_ymd_and_hms(2026, 5, 17, 8, 0, 0).single();
        let mut line = String::with_capacity(4096);
        bench_cpu(&mut g, format!("{pname}/typical/expire"), || {
            line.clear();
            let cuts =
                cef::encode_lifecycle(black_box(&ind), Lifecycle::Expire, end, &opts, &mut line);
            black_box((&line, cuts));
        });
        let mut queued = String::new();
        if let (_, Some(at)) = cef::encode_queued(&ind, &opts, &mut queued) {
            cef::set_act(&mut queued, at, Act::Update);
        }
        bench_cpu(&mut g, format!("{pname}/typical/expire/relabel"), || {
            line.clear();
            let done = cef::relabel(black_box(&queued), Lifecycle::Expire, end, &mut line);
            black_box((&line, done.is_ok()));
        });
    }
    g.finish();
}

fn full_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    let header = Header::new(
        SyslogFormat::Rfc5424,
        4,
        4,
        "collector01",
        "ioc-forwarder",
        4242,
        None,
        false,
    );
    let enqueued = Utc
        .with_ymd_and_hms(2026, 5, 17, 8, 30, 1)
        .single()
        .expect("time");
    for (profile, pname) in [
        (CefProfile::SocDefenders, "socdefenders"),
        (CefProfile::Extended, "extended"),
    ] {
        let opts = options(profile);
        for (v, iname) in [(typical(), "typical"), (hostile(), "hostile")] {
            let ind = indicator(&v);
            let mut line = String::with_capacity(4096);
            let mut msg = Vec::with_capacity(4096);
            let mut buf = Vec::with_capacity(4096);
            bench_cpu(
                &mut g,
                format!("{pname}/{iname}/rfc5424+octet-counting"),
                || {
                    line.clear();
                    msg.clear();
                    buf.clear();
                    cef::encode(black_box(&ind), Act::Add, &opts, &mut line);
                    rfc5424::write_message(&mut msg, &header, enqueued, &ind.type_raw, 7, &line);
                    rfc5424::frame(&mut buf, Framing::OctetCounting, &msg);
                    black_box(&buf);
                },
            );
        }
    }
    g.finish();
}

fn truncation(c: &mut Criterion) {
    let mut g = c.benchmark_group("truncate");
    g.throughput(Throughput::Elements(1));
    let ind = indicator(&json!({"type": "url", "confidence": "high",
        "value": format!("https://cdn.example.com/{}", "a=b\\c|".repeat(1400)),
        "first_seen": "2025-05-17T00:00:00Z", "source": {"feed_name": "Long URL Feed"}}));
    let mut line = String::new();
    cef::encode(
        &ind,
        Act::Add,
        &options(CefProfile::SocDefenders),
        &mut line,
    );
    bench_cpu(&mut g, "8KiB-line-to-2000-bytes".into(), || {
        black_box(cef::truncate_to(black_box(&line), 2000));
    });
    g.finish();
}

criterion_group!(benches, cef_lines, full_frames, truncation);
criterion_main!(benches);
