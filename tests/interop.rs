//! Interop with real receivers: the real `ioc-forwarder` binary (`once`, `kind = "file"`)
//! sends a hostile corpus to our own rsyslogd (imtcp, LF and octet-counted framing) and
//! syslog-ng (`network(flags(syslog-protocol))` with LF framing, `syslog()` with octet
//! counting). Each receiver writes what it parsed as JSON; for every event the tests assert
//! protocol version 1, HOSTNAME, APP-NAME, PROCID and MSGID as configured, and MSG equal to the
//! CEF line the library's encoder gives for that indicator (which must itself pass the strict
//! CEF parser of `tests/interop/strict.rs`).
//!
//! Lifecycle lines (expire, revoke, refresh) cannot come from the binary yet (nothing in it
//! enqueues them), so for those the test frames the library's lines with the delivery path's
//! own `header_for` and `frame_event` and writes them to the same two TCP inputs itself; PROCID
//! is then the test's pid. They are checked in both profiles like the `once` runs.
//!
//! Receivers missing on a developer machine: the test prints "skipped: … not found" and passes;
//! under CI (`CI=true`) that is a failure. `.ci/run` installs both.

#[path = "interop/receivers.rs"]
mod receivers;
#[path = "interop/strict.rs"]
mod strict;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ioc_forwarder::config::Config;
use ioc_forwarder::decode;
use ioc_forwarder::deliver::{frame_event, header_for, Framed};
use ioc_forwarder::encode::cef::{self, Act, CefOptions, Lifecycle};
use ioc_forwarder::store::Event;
use receivers::Receiver;
use serde_json::{json, Value};

const HOSTNAME: &str = "collector01";
const APP_NAME: &str = "ioc-forwarder";
/// facility auth (4) × 8 + severity warning (4): the config defaults.
const PRI: u8 = 36;

/// Everything that breaks naive encoders and receivers: CEF specials, CR/LF (including a line
/// that looks like a second syslog message), controls, quotes and `]` (SD syntax), non-ASCII,
/// Unicode line separators, a BOM, an 8 KiB URL, a type that is not a header-safe token.
fn corpus() -> Vec<Value> {
    let long_url = {
        let mut u = String::from("https://cdn.example.com/payload?");
        let mut i = 0;
        while u.len() < 8192 {
            u.push_str(&format!("k{i}=v|{i}\\x&"));
            i += 1;
        }
        u.truncate(8192);
        u
    };
    let item = |n: u32, ty: &str, value: &str, confidence: &str, feed: &str| {
        json!({"id": format!("corpus-{n:02}"), "type": ty, "value": value,
               "confidence": confidence, "first_seen": "2025-05-17T00:00:00Z",
               "last_seen": "2025-06-01T12:30:00Z", "source": {"feed_name": feed}})
    };
    let mut c = vec![
        item(1, "ipv4", "203.0.113.42", "high", "CISA Alerts"),
        item(
            2,
            "url",
            r"http://malware.example.net/gate.php?id=42&k=a|b\c=d",
            "medium",
            "abuse.ch | URLhaus",
        ),
        item(
            3,
            "domain",
            "evil.example\r\n<14>1 2026-01-01T00:00:00Z forged host app - - injected",
            "low",
            "Line\nBreak Feed",
        ),
        item(
            4,
            "ipv4",
            "198.51.100.23",
            "high",
            r#"Feed|With=Odd\Chars "quoted" [x] ]"#,
        ),
        item(
            5,
            "domain",
            "bücher-bestellung.example",
            "medium",
            "Bundesamt für Sicherheit – Lagebericht 🔒 日本語 עברית",
        ),
        item(6, "url", &long_url, "high", "Long URL Feed"),
        item(
            7,
            "email",
            "phish\t@exa\u{0}mple.com\u{7f}\u{1b}x",
            "low",
            "Ctrl\u{1}Feed",
        ),
        item(8, "cve", "CVE-2024-3400", "medium", r#"NVD "KEV" ]] \"#),
        item(9, "mitre_attack", "T1566.001", "high", "MITRE ATT&CK"),
        item(
            10,
            "ja3|x ÿ",
            "e7d705a3286e19ea42f587b344ee6865",
            "medium",
            "SSLBL",
        ),
        item(
            11,
            "sha256",
            "  e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  ",
            "high",
            "ThreatFox",
        ),
        item(
            12,
            "url",
            r"-#011%41 \n literal \\ back = eq",
            "low",
            "Escapes Feed",
        ),
        item(
            13,
            "domain",
            "\u{feff}bom.example\u{2028}\u{85}nel",
            "medium",
            "Unicode Separators",
        ),
        item(
            14,
            "a-very-long-ioc-type-name-that-exceeds-32-characters",
            "x.example",
            "low",
            "Long Type",
        ),
        item(15, "ipv6", "2001:db8::1", "HIGH", "Case Feed"),
    ];
    c.push(
        json!({"id": "corpus-16", "type": "md5", "value": "d41d8cd98f00b204e9800998ecf8427e",
                  "tags": ["a=b", "c\\d", "]"], "mitre_techniques": ["T1071"],
                  "context": "multi\nline \"context\" ]", "first_seen": "2025-05-17T00:00:00Z",
                  "source": {"feed_name": "Context Feed", "category": "gov|ernment",
                             "article_url": "https://example.org/a?b=c", "origin": "article"}}),
    );
    c
}

/// One interop run: MSGID (`None` = "type"), CEF profile, structured data, syslog format.
struct Case {
    msgid: Option<&'static str>,
    profile: &'static str,
    structured_data: bool,
    format: &'static str,
}

impl Case {
    fn bsd(&self) -> bool {
        self.format == "rfc3164"
    }

    /// APP-NAME, or the RFC 3164 TAG (alphanumerics only).
    fn app_name(&self) -> &'static str {
        if self.bsd() {
            "iocforwarder"
        } else {
            APP_NAME
        }
    }
}

