//! Transports end to end: the real `ioc-forwarder` binary (`once`, `run`,
//! `test-destination`) against real receivers on 127.0.0.1 — TLS (rustls, certificates made
//! here with rcgen, never committed), mutual TLS, pins, UDP, unix datagram and stream sockets,
//! and ordered failover with fail-back.
//!
//! Everything is checked the way a user would: what arrives at the receiver, the exit code,
//! the log line that explains a failure, and `queue stats`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::sockets::{UdpReceiver, UnixDgramReceiver, UnixStreamReceiver};
use support::tls::{sha256_b64, Ca, End, Leaf, TlsOpts, TlsReceiver};
use support::*;

/// How long we wait for something that should happen within a second or two.
const WAIT: Duration = Duration::from_secs(15);
/// Indicators in the standard feed (plus the two hostile ones of [`feed`]).
const N: usize = 40;

// ---------------------------------------------------------------------------------------------
// Feed and config

/// `n` IPv4 indicators plus two whose values carry CEF-hostile and non-ASCII characters, so
/// "byte-exact" means something.
fn feed(n: usize) -> Vec<Value> {
    let now = now_secs();
    let mut f = ipv4_feed(n, now, Duration::from_secs(1));
    f.push(make_indicator(
        &uuid(900),
        "domain",
        "evil|pipe=eq\\back.example",
        "high",
        "2025-05-17T00:00:00Z",
        &iso(now - chrono::Duration::seconds(500)),
    ));
    f.push(make_indicator(
        &uuid(901),
        "domain",
        "bücher-bestellung.example",
        "medium",
        "2025-05-17T00:00:00Z",
        &iso(now - chrono::Duration::seconds(501)),
    ));
    f
}

/// The `src` values [`feed`] delivers.
fn feed_values(n: usize) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = (0..n).map(ipv4_value).collect();
    s.insert("evil|pipe=eq\\back.example".into());
    s.insert("bücher-bestellung.example".into());
    s
}

fn value_set(frames: &[String]) -> BTreeSet<String> {
    src_values(frames).into_iter().collect()
}

/// Options for runs that are expected to fail: `once` gives up after 3 s without progress.
fn failing_opts() -> ConfigOpts {
    ConfigOpts {
        shutdown_timeout: "3s".into(),
        ..ConfigOpts::default()
    }
}

/// The first log line that names the destination and contains every needle.
fn log_line(log: &str, dest: &str, needles: &[&str]) -> Option<String> {
    log.lines()
        .find(|l| {
            l.contains(&format!("destination={dest}")) && needles.iter().all(|n| l.contains(n))
        })
        .map(str::to_string)
}

fn assert_log_line(log: &str, dest: &str, needles: &[&str]) -> String {
    log_line(log, dest, needles).unwrap_or_else(|| {
        panic!(
            "no log line naming destination {dest} and containing {needles:?}:\n{}",
            tail(log, 6000)
        )
    })
}

fn ca_file(dir: &Path, name: &str, ca: &Ca) -> PathBuf {
    write_file(dir, name, &ca.pem())
}

// ---------------------------------------------------------------------------------------------
// 1. TLS delivers, byte-exact

#[test]
fn tls_once_delivers_every_frame_byte_exact_with_ca_file_and_server_name() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let rx = TlsReceiver::start(&ca.server_leaf(), TlsOpts::default());
    let plain = TcpReceiver::start(Framing::OctetCounting);
    let api = FakeApi::start(feed(N));
    let ca_path = ca_file(dir.path(), "ca.pem", &ca);
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[
            Dest::tls("siem-tls", rx.address(), &ca_path).framing("octet-counting"),
            Dest::new("plain", "tcp", plain.address()).framing("octet-counting"),
        ],
    );
    let out = run_once(&cfg);
    assert_exit(&out, 0);

    assert_eq!(
        plain.wait_for(N + 2, WAIT),
        N + 2,
        "plain TCP reference run"
    );
    assert_eq!(rx.wait_for(N + 2, WAIT), N + 2, "{}", describe(&out));
    let tls_frames = rx.frames();
    // The same events framed for two destinations of one run are the same bytes; TLS must
    // deliver them unchanged and complete (no partial frame left over on any connection).
    assert_eq!(
        tls_frames,
        plain.frames(),
        "TLS frames differ from the TCP ones"
    );
    assert_eq!(value_set(&tls_frames), feed_values(N));
    for c in rx.connections() {
        assert_eq!(
            parse_octet_counted(&c.data).unwrap().1,
            0,
            "a partial frame was left over"
        );
        if c.handshake_done {
            assert_eq!(c.sni.as_deref(), Some("receiver.test"), "SNI = server_name");
        }
    }
    assert_eq!(pending(&cfg, "siem-tls"), 0);
}

