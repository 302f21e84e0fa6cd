//! End-to-end benchmark: the whole pipeline against its physical limits and against rsyslog,
//! side by side on the same generated pages, in one run, printed as one table.
//!
//! ```sh
//! cargo bench --bench pipeline                      # 1,000,000 indicators, 10,000 per page
//! IOC_BENCH_N=50000 cargo bench --bench pipeline    # a quick run
//! scripts/bench.sh                                  # installs rsyslog first when missing
//! ```
//!
//! Environment:
//! - `IOC_BENCH_N` indicators (default 1,000,000); `IOC_BENCH_PAGE` per page (default 10,000,
//!   the API's and `page_size`'s maximum).
//! - `IOC_BENCH_IDLE_SECS` how long the idle `run` is sampled (default 60).
//! - `IOC_BENCH_ONLY` / `IOC_BENCH_SKIP`: comma lists of `limits,tcp,tls,idle,rsyslog`.
//! - `IOC_BENCH_STALL_SECS` give up on a scenario when no frame arrived for this long (120).
//! - `IOC_BENCH_KEEP=1` keeps the work directory (state files, logs, rsyslog queue dirs).
//! - `IOC_BENCH_BIN=/path/to/ioc-forwarder` measures another build (before/after comparisons).
//! - `IOC_BENCH_WRAP="perf record -e cpu-clock -g -o perf.data --"` (or `valgrind
//!   --tool=callgrind`) runs the `once` backfills under a profiler; their figures then measure
//!   the wrapper and say so.
//!
//! What runs:
//! 1. Limits, in this process: JSON decoding of the pages (into a `serde_json::Value` for
//!    reference, then straight to indicators with `decode::body_each`, as the daemon does); the queue
//!    alone (`Store::commit_page` page by page with entries prepared untimed, then `read_after`
//!    512 at a time); raw loopback TCP write of the pre-rendered frames to a receiver that
//!    counts and discards.
//! 2. `ioc-forwarder once` (the release binary) backfilling all `N` from a fast local fake API
//!    (every page pre-rendered, served from memory, HTTP/1.1 keep-alive) through the durable queue
//!    (state dir on the disk under `target/`, never tmpfs) to a counting TCP receiver, then again
//!    into a fresh state dir to a TLS receiver (tokio-rustls, rcgen CA in `ca_file`).
//! 3. `ioc-forwarder run` on the TCP state after the backfill, `poll_interval = "1h"`: RSS and CPU
//!    between polls.
//! 4. rsyslogd (our own unprivileged instance) relaying the same frames, imptcp → omfwd TCP, with a
//!    disk-assisted and with a pure disk action queue.
//!
//! Writes the table to stdout and as markdown to `target/bench-pipeline.md`. Exits 1 when a
//! scenario did not deliver exactly `N` frames or the binary failed.

#[path = "pipeline/api.rs"]
mod api;
#[path = "pipeline/feed.rs"]
mod feed;
#[path = "pipeline/recv.rs"]
mod recv;
#[path = "pipeline/rsyslog.rs"]
mod rsyslog;
#[path = "pipeline/sys.rs"]
mod sys;

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chrono::Utc;
use ioc_forwarder::config::Config;
use ioc_forwarder::decode::{self, Data};
use ioc_forwarder::deliver::{self, Framed};
use ioc_forwarder::encode::cef::{self, CefOptions};
use ioc_forwarder::indicator::Indicator;
use ioc_forwarder::store::{Event, Store};
use serde_json::Value;

use feed::Feed;
use recv::{Framing, Receiver};

// ---------------------------------------------------------------------------------------------
// Settings

struct Settings {
    n: usize,
    page: usize,
    idle_secs: u64,
    stall: Duration,
    only: Option<Vec<String>>,
    skip: Vec<String>,
    keep: bool,
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .replace(['_', ','], "")
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                eprintln!("{name}={v:?} is not a number");
                std::process::exit(2)
            }),
        Err(_) => default,
    }
}

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|v| {
        v.split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

impl Settings {
    fn from_env() -> Settings {
        let n = env_num("IOC_BENCH_N", 1_000_000) as usize;
        let page = env_num("IOC_BENCH_PAGE", 10_000) as usize;
        if n == 0 || page == 0 || page > api::MAX_LIMIT {
            eprintln!("IOC_BENCH_N must be > 0 and IOC_BENCH_PAGE within 1..=10000");
            std::process::exit(2);
        }
        Settings {
            n,
            page,
            idle_secs: env_num("IOC_BENCH_IDLE_SECS", 60),
            stall: Duration::from_secs(env_num("IOC_BENCH_STALL_SECS", 120)),
            only: env_list("IOC_BENCH_ONLY"),
            skip: env_list("IOC_BENCH_SKIP").unwrap_or_default(),
            keep: std::env::var("IOC_BENCH_KEEP").is_ok_and(|v| v != "0"),
        }
    }

    fn runs(&self, part: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == part))
            && !self.skip.iter().any(|p| p == part)
    }
}

// ---------------------------------------------------------------------------------------------
// Results

#[derive(Default)]
struct Row {
    scenario: String,
    rate: String,
    mbps: String,
    cpu: String,
    rss: String,
    notes: String,
}

struct Results {
    rows: Vec<Row>,
    failures: Vec<String>,
    /// Named figures (indicators/s) for the ratios.
    figures: Vec<(&'static str, f64)>,
    extra: Vec<String>,
}

impl Results {
    fn figure(&self, name: &str) -> Option<f64> {
        self.figures.iter().find(|(n, _)| *n == name).map(|f| f.1)
    }

