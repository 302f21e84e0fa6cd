//! The state file: one SQLite database (WAL, `synchronous=FULL`) in `state_dir` holding
//! the queue of encoded events, each destination's acknowledged position, the since-cursor and
//! the versions already seen.
//!
//! It is the only thing the polling side and the delivery side share. Polling commits whole
//! pages ([`Store::commit_page`]): the page's events, its dedup entries and — on the last page
//! of a cycle — the cycle's end (its success, and the cursor when there is one), in one
//! transaction. Delivery reads after its own position and moves it forward ([`Store::ack`]);
//! events are stored in chunks (see `queue`), and a chunk is deleted once every destination
//! has passed all of it. A crash at any point therefore either keeps a page whole or loses it
//! whole, and the cursor never gets ahead of what is queued.
//!
//! Opening a current file writes nothing unless its running totals need correcting, and a
//! correction that a full disk refuses is kept in memory: a restart on a full disk delivers
//! what is queued instead of exiting.
//!
//! This file holds the [`Store`] handle, its errors, the [`Event`] delivery reads and the `meta`
//! values; the rest is one concept a file:
//!
//! | file | what |
//! |---|---|
//! | `open.rs` | connection settings, schema, upgrades of older files, a damaged file moved aside |
//! | `commit.rs` | the page commit: dedup verdicts, queueing, the cycle's end |
//! | `dedup.rs` | the dedup index: each identity's last version, in memory and in `seen_log` |
//! | `queue.rs` | the queue's chunks: 512 events to a row |
//! | `latest.rs` | the latest event of each identity, as log-structured runs |
//! | `live.rs` | the live set: indicators sent and not yet expired or revoked |
//! | `record.rs` | one event in a chunk: its line, and what the live set needs of it |
//! | `limit.rs` | the queue limit: `max_bytes` and `when_full` |
//! | `positions.rs` | each destination's position, acknowledgements, deleting what all passed |
//! | `admin.rs` | what the `queue` commands use: stats, peek, purge, verify |

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

mod admin;
mod commit;
mod dedup;
pub mod latest;
mod limit;
mod live;
mod open;
mod positions;
mod queue;
mod record;
pub use admin::{verify, DestinationStats};
pub use commit::{CycleEnd, PageOutcome, Prepared};
use dedup::DedupIndex;
pub use dedup::Keyer;
pub use limit::QueueLimit;
pub use record::Kind;

pub const FILE_NAME: &str = "state.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("queue full: {bytes} bytes queued, max_bytes is {max}; polling paused until destinations make room (the cursor did not move)")]
    QueueFull { bytes: i64, max: u64 },
    #[error("state file {path} was damaged and moved aside, but a fresh one cannot be created: {detail}")]
    Recreate { path: PathBuf, detail: String },
    #[error("state file {path}: the disk is full, and creating, upgrading or opening it needs room ({source}); free some space and start again")]
    NoRoom {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// One queued event as delivery sees it. The events read from one chunk share one text
/// (an `Arc`), so a batch of 512 costs one allocation, not two per event.
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: i64,
    pub enqueued: DateTime<Utc>,
    /// What the event tells the SIEM.
    pub kind: Kind,
    text: Arc<String>,
    label: std::ops::Range<usize>,
    line: std::ops::Range<usize>,
}

impl Event {
    pub fn new(seq: i64, enqueued: DateTime<Utc>, ioc_type: &str, cef: &str) -> Event {
        Event {
            seq,
            enqueued,
            kind: Kind::Add,
            text: Arc::new(format!("{ioc_type}{cef}")),
            label: 0..ioc_type.len(),
            line: ioc_type.len()..ioc_type.len() + cef.len(),
        }
    }

    /// An event whose label and line are `label` and `line` of a text shared with others.
    fn shared(
        seq: i64,
        enqueued: DateTime<Utc>,
        kind: Kind,
        text: &Arc<String>,
        label: std::ops::Range<usize>,
        line: std::ops::Range<usize>,
    ) -> Event {
        Event {
            seq,
            enqueued,
            kind,
            text: Arc::clone(text),
            label,
            line,
        }
    }