#[test]
fn tls_ip_literal_address_verifies_the_ip_san_without_server_name() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let rx = TlsReceiver::start(&ca.server_leaf(), TlsOpts::default());
    let api = FakeApi::start(feed(N));
    let ca_path = ca_file(dir.path(), "ca.pem", &ca);
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[
            Dest::new("siem-ip", "tls", format!("127.0.0.1:{}", rx.port()))
                .set_path("ca_file", &ca_path),
        ],
    );
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    assert_eq!(rx.wait_for(N + 2, WAIT), N + 2, "{}", describe(&out));
    assert_eq!(value_set(&rx.frames()), feed_values(N));
    let conns = rx.connections();
    assert!(conns.iter().any(|c| c.handshake_done));
    for c in conns.iter().filter(|c| c.handshake_done) {
        assert_eq!(c.sni, None, "an IP literal must not be sent as SNI");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. TLS failures: one clear line, nothing delivered, the destination keeps retrying

/// Runs `once` against `rx` (which must refuse us) with a 3 s shutdown_timeout and checks
/// what every TLS failure must look like. Returns the log.
fn assert_refused(dir: &Path, rx: &TlsReceiver, dest: Dest, needles: &[&str]) -> String {
    let api = FakeApi::start(feed(N));
    let name = dest.name.clone();
    let cfg = write_config_with(dir, &api.base_url(), &[dest], &failing_opts());
    let out = run_once(&cfg);
    let log = text(&out.stderr);
    let stamp = |t: std::time::SystemTime| {
        chrono::DateTime::<chrono::Utc>::from(t)
            .format("%H:%M:%S%.6f")
            .to_string()
    };
    let ends: Vec<String> = rx
        .connections()
        .into_iter()
        .map(|c| {
            format!(
                "accepted {} ended {} handshake_done={} {:?} bytes={}",
                stamp(c.accepted_at),
                c.ended_at.map(stamp).unwrap_or_default(),
                c.handshake_done,
                c.end,
                c.data.len()
            )
        })
        .collect();
    assert_eq!(
        out.status.code(),
        Some(3),
        "`once` must not report success: exit 3 expected\nreceiver's connections:\n{}\nqueue stats: {} pending\n{}",
        ends.join("\n"),
        pending(&cfg, &name),
        describe(&out)
    );
    let line = assert_log_line(&log, &name, needles);
    assert!(
        line.contains("WARN") || line.contains("ERROR"),
        "the reason is logged as a warning or error: {line}"
    );
    assert_eq!(rx.count(), 0, "the receiver must not get frames");
    assert!(
        rx.attempts() >= 2,
        "the destination keeps retrying (saw {} connection attempts)\n{}",
        rx.attempts(),
        tail(&log, 4000)
    );
    assert!(
        !log.lines()
            .any(|l| l.contains(&format!("destination={name}"))
                && l.to_lowercase().contains("disabled")),
        "a failing destination is never disabled:\n{}",
        tail(&log, 4000)
    );
    assert_eq!(
        pending(&cfg, &name),
        (N + 2) as u64,
        "every event stays queued"
    );
    log
}

#[test]
fn tls_unknown_ca_is_refused_with_a_clear_reason() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let rx = TlsReceiver::start(&ca.server_leaf(), TlsOpts::default());
    let other = ca_file(dir.path(), "other.pem", &Ca::new("Other CA"));
    let d = Dest::tls("siem-tls", rx.address(), &other);
    assert_refused(dir.path(), &rx, d, &["unknown CA"]);
}

#[test]
fn tls_name_mismatch_is_refused_with_a_clear_reason() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let rx = TlsReceiver::start(&ca.server_leaf(), TlsOpts::default());
    let ca_path = ca_file(dir.path(), "ca.pem", &ca);
    let d = Dest::new("siem-tls", "tls", rx.address())
        .set_path("ca_file", &ca_path)
        .set_str("server_name", "other.test");
    assert_refused(dir.path(), &rx, d, &["name mismatch", "other.test"]);
}

#[test]
fn tls_expired_server_certificate_is_refused_with_a_clear_reason() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let rx = TlsReceiver::start(&ca.expired_server_leaf(), TlsOpts::default());
    let ca_path = ca_file(dir.path(), "ca.pem", &ca);
    let d = Dest::tls("siem-tls", rx.address(), &ca_path);
    assert_refused(dir.path(), &rx, d, &["expired", "2001-01-01"]);
}

