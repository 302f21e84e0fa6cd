//! Real syslog receivers for the interop tests: our own rsyslogd and syslog-ng instances,
//! each in the foreground with its own config, work directory, pid file and two TCP inputs on
//! 127.0.0.1 ports picked at run time. Each writes what it parsed as one JSON object per line.
//!
//! rsyslog comes from Debian's package; syslog-ng conflicts with it, so `.ci/run` unpacks
//! `syslog-ng-core` into `target/syslog-ng/` (override with `IOC_FORWARDER_SYSLOG_NG_ROOT`,
//! the folder holding `usr/`). A missing receiver skips the test with a message, except under
//! CI (`CI=true`), where it fails.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a receiver may take to start listening, and to write what it received.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(60);

/// `Some(path)` when found; `None` after printing why the test is skipped. Under `CI=true` a
/// missing receiver is a failure: CI must install it (`.ci/run`).
pub fn require(name: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{name} not found, and CI=true: .ci/run must install it");
    }
    eprintln!("skipped: {name} not found (install it as .ci/run does to run this test)");
    None
}

fn first_existing(candidates: impl IntoIterator<Item = PathBuf>) -> Option<PathBuf> {
    candidates.into_iter().find(|p| p.is_file())
}

fn in_path(name: &str) -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
        .unwrap_or_default()
}

pub fn find_rsyslogd() -> Option<PathBuf> {
    let mut c = in_path("rsyslogd");
    c.push("/usr/sbin/rsyslogd".into());
    first_existing(c)
}

/// The syslog-ng binary and the folder of its libraries (its modules are in `3.38/` or similar
/// below it).
pub struct SyslogNgInstall {
    pub binary: PathBuf,
    pub lib_dir: PathBuf,
    pub module_dir: PathBuf,
}

