//! One process owns a state directory at a time.
//!
//! `run`, `once` and `queue purge` write the queue and the positions; two of them on one
//! directory would interleave their sequence numbers (each keeps the high-water mark in
//! memory) and move each other's positions. So they take an exclusive `flock` on
//! `state_dir/lock` and hold it until they exit; the file holds the owner's pid for the
//! message a second one prints. The lock goes with the process (also on SIGKILL), so a crash
//! never leaves a stale lock behind, and the file itself is never removed (removing it would
//! let two processes lock two different files). Read-only commands take no lock.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside `state_dir`.
pub const FILE_NAME: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("state directory {dir} is in use by another ioc-forwarder (pid {pid}); one process owns a state directory at a time (stop it first, or give this one its own state_dir)")]
    Held { dir: PathBuf, pid: String },
    #[error("cannot lock the state directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Held for as long as the process owns the directory; dropping it releases the lock.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock on `state_dir` (created if missing), or says who holds it.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let io = |source| LockError::Io {
            dir: state_dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let path = state_dir.join(FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(LockError::Held {
                dir: state_dir.to_path_buf(),
                pid: if pid.is_empty() {
                    "unknown".into()
                } else {
                    pid.chars().take(20).collect()
                },
            });
        }
        // Best effort: on a full disk the pid may not fit, and the lock holds all the same.
        let me = format!("{}\n", std::process::id());
        let written = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(me.as_bytes()))
            .and_then(|_| file.set_len(me.len() as u64));
        if let Err(e) = written {
            tracing::debug!(path = %path.display(), error = %e, "cannot write the pid into the lock file");
        }
        Ok(StateLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in the same process
        // conflicts just as another process would.
        match StateLock::acquire(dir.path()) {
            Err(LockError::Held { pid, dir: d }) => {
                assert_eq!(pid, std::process::id().to_string());
                assert_eq!(d, dir.path());
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let again = StateLock::acquire(dir.path()).unwrap();
        assert!(again.path().ends_with(FILE_NAME));
    }
}