#[test]
fn tls_pin_mismatch_is_refused_with_a_clear_reason() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let leaf = ca.server_leaf();
    let rx = TlsReceiver::start(&leaf, TlsOpts::default());
    let ca_path = ca_file(dir.path(), "ca.pem", &ca);
    let wrong = sha256_b64(b"not the receiver's key");
    let d = Dest::tls("siem-tls", rx.address(), &ca_path).set("pin_sha256", &toml_list(&[&wrong]));
    let log = assert_refused(dir.path(), &rx, d, &["pin mismatch"]);
    // The line says which key the server has, so the operator can fix the pin.
    assert_log_line(&log, "siem-tls", &["pin mismatch", &leaf.spki_pin()]);
}

#[test]
fn tls_missing_client_certificate_delivers_nothing_and_once_does_not_succeed() {
    // TLS 1.3: our side of the handshake completes and the frames are written; the receiver
    // judges our (empty) certificate afterwards and refuses with an alert. Nothing written on
    // that connection may count as delivered.
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let rx = TlsReceiver::start(&ca.server_leaf(), TlsOpts::mutual(&ca));
    let ca_path = ca_file(dir.path(), "ca.pem", &ca);
    let d = Dest::tls("siem-tls", rx.address(), &ca_path);
    assert_refused(dir.path(), &rx, d, &["alert", "certificate required"]);
    let conns = rx.connections();
    assert!(
        conns
            .iter()
            .all(|c| !c.handshake_done && matches!(c.end, End::HandshakeFailed(_) | End::Stopped)),
        "every connection was refused by the receiver: {conns:?}"
    );
}

#[test]
fn tls_missing_client_certificate_refused_by_a_slow_receiver_delivers_nothing() {
    // The same refusal, from a receiver that takes a second to judge our certificate (a
    // revocation check, a busy host; on a loaded CI machine even a fast one takes over 200 ms).
    // Our side finished the TLS 1.3 handshake long before, and the receiver's TCP stack has
    // acknowledged every frame; none of it may count as delivered.
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let rx = TlsReceiver::start(
        &ca.server_leaf(),
        TlsOpts {
            judge_delay: Some(Duration::from_secs(1)),
            ..TlsOpts::mutual(&ca)
        },
    );
    let ca_path = ca_file(dir.path(), "ca.pem", &ca);
    let d = Dest::tls("siem-tls", rx.address(), &ca_path);
    assert_refused(dir.path(), &rx, d, &["alert", "certificate required"]);
}

// ---------------------------------------------------------------------------------------------
// 3. Mutual TLS

#[test]
fn mutual_tls_with_pkcs8_and_sec1_client_keys_delivers() {
    let dir = tempdir();
    let server_ca = Ca::new("Server CA");
    let client_ca = Ca::new("Client CA");
    let opts = || TlsOpts::mutual(&client_ca);
    let rx8 = TlsReceiver::start(&server_ca.server_leaf(), opts());
    let rx1 = TlsReceiver::start(&server_ca.server_leaf(), opts());
    let api = FakeApi::start(feed(N));
    let ca_path = ca_file(dir.path(), "ca.pem", &server_ca);
    let c8 = client_ca.client_leaf("client-pkcs8.test");
    let c1 = client_ca.client_leaf("client-sec1.test");
    let key8 = write_file(dir.path(), "c8.key", &c8.key_pkcs8_pem());
    let key1 = write_file(dir.path(), "c1.key", &c1.key_sec1_pem());
    assert!(text(&std::fs::read(&key8).unwrap()).contains("BEGIN PRIVATE KEY"));
    assert!(text(&std::fs::read(&key1).unwrap()).contains("BEGIN EC PRIVATE KEY"));
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[
            Dest::tls("mtls-pkcs8", rx8.address(), &ca_path)
                .set_path(
                    "client_cert",
                    &write_file(dir.path(), "c8.pem", &c8.cert_pem()),
                )
                .set_path("client_key", &key8),
            Dest::tls("mtls-sec1", rx1.address(), &ca_path)
                .set_path(
                    "client_cert",
                    &write_file(dir.path(), "c1.pem", &c1.cert_pem()),
                )
                .set_path("client_key", &key1),
        ],
    );
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    for (rx, cn) in [(&rx8, "client-pkcs8.test"), (&rx1, "client-sec1.test")] {
        assert_eq!(rx.wait_for(N + 2, WAIT), N + 2, "{}", describe(&out));
        assert_eq!(value_set(&rx.frames()), feed_values(N));
        let conns = rx.connections();
        assert!(
            conns
                .iter()
                .filter(|c| c.handshake_done)
                .all(|c| c.client_cn.as_deref() == Some(cn)),
            "the receiver saw our client certificate {cn}: {conns:?}"
        );
    }
    let log = text(&out.stderr);
    assert!(
        !log.contains("PRIVATE KEY"),
        "no key material in the log:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. tls_verify = false

#[test]
fn tls_verify_false_connects_to_a_self_signed_receiver_and_warns_at_every_connect() {
    let dir = tempdir();
    // The receiver drops our first connection right after the handshake, so there are two
    // connects, and two warnings.
    let rx = TlsReceiver::start(
        &Leaf::self_signed("self.test"),
        TlsOpts {
            close_first: 1,
            ..TlsOpts::default()
        },
    );
    let api = FakeApi::start(feed(N));
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::new("insecure", "tls", rx.address()).set("tls_verify", "false")],
    );
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    rx.wait_for(N + 2, WAIT);
    assert_eq!(
        value_set(&rx.frames()),
        feed_values(N),
        "{}",
        describe(&out)
    );
    let log = text(&out.stderr);
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("destination=insecure") && l.contains("NOT verified"))
        .collect();
    let handshakes = rx.handshakes();
    assert!(handshakes >= 2, "the receiver saw {handshakes} handshakes");
    assert_eq!(
        warnings.len(),
        handshakes,
        "one warning per connect:\n{}",
        tail(&log, 4000)
    );
    assert!(warnings.iter().all(|w| w.contains("WARN")), "{warnings:?}");
}