const BY_TYPE: Case = Case {
    msgid: None,
    profile: "socdefenders",
    structured_data: false,
    format: "rfc5424",
};

const FIXED: Case = Case {
    msgid: Some("IOCFWD"),
    profile: "extended",
    structured_data: true,
    format: "rfc5424",
};

const BSD: Case = Case {
    msgid: None,
    profile: "socdefenders",
    structured_data: false,
    format: "rfc3164",
};

fn write_config(dir: &Path, case: &Case, ports: [u16; 2]) -> PathBuf {
    let corpus_path = dir.join("corpus.json");
    std::fs::write(
        &corpus_path,
        serde_json::to_vec(&Value::Array(corpus())).expect("corpus JSON"),
    )
    .expect("write corpus");
    let cfg = format!(
        r#"state_dir = "{state}"
shutdown_timeout = "30s"

[source]
kind = "file"
path = "{corpus}"

[cef]
profile = "{profile}"

[syslog]
hostname = "{HOSTNAME}"
msgid = "{msgid}"
structured_data = {sd}

[[destinations]]
name = "lf"
protocol = "tcp"
address = "127.0.0.1:{p0}"
framing = "lf"
format = "{format}"
max_message_size = "64KiB"

[[destinations]]
name = "octet"
protocol = "tcp"
address = "127.0.0.1:{p1}"
framing = "octet-counting"
format = "{format}"
max_message_size = "64KiB"
"#,
        state = dir.join("state").display(),
        corpus = corpus_path.display(),
        profile = case.profile,
        msgid = case.msgid.unwrap_or("type"),
        sd = case.structured_data,
        format = case.format,
        p0 = ports[0],
        p1 = ports[1],
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, cfg).expect("write config");
    path
}

/// Runs `ioc-forwarder -c CONFIG once`; returns its pid (the frames' PROCID) and its output.
fn run_once(config: &Path) -> (u32, Output) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ioc-forwarder"))
        .arg("-c")
        .arg(config)
        .arg("once")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ioc-forwarder");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (pid, child.wait_with_output().expect("ioc-forwarder output"))
}

/// Which lines of the corpus a run sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lines {
    /// What `once` sends: each item's add line.
    Add,
    /// Each item's expire, revoke and refresh lines, sent by the test itself.
    Lifecycle,
}

/// When the corpus's indicators stopped being live in the lifecycle lines.
fn lifecycle_end() -> DateTime<Utc> {
    "2026-05-17T08:00:00.123Z".parse().expect("a time")
}