    fn fail(&mut self, msg: String) {
        eprintln!("FAIL: {msg}");
        self.failures.push(msg);
    }
}

fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

fn mib_kb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

fn per_million(cpu_s: f64, n: usize) -> String {
    format!("{:.2}", cpu_s * 1e6 / n as f64)
}

/// The figure holding a scenario's CPU seconds per million.
fn cpu_key(key: &str) -> &'static str {
    match key {
        "tcp" => "tcp_cpu",
        "tls" => "tls_cpu",
        "json_decode" => "json_decode_cpu",
        "prepare" => "prepare_cpu",
        "queue_insert" => "queue_insert_cpu",
        "queue_scan" => "queue_scan_cpu",
        "tcp_write" => "tcp_write_cpu",
        _ => "other_cpu",
    }
}

fn stage(msg: &str) {
    eprintln!("[bench {}] {msg}", Utc::now().format("%H:%M:%S"));
}

// ---------------------------------------------------------------------------------------------
// Paths, binary, config

/// `target/` (or `$CARGO_TARGET_DIR`): the bench runs from `target/release/deps/`.
fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The release binary: `$IOC_BENCH_BIN`, else the one cargo built for this bench, else the one
/// next to the bench executable, else built now with `cargo build --release`.
fn binary() -> PathBuf {
    if let Some(b) = std::env::var_os("IOC_BENCH_BIN") {
        let b = PathBuf::from(b);
        assert!(b.is_file(), "IOC_BENCH_BIN={} is not a file", b.display());
        return b;
    }
    let candidates = [
        option_env!("CARGO_BIN_EXE_ioc-forwarder").map(PathBuf::from),
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent()?.parent().map(|d| d.join("ioc-forwarder"))),
    ];
    for c in candidates.into_iter().flatten() {
        if c.is_file() {
            return c;
        }
    }
    stage("target/release/ioc-forwarder is missing: cargo build --release");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--bin", "ioc-forwarder"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build --release");
    assert!(status.success(), "cargo build --release failed");
    let b = target_dir().join("release").join("ioc-forwarder");
    assert!(b.is_file(), "{} still missing", b.display());
    b
}

/// `git 1a2b3c4 + uncommitted changes in 3 files under src/` (the binary is built from the tree).
fn source_revision() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown (not a git checkout)".into();
    };
    let dirty = git(&["status", "--porcelain", "--", "src"])
        .map(|s| s.lines().count())
        .unwrap_or(0);
    if dirty == 0 {
        format!("git {head}")
    } else {
        format!("git {head} + uncommitted changes in {dirty} files under src/")
    }
}

enum Dest<'a> {
    Tcp(std::net::SocketAddr),
    Tls(std::net::SocketAddr, &'a Path),
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn config_text(state_dir: &Path, api_base: &str, page: usize, dest: &Dest<'_>) -> String {
    let mut s = format!(
        r#"state_dir = {state}
shutdown_timeout = "60s"

[source]
kind = "socdefenders"
base_url = {api}
api_key = "sk_live_benchmarkbenchmark"
poll_interval = "1h"
page_size = {page}
lookback = "24h"
request_timeout = "120s"

[syslog]
hostname = "collector01"

[[destinations]]
name = "siem"
"#,
        state = toml_str(&state_dir.display().to_string()),
        api = toml_str(api_base),
    );
    match dest {
        Dest::Tcp(a) => {
            let _ = write!(
                s,
                "protocol = \"tcp\"\naddress = \"{a}\"\nframing = \"lf\"\n"
            );
        }
        Dest::Tls(a, ca) => {
            let _ = write!(
                s,
                "protocol = \"tls\"\naddress = \"{a}\"\nframing = \"octet-counting\"\nca_file = {}\n",
                toml_str(&ca.display().to_string())
            );
        }
    }
    s
}

fn write_config(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("write config");
    f.write_all(text.as_bytes()).unwrap();
}

/// Kills a child still running when the bench unwinds.
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            sys::kill(pid, libc::SIGKILL);
        }
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// `duration_ms=NNN` of the "poll cycle complete" log line.
fn poll_ms(log: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(log).ok()?;
    let line = s.lines().find(|l| l.contains("poll cycle complete"))?;
    let v = line.split("duration_ms=").nth(1)?;
    v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// Everything the limits produce that later scenarios reuse.
struct Prepared {
    /// All frames, LF-framed as the TCP destination sends them (for the raw write and rsyslog).
    lf_stream: Vec<u8>,
}

/// Wall time, CPU time and run-queue wait of the calling thread over timed sections.
#[derive(Default)]
struct Meter {
    wall: Duration,
    cpu: f64,
    wait_ns: u64,
}

impl Meter {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let (t0, c0, w0) = (
            Instant::now(),
            sys::thread_cpu(),
            sys::thread_runq_wait_ns(),
        );
        let out = f();
        self.wall += t0.elapsed();
        self.cpu += sys::thread_cpu() - c0;
        self.wait_ns += sys::thread_runq_wait_ns().saturating_sub(w0);
        out
    }

    /// Times `f` `reps` times and keeps the fastest run (the limit is the best case; other
    /// work on the machine only ever makes a run slower).
    fn best_of<T>(&mut self, reps: usize, mut f: impl FnMut() -> T) -> T {
        let mut best: Option<(Meter, T)> = None;
        for _ in 0..reps.max(1) {
            let mut m = Meter::default();
            let out = m.time(&mut f);
            if best.as_ref().is_none_or(|(b, _)| m.wall < b.wall) {
                best = Some((m, out));
            }
        }
        let (m, out) = best.expect("at least one run");
        self.wall += m.wall;
        self.cpu += m.cpu;
        self.wait_ns += m.wait_ns;
        out
    }

    fn secs(&self) -> f64 {
        self.wall.as_secs_f64()
    }

    /// The row of a limit measured by this meter over `n` indicators (`bytes` of what the
    /// MB/s column counts, shown with `decimals`), and its rate and CPU-per-million figures
    /// under `key`. `notes` get the run-queue wait appended.
    #[allow(clippy::too_many_arguments)]
    fn limit_row(
        &self,
        res: &mut Results,
        key: &'static str,
        scenario: &str,
        n: usize,
        bytes: usize,
        decimals: usize,
        notes: String,
    ) {
        let rate = n as f64 / self.secs();
        res.rows.push(Row {
            scenario: scenario.into(),
            rate: thousands(rate),
            mbps: format!("{:.*}", decimals, mb(bytes as f64) / self.secs()),
            cpu: per_million(self.cpu, n),
            rss: "-".into(),
            notes: format!("{notes}{}", self.waited()),
        });
        res.figures.push((key, rate));
        res.figures.push((cpu_key(key), self.cpu * 1e6 / n as f64));
    }

    /// `; waited 0.3 s for a CPU` when it matters (other load on the machine).
    fn waited(&self) -> String {
        let w = self.wait_ns as f64 / 1e9;
        if w >= 0.05 && w >= 0.05 * self.secs() {
            format!("; waited {w:.1} s of {:.1} s for a CPU", self.secs())
        } else {
            String::new()
        }
    }
}