// ---------------------------------------------------------------------------------------------
// 5. Certificate renewal without restart

#[test]
fn renewed_client_certificate_on_disk_is_used_without_restart() {
    let dir = tempdir();
    let server_ca = Ca::new("Server CA");
    let trusted = Ca::new("Client CA");
    let rogue = Ca::new("Rogue CA");
    let rx = TlsReceiver::start(&server_ca.server_leaf(), TlsOpts::mutual(&trusted));
    let api = FakeApi::start(feed(N));
    let old = rogue.client_leaf("client-old.test");
    let cert_path = write_file(dir.path(), "client.pem", &old.cert_pem());
    let key_path = write_file(dir.path(), "client.key", &old.key_pkcs8_pem());
    let ca_path = ca_file(dir.path(), "ca.pem", &server_ca);
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::tls("mtls", rx.address(), &ca_path)
            .set_path("client_cert", &cert_path)
            .set_path("client_key", &key_path)],
    );
    let mut agent = Agent::spawn(&cfg);

    // The receiver refuses the old certificate, more than once (the agent keeps retrying).
    let refused = |conns: &[support::tls::TlsConn]| {
        conns
            .iter()
            .filter(|c| matches!(c.end, End::HandshakeFailed(_)))
            .count()
            >= 2
    };
    assert!(
        rx.wait_conns(WAIT, refused),
        "the receiver should refuse the rogue certificate: {:?}\n{}",
        rx.connections(),
        tail(&agent.stderr(), 4000)
    );
    assert_eq!(rx.count(), 0);
    assert!(agent.is_running());

    // Renew: new files written next to the old ones and renamed over them.
    let new = trusted.client_leaf("client-new.test");
    let tmp_cert = write_file(dir.path(), "client.pem.new", &new.cert_pem());
    let tmp_key = write_file(dir.path(), "client.key.new", &new.key_pkcs8_pem());
    std::fs::rename(&tmp_key, &key_path).unwrap();
    std::fs::rename(&tmp_cert, &cert_path).unwrap();

    let got = rx.wait_for(N + 2, WAIT);
    assert_eq!(
        got,
        N + 2,
        "after renewal everything arrives\n{}",
        tail(&agent.stderr(), 4000)
    );
    assert_eq!(value_set(&rx.frames()), feed_values(N));
    assert!(rx
        .connections()
        .iter()
        .filter(|c| c.handshake_done)
        .all(|c| c.client_cn.as_deref() == Some("client-new.test")));
    let st = agent.terminate();
    let log = agent.stderr();
    assert_eq!(st.code(), Some(0), "{}", tail(&log, 4000));
    assert_log_line(&log, "mtls", &["alert"]);
    assert!(
        log.contains("reloading"),
        "the reload is logged:\n{}",
        tail(&log, 4000)
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Closing a TLS connection

#[test]
fn once_over_tls_to_a_slow_reader_delivers_the_last_frames_and_closes_cleanly() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let rx = TlsReceiver::start(
        &ca.server_leaf(),
        TlsOpts {
            slow: Some(SlowRead {
                chunk: 1024,
                pause: Duration::from_millis(20),
            }),
            ..TlsOpts::default()
        },
    );
    let n = 400;
    let api = FakeApi::start(feed(n));
    let ca_path = ca_file(dir.path(), "ca.pem", &ca);
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::tls("slow", rx.address(), &ca_path)],
    );
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    let exited = std::time::SystemTime::now();
    eprintln!(
        "agent exited; the receiver had read {} bytes by then",
        rx.connections().iter().map(|c| c.data.len()).sum::<usize>()
    );
    // The receiver may still be reading long after the agent exited.
    assert!(
        rx.wait_conns(Duration::from_secs(30), |c| c
            .iter()
            .all(|c| c.end != End::Open)),
        "the receiver never saw the connection end: {:?}",
        rx.connections()
            .iter()
            .map(|c| (&c.end, c.data.len()))
            .collect::<Vec<_>>()
    );
    let frames = rx.frames();
    assert_eq!(
        frames.len(),
        n + 2,
        "every frame arrived\n{}",
        describe(&out)
    );
    assert_eq!(value_set(&frames), feed_values(n));
    let last = rx.connections().into_iter().last().unwrap();
    eprintln!(
        "the receiver finished {:?} after the agent exited, {} bytes",
        last.ended_at
            .unwrap()
            .duration_since(exited)
            .unwrap_or_default(),
        last.data.len()
    );
    assert_eq!(
        last.end,
        End::CloseNotify,
        "the agent closes with close_notify, never a bare FIN or a reset"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. UDP

#[test]
fn udp_sends_one_frame_per_datagram() {
    let dir = tempdir();
    let rx = UdpReceiver::start();
    let api = FakeApi::start(feed(N));
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::new("udp", "udp", rx.address())],
    );
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    assert_eq!(rx.wait_for(N + 2, WAIT), N + 2, "{}", describe(&out));
    thread::sleep(Duration::from_millis(300));
    let grams = rx.datagrams();
    assert_eq!(grams.len(), N + 2, "one datagram per event");
    let mut frames = Vec::new();
    for g in &grams {
        assert!(
            g.len() <= 2048,
            "datagram of {} bytes over the default 2048",
            g.len()
        );
        let s = String::from_utf8(g.clone()).expect("UTF-8 datagram");
        assert!(s.starts_with('<'), "no framing in a datagram: {s:?}");
        assert!(!s.ends_with('\n'), "no trailer in a datagram: {s:?}");
        parse_rfc5424(&s).unwrap_or_else(|e| panic!("bad RFC 5424 ({e}): {s:?}"));
        frames.push(s);
    }
    assert_eq!(value_set(&frames), feed_values(N));
}