    /// The IOC type as the source spelled it (the RFC 5424 MSGID).
    pub fn ioc_type(&self) -> &str {
        self.text.get(self.label.clone()).unwrap_or_default()
    }

    /// The CEF line.
    pub fn cef(&self) -> &str {
        self.text.get(self.line.clone()).unwrap_or_default()
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.seq == other.seq
            && self.enqueued == other.enqueued
            && self.kind == other.kind
            && self.ioc_type() == other.ioc_type()
            && self.cef() == other.cef()
    }
}

impl Eq for Event {}

/// The connection and the in-memory dedup index, which only changes with what commits.
struct Inner {
    conn: Connection,
    dedup: DedupIndex,
    /// The highest sequence number ever assigned (also in `meta`, see `queue`).
    last_seq: i64,
    /// The corrections made at open (see [`open::Drift`]) could not be saved for a full disk:
    /// until a page commit saves them, the stored queue size is not trusted.
    unsaved: bool,
}

impl std::ops::Deref for Inner {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Inner {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Inner>>,
    /// A second connection for delivery's reads: in WAL mode it reads the last committed
    /// state while a page commit (and its fsync) holds the writer.
    reader: Arc<Mutex<Connection>>,
    path: PathBuf,
    limit: Option<QueueLimit>,
    /// Told the new tail after every commit that queued something, so delivery starts on a
    /// page as soon as it is durable rather than at the end of the cycle.
    tail: Option<Arc<tokio::sync::watch::Sender<i64>>>,
    /// The dedup index's hasher, usable without the lock.
    keyer: Keyer,
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

impl Store {
    fn meta_i64(tx: &Transaction<'_>, key: &str) -> rusqlite::Result<Option<i64>> {
        let v: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(v.and_then(|v| v.parse().ok()))
    }

    /// Publish the queue's tail to `watch` after every commit that queued events.
    pub fn with_tail_watch(mut self, watch: Arc<tokio::sync::watch::Sender<i64>>) -> Store {
        self.tail = Some(watch);
        self
    }

    fn read_lock(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hashes identities as the dedup index does (for [`Prepared::new`]).
    pub fn keyer(&self) -> Keyer {
        self.keyer
    }

    /// Bytes of CEF lines queued (for any destination).
    pub fn queue_bytes(&self) -> Result<i64, StoreError> {
        let conn = self.lock();
        if conn.unsaved {
            return open::queue_bytes_counted(&conn).map_err(|e| self.err(e));
        }
        conn.query_row("SELECT queue_bytes FROM totals WHERE id = 1", [], |r| {
            r.get(0)
        })
        .map_err(|e| self.err(e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs a blocking store operation off the async runtime's worker threads.
    pub async fn call<T, F>(&self, f: F) -> T
    where
        F: FnOnce(&Store) -> T + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn set_meta(tx: &Transaction<'_>, key: &str, value: &str) -> rusqlite::Result<()> {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.lock()
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The since-cursor committed by the last complete cycle.
    pub fn cursor(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .get_meta("since")?
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    /// When the last complete cycle committed (local clock).
    pub fn last_success(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .get_meta("last_success_us")?
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_micros))
    }
}

impl StoreError {
    /// The disk (or the process's file size limit) refused a write: behave like a full queue.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } => disk_full(source),
            StoreError::NoRoom { .. } => true,
            _ => false,
        }
    }
}

/// SQLite could not write: the disk is full (`SQLITE_FULL`) or the write itself failed
/// (`SQLITE_IOERR`, e.g. `EFBIG` past the process's file size limit).
fn disk_full(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DiskFull) | Some(rusqlite::ErrorCode::SystemIoFailure)
    )
}

#[cfg(test)]
mod fixtures;
