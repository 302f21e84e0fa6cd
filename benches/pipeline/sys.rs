//! Measuring processes and describing the machine: `wait4` for a child's CPU time and peak RSS,
//! `/proc/<pid>` for sampling a live one, `getrusage` for our own threads, `/proc/mounts` for
//! the filesystem under the state directory.

use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// What `wait4` tells about a child that ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// Exit code, or `128 + signal`.
    pub code: i32,
    pub user_s: f64,
    pub sys_s: f64,
    /// `ru_maxrss` (KiB). Not the child's own peak: a child started with posix_spawn/vfork
    /// inherits the high-water mark of the parent's memory at exec time (Linux records the
    /// old mm's peak in `exec_mmap`), so a bench process holding the feed makes it useless.
    /// Peak RSS comes from [`ProcSampler`] (`VmHWM` of the child's own mm) instead.
    #[allow(dead_code)]
    pub maxrss_kb: u64,
    /// When `wait4` returned.
    pub at: Instant,
}

impl Exit {
    pub fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// Reaps `child` with `wait4` (so its own rusage is exact, not mixed with other children's).
pub fn wait(child: Child) -> Exit {
    let pid = child.id() as libc::pid_t;
    // The `Child` is not waited on by std afterwards; dropping it does not reap.
    std::mem::forget(child);
    let mut status = 0;
    // SAFETY: rusage is plain old data; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 writes only into `status` and `ru`, which are live locals of the types
        // it expects; `pid` is our own child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            panic!("wait4({pid}): {e}");
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        -1
    };
    Exit {
        code,
        user_s: tv(ru.ru_utime),
        sys_s: tv(ru.ru_stime),
        maxrss_kb: ru.ru_maxrss as u64,
        at: Instant::now(),
    }
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a child we started.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// User + system CPU seconds of a live process (`/proc/<pid>/stat`).
pub fn cpu_s(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let (u, k): (u64, u64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((u + k) as f64 / hz)
}

/// Context switches of every thread of a live process (a proxy for wake-ups).
pub fn context_switches(pid: u32) -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let p = t.ok()?.path().join("status");
        let s = std::fs::read_to_string(p).unwrap_or_default();
        for l in s.lines() {
            if let Some(v) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Some(total)
}

pub fn threads(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.count())
}

/// What [`ProcSampler`] saw of a child (the last sample before it ended).
#[derive(Debug, Default, Clone, Copy)]
pub struct Sampled {
    /// Peak `VmHWM`, KiB.
    pub hwm_kb: u64,
    /// `/proc/<pid>/io` `write_bytes` / `read_bytes`: what reached (or came from) the block
    /// layer, page-cache write-back included.
    pub disk_write: u64,
    pub disk_read: u64,
    /// `wchar` / `rchar`: bytes through write/read syscalls (sockets and files).
    pub wchar: u64,
    /// Seconds the process's threads spent runnable but waiting for a CPU (schedstat), summed
    /// over the threads alive at the last sample: CPU contention from other work.
    pub runq_wait_s: f64,
}

fn io_field(s: &str, key: &str) -> u64 {
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Run-queue wait (ns) of every thread of `pid`, summed.
pub fn runq_wait_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let p = t.ok()?.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(p) {
            total += s
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(total)
}

/// Run-queue wait (ns) of the calling thread.
pub fn thread_runq_wait_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Samples a child every 20 ms until stopped or the process is gone: `VmHWM` (the peak RSS of
/// its own address space since exec; the last sample is within 20 ms of its end), its I/O
/// counters and its run-queue wait.
pub struct ProcSampler {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Sampled>>,
}

impl ProcSampler {
    pub fn start(pid: u32) -> ProcSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = thread::spawn(move || {
            let mut out = Sampled::default();
            let mut wait_ns = 0u64;
            while !s.load(Ordering::Relaxed) {
                let Some(hwm) = status_kb(pid, "VmHWM") else {
                    break;
                };
                out.hwm_kb = out.hwm_kb.max(hwm);
                if let Ok(io) = std::fs::read_to_string(format!("/proc/{pid}/io")) {
                    out.disk_write = out.disk_write.max(io_field(&io, "write_bytes:"));
                    out.disk_read = out.disk_read.max(io_field(&io, "read_bytes:"));
                    out.wchar = out.wchar.max(io_field(&io, "wchar:"));
                }
                wait_ns = wait_ns.max(runq_wait_ns(pid).unwrap_or(0));
                thread::sleep(Duration::from_millis(20));
            }
            out.runq_wait_s = wait_ns as f64 / 1e9;
            out
        });
        ProcSampler {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

fn rusage(who: i32) -> f64 {
    // SAFETY: rusage is plain old data; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into `ru`, a live local of the type it expects.
    unsafe { libc::getrusage(who, &mut ru) };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds of this whole process (all threads: fake API, receivers, feeders).
pub fn self_cpu() -> f64 {
    rusage(libc::RUSAGE_SELF)
}

/// CPU seconds of the calling thread.
pub fn thread_cpu() -> f64 {
    rusage(libc::RUSAGE_THREAD)
}

/// `ext4 (/dev/vda on /)` for the filesystem holding `path`.
pub fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let mnt = f[1].replace("\\040", " ");
        if path.starts_with(&mnt) && best.as_ref().is_none_or(|(len, _)| mnt.len() >= *len) {
            best = Some((mnt.len(), format!("{} ({} on {})", f[2], f[0], mnt)));
        }
    }
    best.map(|b| b.1).unwrap_or_else(|| "unknown".into())
}

pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub mem_gib: f64,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mem_kb: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    Machine {
        nproc: thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu,
        kernel,
        mem_gib: mem_kb / 1024.0 / 1024.0,
    }
}

/// The 1-minute load average (other work on the machine makes every figure noisier).
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