pub fn find_syslog_ng() -> Option<SyslogNgInstall> {
    let root = std::env::var_os("IOC_FORWARDER_SYSLOG_NG_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/syslog-ng"));
    let mut roots = vec![root];
    // A system-wide install works too (where it does not conflict with rsyslog).
    roots.push(PathBuf::from("/"));
    for root in roots {
        let binary = root.join("usr/sbin/syslog-ng");
        let lib_dir = root.join("usr/lib/syslog-ng");
        if !binary.is_file() || !lib_dir.is_dir() {
            continue;
        }
        // Modules live in a folder named after the version, e.g. usr/lib/syslog-ng/3.38.
        let module_dir = std::fs::read_dir(&lib_dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.join("libafsocket.so").is_file())?;
        return Some(SyslogNgInstall {
            binary,
            lib_dir,
            module_dir,
        });
    }
    None
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port` (Linux `/proc`;
/// elsewhere the answered connect has to do).
fn owns_listener(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return true;
    };
    let suffix = format!(":{port:04X}");
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter_map(|l| {
                    // sl local_address rem_address st ... inode (10th column); 0A = LISTEN.
                    let c: Vec<&str> = l.split_whitespace().collect();
                    (c.len() > 9 && c[1].ends_with(&suffix) && c[3] == "0A")
                        .then(|| format!("socket:[{}]", c[9]))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    fds.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|link| inodes.iter().any(|i| link.as_os_str() == i.as_str()))
}

/// A running receiver; killed (and reaped) when dropped.
pub struct Receiver {
    pub name: &'static str,
    child: Child,
    pub ports: [u16; 2],
    /// The JSON-lines files the two inputs write: `[lf-or-network, octet-counting]`.
    pub outputs: [PathBuf; 2],
    log: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// The receiver's own stderr/stdout so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until both ports accept connections. `Err` when the process exited (a port was
    /// taken, or the config was refused) or did not listen in time.
    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{} exited with {status}: {}",
                    self.name,
                    self.log()
                ));
            }
            let up = self.ports.iter().all(|p| {
                TcpStream::connect_timeout(&([127, 0, 0, 1], *p).into(), Duration::from_millis(200))
                    .is_ok()
            });
            if up {
                // rsyslogd keeps running when a port it wanted was taken; make sure the
                // listeners that answered are its own, or start again on other ports.
                let pid = self.child.id();
                if let Some(p) = self.ports.iter().find(|p| !owns_listener(pid, **p)) {
                    return Err(format!("port {p} is held by another process"));
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not listen on {:?} within {START_TIMEOUT:?}: {}",
                    self.name,
                    self.ports,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `output` holds at least `n` JSON lines, then returns every line parsed.
    /// A short settle afterwards makes sure no extra (duplicate) line follows.
    pub fn records(&self, output: usize, n: usize) -> Vec<Value> {
        let path = &self.outputs[output];
        let deadline = Instant::now() + OUTPUT_TIMEOUT;
        let read = || std::fs::read_to_string(path).unwrap_or_default();
        loop {
            let text = read();
            if text.lines().count() >= n {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: {} of {n} records in {} after {OUTPUT_TIMEOUT:?}\nreceiver log:\n{}",
                    self.name,
                    text.lines().count(),
                    path.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        read()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: output line is not JSON ({e}): {l}", self.name))
            })
            .collect()
    }
}

/// Starts a receiver with `config(ports, dir)`, retrying with new ports when one was taken.
fn start(
    name: &'static str,
    dir: &Path,
    outputs: [PathBuf; 2],
    command: impl Fn([u16; 2]) -> Command,
) -> Receiver {
    let mut last = String::new();
    for _attempt in 0..5 {
        let ports = [free_port(), free_port()];
        if ports[0] == ports[1] {
            continue;
        }
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("receiver log file");
        let child = command(ports)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut r = Receiver {
            name,
            child,
            ports,
            outputs: outputs.clone(),
            log,
        };
        match r.wait_listening() {
            Ok(()) => return r,
            Err(e) => last = e,
        }
    }
    panic!("{name} could not be started: {last}");
}

/// rsyslogd with one imtcp input per port (each accepts LF and octet-counted frames) and a
/// ruleset per input writing the parsed RFC 5424 fields as JSON (`option.jsonf`).
pub fn start_rsyslog(binary: &Path, dir: &Path) -> Receiver {
    let work = dir.join("rsyslog");
    std::fs::create_dir_all(&work).expect("rsyslog work dir");
    let outputs = [work.join("lf.json"), work.join("octet.json")];
    let conf_path = work.join("rsyslog.conf");
    let pid = work.join("rsyslogd.pid");
    start("rsyslogd", dir, outputs.clone(), |ports| {
        let conf = format!(
            r#"global(workDirectory="{work}" maxMessageSize="256k")
module(load="imtcp")
template(name="json" type="list" option.jsonf="on") {{
  property(outname="version" name="protocol-version" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
ruleset(name="first") {{ action(type="omfile" file="{out0}" template="json") }}
ruleset(name="second") {{ action(type="omfile" file="{out1}" template="json") }}
input(type="imtcp" address="127.0.0.1" port="{p0}" ruleset="first")
input(type="imtcp" address="127.0.0.1" port="{p1}" ruleset="second")
"#,
            work = work.display(),
            out0 = outputs[0].display(),
            out1 = outputs[1].display(),
            p0 = ports[0],
            p1 = ports[1],
        );
        std::fs::write(&conf_path, conf).expect("write rsyslog.conf");
        let _ = std::fs::remove_file(&pid);
        let mut c = Command::new(binary);
        c.arg("-n").arg("-f").arg(&conf_path).arg("-i").arg(&pid);
        c
    })
}

/// syslog-ng with a `network(flags(syslog-protocol))` TCP source (LF framing) on the first
/// port and a `syslog()` TCP source (octet counting) on the second, each writing the parsed
/// fields with `$(format-json)`. syslog-ng 3.38 has no macro for the protocol version; the raw
/// message (`store-raw-message`) is kept instead, and syslog-ng parses MSGID only for a
/// version-1 message (any other version falls back to the BSD parser).
pub fn start_syslog_ng(install: &SyslogNgInstall, dir: &Path) -> Receiver {
    let work = dir.join("syslog-ng");
    std::fs::create_dir_all(&work).expect("syslog-ng work dir");
    let outputs = [work.join("network.json"), work.join("syslog.json")];
    let conf_path = work.join("syslog-ng.conf");
    start("syslog-ng", dir, outputs.clone(), |ports| {
        let template = "$(format-json host=${HOST} program=${PROGRAM} pid=${PID} \
             msgid=${MSGID} message=${MESSAGE} raw=${RAWMSG} seq=${.SDATA.meta.sequenceId} \
             software=${.SDATA.origin.software} swversion=${.SDATA.origin.swVersion})\\n";
        let conf = format!(
            r#"@version: 3.38
options {{ keep-hostname(yes); chain-hostnames(no); log-msg-size(262144); stats-freq(0); }};
source s_network {{ network(ip("127.0.0.1") port({p0}) transport("tcp") flags(syslog-protocol, store-raw-message) log-msg-size(262144)); }};
source s_syslog {{ syslog(ip("127.0.0.1") port({p1}) transport("tcp") flags(store-raw-message) log-msg-size(262144)); }};
destination d_network {{ file("{out0}" template("{template}")); }};
destination d_syslog {{ file("{out1}" template("{template}")); }};
log {{ source(s_network); destination(d_network); }};
log {{ source(s_syslog); destination(d_syslog); }};
"#,
            p0 = ports[0],
            p1 = ports[1],
            out0 = outputs[0].display(),
            out1 = outputs[1].display(),
        );
        std::fs::write(&conf_path, conf).expect("write syslog-ng.conf");
        let mut c = Command::new(&install.binary);
        c.env("LD_LIBRARY_PATH", &install.lib_dir)
            .arg("-F")
            .arg("--no-caps")
            .arg("--stderr")
            .arg(format!("--module-path={}", install.module_dir.display()))
            .arg("-f")
            .arg(&conf_path)
            .arg("-R")
            .arg(work.join("syslog-ng.persist"))
            .arg("-c")
            .arg(work.join("syslog-ng.ctl"))
            .arg("-p")
            .arg(work.join("syslog-ng.pid"));
        c
    })
}
