//! What the files of a TLS configuration look like on disk, so a renewed certificate is
//! picked up at the next reconnect without a restart (see [`FilesFingerprint`]).

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::config::DestinationConfig;

/// What the files a TLS configuration is built from look like on disk; compare two to know
/// whether to rebuild before reconnecting. `None` when the destination names no file (the
/// system's roots are only re-read on reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesFingerprint(Vec<FileStamp>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    /// `None` when the file cannot be stat'ed (so its return counts as a change too).
    meta: Option<Meta>,
}

/// Metadata only (never content): length, mtime, and on Unix device, inode and ctime, so an
/// atomic rename or a Kubernetes secret's symlink swap with an equal length and mtime is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    len: u64,
    modified: Option<SystemTime>,
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl fmt::Display for FilesFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match &s.meta {
                Some(m) => write!(f, "{} ({} bytes)", s.path.display(), m.len)?,
                None => write!(f, "{} (missing)", s.path.display())?,
            }
        }
        Ok(())
    }
}

/// The on-disk state of `ca_file`, `client_cert` and `client_key` (metadata, following
/// symlinks).
pub fn files_fingerprint(dest: &DestinationConfig) -> Option<FilesFingerprint> {
    let stamps: Vec<FileStamp> = [&dest.ca_file, &dest.client_cert, &dest.client_key]
        .into_iter()
        .flatten()
        .map(|path| FileStamp {
            path: path.clone(),
            meta: std::fs::metadata(path).ok().map(|m| meta_of(&m)),
        })
        .collect();
    (!stamps.is_empty()).then_some(FilesFingerprint(stamps))
}

fn meta_of(m: &std::fs::Metadata) -> Meta {
    #[cfg(unix)]
    let (dev, ino, ctime) = {
        use std::os::unix::fs::MetadataExt;
        (m.dev(), m.ino(), (m.ctime(), m.ctime_nsec()))
    };
    #[cfg(not(unix))]
    let (dev, ino, ctime) = (0, 0, (0, 0));
    Meta {
        len: m.len(),
        modified: m.modified().ok(),
        dev,
        ino,
        ctime,
    }
}