/// The standard feed's first 10 IPv4 indicators and one URL of 8 KiB.
fn feed_with_long_url() -> (Vec<Value>, String) {
    let url = format!("https://files.example/{}", "a".repeat(8192));
    let mut f = ipv4_feed(10, now_secs(), Duration::from_secs(1));
    f.push(make_indicator(
        &uuid(700),
        "url",
        &url,
        "high",
        "2025-05-17T00:00:00Z",
        &iso(now_secs() - chrono::Duration::seconds(30)),
    ));
    (f, url)
}

#[test]
fn udp_oversize_event_is_truncated_to_max_message_size_and_stays_valid_cef() {
    let dir = tempdir();
    let rx = UdpReceiver::start();
    let (f, url) = feed_with_long_url();
    let api = FakeApi::start(f);
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::new("udp", "udp", rx.address()).set_str("max_message_size", "1KiB")],
    );
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    assert_eq!(rx.wait_for(11, WAIT), 11, "{}", describe(&out));
    thread::sleep(Duration::from_millis(300));
    let grams = rx.datagrams();
    assert_eq!(grams.len(), 11);
    for g in &grams {
        assert!(g.len() <= 1024, "datagram of {} bytes over 1KiB", g.len());
    }
    let long = grams
        .iter()
        .map(|g| String::from_utf8(g.clone()).unwrap())
        .find(|s| s.contains("https://files.example/"))
        .expect("the URL event arrived (truncated)");
    let syslog = parse_rfc5424(&long).unwrap_or_else(|e| panic!("bad RFC 5424 ({e}): {long:?}"));
    let cef = parse_cef(&syslog.msg).unwrap_or_else(|e| panic!("bad CEF ({e}): {long:?}"));
    let src = cef.get("src").expect("src kept");
    assert!(
        url.starts_with(src) && src.len() < url.len(),
        "src is a prefix of the URL"
    );
    assert_eq!(cef.get("cs1"), Some("high"), "the other fields are intact");
    assert_eq!(cef.header[4], "url");
    let log = text(&out.stderr);
    assert_log_line(&log, "udp", &["truncated"]);
}

#[test]
fn udp_oversize_event_is_dropped_with_oversize_drop_and_the_others_arrive() {
    let dir = tempdir();
    let rx = UdpReceiver::start();
    let (f, _url) = feed_with_long_url();
    let api = FakeApi::start(f);
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::new("udp", "udp", rx.address())
            .set_str("max_message_size", "1KiB")
            .set_str("oversize", "drop")],
    );
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    rx.wait_for(10, WAIT);
    thread::sleep(Duration::from_millis(300));
    let frames: Vec<String> = rx
        .datagrams()
        .iter()
        .map(|g| String::from_utf8(g.clone()).unwrap())
        .collect();
    assert_eq!(frames.len(), 10, "the ten small events, not the URL");
    assert!(frames.iter().all(|f| !f.contains("files.example")));
    let want: BTreeSet<String> = (0..10).map(ipv4_value).collect();
    assert_eq!(value_set(&frames), want);
    assert_log_line(&text(&out.stderr), "udp", &["dropped"]);
    assert_eq!(
        pending(&cfg, "udp"),
        0,
        "a dropped event does not stay queued"
    );
}