/// Each page is decoded this many times; the fastest counts (JSON limits only).
const REPS: usize = 3;

fn limits(s: &Settings, feed: &Feed, cfg: &Config, work: &Path, res: &mut Results) -> Prepared {
    let n = s.n;
    let generated = Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let offsets: Vec<usize> = (0..n).step_by(s.page).collect();
    let page_of = |off: usize| feed.page(off, s.page, &generated);

    // (a) JSON: Value only.
    stage("limit: JSON decode (serde_json::Value)");
    let (mut raw, mut json_bytes) = (Meter::default(), 0usize);
    for &off in &offsets {
        let body = page_of(off);
        json_bytes += body.len();
        raw.best_of(REPS, || {
            let v: Value = serde_json::from_slice(&body).expect("generated JSON parses");
            drop(std::hint::black_box(v));
        });
    }
    let rate = n as f64 / raw.secs();
    res.rows.push(Row {
        scenario: "limit: JSON decode, serde_json::from_slice::<Value>".into(),
        rate: thousands(rate),
        mbps: format!("{:.0}", mb(json_bytes as f64) / raw.secs()),
        cpu: per_million(raw.cpu, n),
        rss: "-".into(),
        notes: format!(
            "one thread, parse + drop, best of {REPS} per page; {} pages, {:.0} MB of JSON ({} B/indicator); MB/s of JSON{}",
            offsets.len(),
            mb(json_bytes as f64),
            json_bytes / n,
            raw.waited()
        ),
    });
    res.figures.push(("json_value", rate));

    // (a') JSON straight to indicators (what the daemon does), (c) queue insert, and the
    // frames, page by page.
    stage("limit: JSON decode → Indicator (decode::body_each), queue insert (commit_page), frames");
    let opts = CefOptions::from_config(&cfg.cef);
    let dest = &cfg.destinations[0];
    let header = deliver::header_for(dest, &cfg.syslog);
    let qdir = work.join("queue-limit");
    let store = Store::open(&qdir).expect("open the queue");
    store.sync_destinations(&["bench".into()]).unwrap();
    let (mut full, mut prep, mut ins, mut cef_bytes) =
        (Meter::default(), Meter::default(), Meter::default(), 0usize);
    let mut lf_stream = Vec::with_capacity(n * 300);
    let (mut msg, mut line) = (Vec::with_capacity(1024), String::with_capacity(512));
    let mut seq = 0i64;
    let enqueued = Utc::now();
    for (k, &off) in offsets.iter().enumerate() {
        let body = page_of(off);
        // Timed: the daemon's decoding, item by item into one reused indicator.
        let decoded = full.best_of(REPS, || {
            let mut ok = 0usize;
            decode::body_each(&body, &mut |r| {
                if let Ok(i) = r {
                    ok += std::hint::black_box(i).value.len().min(1);
                }
            })
            .expect("generated JSON parses");
            ok
        });
        // Untimed: the same page collected, for the entries and frames below.
        let Data::Items(items) = decode::body(&body).expect("generated JSON parses").data else {
            panic!("generated pages have a data array")
        };
        let inds: Vec<Indicator> = items.into_iter().filter_map(|i| i.0.ok()).collect();
        assert_eq!(decoded, inds.len(), "both decodings see every indicator");
        // Timed apart: the entries as the poller prepares them after decoding (dedup key,
        // version, CEF line).
        let keyer = store.keyer();
        let prepared: Vec<ioc_forwarder::store::Prepared> = prep.time(|| {
            inds.iter()
                .map(|ind| {
                    line.clear();
                    let (cuts, act_at) = cef::encode_queued(ind, &opts, &mut line);
                    ioc_forwarder::store::Prepared::new(keyer.key(ind), ind, &line, act_at, cuts)
                })
                .collect()
        });
        // Untimed: the frames.
        for ind in &inds {
            line.clear();
            cef::encode_queued(ind, &opts, &mut line);
            cef_bytes += line.len();
            seq += 1;
            let ev = Event::new(seq, enqueued, &ind.type_raw, &line);
            let framed = deliver::frame_event(dest, &header, &ev, false, &mut msg, &mut lf_stream);
            assert_eq!(
                framed,
                Framed::Whole,
                "a generated indicator was cut or dropped"
            );
        }
        let last = k + 1 == offsets.len();
        let out = ins.time(|| {
            store
                .commit_page(
                    &prepared,
                    last.then(|| ioc_forwarder::store::CycleEnd::at(Utc::now())),
                )
                .expect("commit_page")
        });
        assert_eq!(out.added, inds.len(), "every generated indicator is new");
    }
    assert_eq!(seq as usize, n, "every generated item parses");
    full.limit_row(
        res,
        "json_decode",
        "limit: JSON decode → Indicator (decode::body_each)",
        n,
        json_bytes,
        0,
        format!("one thread, best of {REPS} per page; what the daemon does per page before encoding (typed, lenient, no Value tree, items decoded into one reused indicator); MB/s of JSON"),
    );
    prep.limit_row(
        res,
        "prepare",
        "limit: prepare (dedup key + CEF line), Prepared::new",
        n,
        cef_bytes,
        1,
        "one thread; what the poller does per decoded indicator before the commit (SipHash of the identity, CEF encoding, the queued entry); MB/s of CEF".into(),
    );
    let db_mb = std::fs::read_dir(&qdir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0) as f64
        / 1e6;
    ins.limit_row(
        res,
        "queue_insert",
        "limit: queue insert, Store::commit_page",
        n,
        cef_bytes,
        1,
        format!(
            "1 transaction per {}-item page, WAL, synchronous=FULL, in-memory dedup lookup, one seen_log row per page, events in chunk rows of 512; entries prepared (hashed, encoded) untimed; MB/s of CEF; state files {db_mb:.0} MB after",
            s.page
        ),
    );

    stage("limit: queue scan (read_after, 512 per read)");
    let mut scan = Meter::default();
    let (scanned, scanned_bytes) = scan.time(|| {
        let (mut after, mut scanned, mut scanned_bytes) = (0i64, 0usize, 0usize);
        loop {
            let batch = store.read_after(after, 512).expect("read_after");
            let Some(last) = batch.last() else { break };
            after = last.seq;
            scanned += batch.len();
            scanned_bytes += batch.iter().map(|e| e.cef().len()).sum::<usize>();
        }
        (scanned, scanned_bytes)
    });
    assert_eq!(scanned, n, "the scan sees every queued event");
    scan.limit_row(
        res,
        "queue_scan",
        "limit: queue scan, Store::read_after (512 per call)",
        n,
        scanned_bytes,
        1,
        "warm page cache (just written); no ack/delete; MB/s of CEF".into(),
    );
    drop(store);

    // (b) raw loopback TCP write.
    stage("limit: raw loopback TCP write of the frames");
    let receiver = Receiver::tcp(Framing::Lf);
    let c0 = sys::self_cpu();
    let t0 = Instant::now();
    thread::scope(|sc| {
        let stream = &lf_stream;
        let addr = receiver.addr;
        sc.spawn(move || {
            let mut conn = TcpStream::connect(addr).expect("connect to the receiver");
            for chunk in stream.chunks(128 * 1024) {
                conn.write_all(chunk).expect("raw write");
            }
        });
        let got = receiver.wait_for(n as u64, s.stall);
        if got != n as u64 {
            res.fail(format!(
                "raw TCP write: the receiver counted {got} of {n} frames"
            ));
        }
    });
    let secs = receiver
        .last_byte_at()
        .map(|t| t.saturating_duration_since(t0))
        .unwrap_or_else(|| t0.elapsed())
        .as_secs_f64();
    let cpu = sys::self_cpu() - c0;
    let rate = n as f64 / secs;
    res.rows.push(Row {
        scenario: "limit: loopback TCP write of pre-rendered frames".into(),
        rate: thousands(rate),
        mbps: format!("{:.0}", mb(lf_stream.len() as f64) / secs),
        cpu: per_million(cpu, n),
        rss: "-".into(),
        notes: format!(
            "128 KiB write_all to a read-and-count receiver; {} B/frame (lf); CPU = writer + receiver",
            lf_stream.len() / n
        ),
    });
    res.figures.push(("tcp_write", rate));
    res.figures
        .push((cpu_key("tcp_write"), cpu * 1e6 / n as f64));
    Prepared { lf_stream }
}