/// `(IOC type, CEF line)` of every line of `lines` for the corpus, as the library encodes it
/// with `opts`; each line must be strict CEF.
fn corpus_lines(opts: &CefOptions, lines: Lines) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in corpus() {
        let ind = decode::item(&v).expect("corpus items all have a value");
        let mut encoded = Vec::new();
        match lines {
            Lines::Add => {
                let mut line = String::new();
                cef::encode(&ind, Act::Add, opts, &mut line);
                encoded.push(line);
            }
            Lines::Lifecycle => {
                for action in [Lifecycle::Expire, Lifecycle::Revoke, Lifecycle::Refresh] {
                    let mut line = String::new();
                    cef::encode_lifecycle(&ind, action, Some(lifecycle_end()), opts, &mut line);
                    encoded.push(line);
                }
            }
        }
        for line in encoded {
            if let Err(e) = strict::parse_cef(&line) {
                panic!("expected line fails the strict CEF parser ({e}): {line:?}");
            }
            assert!(!line.contains(['\r', '\n']), "raw CR/LF: {line:?}");
            out.push((ind.type_raw.clone(), line));
        }
    }
    out
}

/// Every line of the run as the library encodes it for this config, mapped to the MSGID its
/// frame must carry.
fn expected(config: &Path, case: &Case, lines: Lines) -> BTreeMap<String, String> {
    let cfg = Config::load(config).unwrap_or_else(|e| panic!("test config: {e:?}"));
    let mut out = BTreeMap::new();
    for (ioc_type, line) in corpus_lines(&CefOptions::from_config(&cfg.cef), lines) {
        let msgid = match case.msgid {
            // RFC 3164 has no MSGID: receivers report the NILVALUE.
            _ if case.bsd() => "-".to_string(),
            Some(m) => m.to_string(),
            None => strict::expected_header_field(&ioc_type, 32),
        };
        assert!(
            out.insert(line, msgid).is_none(),
            "corpus lines must be distinct"
        );
    }
    out
}

/// Frames the lifecycle lines as each destination of `config` would (its framing, the
/// syslog header, sequence numbers from 1) and writes them to the destination's address.
/// Returns the PROCID the frames carry: this process's pid.
fn send_lifecycle(config: &Path) -> u32 {
    let cfg = Config::load(config).unwrap_or_else(|e| panic!("test config: {e:?}"));
    let lines = corpus_lines(&CefOptions::from_config(&cfg.cef), Lines::Lifecycle);
    for dest in &cfg.destinations {
        let header = header_for(dest, &cfg.syslog);
        let (mut msg, mut buf) = (Vec::new(), Vec::new());
        for (seq, (ioc_type, line)) in (1..).zip(&lines) {
            let ev = Event::new(seq, Utc::now(), ioc_type, line);
            let framed = frame_event(dest, &header, &ev, false, &mut msg, &mut buf);
            assert_eq!(framed, Framed::Whole, "{line:?} fits in max_message_size");
        }
        let mut stream = TcpStream::connect(&dest.address[0])
            .unwrap_or_else(|e| panic!("connect to {}: {e}", dest.address[0]));
        stream.write_all(&buf).expect("send the frames");
    }
    std::process::id()
}

/// Sends the run's lines to the receiver behind `config`: `once` of the real binary for add
/// lines, the test's own sockets for lifecycle lines. Returns the frames' PROCID.
fn send(config: &Path, lines: Lines) -> u32 {
    match lines {
        Lines::Add => {
            let (pid, out) = run_once(config);
            assert_ran(&out);
            pid
        }
        Lines::Lifecycle => send_lifecycle(config),
    }
}

fn field<'a>(r: &'a Value, key: &str) -> &'a str {
    r.get(key).and_then(Value::as_str).unwrap_or_else(|| {
        panic!("receiver record without {key}: {r}");
    })
}

/// What every record of one run must show.
struct Want<'a> {
    /// Our CEF lines, each with the MSGID its frame must carry.
    lines: &'a BTreeMap<String, String>,
    /// PROCID: the pid of the `ioc-forwarder` process that sent the frames.
    pid: u32,
    case: &'a Case,
}

