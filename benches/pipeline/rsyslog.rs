//! rsyslog as the baseline: our own unprivileged `rsyslogd -n` instance with `imptcp` in and
//! `omfwd` (TCP, LF framing, RFC 5424 template) out to a counting receiver, its action queue
//! either disk-assisted (`LinkedList` + `queue.filename`) or a pure `Disk` queue. Fed the same
//! pre-rendered frames over one TCP connection as fast as it accepts them.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::recv::{Framing, Receiver};
use crate::sys;

pub fn find() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("rsyslogd"))
        .find(|p| p.is_file())
}

pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            let out = String::from_utf8_lossy(&o.stdout);
            let first = out.lines().next()?;
            let first = first.split(" compiled").next().unwrap_or(first);
            Some(first.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown version".into())
}

#[derive(Clone, Copy, Debug)]
pub enum QueueKind {
    DiskAssisted,
    Disk,
}

impl QueueKind {
    pub fn label(self) -> &'static str {
        match self {
            QueueKind::DiskAssisted => "rsyslog relay, disk-assisted queue (LinkedList+filename)",
            QueueKind::Disk => "rsyslog relay, pure disk queue (Disk)",
        }
    }

    fn params(self) -> &'static str {
        match self {
            QueueKind::DiskAssisted => {
                r#"queue.type="LinkedList" queue.filename="relay_da" queue.saveOnShutdown="on""#
            }
            QueueKind::Disk => r#"queue.type="Disk" queue.filename="relay_disk""#,
        }
    }
}

pub struct Outcome {
    pub frames: u64,
    pub bytes_out: u64,
    pub seconds: f64,
    pub exit: sys::Exit,
    pub sampled: sys::Sampled,
    pub complete: bool,
    pub queue_files_peak_mb: f64,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Runs one relay: start rsyslogd, feed `stream` (LF-framed frames), wait until the receiver
/// counted `n`, stop rsyslogd.
pub fn relay(
    bin: &Path,
    dir: &Path,
    kind: QueueKind,
    stream: &[u8],
    n: u64,
    stall: Duration,
) -> Result<Outcome, String> {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let receiver = Receiver::tcp(Framing::Lf);
    let port_in = free_port();
    let conf = format!(
        r#"global(workDirectory="{work}" maxMessageSize="64k")
module(load="imptcp")
input(type="imptcp" address="127.0.0.1" port="{port_in}" ruleset="relay")
ruleset(name="relay") {{
  action(type="omfwd" target="127.0.0.1" port="{port_out}" protocol="tcp"
         template="RSYSLOG_SyslogProtocol23Format" TCP_Framing="traditional"
         {queue})
}}
"#,
        work = work.display(),
        port_out = receiver.addr.port(),
        queue = kind.params(),
    );
    let conf_path = dir.join("rsyslog.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let check = Command::new(bin)
        .args(["-N1", "-f"])
        .arg(&conf_path)
        .output()
        .map_err(|e| e.to_string())?;
    if !check.status.success() {
        return Err(format!(
            "rsyslogd -N1 rejected the config: {}",
            String::from_utf8_lossy(&check.stderr).trim()
        ));
    }
    let log = std::fs::File::create(dir.join("rsyslogd.log")).map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .arg("-n")
        .arg("-f")
        .arg(&conf_path)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start rsyslogd: {e}"))?;
    let pid = child.id();
    let sampler = sys::ProcSampler::start(pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut conn = loop {
        match TcpStream::connect(("127.0.0.1", port_in)) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                sys::kill(pid, libc::SIGKILL);
                sys::wait(child);
                sampler.finish();
                return Err(format!("rsyslogd does not listen on {port_in}: {e}"));
            }
        }
    };
    let started = Instant::now();
    let (got, peak_queue, exit) = thread::scope(|scope| {
        scope.spawn(move || {
            for chunk in stream.chunks(256 * 1024) {
                if conn.write_all(chunk).is_err() {
                    return;
                }
            }
        });
        // Watch the receiver and the queue files while rsyslog works.
        let mut peak_queue = 0u64;
        let mut last = (0u64, Instant::now());
        let got = loop {
            let f = receiver.frames();
            peak_queue = peak_queue.max(dir_bytes(&work));
            if f >= n {
                break f;
            }
            if f != last.0 {
                last = (f, Instant::now());
            } else if last.1.elapsed() >= stall {
                break f;
            }
            thread::sleep(Duration::from_millis(5));
        };
        // Stopping rsyslogd also closes the feeder's connection if it is still writing.
        sys::kill(pid, libc::SIGTERM);
        (got, peak_queue, sys::wait(child))
    });
    let sampled = sampler.finish();
    let seconds = receiver
        .last_byte_at()
        .map(|t| t.saturating_duration_since(started).as_secs_f64())
        .unwrap_or_else(|| started.elapsed().as_secs_f64());
    let frames = receiver.settle(Duration::from_millis(300));
    Ok(Outcome {
        frames: frames.max(got),
        bytes_out: receiver.bytes(),
        seconds,
        exit,
        sampled,
        complete: got >= n,
        queue_files_peak_mb: peak_queue as f64 / 1e6,
    })
}
