//! No silent loss and a bounded stop, with the real binary against real sockets and files:
//! datagram receivers that restart or fill up, a UDP receiver that is down and comes back,
//! one owner per state directory, a stop that fits its budget with a stalled receiver, tasks
//! that panic or hang, a reload whose store step fails, a receiver that accepts and closes at
//! once, and a slow receiver that must be closed, not reset.

mod support;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::sockets::{UdpReceiver, UnixDgramReceiver};
use support::tls::{Ca, TlsOpts, TlsReceiver};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// `n` new IPv4 indicators (ids and values from `from` on), seen now, put at the head of the
/// feed as the API serves new ones.
fn publish(api: &FakeApi, from: usize, n: usize) {
    let now = now_secs();
    let items: Vec<Value> = (from..from + n).map(|i| ipv4_indicator(i, now)).collect();
    api.feed.lock().unwrap().splice(0..0, items);
}

fn values_of(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(ipv4_value).collect()
}

fn datagram_values(grams: &[Vec<u8>]) -> Vec<String> {
    let frames: Vec<String> = grams
        .iter()
        .map(|g| String::from_utf8_lossy(g).into_owned())
        .collect();
    src_values(&frames)
}

fn missing(want: &BTreeSet<String>, got: &[String]) -> Vec<String> {
    let got: BTreeSet<&String> = got.iter().collect();
    want.iter().filter(|v| !got.contains(v)).cloned().collect()
}

/// Waits until every value of `want` is among what `got()` returns.
fn wait_for_values(
    want: &BTreeSet<String>,
    timeout: Duration,
    got: impl Fn() -> Vec<String>,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = missing(want, &got());
        if m.is_empty() || Instant::now() >= deadline {
            return m;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Datagram destinations

#[test]
fn a_unix_datagram_receiver_that_restarts_or_is_missing_loses_nothing() {
    let dir = tempdir();
    let path = dir.path().join("log.sock");
    let rx = UnixDgramReceiver::start(&path);
    let api = FakeApi::start(ipv4_feed(400, now_secs(), Duration::from_secs(1)));
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::new("devlog", "unix", path.display())],
    );
    let mut agent = Agent::spawn(&cfg);
    let m = wait_for_values(&values_of(0..400), WAIT, || {
        datagram_values(&rx.datagrams())
    });
    assert!(m.is_empty(), "{} missing\n{}", m.len(), agent.stderr());
    // The syslog daemon restarts: its socket is closed and a new one bound at the same path.
    let first = rx.close();
    let rx = UnixDgramReceiver::start(&path);
    publish(&api, 1000, 200);
    let m = wait_for_values(&values_of(1000..1200), WAIT, || {
        datagram_values(&rx.datagrams())
    });
    assert!(
        m.is_empty(),
        "after the receiver restarted, {} of 200 new events never arrived\n{}",
        m.len(),
        tail(&agent.stderr(), 3000)
    );
    // Now it stops and stays away while new events are polled, then comes back.
    let second = rx.close();
    publish(&api, 2000, 100);
    thread::sleep(Duration::from_secs(2));
    let rx = UnixDgramReceiver::start(&path);
    let m = wait_for_values(&values_of(2000..2100), WAIT, || {
        datagram_values(&rx.datagrams())
    });
    assert!(
        m.is_empty(),
        "events polled while the socket was missing: {} of 100 never arrived\n{}",
        m.len(),
        tail(&agent.stderr(), 3000)
    );
    assert!(agent.terminate().success());
    assert_eq!(pending(&cfg, "devlog"), 0);
    let all: Vec<String> = [first, second, rx.close()]
        .iter()
        .flat_map(|g| datagram_values(g))
        .collect();
    let dups = all.len() - all.iter().collect::<BTreeSet<_>>().len();
    eprintln!(
        "unix datagram restart: {} frames, {dups} duplicates",
        all.len()
    );
}

#[test]
fn a_unix_datagram_receiver_whose_queue_is_full_loses_nothing() {
    let dir = tempdir();
    let path = dir.path().join("log.sock");
    // Not reading: the socket's queue (net.unix.max_dgram_qlen, 10 by default) fills at once.
    let rx = UnixDgramReceiver::start_paused(&path);
    let api = FakeApi::start(ipv4_feed(300, now_secs(), Duration::from_secs(1)));
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::new("devlog", "unix", path.display()).set_str("write_timeout", "1s")],
        &ConfigOpts {
            shutdown_timeout: "20s".into(),
            ..ConfigOpts::default()
        },
    );
    let resume = {
        let rx_paused = Arc::new(rx);
        let r = rx_paused.clone();
        // Long enough for sends to block past write_timeout more than once.
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_secs(3));
            r.resume();
        });
        (rx_paused, t)
    };
    let out = run_once(&cfg);
    resume.1.join().unwrap();
    let rx = resume.0;
    assert_exit(&out, 0);
    let m = wait_for_values(&values_of(0..300), WAIT, || {
        datagram_values(&rx.datagrams())
    });
    assert!(m.is_empty(), "{} of 300 lost\n{}", m.len(), describe(&out));
    assert_eq!(pending(&cfg, "devlog"), 0);
}