/// The checks common to both receivers, on records already mapped to our field names
/// (`hostname`, `app_name`, `procid`, `msgid`, `msg`).
fn assert_records(
    rx: &Receiver,
    input: &str,
    records: &[Value],
    want: &Want,
    check_version: impl Fn(&Value) -> Result<(), String>,
    sd_of: impl Fn(&Value) -> Option<(String, String, String)>,
) {
    let Want {
        lines: want,
        pid,
        case,
    } = *want;
    let ctx = |r: &Value| format!("{} ({input}) record {r}", rx.name);
    let mut got_msgs = Vec::new();
    let mut seqs = BTreeSet::new();
    for r in records {
        check_version(r).unwrap_or_else(|e| panic!("{e}: {}", ctx(r)));
        let msg = field(r, "msg");
        let Some(msgid) = want.get(msg) else {
            panic!(
                "MSG is not one of our CEF lines (mangled?): {msg:?}\n{}",
                ctx(r)
            );
        };
        assert_eq!(field(r, "hostname"), HOSTNAME, "{}", ctx(r));
        assert_eq!(field(r, "app_name"), case.app_name(), "{}", ctx(r));
        assert_eq!(field(r, "procid"), pid.to_string(), "{}", ctx(r));
        assert_eq!(field(r, "msgid"), msgid, "{}", ctx(r));
        match sd_of(r) {
            Some((seq, software, version)) => {
                assert!(
                    case.structured_data,
                    "SD without structured_data: {}",
                    ctx(r)
                );
                let n: i64 = seq
                    .parse()
                    .unwrap_or_else(|_| panic!("sequenceId {seq:?}: {}", ctx(r)));
                assert!((1..=2_147_483_647).contains(&n), "{}", ctx(r));
                assert!(seqs.insert(n), "sequenceId {n} twice: {}", ctx(r));
                assert_eq!(software, "ioc-forwarder", "{}", ctx(r));
                assert_eq!(version, env!("CARGO_PKG_VERSION"), "{}", ctx(r));
            }
            None => assert!(!case.structured_data, "SD missing: {}", ctx(r)),
        }
        got_msgs.push(msg.to_string());
    }
    got_msgs.sort();
    let want_msgs: Vec<&String> = want.keys().collect();
    assert_eq!(
        got_msgs.iter().collect::<Vec<_>>(),
        want_msgs,
        "{} ({input}) must have every event exactly once",
        rx.name
    );
}