#[test]
fn udp_to_a_port_nobody_listens_on_keeps_every_event_queued() {
    // On Linux loopback the ICMP port unreachable of one datagram makes the next send() on the
    // connected socket (or the socket's pending error) report ECONNREFUSED. The agent takes
    // that as "the receiver is down": nothing it sent since the last confirmation counts as
    // delivered, and it is all sent again after the backoff. `once` gives up after
    // shutdown_timeout without progress and says so with exit 3; the events stay queued.
    let dir = tempdir();
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let api = FakeApi::start(feed(N));
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::new("udp-void", "udp", format!("127.0.0.1:{port}"))],
        &ConfigOpts {
            shutdown_timeout: "2s".into(),
            ..ConfigOpts::default()
        },
    );
    let out = run_once(&cfg);
    assert_exit(&out, 3);
    let log = text(&out.stderr);
    let line = assert_log_line(&log, "udp-void", &["refused"]);
    eprintln!("observed: {line}");
    assert_eq!(pending(&cfg, "udp-void"), (N + 2) as u64);
}

// ---------------------------------------------------------------------------------------------
// 8. unix sockets

#[test]
fn unix_datagram_socket_gets_one_unframed_message_per_datagram() {
    let dir = tempdir();
    let path = dir.path().join("log.sock");
    let rx = UnixDgramReceiver::start(&path);
    let api = FakeApi::start(feed(N));
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::new("devlog", "unix", path.display())],
    );
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    assert_eq!(rx.wait_for(N + 2, WAIT), N + 2, "{}", describe(&out));
    thread::sleep(Duration::from_millis(300));
    let grams = rx.datagrams();
    assert_eq!(grams.len(), N + 2, "one datagram per event");
    let mut frames = Vec::new();
    for g in &grams {
        let s = String::from_utf8(g.clone()).expect("UTF-8 datagram");
        assert!(s.starts_with('<'), "no framing in a datagram: {s:?}");
        assert!(!s.ends_with('\n'), "no trailer in a datagram: {s:?}");
        parse_rfc5424(&s).unwrap_or_else(|e| panic!("bad RFC 5424 ({e}): {s:?}"));
        frames.push(s);
    }
    assert_eq!(value_set(&frames), feed_values(N));
}

#[test]
fn unix_stream_socket_gets_framed_messages() {
    let dir = tempdir();
    let path = dir.path().join("relay.sock");
    let rx = UnixStreamReceiver::start(&path);
    let api = FakeApi::start(feed(N));
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::new("relay", "unix", path.display())],
    );
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    assert_eq!(rx.wait_for_lf(N + 2, WAIT), N + 2, "{}", describe(&out));
    thread::sleep(Duration::from_millis(300));
    let raw: Vec<u8> = rx.raw().concat();
    assert!(raw.ends_with(b"\n"), "LF framing (the default for unix)");
    let frames = rx.frames_lf();
    assert_eq!(frames.len(), N + 2);
    for f in &frames {
        parse_rfc5424(f).unwrap_or_else(|e| panic!("bad RFC 5424 ({e}): {f:?}"));
    }
    assert_eq!(value_set(&frames), feed_values(N));
}

// ---------------------------------------------------------------------------------------------
// 9. Failover and fail-back

#[test]
fn failover_skips_a_dead_first_address() {
    let dir = tempdir();
    let dead = RefusedPort::new();
    let live = TcpReceiver::start(Framing::Lf);
    let api = FakeApi::start(feed(N));
    let cfg = write_config(
        dir.path(),
        &api.base_url(),
        &[Dest::failover(
            "siem",
            "tcp",
            &[format!("127.0.0.1:{}", dead.port), live.address()],
        )],
    );
    let out = run_once(&cfg);
    assert_exit(&out, 0);
    assert_eq!(live.wait_for(N + 2, WAIT), N + 2, "{}", describe(&out));
    assert_eq!(value_set(&live.frames()), feed_values(N));
}