/// A UDP port nobody listens on right now (bound and released).
fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

#[test]
fn udp_events_sent_while_the_receiver_was_down_arrive_after_it_comes_back() {
    let dir = tempdir();
    let port = free_udp_port();
    let api = FakeApi::start(ipv4_feed(50, now_secs(), Duration::from_secs(1)));
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::new("udp", "udp", format!("127.0.0.1:{port}"))],
    );
    let mut agent = Agent::spawn(&cfg);
    let deadline = Instant::now() + WAIT;
    while !agent.stderr().contains("refused") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        agent.stderr().contains("refused"),
        "no log line says the receiver refused\n{}",
        agent.stderr()
    );
    assert_eq!(
        pending(&cfg, "udp"),
        50,
        "nothing the receiver refused may count as delivered"
    );
    let rx = UdpReceiver::start_on(port);
    let m = wait_for_values(&values_of(0..50), WAIT, || datagram_values(&rx.datagrams()));
    assert!(
        m.is_empty(),
        "{} of 50 events never arrived after the receiver came back\n{}",
        m.len(),
        tail(&agent.stderr(), 3000)
    );
    assert!(agent.terminate().success());
    assert_eq!(pending(&cfg, "udp"), 0);
    // Each refusal dropped the socket; each reconnect resolved the address again.
    let connects = agent
        .stderr()
        .lines()
        .filter(|l| l.contains("destination connected") && l.contains("destination=udp"))
        .count();
    assert!(connects >= 2, "{}", agent.stderr());
}

// ---------------------------------------------------------------------------------------------
// One owner per state directory

/// Name, length and a hash of every file in the state directory but SQLite's shared-memory
/// index (readers write their marks there).
fn state_files(cfg_dir: &Path) -> Vec<(String, usize, u64)> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let state = cfg_dir.join("state");
    let mut files: Vec<(String, usize, u64)> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().ends_with("-shm"))
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            let mut h = DefaultHasher::new();
            bytes.hash(&mut h);
            (
                e.file_name().to_string_lossy().into_owned(),
                bytes.len(),
                h.finish(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_second_once_beside_run_exits_1_naming_the_directory_and_the_holder_and_changes_nothing() {
    let dir = tempdir();
    let rx = TcpReceiver::start(Framing::Lf);
    let api = FakeApi::start(ipv4_feed(20, now_secs(), Duration::from_secs(1)));
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem", rx.addr)],
        &ConfigOpts {
            poll_interval: "1h".into(),
            ..ConfigOpts::default()
        },
    );
    let mut agent = Agent::spawn(&cfg);
    assert_eq!(rx.wait_for(20, WAIT), 20, "{}", agent.stderr());
    // Let the agent record its position; then nothing changes until the next poll in an hour.
    let deadline = Instant::now() + WAIT;
    while pending(&cfg, "siem") != 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(500));
    let before = state_files(dir.path());
    publish(&api, 100, 5);

    let out = run_once(&cfg);
    assert_exit(&out, 1);
    let err = text(&out.stderr);
    let state = dir.path().join("state");
    assert!(
        err.contains(&state.display().to_string()) && err.contains(&agent.pid.to_string()),
        "the error names the directory and the pid holding it\n{err}"
    );
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one line says why\n{err}");
    let purge = run_args(&cfg, &["queue", "purge", "--yes"]);
    assert_exit(&purge, 1);
    assert!(text(&purge.stderr).contains(&agent.pid.to_string()));
    assert_eq!(
        state_files(dir.path()),
        before,
        "a refused process changed the state directory"
    );
    // Read-only commands work beside the agent.
    assert_eq!(pending(&cfg, "siem"), 0);
    assert_exit(&run_args(&cfg, &["queue", "peek"]), 0);
    assert_exit(&run_args(&cfg, &["queue", "verify"]), 0);
    assert_eq!(
        rx.count(),
        20,
        "nothing was polled or sent by the refused process"
    );
    assert!(agent.terminate().success());
    // The lock goes with the process: the next one may run.
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    assert_eq!(rx.wait_for(25, WAIT), 25);
}