fn assert_ran(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "ioc-forwarder once failed\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rsyslog_case(case: &Case, lines: Lines) {
    let Some(bin) = receivers::require("rsyslogd", receivers::find_rsyslogd()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = receivers::start_rsyslog(&bin, dir.path());
    let config = write_config(dir.path(), case, rx.ports);
    let want = expected(&config, case, lines);
    let pid = send(&config, lines);
    let want = Want {
        lines: &want,
        pid,
        case,
    };
    // rsyslog's protocol-version is 1 for RFC 5424 and 0 for a legacy (RFC 3164) message.
    let version = if case.bsd() { "0" } else { "1" };
    for (i, input) in ["lf", "octet-counting"].iter().enumerate() {
        let mut records = rx.records(i, want.lines.len());
        if case.bsd() {
            // rsyslog keeps the SP after "TAG[PID]:" as the first character of an RFC 3164
            // msg (what its mmrm1stspace module exists for); exactly one, nothing else.
            for r in &mut records {
                let msg = field(r, "msg");
                let stripped = msg.strip_prefix(' ').unwrap_or_else(|| {
                    panic!("RFC 3164 msg without the separating space: {msg:?}")
                });
                r["msg"] = Value::String(stripped.to_string());
            }
        }
        assert_records(
            &rx,
            input,
            &records,
            &want,
            |r| match field(r, "version") {
                v if v == version => Ok(()),
                v => Err(format!("protocol-version {v:?}, not {version}")),
            },
            |r| {
                let sd = field(r, "sd");
                if sd == "-" {
                    return None;
                }
                // [meta sequenceId="N"][origin software="S" swVersion="V"], checked strictly.
                let m = strict::parse_rfc5424(format!("<0>1 - - - - - {sd}").as_bytes())
                    .unwrap_or_else(|e| panic!("SD {sd:?} as rsyslog saw it: {e}"));
                let param = |i: usize, k: &str| {
                    m.sd.get(i)
                        .and_then(|e| e.params.iter().find(|p| p.0 == k))
                        .map(|p| p.1.clone())
                        .unwrap_or_default()
                };
                assert_eq!(m.sd.len(), 2, "SD {sd:?}");
                assert_eq!(
                    (m.sd[0].id.as_str(), m.sd[1].id.as_str()),
                    ("meta", "origin")
                );
                Some((
                    param(0, "sequenceId"),
                    param(1, "software"),
                    param(1, "swVersion"),
                ))
            },
        );
    }
}

fn syslog_ng_case(case: &Case, lines: Lines) {
    let Some(install) = receivers::find_syslog_ng() else {
        receivers::require("syslog-ng", None);
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let rx = receivers::start_syslog_ng(&install, dir.path());
    let config = write_config(dir.path(), case, rx.ports);
    let want = expected(&config, case, lines);
    let pid = send(&config, lines);
    let want = Want {
        lines: &want,
        pid,
        case,
    };
    for (i, input) in ["network() lf", "syslog() octet-counting"]
        .iter()
        .enumerate()
    {
        let records: Vec<Value> = rx
            .records(i, want.lines.len())
            .into_iter()
            .map(|r| {
                // Our field names for syslog-ng's macros.
                let s = |k: &str| r.get(k).cloned().unwrap_or(Value::String(String::new()));
                json!({"hostname": s("host"), "app_name": s("program"), "procid": s("pid"),
                       "msgid": s("msgid"), "msg": s("message"), "raw": s("raw"),
                       "seq": s("seq"), "software": s("software"), "swversion": s("swversion")})
            })
            .collect();
        assert_records(
            &rx,
            input,
            &records,
            &want,
            |r| {
                let raw = field(r, "raw");
                if raw.starts_with(&format!("<{PRI}>1 ")) {
                    Ok(())
                } else {
                    Err(format!("raw message does not start with <{PRI}>1: {raw:?}"))
                }
            },
            |r| {
                let seq = field(r, "seq");
                (!seq.is_empty()).then(|| {
                    (
                        seq.to_string(),
                        field(r, "software").to_string(),
                        field(r, "swversion").to_string(),
                    )
                })
            },
        );
    }
}

#[test]
fn hostile_corpus_encodes_to_strict_cef_in_both_profiles() {
    // Runs everywhere, receivers or not: the expected lines themselves are strict CEF.
    let dir = tempfile::tempdir().expect("tempdir");
    for case in [&BY_TYPE, &FIXED, &BSD] {
        let config = write_config(dir.path(), case, [9, 9]);
        assert_eq!(expected(&config, case, Lines::Add).len(), corpus().len());
        assert_eq!(
            expected(&config, case, Lines::Lifecycle).len(),
            3 * corpus().len()
        );
    }
}

#[test]
fn rsyslog_receives_every_hostile_event_intact_over_lf_and_octet_counting() {
    rsyslog_case(&BY_TYPE, Lines::Add);
}

#[test]
fn rsyslog_receives_fixed_msgid_extended_profile_and_structured_data() {
    rsyslog_case(&FIXED, Lines::Add);
}

#[test]
fn rsyslog_parses_the_rfc3164_header_hostname_tag_and_pid() {
    rsyslog_case(&BSD, Lines::Add);
}

#[test]
fn syslog_ng_receives_every_hostile_event_intact_from_network_and_syslog_sources() {
    syslog_ng_case(&BY_TYPE, Lines::Add);
}

#[test]
fn syslog_ng_receives_fixed_msgid_extended_profile_and_structured_data() {
    syslog_ng_case(&FIXED, Lines::Add);
}

#[test]
fn rsyslog_receives_lifecycle_lines_intact_in_both_profiles() {
    rsyslog_case(&BY_TYPE, Lines::Lifecycle);
    rsyslog_case(&FIXED, Lines::Lifecycle);
}

#[test]
fn syslog_ng_receives_lifecycle_lines_intact_in_both_profiles() {
    syslog_ng_case(&BY_TYPE, Lines::Lifecycle);
    syslog_ng_case(&FIXED, Lines::Lifecycle);
}
