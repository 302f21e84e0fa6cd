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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::encode::cef::Act;
use crate::indicator::Indicator;

mod dedup;
mod queue;
pub use dedup::Keyer;
use dedup::{DedupIndex, Version};

pub const FILE_NAME: &str = "state.db";

/// Delivered events are deleted when every destination has passed the whole queue (a
/// truncate), else a whole chunk at a time once at least this many are deletable; until then
/// they stay in the file and in `queue_bytes`, but no destination reads them again.
const GC_BATCH: i64 = 4 * queue::CHUNK_EVENTS as i64;

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
    text: Arc<String>,
    label: std::ops::Range<usize>,
    line: std::ops::Range<usize>,
}

impl Event {
    pub fn new(seq: i64, enqueued: DateTime<Utc>, ioc_type: &str, cef: &str) -> Event {
        Event {
            seq,
            enqueued,
            text: Arc::new(format!("{ioc_type}{cef}")),
            label: 0..ioc_type.len(),
            line: ioc_type.len()..ioc_type.len() + cef.len(),
        }
    }

    /// An event whose label and line are `label` and `line` of a text shared with others.
    fn shared(
        seq: i64,
        enqueued: DateTime<Utc>,
        text: &Arc<String>,
        label: std::ops::Range<usize>,
        line: std::ops::Range<usize>,
    ) -> Event {
        Event {
            seq,
            enqueued,
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
            && self.ioc_type() == other.ioc_type()
            && self.cef() == other.cef()
    }
}

impl Eq for Event {}

/// One indicator made ready for the queue before the store's lock is taken (on the poller's
/// thread, while the previous page commits): its dedup key and version, and its CEF line,
/// encoded as an addition; [`Store::commit_page`] rewrites `act` when it turns out to be an
/// update. Holds one allocation, where the decoded indicator held a dozen.
#[derive(Debug, Clone)]
pub struct Prepared {
    key: u64,
    version: Version,
    /// The type label, then the CEF line.
    text: String,
    label_len: usize,
    /// Where the line's `act` value starts (see `cef::encode_queued`).
    act_at: Option<usize>,
    /// Values cut to their length limits while encoding.
    cuts: usize,
}

impl Prepared {
    /// `key` is `ind`'s dedup key ([`Keyer::key`]); `line`, `act_at` and `cuts` are what
    /// `cef::encode_queued` gave for it.
    pub fn new(
        key: u64,
        ind: &Indicator,
        line: &str,
        act_at: Option<usize>,
        cuts: usize,
    ) -> Prepared {
        let mut text = String::with_capacity(ind.type_raw.len() + line.len());
        text.push_str(&ind.type_raw);
        text.push_str(line);
        Prepared {
            key,
            version: Version::of(ind),
            text,
            label_len: ind.type_raw.len(),
            act_at,
            cuts,
        }
    }
}

/// What one committed page did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PageOutcome {
    pub added: usize,
    pub updated: usize,
    pub duplicates: usize,
    /// Events dropped to make room (`when_full = "drop-oldest"`), per destination.
    pub dropped: Vec<(String, i64)>,
    /// Values the `extended` profile cut to ArcSight's limits in the events queued.
    pub cuts: usize,
}

/// How a poll cycle ended, committed with its last page: the cycle succeeded (when, on this
/// host's clock, is what bounds pruning of the dedup table) and, when the server told its time,
/// where the next cycle starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CycleEnd {
    /// The next cycle's `since`; `None` leaves the cursor where it was.
    pub cursor: Option<DateTime<Utc>>,
}

impl CycleEnd {
    /// A cycle that ends with the cursor at `cursor`.
    pub fn at(cursor: DateTime<Utc>) -> CycleEnd {
        CycleEnd {
            cursor: Some(cursor),
        }
    }
}

/// Per-destination view for `queue stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationStats {
    pub name: String,
    pub events: i64,
    pub bytes: i64,
    pub oldest: Option<DateTime<Utc>>,
}

/// `[queue] max_bytes` and `when_full`, enforced when a page is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimit {
    pub max_bytes: u64,
    pub when_full: crate::config::WhenFull,
}

/// The connection and the in-memory dedup index, which only changes with what commits.
struct Inner {
    conn: Connection,
    dedup: DedupIndex,
    /// The highest sequence number ever assigned (also in `meta`, see `queue`).
    last_seq: i64,
    /// The corrections made at open (see [`Drift`]) could not be saved for a full disk: until
    /// a page commit saves them, the stored queue size is not trusted.
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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    queue_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    destination TEXT PRIMARY KEY,
    acked_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Version 2 replaced the `seen` b-tree keyed by identity text with `seen_log` (see `dedup`);
/// version 3 the row-per-event `events` table with `chunks` (see `queue`).
const USER_VERSION: i64 = 3;

/// A destination's recorded position, if the state file knows the destination.
fn stored_position(conn: &Connection, destination: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT acked_seq FROM positions WHERE destination = ?1",
        params![destination],
        |r| r.get(0),
    )
    .optional()
}

fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// What the state file's running totals say against what its queue holds: the sequence
/// high-water mark in `meta` (see `queue`) and the byte total in `totals`, recounted from the
/// chunk rows so that it never drifts across versions or repairs. `None` = already right:
/// only what differs is written.
#[derive(Debug, Default)]
struct Drift {
    last_seq: Option<i64>,
    queue_bytes: Option<i64>,
}

impl Drift {
    /// Reads both (one scan of the chunk rows: it also touches the tables, so damage shows).
    fn of(tx: &Transaction<'_>, last_seq: i64) -> rusqlite::Result<Drift> {
        let stored_seq = Store::meta_i64(tx, queue::LAST_SEQ_KEY)?;
        let counted = queue_bytes_counted(tx)?;
        let stored_bytes: Option<i64> = tx
            .query_row("SELECT queue_bytes FROM totals WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(Drift {
            last_seq: (stored_seq != Some(last_seq)).then_some(last_seq),
            queue_bytes: (stored_bytes != Some(counted)).then_some(counted),
        })
    }

    fn is_none(&self) -> bool {
        self.last_seq.is_none() && self.queue_bytes.is_none()
    }

    fn save(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        // The high-water mark goes first: a migrated one would be lost to the next truncate.
        if let Some(seq) = self.last_seq {
            Store::set_meta(tx, queue::LAST_SEQ_KEY, &seq.to_string())?;
        }
        if let Some(bytes) = self.queue_bytes {
            tx.execute(
                "INSERT OR REPLACE INTO totals (id, queue_bytes) VALUES (1, ?1)",
                params![bytes],
            )?;
        }
        Ok(())
    }
}