#[test]
fn fail_back_to_the_first_address_when_it_answers_again_loses_nothing() {
    let dir = tempdir();
    let primary_port = reserve_port();
    let secondary = TcpReceiver::start(Framing::Lf);
    let api = FakeApi::start(feed(N));
    let opts = ConfigOpts {
        poll_interval: "1s".into(),
        retry_max: "1s".into(),
        ..ConfigOpts::default()
    };
    let cfg = write_config_with(
        dir.path(),
        &api.base_url(),
        &[Dest::failover(
            "siem",
            "tcp",
            &[format!("127.0.0.1:{primary_port}"), secondary.address()],
        )],
        &opts,
    );
    let mut agent = Agent::spawn(&cfg);
    assert!(
        agent.wait_frames(&secondary, WAIT, |f| f.len() >= N + 2),
        "the first batch goes to the second address while the first is down\n{}",
        tail(&agent.stderr(), 4000)
    );

    // The primary comes up: the agent probes it every retry_max and moves back.
    let primary = TcpReceiver::start_on(primary_port, Framing::Lf);
    let deadline = std::time::Instant::now() + WAIT;
    while primary.connection_count() == 0 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(25));
    }
    assert!(
        primary.connection_count() > 0,
        "no fail-back to the primary within {WAIT:?}\n{}",
        tail(&agent.stderr(), 4000)
    );
    let before_switch = secondary.count();

    // New indicators after the switch go to the primary.
    let m = 10;
    let now = now_secs();
    let fresh: Vec<Value> = (0..m)
        .map(|i| {
            make_indicator(
                &uuid(5000 + i),
                "ipv4",
                &format!("192.0.2.{}", i + 1),
                "high",
                "2025-05-17T00:00:00Z",
                &iso(now),
            )
        })
        .collect();
    let fresh_values: BTreeSet<String> = (0..m).map(|i| format!("192.0.2.{}", i + 1)).collect();
    api.feed.lock().unwrap().extend(fresh);
    assert!(
        agent.wait_frames(&primary, WAIT, |f| {
            let got: BTreeSet<String> = src_values(f).into_iter().collect();
            fresh_values.is_subset(&got)
        }),
        "new indicators reach the primary\n{}",
        tail(&agent.stderr(), 4000)
    );
    let st = agent.terminate();
    let log = agent.stderr();
    assert_eq!(st.code(), Some(0), "{}", tail(&log, 4000));

    let on_secondary = value_set(&secondary.frames());
    let on_primary = value_set(&primary.frames());
    assert!(
        on_secondary.is_disjoint(&fresh_values),
        "after the fail-back nothing new goes to the second address"
    );
    assert_eq!(
        secondary.count(),
        before_switch,
        "the second address got nothing after the switch"
    );
    let all: BTreeSet<String> = on_secondary.union(&on_primary).cloned().collect();
    let mut want = feed_values(N);
    want.extend(fresh_values);
    assert_eq!(all, want, "nothing lost across the switch");
    assert!(
        log.contains("failing back"),
        "the fail-back is logged:\n{}",
        tail(&log, 4000)
    );
}

// ---------------------------------------------------------------------------------------------
// 10. test-destination

fn test_destination(cfg: &Path, name: Option<&str>) -> Output {
    let mut args = vec!["test-destination"];
    args.extend(name);
    run_args(cfg, &args)
}

/// The stdout line of `test-destination` for one destination.
fn report_line(out: &Output, name: &str) -> String {
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no line for {name}:\n{}", describe(out)))
        .to_string()
}

/// The CEF Name of every frame a receiver got.
fn cef_names(frames: &[String]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            let s = parse_rfc5424(f).unwrap_or_else(|e| panic!("bad RFC 5424 ({e}): {f:?}"));
            parse_cef(&s.msg)
                .unwrap_or_else(|e| panic!("bad CEF ({e}): {f:?}"))
                .header[5]
                .clone()
        })
        .collect()
}

const TEST_EVENT: &str = "ioc-forwarder test event";

/// Waits a moment and returns the frames of a receiver that should have got one.
fn one_test_event(rx: &TlsReceiver) -> Vec<String> {
    rx.wait_for(1, WAIT);
    thread::sleep(Duration::from_millis(200));
    rx.frames()
}