// ---------------------------------------------------------------------------------------------
// The stop fits its budget

/// Per connection: the bytes read, and once it ended whether that was a clean EOF (not a reset).
type Conns = Arc<Mutex<Vec<(Vec<u8>, Option<bool>)>>>;

/// A TCP receiver that accepts and reads nothing until told to, then reads every connection to
/// its end. Records how each connection ended.
struct StallingReceiver {
    addr: std::net::SocketAddr,
    resume: Arc<AtomicBool>,
    conns: Conns,
}

impl StallingReceiver {
    fn start() -> StallingReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let resume = Arc::new(AtomicBool::new(false));
        let conns: Conns = Arc::default();
        let (r, c) = (resume.clone(), conns.clone());
        thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { return };
                let i = {
                    let mut all = c.lock().unwrap();
                    all.push((Vec::new(), None));
                    all.len() - 1
                };
                let (r, c) = (r.clone(), c.clone());
                thread::spawn(move || {
                    while !r.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(10));
                    }
                    let mut buf = vec![0u8; 65536];
                    let clean = loop {
                        match s.read(&mut buf) {
                            Ok(0) => break true,
                            Ok(n) => c.lock().unwrap()[i].0.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(_) => break false,
                        }
                    };
                    c.lock().unwrap()[i].1 = Some(clean);
                });
            }
        });
        StallingReceiver {
            addr,
            resume,
            conns,
        }
    }

    fn resume(&self) {
        self.resume.store(true, Ordering::SeqCst);
    }

    fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Every connection's frames (LF framing).
    fn frames(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (bytes, _) in self.conns.lock().unwrap().iter() {
            for line in bytes.split(|b| *b == b'\n') {
                if !line.is_empty() {
                    out.push(String::from_utf8_lossy(line).into_owned());
                }
            }
        }
        out
    }
}

/// 3,000 indicators (pages of 1,000) for a destination `siem` on a [`StallingReceiver`], with
/// `write_timeout`; the config is `DIR/config.toml`.
fn stalled(
    write_timeout: &str,
    opts: ConfigOpts,
) -> (tempfile::TempDir, StallingReceiver, FakeApi) {
    let dir = tempdir();
    let rx = StallingReceiver::start();
    let api = FakeApi::start(ipv4_feed(3000, now_secs(), Duration::from_millis(10)));
    api.set_max_limit(1000);
    write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem", rx.addr).set_str("write_timeout", write_timeout)],
        &opts,
    );
    (dir, rx, api)
}

#[test]
fn sigterm_with_a_stalled_receiver_exits_0_before_the_budget_runs_out() {
    const BUDGET: Duration = Duration::from_secs(4);
    let (dir, rx, _api) = stalled(
        "60s",
        ConfigOpts {
            shutdown_timeout: "4s".into(),
            ..ConfigOpts::default()
        },
    );
    let cfg = dir.path().join("config.toml");
    let mut agent = Agent::spawn(&cfg);
    let deadline = Instant::now() + WAIT;
    while (rx.connections() == 0 || !agent.stderr().contains("poll cycle complete"))
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(rx.connections(), 1, "{}", agent.stderr());
    thread::sleep(Duration::from_millis(500));
    // Events in order: the agent's exit, and the receiver reading again 1.5 s after the whole
    // budget (shutdown_timeout + 2 s) ran out. A stop that waits for the receiver comes second.
    let events: Arc<Mutex<Vec<&str>>> = Arc::default();
    agent.signal("TERM");
    let resumer = {
        let events = events.clone();
        let resume = rx.resume.clone();
        thread::spawn(move || {
            thread::sleep(BUDGET + Duration::from_millis(3500));
            events.lock().unwrap().push("receiver reads again");
            resume.store(true, Ordering::SeqCst);
        })
    };
    let status = agent.wait();
    events.lock().unwrap().push("agent exited");
    resumer.join().unwrap();
    assert_eq!(status.code(), Some(0), "{}", agent.stderr());
    assert_eq!(
        *events.lock().unwrap(),
        vec!["agent exited", "receiver reads again"],
        "the stop waited for the stalled receiver\n{}",
        tail(&agent.stderr(), 2000)
    );
    assert!(agent.stderr().contains("stopped with events still queued"));
    // Nothing is lost: what the receiver did not get is still queued.
    thread::sleep(Duration::from_millis(500));
    let got: BTreeSet<String> = src_values(&rx.frames()).into_iter().collect();
    let queued = pending(&cfg, "siem");
    assert!(
        got.len() as u64 + queued >= 3000,
        "received {} distinct + queued {queued} < 3000",
        got.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Failed and stuck tasks

#[test]
fn a_panicking_delivery_task_ends_the_process_with_exit_1_and_says_why() {
    let dir = tempdir();
    let rx = TcpReceiver::start(Framing::Lf);
    let api = FakeApi::start(ipv4_feed(10, now_secs(), Duration::from_secs(1)));
    let cfg = write_config(dir.path(), &api.base_url(), &[Dest::tcp("siem", rx.addr)]);
    let mut cmd = command(&cfg, &["run"]);
    cmd.env("IOC_FORWARDER_FAILPOINTS", "delivery-panics");
    let mut agent = Agent::spawn_cmd(cmd);
    let status = agent.wait();
    let log = agent.stderr();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("delivery task of destination \"siem\"")
            && l.contains("panicked")),
        "a log line says which task failed and why\n{log}"
    );
    // Nothing was lost: the events are still queued for the next start.
    assert_eq!(pending(&cfg, "siem"), 10);
}