struct Backfill<'a> {
    label: &'static str,
    key: &'static str,
    receiver: Receiver,
    dest: Dest<'a>,
}

/// One `once` backfill of the whole feed into a fresh state dir. Returns the config path.
fn backfill(
    s: &Settings,
    bin: &Path,
    api: &api::FakeApi,
    work: &Path,
    b: Backfill<'_>,
    res: &mut Results,
) -> PathBuf {
    let n = s.n;
    let name = b.key;
    let state = work.join(format!("state-{name}"));
    let conf = work.join(format!("{name}.toml"));
    write_config(
        &conf,
        &config_text(&state, &api.base_url(), s.page, &b.dest),
    );
    let log = work.join(format!("{name}-once.log"));
    stage(&format!("{}: ioc-forwarder once", b.label));
    let req0 = api.requests.load(std::sync::atomic::Ordering::Relaxed);
    let served0 = api.bytes.load(std::sync::atomic::Ordering::Relaxed);
    let c0 = sys::self_cpu();
    let t0 = Instant::now();
    let wrap: Vec<String> = std::env::var("IOC_BENCH_WRAP")
        .map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let mut cmd = match wrap.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = cmd
        .arg("-c")
        .arg(&conf)
        .args(["--log-level", "info", "once"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start ioc-forwarder");
    let sampler = sys::ProcSampler::start(child.id());
    let exit = sys::wait(child);
    let sampled = sampler.finish();
    let wall = exit.at.duration_since(t0).as_secs_f64();
    let got = b.receiver.wait_for(n as u64, Duration::from_secs(10));
    let settled = b.receiver.settle(Duration::from_millis(300)).max(got);
    let harness = sys::self_cpu() - c0;
    let requests = api.requests.load(std::sync::atomic::Ordering::Relaxed) - req0;
    let served = api.bytes.load(std::sync::atomic::Ordering::Relaxed) - served0;
    if exit.code != 0 {
        res.fail(format!(
            "{}: ioc-forwarder once exited {}; log tail:\n{}",
            b.label,
            exit.code,
            log_tail(&log, 15)
        ));
    }
    if settled != n as u64 {
        res.fail(format!(
            "{}: the receiver got {settled} frames, expected exactly {n} (framing errors: {}); log tail:\n{}",
            b.label,
            b.receiver.counts.errors.load(std::sync::atomic::Ordering::Relaxed),
            log_tail(&log, 15)
        ));
    }
    let last = b
        .receiver
        .last_byte_at()
        .map(|t| format!("{:.1}", t.saturating_duration_since(t0).as_secs_f64()))
        .unwrap_or_else(|| "-".into());
    let poll = poll_ms(&log)
        .map(|ms| format!("{:.1}", ms as f64 / 1000.0))
        .unwrap_or_else(|| "?".into());
    let rate = n as f64 / wall;
    res.rows.push(Row {
        scenario: format!("once backfill → {}", b.label),
        rate: thousands(rate),
        mbps: format!("{:.1}", mb(b.receiver.bytes() as f64) / wall),
        cpu: per_million(exit.cpu_s(), n),
        rss: mib_kb(sampled.hwm_kb),
        notes: format!(
            "wall {wall:.1} s start→exit {} (poll cycle {poll} s, last frame at {last} s); {requests} API requests ({:.0} MB JSON); {} frames ({}); user {:.1} s + sys {:.1} s; waited {:.1} s for a CPU (run queue); disk writes {:.0} MB, reads {:.0} MB; harness (fake API + receiver) {harness:.1} s CPU",
            exit.code,
            mb(served as f64),
            settled,
            b.receiver.framing.name(),
            exit.user_s,
            exit.sys_s,
            sampled.runq_wait_s,
            mb(sampled.disk_write as f64),
            mb(sampled.disk_read as f64),
        ),
    });
    res.figures
        .push((cpu_key(b.key), exit.cpu_s() * 1e6 / n as f64));
    if !wrap.is_empty() {
        if let Some(r) = res.rows.last_mut() {
            r.notes = format!("UNDER `{}`: not a measurement; {}", wrap.join(" "), r.notes);
        }
    } else {
        res.figures.push((b.key, rate));
    }
    conf
}

/// `fresh`: the state is empty, so the run's first poll is the whole backfill (a first start).
fn idle(
    s: &Settings,
    bin: &Path,
    api: &api::FakeApi,
    conf: &Path,
    fresh: bool,
    work: &Path,
    res: &mut Results,
) {
    stage(&format!(
        "idle: ioc-forwarder run {}, sampled for {} s",
        if fresh {
            "on an empty state (its first poll is the backfill)"
        } else {
            "after the backfill"
        },
        s.idle_secs
    ));
    let log = work.join("tcp-run.log");
    let req0 = api.requests.load(std::sync::atomic::Ordering::Relaxed);
    let child = Command::new(bin)
        .arg("-c")
        .arg(conf)
        .args(["--log-level", "info", "run"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start ioc-forwarder run");
    let pid = child.id();
    let mut guard = KillOnDrop(Some(pid));
    // The first poll happens at start; idle begins once it is logged.
    let first_poll = s.stall.max(Duration::from_secs(120)) * if fresh { 10 } else { 1 };
    let deadline = Instant::now() + first_poll;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("poll cycle complete")
    {
        if Instant::now() > deadline || sys::status_kb(pid, "VmRSS").is_none() {
            res.fail(format!(
                "idle: run did not complete its first poll; log tail:\n{}",
                log_tail(&log, 15)
            ));
            sys::kill(pid, libc::SIGKILL);
            sys::wait(child);
            guard.0 = None;
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let polled = api.requests.load(std::sync::atomic::Ordering::Relaxed) - req0;
    thread::sleep(Duration::from_secs(2));
    let (cpu0, ctx0, rss0) = (
        sys::cpu_s(pid).unwrap_or(0.0),
        sys::context_switches(pid).unwrap_or(0),
        sys::status_kb(pid, "VmRSS").unwrap_or(0),
    );
    let t0 = Instant::now();
    let mut rss_max = rss0;
    while t0.elapsed() < Duration::from_secs(s.idle_secs) {
        thread::sleep(Duration::from_millis(500));
        rss_max = rss_max.max(sys::status_kb(pid, "VmRSS").unwrap_or(0));
    }
    let secs = t0.elapsed().as_secs_f64();
    let (cpu1, ctx1, rss1) = (
        sys::cpu_s(pid).unwrap_or(0.0),
        sys::context_switches(pid).unwrap_or(0),
        sys::status_kb(pid, "VmRSS").unwrap_or(0),
    );
    let threads = sys::threads(pid).unwrap_or(0);
    let hwm = sys::status_kb(pid, "VmHWM").unwrap_or(0);
    let polls_during = api.requests.load(std::sync::atomic::Ordering::Relaxed) - req0 - polled;
    sys::kill(pid, libc::SIGTERM);
    let exit = sys::wait(child);
    guard.0 = None;
    if exit.code != 0 {
        res.fail(format!(
            "idle: run exited {} after SIGTERM; log tail:\n{}",
            exit.code,
            log_tail(&log, 15)
        ));
    }
    let cpu = cpu1 - cpu0;
    res.rows.push(Row {
        scenario: if fresh {
            format!(
                "run, idle after its own first poll of {} (fresh state; {:.0} s)",
                thousands(s.n as f64),
                secs
            )
        } else {
            format!("run, idle between polls after the backfill ({:.0} s)", secs)
        },
        rate: "-".into(),
        mbps: "-".into(),
        cpu: format!("{cpu:.2} s in {secs:.0} s ({:.2} % of a core)", cpu / secs * 100.0),
        rss: mib_kb(rss_max),
        notes: format!(
            "VmRSS {} → {} MiB during idle; {:.1} context switches/s over {threads} threads; {polls_during} API requests during idle; VmHWM incl. start-up {} MiB",
            mib_kb(rss0),
            mib_kb(rss1),
            (ctx1 - ctx0) as f64 / secs,
            mib_kb(hwm)
        ),
    });
}

fn rsyslog_runs(s: &Settings, prep: &Prepared, work: &Path, res: &mut Results) {
    let Some(bin) = rsyslog::find() else {
        println!("rsyslog: skipped (not installed; scripts/bench.sh installs it with apt-get install -y rsyslog)");
        res.rows.push(Row {
            scenario: "rsyslog relay".into(),
            notes: "skipped (not installed)".into(),
            ..Row::default()
        });
        return;
    };
    let version = rsyslog::version(&bin);
    for (kind, key) in [
        (rsyslog::QueueKind::DiskAssisted, "rsyslog_da"),
        (rsyslog::QueueKind::Disk, "rsyslog_disk"),
    ] {
        stage(kind.label());
        let dir = work.join(key);
        std::fs::create_dir_all(&dir).unwrap();
        match rsyslog::relay(&bin, &dir, kind, &prep.lf_stream, s.n as u64, s.stall) {
            Ok(o) => {
                if !o.complete || o.frames != s.n as u64 {
                    res.fail(format!(
                        "{}: the receiver got {} frames, expected exactly {} (see {})",
                        kind.label(),
                        o.frames,
                        s.n,
                        dir.join("rsyslogd.log").display()
                    ));
                }
                let rate = o.frames.min(s.n as u64) as f64 / o.seconds;
                res.rows.push(Row {
                    scenario: kind.label().into(),
                    rate: thousands(rate),
                    mbps: format!("{:.1}", mb(o.bytes_out as f64) / o.seconds),
                    cpu: per_million(o.exit.cpu_s(), s.n),
                    rss: mib_kb(o.sampled.hwm_kb),
                    notes: format!(
                        "{version}; first byte in → frame {} out {:.1} s; disk writes {:.0} MB (queue files peak {:.0} MB); waited {:.1} s for a CPU; rsyslogd CPU only (feeder/receiver excluded); queue.syncQueueFiles off (default: no fsync per message)",
                        o.frames, o.seconds, mb(o.sampled.disk_write as f64), o.queue_files_peak_mb, o.sampled.runq_wait_s
                    ),
                });
                res.figures.push((key, rate));
            }
            Err(e) => res.fail(format!("{}: {e}", kind.label())),
        }
    }
}

fn tls_material(
    dir: &Path,
) -> (
    PathBuf,
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "ioc-forwarder bench CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, "localhost");
    p.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().unwrap()),
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
    ];
    let leaf = p.signed_by(&key, &ca, &ca_key).unwrap();
    let ca_path = dir.join("bench-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    (ca_path, vec![leaf.der().clone()], key_der)
}

// ---------------------------------------------------------------------------------------------
// Report

fn render(
    s: &Settings,
    res: &Results,
    machine: &sys::Machine,
    fs: &str,
    state_dir: &Path,
    load: &str,
    extra_head: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## ioc-forwarder pipeline benchmark — N = {} indicators, {} per page\n",
        thousands(s.n as f64),
        thousands(s.page as f64)
    );
    let _ = writeln!(out, "{extra_head}");
    let _ = writeln!(
        out,
        "| scenario | indicators/s | MB/s | CPU s per 1M | peak RSS MB | notes |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
    for r in &res.rows {
        let cell = |v: &str| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.replace('|', "\\|")
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&r.scenario),
            cell(&r.rate),
            cell(&r.mbps),
            cell(&r.cpu),
            cell(&r.rss),
            cell(&r.notes)
        );
    }
    let _ = writeln!(out, "\nMB = 10^6 bytes (throughput); RSS in MiB (VmHWM of the process, sampled every 20 ms; VmRSS for idle). CPU s per 1M = user+sys CPU seconds per million indicators.\n");
    let _ = writeln!(out, "### Ratios\n");
    let ratio = |a: &str, b: &str| match (res.figure(a), res.figure(b)) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    };
    let lines: [(&str, &str, &str, Option<f64>); 6] = [
        (
            "TCP backfill ÷ JSON-decode limit (decode::body_each)",
            "tcp",
            "json_decode",
            Some(0.8),
        ),
        (
            "TLS backfill ÷ JSON-decode limit (decode::body_each)",
            "tls",
            "json_decode",
            Some(0.8),
        ),
        (
            // The ×3 target compares like with like, the disk-queued relay; the disk-assisted
            // one is in effect a memory queue (no fsync), shown for scale.
            "TCP backfill ÷ rsyslog disk-assisted relay (memory queue in effect)",
            "tcp",
            "rsyslog_da",
            None,
        ),
        (
            "TCP backfill ÷ rsyslog disk-queue relay",
            "tcp",
            "rsyslog_disk",
            Some(3.0),
        ),
        (
            "TLS backfill ÷ rsyslog disk-queue relay",
            "tls",
            "rsyslog_disk",
            None,
        ),
        (
            "TCP backfill ÷ queue-insert limit",
            "tcp",
            "queue_insert",
            None,
        ),
    ];
    for (label, a, b, target) in lines {
        if let Some(r) = ratio(a, b) {
            let verdict = match target {
                Some(t) if r >= t => format!(" (target ≥ {t}: met)"),
                Some(t) => format!(" (target ≥ {t}: MISSED)"),
                None => String::new(),
            };
            let _ = writeln!(out, "- {label}: **{r:.2}**{verdict}");
        }
    }
    if let (Some(j), Some(t)) = (res.figure("json_decode_cpu"), res.figure("tcp_cpu")) {
        let _ = writeln!(
            out,
            "- CPU-normalised (robust to other load): JSON-decode CPU per 1M ÷ TCP backfill CPU per 1M = **{:.2}** ({j:.2} s ÷ {t:.2} s)",
            j / t
        );
    }
    if let (Some(j), Some(t)) = (res.figure("json_decode_cpu"), res.figure("tls_cpu")) {
        let _ = writeln!(
            out,
            "- CPU-normalised: JSON-decode CPU per 1M ÷ TLS backfill CPU per 1M = **{:.2}** ({j:.2} s ÷ {t:.2} s)",
            j / t
        );
    }
    // The 0.8 × decode-limit target against what the stages every indicator must pass cost
    // together, each measured alone in this same run: decoding, preparing (key + CEF), the
    // fsync'd queue insert, the scan back, the TCP write. Even if they overlapped perfectly on
    // both cores (and HTTP, framing and the fake API cost nothing), the backfill could not
    // beat 2 cores ÷ their summed CPU per indicator.
    let keys = [
        "json_decode",
        "prepare",
        "queue_insert",
        "queue_scan",
        "tcp_write",
    ];
    let stages = keys.map(|k| res.figure(cpu_key(k)));
    if let (Some(d), [Some(a), Some(p), Some(b), Some(c), Some(e)]) =
        (res.figure("json_decode"), stages)
    {
        let sum = a + p + b + c + e;
        let ceiling = 2.0 * 1e6 / sum;
        let verdict = if ceiling < 0.8 * d { "below" } else { "above" };
        let _ = writeln!(
            out,
            "- Ceiling on 2 cores from the stages' own CPU per 1M ({a:.2} decode + {p:.2} prepare + {b:.2} insert + {c:.2} scan + {e:.2} TCP = {sum:.2} s): {}/s = **{:.2}** × the JSON-decode limit, {verdict} the 0.8 target",
            thousands(ceiling),
            ceiling / d
        );
    }
    let _ = writeln!(out, "\n### Targets\n");
    let check = |name: &str, v: Option<f64>, ok: &dyn Fn(f64) -> bool, shown: String| match v {
        Some(x) => format!(
            "- {name}: {shown} — {}",
            if ok(x) { "met" } else { "MISSED" }
        ),
        None => format!("- {name}: not measured"),
    };
    let t = res.figure("tcp");
    let _ = writeln!(
        out,
        "{}",
        check(
            "backfill over TCP ≥ 300,000/s",
            t,
            &|x| x >= 300_000.0,
            t.map(thousands).unwrap_or_default() + "/s"
        )
    );
    let t = res.figure("tls");
    let _ = writeln!(
        out,
        "{}",
        check(
            "backfill over TLS ≥ 250,000/s",
            t,
            &|x| x >= 250_000.0,
            t.map(thousands).unwrap_or_default() + "/s"
        )
    );
    for (key, label) in [
        ("tcp_rss", "peak RSS during the TCP backfill ≤ 64 MB"),
        ("tls_rss", "peak RSS during the TLS backfill ≤ 64 MB"),
        ("idle_rss", "idle RSS ≤ 20 MB"),
    ] {
        let v = res.figure(key);
        let limit = if key == "idle_rss" { 20.0 } else { 64.0 };
        let _ = writeln!(
            out,
            "{}",
            check(
                label,
                v,
                &|x| x <= limit,
                v.map(|x| format!("{x:.1} MiB")).unwrap_or_default()
            )
        );
    }
    let v = res.figure("idle_cpu_pct");
    let _ = writeln!(
        out,
        "{}",
        check(
            "idle CPU ~0 (< 0.1 % of a core)",
            v,
            &|x| x < 0.1,
            v.map(|x| format!("{x:.3} %")).unwrap_or_default()
        )
    );
    let _ = writeln!(out, "\n### Machine\n");
    let _ = writeln!(out, "- CPU: {} × {}", machine.nproc, machine.cpu);
    let _ = writeln!(
        out,
        "- memory: {:.1} GiB; kernel {}",
        machine.mem_gib, machine.kernel
    );
    let _ = writeln!(out, "- state dirs: {} on {fs}", state_dir.display());
    let _ = writeln!(
        out,
        "- 1-minute load average: {load} (other work on the machine makes every figure noisier)"
    );
    let env: Vec<String> = [
        "IOC_BENCH_N",
        "IOC_BENCH_PAGE",
        "IOC_BENCH_IDLE_SECS",
        "IOC_BENCH_ONLY",
        "IOC_BENCH_SKIP",
        "IOC_BENCH_BIN",
        "IOC_BENCH_WRAP",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v} ")))
    .collect();
    let _ = writeln!(
        out,
        "- command: `{}cargo bench --bench pipeline` (or `scripts/bench.sh`); N = {}",
        env.concat(),
        s.n
    );
    for e in &res.extra {
        let _ = writeln!(out, "- {e}");
    }
    if !res.failures.is_empty() {
        let _ = writeln!(out, "\n### FAILURES\n");
        for f in &res.failures {
            let _ = writeln!(out, "- {}", f.replace('\n', "\n  "));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------

fn main() {
    // `cargo bench` passes `--bench` (and filters); this bench has no options but the env.
    let s = Settings::from_env();
    recv::self_check();
    let machine = sys::machine();
    let load = sys::loadavg();
    let target = target_dir();
    let root = target.join("bench-pipeline-work");
    std::fs::create_dir_all(&root).expect("create the work directory");
    let tmp = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&root)
        .expect("work directory");
    let work = tmp.path().to_path_buf();
    let fs = sys::filesystem_of(&work);
    if fs.starts_with("tmpfs") || fs.starts_with("ramfs") {
        eprintln!("warning: {} is on {fs}: the queue's fsyncs cost nothing there; set CARGO_TARGET_DIR to a disk", work.display());
    }
    let bin = binary();
    stage(&format!(
        "N = {}, {} per page; {} × {}; state dirs on {fs}; load {load}",
        s.n, s.page, machine.nproc, machine.cpu
    ));
    let mut res = Results {
        rows: Vec::new(),
        failures: Vec::new(),
        figures: Vec::new(),
        extra: Vec::new(),
    };
    res.extra.push(format!(
        "binary: {} (source: {})",
        bin.display(),
        source_revision()
    ));

    stage("generating the feed");
    let t0 = Instant::now();
    let newest = Utc::now().timestamp() - 600;
    let feed = Arc::new(Feed::generate(s.n, newest));
    stage(&format!(
        "feed: {} indicators, {:.0} MB of item JSON, {:.1} s",
        s.n,
        mb(feed.body.len() as f64),
        t0.elapsed().as_secs_f64()
    ));
    let api = api::FakeApi::start(feed.clone());

    // A config as the TCP backfill uses, for the encoder settings of the pre-rendered frames.
    let proto = config_text(
        &work.join("unused"),
        &api.base_url(),
        s.page,
        &Dest::Tcp("127.0.0.1:9".parse().unwrap()),
    );
    let cfg = Config::parse(&proto, &work.join("proto.toml"), &|k| std::env::var(k).ok())
        .unwrap_or_else(|e| panic!("the bench's config does not parse: {e}"));

    let need_frames = s.runs("limits") || s.runs("rsyslog");
    let prep = if need_frames {
        let mut scratch = Results {
            rows: vec![],
            failures: vec![],
            figures: vec![],
            extra: vec![],
        };
        let r = if s.runs("limits") {
            &mut res
        } else {
            &mut scratch
        };
        let p = limits(&s, &feed, &cfg, &work, r);
        std::fs::remove_dir_all(work.join("queue-limit")).ok();
        p
    } else {
        Prepared {
            lf_stream: Vec::new(),
        }
    };

    let mut tcp_conf = None;
    if s.runs("tcp") {
        let receiver = Receiver::tcp(Framing::Lf);
        let addr = receiver.addr;
        let conf = backfill(
            &s,
            &bin,
            &api,
            &work,
            Backfill {
                label: "TCP (lf)",
                key: "tcp",
                receiver,
                dest: Dest::Tcp(addr),
            },
            &mut res,
        );
        if let Some(r) = res.rows.last().filter(|_| res.figure("tcp").is_some()) {
            if let Ok(v) = r.rss.parse::<f64>() {
                res.figures.push(("tcp_rss", v));
            }
        }
        tcp_conf = Some(conf);
    }
    if s.runs("tls") {
        let (ca, chain, key) = tls_material(&work);
        let receiver = Receiver::tls(Framing::OctetCounting, chain, key);
        let addr = receiver.addr;
        backfill(
            &s,
            &bin,
            &api,
            &work,
            Backfill {
                label: "TLS (octet-counting)",
                key: "tls",
                receiver,
                dest: Dest::Tls(addr, &ca),
            },
            &mut res,
        );
        if let Some(r) = res.rows.last().filter(|_| res.figure("tls").is_some()) {
            if let Ok(v) = r.rss.parse::<f64>() {
                res.figures.push(("tls_rss", v));
            }
        }
        std::fs::remove_dir_all(work.join("state-tls")).ok();
    }
    if s.runs("idle") {
        let fresh = tcp_conf.is_none();
        let conf = match tcp_conf.clone() {
            Some(c) => c,
            None => {
                // No backfill this time: `run` starts on an empty state, its first poll is the
                // whole feed, and the idle figures are those of a first start.
                res.extra.push(
                    "idle: `run` started on an empty state (its first poll fetched the whole feed)"
                        .into(),
                );
                let r = Receiver::tcp(Framing::Lf);
                let c = work.join("idle.toml");
                write_config(
                    &c,
                    &config_text(
                        &work.join("state-idle"),
                        &api.base_url(),
                        s.page,
                        &Dest::Tcp(r.addr),
                    ),
                );
                std::mem::forget(r);
                c
            }
        };
        idle(&s, &bin, &api, &conf, fresh, &work, &mut res);
        if let Some(r) = res
            .rows
            .last()
            .filter(|r| r.scenario.starts_with("run, idle"))
        {
            if let Ok(v) = r.rss.parse::<f64>() {
                res.figures.push(("idle_rss", v));
            }
            if let Some(p) = r
                .cpu
                .split('(')
                .nth(1)
                .and_then(|x| x.split(' ').next())
                .and_then(|x| x.parse().ok())
            {
                res.figures.push(("idle_cpu_pct", p));
            }
        }
    }
    if s.runs("rsyslog") {
        rsyslog_runs(&s, &prep, &work, &mut res);
    }

    let state_dir = work.clone();
    let head = format!(
        "Same generated pages for every row ({} IOC types incl. both mitre spellings). Limits run in the bench process; backfills run `{}`; the fake API, the receivers and the feeders share the same {} cores.\n",
        feed::types().len(),
        bin.file_name().unwrap().to_string_lossy(),
        machine.nproc
    );
    let load = format!("{load} at start, {} at end", sys::loadavg());
    let table = render(&s, &res, &machine, &fs, &state_dir, &load, &head);
    println!("\n{table}");
    let md = target.join("bench-pipeline.md");
    match std::fs::write(&md, &table) {
        Ok(()) => eprintln!("written to {}", md.display()),
        Err(e) => eprintln!("cannot write {}: {e}", md.display()),
    }
    if s.keep {
        let kept = tmp.keep();
        eprintln!("work directory kept: {}", kept.display());
    }
    if !res.failures.is_empty() {
        eprintln!("{} scenario(s) FAILED", res.failures.len());
        std::process::exit(1);
    }
}