#[test]
fn test_destination_reports_address_tls_version_cipher_certificate_and_ok() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let rx13 = TlsReceiver::start(&ca.server_leaf(), TlsOpts::default());
    let rx12 = TlsReceiver::start(&ca.server_leaf(), TlsOpts::tls12());
    let plain = TcpReceiver::start(Framing::Lf);
    let ca_path = ca_file(dir.path(), "ca.pem", &ca);
    let cfg = write_config(
        dir.path(),
        "http://127.0.0.1:9/api/v1",
        &[
            Dest::tls("tls13", rx13.address(), &ca_path),
            Dest::tls("tls12", rx12.address(), &ca_path),
            Dest::new("plain", "tcp", plain.address()),
        ],
    );
    let out = test_destination(&cfg, None);
    eprintln!("{}", text(&out.stdout));
    assert_exit(&out, 0);

    let l13 = report_line(&out, "tls13");
    for want in [
        "OK",
        &rx13.address(),
        "TLSv1.3",
        "TLS13_",
        "CN=receiver.test",
        "2049-12-31",
    ] {
        assert!(l13.contains(want), "{want:?} missing from: {l13}");
    }
    let l12 = report_line(&out, "tls12");
    for want in [
        "OK",
        &rx12.address(),
        "TLSv1.2",
        "TLS_ECDHE_",
        "CN=receiver.test",
        "2049-12-31",
    ] {
        assert!(l12.contains(want), "{want:?} missing from: {l12}");
    }
    let lp = report_line(&out, "plain");
    assert!(lp.contains("OK") && lp.contains(&plain.address()), "{lp}");

    for rx in [&rx13, &rx12] {
        assert_eq!(cef_names(&one_test_event(rx)), vec![TEST_EVENT.to_string()]);
    }
    plain.wait_for(1, WAIT);
    assert_eq!(cef_names(&plain.frames()), vec![TEST_EVENT.to_string()]);
}

#[test]
fn test_destination_with_a_dead_destination_says_failed_and_exits_1() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let rx = TlsReceiver::start(&ca.server_leaf(), TlsOpts::default());
    let dead = RefusedPort::new();
    let ca_path = ca_file(dir.path(), "ca.pem", &ca);
    let cfg = write_config(
        dir.path(),
        "http://127.0.0.1:9/api/v1",
        &[
            Dest::tls("live", rx.address(), &ca_path),
            Dest::new("dead", "tcp", format!("127.0.0.1:{}", dead.port)),
        ],
    );
    let out = test_destination(&cfg, None);
    eprintln!("{}", text(&out.stdout));
    assert_exit(&out, 1);
    let live = report_line(&out, "live");
    assert!(live.contains("OK"), "{live}");
    let failed = report_line(&out, "dead");
    assert!(failed.contains("FAILED"), "{failed}");
    assert!(
        failed.contains(&format!("127.0.0.1:{}", dead.port))
            && failed.to_lowercase().contains("refused"),
        "the line names the address and the reason: {failed}"
    );
    assert_eq!(
        cef_names(&one_test_event(&rx)),
        vec![TEST_EVENT.to_string()]
    );
}

#[test]
fn test_destination_name_tests_only_that_destination() {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let chosen = TlsReceiver::start(&ca.server_leaf(), TlsOpts::default());
    let other = TlsReceiver::start(&ca.server_leaf(), TlsOpts::default());
    let ca_path = ca_file(dir.path(), "ca.pem", &ca);
    let cfg = write_config(
        dir.path(),
        "http://127.0.0.1:9/api/v1",
        &[
            Dest::tls("chosen", chosen.address(), &ca_path),
            Dest::tls("other", other.address(), &ca_path),
        ],
    );
    let out = test_destination(&cfg, Some("chosen"));
    assert_exit(&out, 0);
    assert!(report_line(&out, "chosen").contains("OK"));
    assert!(
        !text(&out.stdout).contains("other"),
        "only the named destination is tested:\n{}",
        describe(&out)
    );
    assert_eq!(
        cef_names(&one_test_event(&chosen)),
        vec![TEST_EVENT.to_string()]
    );
    assert_eq!(
        other.attempts(),
        0,
        "the other destination was not contacted"
    );
}

#[test]
fn test_destination_reports_a_receiver_that_requires_a_client_certificate() {
    assert_test_destination_reports_missing_client_certificate(None);
}

#[test]
fn test_destination_reports_a_slow_refusal_of_our_client_certificate() {
    // TLS 1.3: the receiver judges our (empty) certificate a second after our side finished
    // the handshake; `test-destination` must not call that OK.
    assert_test_destination_reports_missing_client_certificate(Some(Duration::from_secs(1)));
}

fn assert_test_destination_reports_missing_client_certificate(judge_delay: Option<Duration>) {
    let dir = tempdir();
    let ca = Ca::new("Test CA");
    let rx = TlsReceiver::start(
        &ca.server_leaf(),
        TlsOpts {
            judge_delay,
            ..TlsOpts::mutual(&ca)
        },
    );
    let ca_path = ca_file(dir.path(), "ca.pem", &ca);
    let cfg = write_config(
        dir.path(),
        "http://127.0.0.1:9/api/v1",
        &[Dest::tls("needs-cert", rx.address(), &ca_path)],
    );
    let out = test_destination(&cfg, None);
    let line = report_line(&out, "needs-cert");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the receiver refused us; exit 1 expected\n{}",
        describe(&out)
    );
    assert!(
        line.contains("FAILED") && line.contains("certificate required"),
        "{line}"
    );
    assert_eq!(rx.count(), 0);
}