/// Reads `sd_notify` datagrams (as systemd would) and notes when each arrived.
struct NotifySocket {
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    fn start(path: &Path) -> NotifySocket {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let got: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let g = got.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => g
                        .lock()
                        .unwrap()
                        .push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into())),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
            }
        });
        NotifySocket { got }
    }

    fn pings_after(&self, t: Instant) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, m)| *at > t && m.lines().any(|l| l == "WATCHDOG=1"))
            .count()
    }
}

#[test]
fn a_hung_delivery_task_stops_the_watchdog_pings() {
    let dir = tempdir();
    let notify_path = dir.path().join("notify.sock");
    let notify = NotifySocket::start(&notify_path);
    let rx = TcpReceiver::start(Framing::Lf);
    let api = FakeApi::start(ipv4_feed(10, now_secs(), Duration::from_secs(1)));
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("siem", rx.addr)
            .set_str("connect_timeout", "1s")
            .set_str("write_timeout", "2s")],
    );
    let started = Instant::now();
    let mut cmd = command(&cfg, &["run"]);
    cmd.env("IOC_FORWARDER_FAILPOINTS", "delivery-hangs")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000");
    // systemd sets WATCHDOG_PID to the main pid: a shell exports its own and `exec`s the agent.
    let script = "WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$0\" \"$@\"";
    let mut agent = Agent::spawn_cmd(faults::wrap(&["sh", "-c", script], &cmd));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agent.stderr().contains("not pinging the systemd watchdog") && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(50));
    }
    let log = agent.stderr();
    assert!(
        log.contains("not pinging the systemd watchdog") && log.contains("delivery to siem"),
        "no log line names the task that stopped making progress\n{log}"
    );
    assert!(
        notify.pings_after(started) > 0,
        "the watchdog was pinged while the task was alive"
    );
    let stopped_at = Instant::now();
    // Six ping periods of 0.5 s.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(
        notify.pings_after(stopped_at),
        0,
        "pings went on while a task was stuck"
    );
    assert!(
        agent.is_running(),
        "the agent is left to systemd's watchdog"
    );
}

#[test]
fn a_reload_whose_store_step_fails_leaves_every_destination_delivering() {
    let dir = tempdir();
    let (a, b, a2) = (
        TcpReceiver::start(Framing::Lf),
        TcpReceiver::start(Framing::Lf),
        TcpReceiver::start(Framing::Lf),
    );
    let api = FakeApi::start(ipv4_feed(30, now_secs(), Duration::from_secs(1)));
    let opts = ConfigOpts::default();
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tcp("a", a.addr), Dest::tcp("b", b.addr)],
        &opts,
    );
    let mut cmd = command(&cfg, &["run"]);
    // Every write of the destination set to the state file fails (at start too).
    cmd.env("IOC_FORWARDER_FAILPOINTS", "record-destinations-fails");
    let mut agent = Agent::spawn_cmd(cmd);
    assert_eq!(a.wait_for(30, WAIT), 30, "{}", agent.stderr());
    assert_eq!(b.wait_for(30, WAIT), 30, "{}", agent.stderr());
    // "a" moves to another receiver; "b" stays; "c" is new.
    let c = TcpReceiver::start(Framing::Lf);
    write_config_with(
        dir.path(),
        &api.base_url(),
        &[
            Dest::tcp("a", a2.addr),
            Dest::tcp("b", b.addr),
            Dest::tcp("c", c.addr),
        ],
        &opts,
    );
    agent.signal("HUP");
    let deadline = Instant::now() + WAIT;
    while !agent.stderr().contains("reload failed half-way") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        agent.stderr().contains("reload failed half-way"),
        "{}",
        agent.stderr()
    );
    publish(&api, 500, 20);
    let want = values_of(500..520);
    for (name, rx) in [("a", &a2), ("b", &b), ("c", &c)] {
        let m = wait_for_values(&want, WAIT, || src_values(&rx.frames()));
        assert!(
            m.is_empty(),
            "destination {name} got {} of 20 new events after the reload\n{}",
            20 - m.len(),
            tail(&agent.stderr(), 3000)
        );
    }
    assert!(agent.terminate().success());
}