/// The bytes of CEF the chunk rows hold.
fn queue_bytes_counted(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT COALESCE(SUM(bytes), 0) FROM chunks", [], |r| {
        r.get(0)
    })
}

impl Store {
    /// Opens (creating if needed) `state_dir/state.db`. A file that is not a database or is
    /// corrupt is moved aside with a timestamped name and a fresh one is started: the agent
    /// must never crash-loop on its own state.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(FILE_NAME);
        match Self::open_file(&path) {
            Ok(conn) => Self::with_writer(conn, path),
            Err(e) if is_damage(&e) => {
                let moved_to = state_dir.join(format!(
                    "{FILE_NAME}.corrupt-{}",
                    Utc::now().format("%Y%m%dT%H%M%SZ")
                ));
                tracing::error!(path = %path.display(), moved_to = %moved_to.display(), error = %e,
                    "state file is damaged; moving it aside and starting with an empty queue");
                for suffix in ["", "-wal", "-shm"] {
                    let from = PathBuf::from(format!("{}{suffix}", path.display()));
                    let to = PathBuf::from(format!("{}{suffix}", moved_to.display()));
                    let _ = std::fs::rename(from, to);
                }
                let conn = Self::open_file(&path).map_err(|source| StoreError::Recreate {
                    path: path.clone(),
                    detail: format!("{source} (the damaged file is at {})", moved_to.display()),
                })?;
                Self::with_writer(conn, path)
            }
            Err(source) if disk_full(&source) => Err(StoreError::NoRoom { path, source }),
            Err(source) => Err(StoreError::Sqlite { path, source }),
        }
    }

    fn open_file(path: &Path) -> rusqlite::Result<Inner> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // 16 KiB pages for a new file (an existing one keeps its size): queue chunks are blobs
        // of up to 512 KiB, written to the WAL and read back as chains of overflow pages, one
        // system call per page; a quarter as many pages cut a backfill's CPU by ~11 % (1M
        // indicators: 2.50 -> 2.23 s) and the queue-insert limit's by ~15 %. Must precede the
        // switch to WAL.
        conn.pragma_update(None, "page_size", 16_384)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // No checkpoint when the last connection closes: what is committed is durable in the
        // WAL already, and copying up to ~40 MB of it into the database at exit made `once`
        // and every stop (systemd, container) wait up to a second for nothing; the next
        // start reads the WAL as it is, and autocheckpoints keep it bounded.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        // 4 MiB of page cache (negative = KiB): the queue is appended at its tail and read
        // near its head, and dedup lookups are in memory (see `dedup`); more only costs RSS.
        conn.pragma_update(None, "cache_size", -4096)?;
        // Checkpoint every ~40 MB of WAL instead of every few MB: fewer, larger checkpoints, and
        // events delivered meanwhile are often deleted before their pages are copied. The
        // file is truncated back to 64 MiB after a checkpoint. (The setting counts pages.)
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        conn.pragma_update(None, "wal_autocheckpoint", 40_000_000 / page.max(512))?;
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        // The whole schema in one transaction: a creation cut short (a full disk) leaves no
        // half-made file that `queue verify` would call damaged. On a current file every
        // statement of it only reads: an unchanged file is never written by opening it (the
        // read-only commands, and a start on a full disk, depend on that).
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        tx.execute_batch(queue::SCHEMA)?;
        tx.query_row("SELECT COUNT(*) FROM positions", [], |r| r.get::<_, i64>(0))?;
        tx.execute_batch(dedup::SCHEMA)?;
        let index = DedupIndex::new(dedup::sip_key(&tx)?);
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let mut last_seq = Self::meta_i64(&tx, queue::LAST_SEQ_KEY)?.unwrap_or(0);
        let upgrade = version < USER_VERSION;
        if upgrade {
            dedup::migrate_v1(&tx, &index)?;
            last_seq = last_seq.max(queue::migrate_v2(&tx)?);
            tx.pragma_update(None, "user_version", USER_VERSION)?;
        }
        // Never reuse a sequence number, whatever the meta row says.
        if let Some(t) = queue::tail(&tx)? {
            last_seq = last_seq.max(t.last);
        }
        let drift = Drift::of(&tx, last_seq)?;
        let mut unsaved = false;
        if upgrade || drift.is_none() {
            // A new or upgraded file is whole or not at all, its totals and high-water mark
            // included: a full disk here is an error (the caller says so).
            drift.save(&tx)?;
            tx.commit()?;
        } else {
            // A usable file whose corrections cannot be written still serves what it holds:
            // delivery needs no room, and page commits fail (pausing polling) until there is.
            match drift.save(&tx).and_then(|()| tx.commit()) {
                Ok(()) => {}
                Err(e) if disk_full(&e) => {
                    tracing::error!(path = %path.display(), error = %e,
                        queue_bytes = ?drift.queue_bytes, last_seq = ?drift.last_seq,
                        "disk full at start: the corrected queue totals cannot be saved; running with them in memory (delivery continues, polling pauses until there is room)");
                    unsaved = true;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Inner {
            conn,
            dedup: index,
            last_seq,
            unsaved,
        })
    }

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

    /// The store around an opened (and migrated) writer: adds the reader connection.
    fn with_writer(conn: Inner, path: PathBuf) -> Result<Store, StoreError> {
        let reader = Self::open_reader(&path).map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        Ok(Store {
            keyer: conn.dedup.keyer(),
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            path,
            limit: None,
            tail: None,
        })
    }

    fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        conn.pragma_update(None, "cache_size", -2048)?;
        Ok(conn)
    }

    fn read_lock(&self) -> MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hashes identities as the dedup index does (for [`Prepared::new`]).
    pub fn keyer(&self) -> Keyer {
        self.keyer
    }

    /// Enforce `max_bytes` / `when_full` on every commit from now on.
    pub fn with_limit(mut self, limit: QueueLimit) -> Store {
        self.limit = Some(limit);
        self
    }

    /// Bytes of CEF lines queued (for any destination).
    pub fn queue_bytes(&self) -> Result<i64, StoreError> {
        let conn = self.lock();
        if conn.unsaved {
            return queue_bytes_counted(&conn).map_err(|e| self.err(e));
        }
        conn.query_row("SELECT queue_bytes FROM totals WHERE id = 1", [], |r| {
            r.get(0)
        })
        .map_err(|e| self.err(e))
    }

    fn total(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
        tx.query_row("SELECT queue_bytes FROM totals WHERE id = 1", [], |r| {
            r.get(0)
        })
    }

    /// Deletes the chunks wholly at or below `cut`, keeping the byte total right.
    fn delete_through(tx: &Transaction<'_>, cut: i64) -> rusqlite::Result<()> {
        let freed = queue::delete_through(tx, cut)?;
        Self::free(tx, freed)
    }

    fn free(tx: &Transaction<'_>, bytes: i64) -> rusqlite::Result<()> {
        if bytes > 0 {
            tx.execute(
                "UPDATE totals SET queue_bytes = MAX(0, queue_bytes - ?1) WHERE id = 1",
                params![bytes],
            )?;
        }
        Ok(())
    }

    /// Drops the oldest events until at least `excess` bytes are free (splitting a chunk if
    /// need be, so no more is dropped than needed); every destination's position moves past
    /// them. Returns (destination, events it lost) for those that lost any.
    fn drop_oldest(tx: &Transaction<'_>, excess: i64) -> rusqlite::Result<Vec<(String, i64)>> {
        let all = queue::chunks(tx)?;
        let mut freed = 0i64;
        let mut cut = None;
        for c in &all {
            if freed >= excess {
                break;
            }
            if freed + c.bytes <= excess {
                freed += c.bytes;
                cut = Some(c.last);
                continue;
            }
            for (seq, size) in (c.first..).zip(queue::sizes(tx, c)?) {
                freed += size;
                cut = Some(seq);
                if freed >= excess {
                    break;
                }
            }
        }
        let Some(cut) = cut else {
            return Ok(Vec::new());
        };
        let mut lost = Vec::new();
        {
            let mut st =
                tx.prepare("SELECT destination, acked_seq FROM positions ORDER BY destination")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (d, acked) = row?;
                let n: i64 = all
                    .iter()
                    .filter(|c| c.first <= cut)
                    .map(|c| (c.last.min(cut) - acked.max(c.first - 1)).max(0))
                    .sum();
                if n > 0 {
                    lost.push((d, n));
                }
            }
        }
        tx.execute(
            "UPDATE positions SET acked_seq = MAX(acked_seq, ?1)",
            params![cut],
        )?;
        Self::delete_through(tx, cut)?;
        if let Some(c) = all.iter().find(|c| c.first <= cut && cut < c.last) {
            let f = queue::trim_head(tx, c, cut)?;
            Self::free(tx, f)?;
        }
        Ok(lost)
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

    /// Makes sure every configured destination has a position (new ones start at the current
    /// end of the queue) and forgets destinations no longer configured, so they do not hold
    /// events forever. Returns the names that were added and removed.
    pub fn sync_destinations(
        &self,
        names: &[String],
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let mut conn = self.lock();
        let conn_last_seq = conn.last_seq;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let existing: Vec<String> = {
            let mut st = tx
                .prepare("SELECT destination FROM positions")
                .map_err(|e| self.err(e))?;
            let rows = st.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?
        };
        // New destinations start after everything queued so far (at 0 in a new state file).
        let tail = conn_last_seq;
        let mut added = Vec::new();
        for n in names {
            if !existing.contains(n) {
                tx.execute(
                    "INSERT INTO positions (destination, acked_seq) VALUES (?1, ?2)",
                    params![n, tail],
                )
                .map_err(|e| self.err(e))?;
                added.push(n.clone());
            }
        }
        let mut removed = Vec::new();
        for e in existing {
            if !names.contains(&e) {
                tx.execute("DELETE FROM positions WHERE destination = ?1", params![e])
                    .map_err(|er| self.err(er))?;
                removed.push(e);
            }
        }
        Self::collect_garbage(&tx, 1).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok((added, removed))
    }

    /// Deletes events every destination has passed, once at least `at_least` of them are
    /// deletable: deleting on every acknowledgement would rewrite the same b-tree pages
    /// hundreds of times a second.
    fn collect_garbage(tx: &Transaction<'_>, at_least: i64) -> rusqlite::Result<()> {
        let min: Option<i64> =
            tx.query_row("SELECT MIN(acked_seq) FROM positions", [], |r| r.get(0))?;
        let Some(m) = min.filter(|m| *m > 0) else {
            return Ok(());
        };
        let (Some(head), Some(tail)) = (queue::head(tx)?, queue::tail(tx)?) else {
            return Ok(());
        };
        if m >= tail.last {
            // Everything is delivered everywhere: emptying the table is SQLite's truncate.
            // Sequence numbers go on from `meta` (see `queue`), so it must hold the tail
            // before the rows that show it go (it may not, when open could not save it).
            if Self::meta_i64(tx, queue::LAST_SEQ_KEY)?.is_none_or(|s| s < tail.last) {
                Self::set_meta(tx, queue::LAST_SEQ_KEY, &tail.last.to_string())?;
            }
            tx.execute("DELETE FROM chunks", [])?;
            tx.execute("UPDATE totals SET queue_bytes = 0 WHERE id = 1", [])?;
        } else if head.last <= m && m - head.first + 1 >= at_least {
            Self::delete_through(tx, m)?;
        }
        Ok(())
    }

    /// Commits one page in one transaction: every indicator whose version is new is queued
    /// (its `act` set to add or update) and its version recorded; `end`, on the last page of a
    /// cycle, is stored too.
    pub fn commit_page(
        &self,
        items: &[Prepared],
        end: Option<CycleEnd>,
    ) -> Result<PageOutcome, StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner
            .conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.err(e))?;
        inner
            .dedup
            .ensure_loaded(&inner.conn)
            .map_err(|e| self.err(e))?;
        let dedup = &mut inner.dedup;
        let last_seq = inner.last_seq;
        let tx = inner.conn.transaction().map_err(|e| self.err(e))?;
        if inner.unsaved {
            // What open could not save goes in first, so the limit below sees the real total.
            Drift::of(&tx, last_seq)
                .and_then(|d| d.save(&tx))
                .map_err(|e| self.err(e))?;
        }
        let mut outcome = PageOutcome::default();
        let now = now_us();
        let mut page_bytes = 0i64;
        // This page's versions, applied to the index once the transaction commits; looked up
        // first, so an identity twice in one page is judged against its earlier copy.
        let mut recorded: Vec<(u64, Version)> = Vec::new();
        let mut in_page: std::collections::HashMap<u64, Version> = std::collections::HashMap::new();
        let mut chunks = queue::Writer::new(last_seq, now);
        let mut scratch = String::new();
        let mut cuts = 0usize;
        let keys: Vec<u64> = items.iter().map(|p| p.key).collect();
        let found = dedup.look_up_page(&keys);
        let (known, repeated) = (&found.known, &found.repeated);
        let mut recorded_at: Vec<dedup::Slot> = Vec::new();
        {
            for (i, p) in items.iter().enumerate() {
                let (key, version) = (p.key, p.version);
                // Only a key that occurs more than once in the page needs the page's own
                // record of it.
                let before = if repeated[i] {
                    in_page.get(&key).copied().or(known[i])
                } else {
                    known[i]
                };
                let Some(act) = version.against(before) else {
                    outcome.duplicates += 1;
                    continue;
                };
                let (label, mut line) = p.text.split_at(p.label_len.min(p.text.len()));
                if let (Act::Update, Some(at)) = (act, p.act_at) {
                    scratch.clear();
                    scratch.push_str(line);
                    crate::encode::cef::set_act(&mut scratch, at, act);
                    line = &scratch;
                }
                chunks.push(&tx, label, line).map_err(|e| self.err(e))?;
                page_bytes += line.len() as i64;
                cuts += p.cuts;
                if repeated[i] {
                    in_page.insert(key, version);
                }
                recorded.push((key, version));
                recorded_at.push(found.slots[i]);
                match act {
                    Act::Add => outcome.added += 1,
                    Act::Update => outcome.updated += 1,
                }
            }
        }
        let new_last = chunks.finish(&tx).map_err(|e| self.err(e))?;
        let new_tail = (new_last > last_seq).then_some(new_last);
        if let Some(t) = new_tail {
            Self::set_meta(&tx, queue::LAST_SEQ_KEY, &t.to_string()).map_err(|e| self.err(e))?;
        }
        dedup::record(&tx, &recorded, now).map_err(|e| self.err(e))?;
        if page_bytes > 0 {
            tx.execute(
                "UPDATE totals SET queue_bytes = queue_bytes + ?1 WHERE id = 1",
                params![page_bytes],
            )
            .map_err(|e| self.err(e))?;
        }
        if let Some(limit) = self.limit {
            let mut total = Self::total(&tx).map_err(|e| self.err(e))?;
            let max = i64::try_from(limit.max_bytes).unwrap_or(i64::MAX);
            if total > max {
                // Delivered events not yet collected do not count against the limit.
                Self::collect_garbage(&tx, 1).map_err(|e| self.err(e))?;
                total = Self::total(&tx).map_err(|e| self.err(e))?;
            }
            if total > max && page_bytes > 0 {
                match limit.when_full {
                    crate::config::WhenFull::PausePolling => {
                        // A page bigger than the whole queue still goes in when the queue is
                        // empty; otherwise polling would stall forever on it.
                        if total - page_bytes > 0 {
                            return Err(StoreError::QueueFull {
                                bytes: total - page_bytes,
                                max: limit.max_bytes,
                            });
                        }
                    }
                    crate::config::WhenFull::DropOldest => {
                        let lost = Self::drop_oldest(&tx, total - max).map_err(|e| self.err(e))?;
                        let dropped: i64 = lost.iter().map(|(_, n)| *n).sum();
                        if dropped > 0 {
                            tracing::warn!(
                                max_bytes = limit.max_bytes,
                                dropped,
                                per_destination = ?lost,
                                "queue full: dropped the oldest events to stay within max_bytes"
                            );
                        }
                        outcome.dropped = lost;
                    }
                }
            }
        }
        if let Some(end) = end {
            if let Some(c) = end.cursor {
                Self::set_meta(
                    &tx,
                    "since",
                    &c.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                )
                .map_err(|e| self.err(e))?;
            }
            // Whether or not the cursor moved: the horizon for forgetting seen versions counts
            // from here, and a source that tells no time must not keep them forever.
            Self::set_meta(&tx, "last_success_us", &now.to_string()).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        inner.last_seq = new_last;
        inner.unsaved = false;
        dedup.apply_at(&recorded, &recorded_at);
        if let (Some(t), Some(watch)) = (new_tail, &self.tail) {
            watch.send_replace(t);
        }
        outcome.cuts = cuts;
        Ok(outcome)
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

    /// Forgets versions recorded before `before`, so the dedup table stays bounded. Anything
    /// that old is outside every window the API can still serve us again.
    pub fn prune_seen(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let tx = inner.conn.transaction().map_err(|e| self.err(e))?;
        let n = inner
            .dedup
            .prune(&tx, before.timestamp_micros(), now_us())
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(n)
    }

    /// Frees the in-memory dedup index between poll cycles (20 bytes per identity: 20 MB
    /// after a million-indicator backfill); the next cycle's first commit rebuilds it from
    /// `seen_log` (about 0.1 s per million). Returns the bytes freed.
    pub fn release_seen_index(&self) -> usize {
        self.lock().dedup.unload()
    }

    /// Identities in the in-memory dedup index (loaded by the first commit).
    pub fn seen_in_memory(&self) -> usize {
        self.lock().dedup.len()
    }

    /// The destination's acknowledged position.
    pub fn position(&self, destination: &str) -> Result<i64, StoreError> {
        stored_position(&self.read_lock(), destination)
            .map(|v| v.unwrap_or(0))
            .map_err(|e| self.err(e))
    }

    /// A destination's position, recording one for a destination the state file does not know
    /// yet: it starts after everything queued so far, as a destination added by
    /// [`Store::sync_destinations`] does. Writes only in that case.
    pub fn ensure_position(&self, destination: &str) -> Result<i64, StoreError> {
        if let Some(p) = stored_position(&self.read_lock(), destination).map_err(|e| self.err(e))? {
            return Ok(p);
        }
        let conn = self.lock();
        conn.execute(
            "INSERT OR IGNORE INTO positions (destination, acked_seq) VALUES (?1, ?2)",
            params![destination, conn.last_seq],
        )
        .map_err(|e| self.err(e))?;
        stored_position(&conn, destination)
            .map(|v| v.unwrap_or(0))
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` events after `after`, oldest first (fewer when the next chunk would not
    /// fit whole; see `queue::read_after`).
    pub fn read_after(&self, after: i64, limit: usize) -> Result<Vec<Event>, StoreError> {
        queue::read_after(&self.read_lock(), after, limit).map_err(|e| self.err(e))
    }

    /// Moves a destination's position forward to `seq` (never backwards) and deletes chunks
    /// that every destination has passed (see [`GC_BATCH`]).
    pub fn ack(&self, destination: &str, seq: i64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        // Positions need no fsync: WAL survives a killed process either way, and after a power
        // loss an old position only means sending some events again. Pages do need it.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| self.err(e))?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "UPDATE positions SET acked_seq = MAX(acked_seq, ?2) WHERE destination = ?1",
            params![destination, seq],
        )
        .map_err(|e| self.err(e))?;
        Self::collect_garbage(&tx, GC_BATCH).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Deletes every event all destinations have passed (at a graceful stop, and in tests).
    pub fn compact(&self) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        Self::collect_garbage(&tx, 1).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Highest sequence number ever queued that is still in the queue (0 when empty).
    pub fn tail(&self) -> Result<i64, StoreError> {
        queue::tail(&self.lock())
            .map(|t| t.map_or(0, |t| t.last))
            .map_err(|e| self.err(e))
    }

    /// Events waiting for one destination.
    #[cfg(test)]
    pub fn pending(&self, destination: &str) -> Result<i64, StoreError> {
        let after = self.position(destination)?;
        let conn = self.lock();
        let all = queue::chunks(&conn).map_err(|e| self.err(e))?;
        Ok(queue::waiting(&conn, &all, after)
            .map_err(|e| self.err(e))?
            .0)
    }

    /// Whether anything waits for one destination: two index probes. Reads through the reader
    /// connection.
    pub fn has_pending(&self, destination: &str) -> Result<bool, StoreError> {
        let conn = self.read_lock();
        let acked = stored_position(&conn, destination).map_err(|e| self.err(e))?;
        let tail = queue::tail(&conn).map_err(|e| self.err(e))?;
        Ok(matches!((acked, tail), (Some(a), Some(t)) if t.last > a))
    }

    /// Events, bytes and oldest event per destination.
    pub fn stats(&self) -> Result<Vec<DestinationStats>, StoreError> {
        let conn = self.lock();
        let all = queue::chunks(&conn).map_err(|e| self.err(e))?;
        let positions: Vec<(String, i64)> = {
            let mut st = conn
                .prepare("SELECT destination, acked_seq FROM positions ORDER BY destination")
                .map_err(|e| self.err(e))?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| self.err(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.err(e))?
        };
        positions
            .into_iter()
            .map(|(name, acked)| {
                let (events, bytes, oldest) =
                    queue::waiting(&conn, &all, acked).map_err(|e| self.err(e))?;
                Ok(DestinationStats {
                    name,
                    events,
                    bytes,
                    oldest: oldest.and_then(DateTime::from_timestamp_micros),
                })
            })
            .collect()
    }
}

impl Store {
    /// The next `n` events of the slowest destination (what `queue peek` shows).
    pub fn peek(&self, n: usize) -> Result<Vec<Event>, StoreError> {
        let from: i64 = self
            .lock()
            .query_row(
                "SELECT COALESCE(MIN(acked_seq), 0) FROM positions",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        self.read_after(from, n)
    }

    /// Drops everything queued for one destination (or for all): its position jumps to the
    /// tail. Returns how many events that destination (or the slowest one) skipped.
    pub fn purge(&self, destination: Option<&str>) -> Result<i64, StoreError> {
        let mut conn = self.lock();
        let conn_last_seq = conn.last_seq;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let tail = conn_last_seq;
        let acked: Option<i64> = match destination {
            Some(d) => stored_position(&tx, d),
            None => tx.query_row("SELECT MIN(acked_seq) FROM positions", [], |r| r.get(0)),
        }
        .map_err(|e| self.err(e))?;
        let skipped = match acked {
            Some(a) => {
                let all = queue::chunks(&tx).map_err(|e| self.err(e))?;
                queue::waiting(&tx, &all, a).map_err(|e| self.err(e))?.0
            }
            None => 0,
        };
        match destination {
            Some(d) => tx.execute(
                "UPDATE positions SET acked_seq = MAX(acked_seq, ?2) WHERE destination = ?1",
                params![d, tail],
            ),
            None => tx.execute(
                "UPDATE positions SET acked_seq = MAX(acked_seq, ?1)",
                params![tail],
            ),
        }
        .map_err(|e| self.err(e))?;
        Self::collect_garbage(&tx, 1).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(skipped)
    }

    /// Names of destinations that have a position.
    pub fn destinations(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut st = conn
            .prepare("SELECT destination FROM positions ORDER BY destination")
            .map_err(|e| self.err(e))?;
        let rows = st.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

/// `queue verify`: SQLite's integrity check on the state file, opened read-only so a damaged
/// file is reported, never moved or repaired. Returns the problems found (empty = healthy).
pub fn verify(state_dir: &Path) -> Result<Vec<String>, StoreError> {
    let path = state_dir.join(FILE_NAME);
    let err = |source| StoreError::Sqlite {
        path: path.clone(),
        source,
    };
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(err)?;
    let mut st = conn.prepare("PRAGMA integrity_check").map_err(err)?;
    let rows: Vec<String> = st
        .query_map([], |r| r.get(0))
        .map_err(err)?
        .collect::<Result<_, _>>()
        .map_err(err)?;
    let mut problems: Vec<String> = rows.into_iter().filter(|r| r != "ok").collect();
    // No schema at all: a file whose creation never completed (the schema is made in one
    // transaction, e.g. cut short by a full disk). It holds nothing; the next start makes it.
    let objects: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(err)?;
    if objects == 0 && problems.is_empty() {
        return Ok(problems);
    }
    for table in ["chunks", "positions", "seen_log", "meta"] {
        if let Err(e) = conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        }) {
            problems.push(format!("table {table}: {e}"));
        }
    }
    Ok(problems)
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

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase) | Some(rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ind(id: &str, last_seen: &str, confidence: &str) -> Indicator {
        crate::decode::item(&json!({"id": id, "type": "ipv4", "value": "192.0.2.1",
            "last_seen": last_seen, "confidence": confidence}))
        .unwrap()
    }

    /// Test pages: each line is `<id>:act=add`, `act` rewritten on an update.
    fn page(s: &Store, items: &[Indicator]) -> Vec<Prepared> {
        items
            .iter()
            .map(|i| {
                let line = format!("{}:act=add", i.id.clone().unwrap_or_default());
                Prepared::new(s.keyer().key(i), i, &line, Some(line.len() - 3), 0)
            })
            .collect()
    }

    #[test]
    fn same_version_is_queued_once_and_a_new_version_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.sync_destinations(&["a".into()]).unwrap();
        let v1 = ind("x", "2026-05-17T00:00:00Z", "low");
        let o = s
            .commit_page(&page(&s, &[v1.clone(), v1.clone()]), None)
            .unwrap();
        assert_eq!((o.added, o.duplicates), (1, 1));
        let o = s.commit_page(&page(&s, &[v1]), None).unwrap();
        assert_eq!(o.duplicates, 1);
        let v2 = ind("x", "2026-05-17T00:00:01Z", "low");
        let stale = ind("x", "2026-05-16T00:00:00Z", "high");
        let o = s.commit_page(&page(&s, &[v2, stale]), None).unwrap();
        assert_eq!((o.updated, o.duplicates), (1, 1));
        let ev = s.read_after(0, 10).unwrap();
        assert_eq!(
            ev.iter().map(|e| e.cef()).collect::<Vec<_>>(),
            ["x:act=add", "x:act=update"]
        );
    }

    #[test]
    fn versions_seen_before_a_restart_are_still_known_after_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let o = s
                .commit_page(&page(&s, &[ind("x", "2026-05-17T00:00:00Z", "low")]), None)
                .unwrap();
            assert_eq!(o.added, 1);
            let o = s
                .commit_page(&page(&s, &[ind("x", "2026-05-17T00:00:00Z", "high")]), None)
                .unwrap();
            assert_eq!(o.updated, 1);
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.seen_in_memory(), 0, "loaded lazily, by the first commit");
        let o = s
            .commit_page(
                &page(
                    &s,
                    &[
                        ind("x", "2026-05-17T00:00:00Z", "high"),
                        ind("x", "2026-05-17T00:00:00Z", "low"),
                        ind("y", "2026-05-17T00:00:00Z", "low"),
                    ],
                ),
                None,
            )
            .unwrap();
        // The newest row of `x` (high) wins over the older (low): high is a duplicate, low a
        // change, y new.
        assert_eq!((o.added, o.updated, o.duplicates), (1, 1, 1));
        assert_eq!(s.seen_in_memory(), 2);
        // Released between cycles and rebuilt by the next commit, with the same answers.
        assert!(s.release_seen_index() > 0);
        assert_eq!(s.seen_in_memory(), 0);
        let o = s
            .commit_page(&page(&s, &[ind("y", "2026-05-17T00:00:00Z", "low")]), None)
            .unwrap();
        assert_eq!(o.duplicates, 1);
        assert_eq!(s.seen_in_memory(), 2);
    }

    #[test]
    fn pruning_forgets_only_identities_whose_last_version_is_old() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.commit_page(
            &page(
                &s,
                &[
                    ind("old", "2026-05-17T00:00:00Z", "low"),
                    ind("both", "2026-05-17T00:00:00Z", "low"),
                ],
            ),
            None,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let cut = Utc::now();
        std::thread::sleep(Duration::from_millis(5));
        s.commit_page(
            &page(&s, &[ind("both", "2026-05-18T00:00:00Z", "low")]),
            None,
        )
        .unwrap();
        assert_eq!(s.prune_seen(cut).unwrap(), 2, "the two rows before the cut");
        assert_eq!(s.prune_seen(cut).unwrap(), 0);
        assert_eq!(s.seen_in_memory(), 1);
        let o = s
            .commit_page(
                &page(
                    &s,
                    &[
                        ind("old", "2026-05-17T00:00:00Z", "low"),
                        ind("both", "2026-05-18T00:00:00Z", "low"),
                    ],
                ),
                None,
            )
            .unwrap();
        assert_eq!((o.added, o.duplicates), (1, 1));
        // The same after a restart (memory rebuilt from what is left on disk).
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        let o = s
            .commit_page(
                &page(&s, &[ind("both", "2026-05-18T00:00:00Z", "low")]),
                None,
            )
            .unwrap();
        assert_eq!(o.duplicates, 1);
    }

    #[test]
    fn a_version_1_state_file_keeps_what_it_had_seen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join(FILE_NAME)).unwrap();
            c.execute_batch(
                "CREATE TABLE seen (identity TEXT PRIMARY KEY, last_seen_us INTEGER,
                     confidence TEXT, recorded_us INTEGER NOT NULL) WITHOUT ROWID;
                 CREATE INDEX seen_recorded ON seen (recorded_us);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
            let last = ind("x", "2026-05-17T00:00:00Z", "low")
                .last_seen
                .unwrap()
                .timestamp_micros();
            c.execute(
                "INSERT INTO seen VALUES ('id:x', ?1, 'low', ?2), ('tv:ipv4:192.0.2.9', NULL, NULL, ?2)",
                params![last, now_us()],
            )
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let mut by_value = ind("unused", "2026-05-17T00:00:00Z", "low");
        by_value.id = None;
        by_value.value = "192.0.2.9".into();
        by_value.last_seen = None;
        by_value.confidence = None;
        let o = s
            .commit_page(
                &page(&s, &[ind("x", "2026-05-17T00:00:00Z", "low"), by_value]),
                None,
            )
            .unwrap();
        assert_eq!(o.duplicates, 2);
        let c = s.lock();
        assert_eq!(
            schema_objects(&c, &["seen", "seen_recorded"]),
            0,
            "the old table and its index are gone"
        );
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, USER_VERSION);
    }

    #[test]
    fn a_version_2_queue_is_moved_into_chunks_with_its_sequence_numbers() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join(FILE_NAME)).unwrap();
            c.execute_batch(
                "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                     enqueued_us INTEGER NOT NULL, ioc_type TEXT NOT NULL, cef TEXT NOT NULL,
                     size INTEGER NOT NULL);
                 CREATE TABLE positions (destination TEXT PRIMARY KEY, acked_seq INTEGER NOT NULL);
                 INSERT INTO events VALUES (4, 10, 'ipv4', 'four', 4), (5, 10, 'url', 'five', 4),
                     (7, 10, 'ipv4', 'seven', 5), (8, 11, 'hash', 'eight|=\\', 8);
                 UPDATE sqlite_sequence SET seq = 20 WHERE name = 'events';
                 INSERT INTO positions VALUES ('a', 4);
                 PRAGMA user_version = 2;",
            )
            .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let ev = s.read_after(0, 10).unwrap();
        assert_eq!(
            ev.iter()
                .map(|e| (e.seq, e.ioc_type(), e.cef()))
                .collect::<Vec<_>>(),
            [
                (4, "ipv4", "four"),
                (5, "url", "five"),
                (7, "ipv4", "seven"),
                (8, "hash", "eight|=\\")
            ]
        );
        assert_eq!(ev[3].enqueued.timestamp_micros(), 11);
        assert_eq!(s.queue_bytes().unwrap(), 21);
        assert_eq!(s.pending("a").unwrap(), 3);
        // AUTOINCREMENT had handed out 20: the next event is 21, never a reused number — even
        // after the migrated queue was delivered and emptied and the agent restarted.
        s.ack("a", 8).unwrap();
        s.compact().unwrap();
        assert_eq!(s.tail().unwrap(), 0, "emptied");
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        s.commit_page(&page(&s, &[ind("n", "2026-05-17T00:00:00Z", "low")]), None)
            .unwrap();
        assert_eq!(s.tail().unwrap(), 21);
        let c = s.lock();
        assert_eq!(schema_objects(&c, &["events"]), 0, "the old table is gone");
        // An existing file keeps its page size; the checkpoint interval follows it (~40 MB).
        assert_eq!(pragma(&c, "page_size"), 4096);
        assert_eq!(pragma(&c, "wal_autocheckpoint"), 40_000_000 / 4096);
    }

    fn pragma(c: &Connection, name: &str) -> i64 {
        c.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn verify_passes_a_file_never_created_and_fails_one_missing_a_table() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"").unwrap();
        assert_eq!(verify(dir.path()).unwrap(), Vec::<String>::new());
        drop(Store::open(dir.path()).unwrap());
        assert_eq!(verify(dir.path()).unwrap(), Vec::<String>::new());
        Connection::open(dir.path().join(FILE_NAME))
            .unwrap()
            .execute_batch("DROP TABLE seen_log")
            .unwrap();
        let problems = verify(dir.path()).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("seen_log"), "{problems:?}");
    }

    #[test]
    fn a_new_state_file_has_16_kib_pages_and_checkpoints_every_40_mb() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(pragma(&s.lock(), "page_size"), 16_384);
        assert_eq!(pragma(&s.lock(), "wal_autocheckpoint"), 40_000_000 / 16_384);
        drop(s);
        // And keeps them when opened again.
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(pragma(&s.lock(), "page_size"), 16_384);
    }

    #[test]
    fn events_are_deleted_only_when_every_destination_passed_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.sync_destinations(&["a".into(), "b".into()]).unwrap();
        s.commit_page(
            &page(
                &s,
                &[
                    ind("1", "2026-05-17T00:00:00Z", "low"),
                    ind("2", "2026-05-17T00:00:00Z", "low"),
                ],
            ),
            None,
        )
        .unwrap();
        s.ack("a", 2).unwrap();
        s.compact().unwrap();
        assert_eq!(s.read_after(0, 10).unwrap().len(), 2);
        assert_eq!(s.pending("b").unwrap(), 2);
        assert!(s.has_pending("b").unwrap());
        s.ack("b", 1).unwrap();
        assert_eq!(s.pending("b").unwrap(), 1);
        s.compact().unwrap();
        let left = s.read_after(s.position("b").unwrap(), 10).unwrap();
        assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
        s.ack("a", 1).unwrap(); // never backwards
        assert_eq!(s.position("a").unwrap(), 2);
        s.ack("b", 2).unwrap();
        s.compact().unwrap();
        assert!(s.read_after(0, 10).unwrap().is_empty());
        assert_eq!(s.queue_bytes().unwrap(), 0);
        assert!(!s.has_pending("a").unwrap());
        // Sequence numbers go on after the queue was emptied, across a restart too.
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        s.commit_page(&page(&s, &[ind("3", "2026-05-17T00:00:00Z", "low")]), None)
            .unwrap();
        assert_eq!(s.read_after(0, 10).unwrap()[0].seq, 3);
        assert!(s.has_pending("a").unwrap());
    }

    #[test]
    fn cursor_moves_only_with_a_committed_page_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let t = DateTime::parse_from_rfc3339("2026-05-17T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.cursor().unwrap(), None);
            s.commit_page(&page(&s, &[]), Some(CycleEnd::at(t)))
                .unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.cursor().unwrap(), Some(t));
    }

    /// `state.db` and its WAL as they are on disk.
    fn file_bytes(dir: &Path) -> (Vec<u8>, Vec<u8>) {
        let read = |suffix: &str| {
            std::fs::read(dir.join(format!("{FILE_NAME}{suffix}"))).unwrap_or_default()
        };
        (read(""), read("-wal"))
    }

    #[test]
    fn opening_an_unchanged_state_file_writes_nothing_and_a_drifted_one_is_corrected() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.sync_destinations(&["a".into()]).unwrap();
        s.commit_page(&page(&s, &many(5)), None).unwrap();
        let queued = s.queue_bytes().unwrap();
        drop(s);
        let before = file_bytes(dir.path());
        drop(Store::open(dir.path()).unwrap());
        assert!(
            file_bytes(dir.path()) == before,
            "opening wrote to the file"
        );
        // A total that no longer matches the queue is recounted and saved.
        Store::open(dir.path())
            .unwrap()
            .lock()
            .execute("UPDATE totals SET queue_bytes = 1", [])
            .unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(!s.lock().unsaved);
        let stored: i64 = s
            .lock()
            .query_row("SELECT queue_bytes FROM totals", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, queued);
    }

    #[test]
    fn corrections_a_full_disk_kept_from_open_are_served_from_the_queue_and_saved_by_the_next_commit(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.sync_destinations(&["a".into()]).unwrap();
        s.commit_page(&page(&s, &many(5)), None).unwrap();
        let queued = s.queue_bytes().unwrap();
        // As open leaves it when the recount could not be written.
        s.lock()
            .execute("UPDATE totals SET queue_bytes = 1", [])
            .unwrap();
        s.lock().unsaved = true;
        assert_eq!(s.queue_bytes().unwrap(), queued);
        let more = s.commit_page(&page(&s, &many(8)[5..]), None).unwrap();
        assert_eq!(more.added, 3);
        assert!(!s.lock().unsaved);
        let total = s.queue_bytes().unwrap();
        let read: usize = s
            .read_after(0, 100)
            .unwrap()
            .iter()
            .map(|e| e.cef().len())
            .sum();
        assert_eq!(total, read as i64, "the stored total is the queue's again");
    }

    #[test]
    fn the_queue_is_never_emptied_while_meta_lags_its_tail() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.sync_destinations(&["a".into()]).unwrap();
        s.commit_page(&page(&s, &many(5)), None).unwrap();
        // A high-water mark open could not save (a full disk): only memory has it.
        s.lock()
            .execute(
                "DELETE FROM meta WHERE key = ?1",
                params![queue::LAST_SEQ_KEY],
            )
            .unwrap();
        s.ack("a", 5).unwrap();
        s.compact().unwrap();
        assert_eq!(s.tail().unwrap(), 0, "emptied");
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        s.commit_page(&page(&s, &[ind("n", "2026-05-17T00:00:00Z", "low")]), None)
            .unwrap();
        assert_eq!(s.tail().unwrap(), 6, "sequence numbers are never reused");
    }

    #[test]
    fn a_cycle_that_ends_without_a_cursor_records_its_success_and_keeps_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let t = DateTime::parse_from_rfc3339("2026-05-17T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        s.commit_page(&page(&s, &many(2)), None).unwrap();
        assert_eq!(s.last_success().unwrap(), None, "not the end of a cycle");
        let before = Utc::now();
        s.commit_page(&page(&s, &[]), Some(CycleEnd { cursor: None }))
            .unwrap();
        let first = s.last_success().unwrap();
        assert!(first.is_some_and(|l| l >= before), "{first:?}");
        assert_eq!(s.cursor().unwrap(), None, "no server time, no cursor");
        // A cursor stays where the last cycle with server time put it.
        s.commit_page(&page(&s, &[]), Some(CycleEnd::at(t)))
            .unwrap();
        s.commit_page(&page(&s, &many(3)), Some(CycleEnd { cursor: None }))
            .unwrap();
        assert_eq!(s.cursor().unwrap(), Some(t));
        assert!(s.last_success().unwrap() >= first);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), vec![b'x'; 8192]).unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.tail().unwrap(), 0);
        let moved = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("state.db.corrupt-")
            });
        assert!(moved);
    }

    /// How many of the named tables and indexes the state file has.
    fn schema_objects(c: &Connection, names: &[&str]) -> usize {
        names
            .iter()
            .filter(|n| {
                c.query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = ?1",
                    params![n],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                    > 0
            })
            .count()
    }

    fn many(n: usize) -> Vec<Indicator> {
        (0..n)
            .map(|i| ind(&format!("id{i}"), "2026-05-17T00:00:00Z", "low"))
            .collect()
    }

    #[test]
    fn drop_oldest_keeps_the_queue_within_max_bytes_and_counts_per_destination() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap().with_limit(QueueLimit {
            max_bytes: 150,
            when_full: crate::config::WhenFull::DropOldest,
        });
        s.sync_destinations(&["dead".into(), "live".into()])
            .unwrap();
        // each line is "idN:act=add" = 11..12 bytes
        let o = s.commit_page(&page(&s, &many(10)), None).unwrap();
        assert!(o.dropped.is_empty());
        s.ack("live", s.tail().unwrap()).unwrap();
        let o = s.commit_page(&page(&s, &many(30)[10..]), None).unwrap();
        assert!(
            s.queue_bytes().unwrap() <= 150,
            "{}",
            s.queue_bytes().unwrap()
        );
        let dead = o.dropped.iter().find(|(d, _)| d == "dead").unwrap().1;
        assert!(dead >= 10, "{o:?}");
        // what is left is exactly what the totals say
        let left: usize = s
            .read_after(0, 1000)
            .unwrap()
            .iter()
            .map(|e| e.cef().len())
            .sum();
        assert_eq!(left as i64, s.queue_bytes().unwrap());
        assert_eq!(
            s.pending("dead").unwrap() as usize,
            s.read_after(0, 1000).unwrap().len()
        );
    }

    #[test]
    fn pause_polling_refuses_the_page_and_keeps_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap().with_limit(QueueLimit {
            max_bytes: 100,
            when_full: crate::config::WhenFull::PausePolling,
        });
        s.sync_destinations(&["dead".into()]).unwrap();
        let t = DateTime::parse_from_rfc3339("2026-05-17T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // a first page bigger than the limit still goes in when the queue is empty
        s.commit_page(&page(&s, &many(20)), Some(CycleEnd::at(t)))
            .unwrap();
        let before = s.queue_bytes().unwrap();
        let later = t + chrono::Duration::hours(1);
        let err = s
            .commit_page(&page(&s, &many(25)[20..]), Some(CycleEnd::at(later)))
            .unwrap_err();
        assert!(matches!(err, StoreError::QueueFull { .. }), "{err}");
        assert!(err.to_string().contains("polling paused"));
        assert_eq!(s.cursor().unwrap(), Some(t));
        assert_eq!(s.queue_bytes().unwrap(), before);
        // the refused versions were not recorded as seen: they come again next time
        s.ack("dead", s.tail().unwrap()).unwrap();
        let o = s
            .commit_page(&page(&s, &many(25)[20..]), Some(CycleEnd::at(later)))
            .unwrap();
        assert_eq!(o.added, 5);
        assert_eq!(s.cursor().unwrap(), Some(later));
    }
}