// ---------------------------------------------------------------------------------------------
// Connection churn and stalls

/// `retry_in` values of the "destination disconnected" log lines, in order.
fn retry_delays(log: &str) -> Vec<Duration> {
    log.lines()
        .filter(|l| l.contains("destination disconnected"))
        .filter_map(|l| {
            let v = l.split("retry_in=").nth(1)?.split_whitespace().next()?;
            parse_debug_duration(v)
        })
        .collect()
}

/// `Duration`'s Debug form: `812.5ms`, `1.6s`, `950µs`.
fn parse_debug_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic() || c == 'µ')?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1e3,
        "µs" => n / 1e6,
        "ns" => n / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

#[test]
fn a_receiver_that_accepts_and_refuses_at_once_is_retried_with_a_growing_backoff() {
    // A TLS 1.3 receiver that wants a client certificate we do not have: the connection and
    // our side of the handshake succeed, then it refuses with an alert. Nothing it took counts
    // as delivered, so every connection is followed by a longer wait than the one before.
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let rx = TlsReceiver::start(&ca.server_leaf(), TlsOpts::mutual(&ca));
    let ca_path = write_file(dir.path(), "ca.pem", &ca.pem());
    let api = FakeApi::start(ipv4_feed(10, now_secs(), Duration::from_secs(1)));
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::tls("churn", rx.address(), &ca_path)],
        &ConfigOpts {
            retry_initial: "100ms".into(),
            retry_max: "30s".into(),
            ..ConfigOpts::default()
        },
    );
    let mut agent = Agent::spawn(&cfg);
    let deadline = Instant::now() + WAIT;
    while retry_delays(&agent.stderr()).len() < 5 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let delays = retry_delays(&agent.stderr());
    assert!(delays.len() >= 5, "{}", agent.stderr());
    // Equal jitter: the k-th delay lies in [step/2, step] with step = 100 ms * 2^k. Reset after
    // every connect, every delay would stay within [50, 100] ms.
    assert!(
        delays[4] >= delays[0] * 4,
        "the backoff did not grow across connections that were refused at once: {delays:?}"
    );
    assert_eq!(pending(&cfg, "churn"), 10, "nothing counts as delivered");
    assert!(agent.terminate().success());
    eprintln!("connections: {}, delays {delays:?}", rx.connections().len());
}

#[test]
fn a_slow_receiver_is_closed_gracefully_after_a_stall_not_reset() {
    let (dir, rx, _api) = stalled(
        "1s",
        ConfigOpts {
            retry_initial: "1s".into(),
            retry_max: "2s".into(),
            ..ConfigOpts::default()
        },
    );
    let mut agent = Agent::spawn(&dir.path().join("config.toml"));
    // The receiver reads nothing: its window closes, it answers the window probes, and after
    // write_timeout the agent gives the connection up and connects again.
    let deadline = Instant::now() + WAIT;
    while rx.connections() < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(rx.connections() >= 2, "{}", agent.stderr());
    assert!(agent.stderr().contains("acknowledged nothing"));
    rx.resume();
    let m = wait_for_values(&values_of(0..3000), WAIT, || src_values(&rx.frames()));
    assert!(
        m.is_empty(),
        "{} lost\n{}",
        m.len(),
        tail(&agent.stderr(), 3000)
    );
    let deadline = Instant::now() + WAIT;
    while rx.conns.lock().unwrap()[0].1.is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        rx.conns.lock().unwrap()[0].1,
        Some(true),
        "the given-up connection ended with a reset: a receiver that reads late (Windows \
         stacks) would have discarded data it had acknowledged"
    );
    assert!(agent.terminate().success());
}
