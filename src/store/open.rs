//! Opening the state file: the connection settings, the schema, the upgrades of older
//! versions, and what happens to a damaged file.
//!
//! The rules it keeps: the schema (and any upgrade) is made in one transaction, so a creation
//! cut short leaves no half-made file; opening a current file writes nothing unless its
//! running totals need correcting ([`Drift`]), and a correction that a full disk refuses is
//! kept in memory, so a restart on a full disk delivers what is queued instead of exiting; a
//! file that is not a database, or is corrupt, is moved aside and a fresh one started — the
//! agent must never crash-loop on its own state.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rusqlite::config::DbConfig;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::dedup::{self, DedupIndex};
use super::{disk_full, latest, queue, Inner, Store, StoreError, FILE_NAME};

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
/// version 3 the row-per-event `events` table with `chunks` (see `queue`); version 4 gave
/// chunks a `format`, so they can keep what the live set needs of each event (see `record`).
const USER_VERSION: i64 = 4;

/// What the state file's running totals say against what its queue holds: the sequence
/// high-water mark in `meta` (see `queue`) and the byte total in `totals`, recounted from the
/// chunk rows so that it never drifts across versions or repairs. `None` = already right:
/// only what differs is written.
#[derive(Debug, Default)]
pub(super) struct Drift {
    last_seq: Option<i64>,
    queue_bytes: Option<i64>,
}

impl Drift {
    /// Reads both (one scan of the chunk rows: it also touches the tables, so damage shows).
    pub(super) fn of(tx: &Transaction<'_>, last_seq: i64) -> rusqlite::Result<Drift> {
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

    pub(super) fn save(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
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
pub(super) fn queue_bytes_counted(conn: &Connection) -> rusqlite::Result<i64> {
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
        tune(&conn)?;
        // The whole schema in one transaction: a creation cut short (a full disk) leaves no
        // half-made file that `queue verify` would call damaged. On a current file every
        // statement of it only reads: an unchanged file is never written by opening it (the
        // read-only commands, and a start on a full disk, depend on that).
        let tx = conn.transaction()?;
        let (dedup, last_seq, upgraded) = create_or_upgrade(&tx)?;
        let unsaved = commit_corrections(tx, path, last_seq, upgraded)?;
        Ok(Inner {
            conn,
            dedup,
            last_seq,
            unsaved,
        })
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
}

/// The writer's settings, each for a measured reason.
fn tune(conn: &Connection) -> rusqlite::Result<()> {
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
    Ok(())
}

/// Creates what the schema lacks and upgrades an older file. Returns the dedup index (not
/// loaded yet), the highest sequence number ever assigned, and whether the file was upgraded.
fn create_or_upgrade(tx: &Transaction<'_>) -> rusqlite::Result<(DedupIndex, i64, bool)> {
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(queue::SCHEMA)?;
    tx.query_row("SELECT COUNT(*) FROM positions", [], |r| r.get::<_, i64>(0))?;
    tx.execute_batch(dedup::SCHEMA)?;
    tx.execute_batch(latest::SCHEMA)?;
    let index = DedupIndex::new(dedup::sip_key(tx)?);
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let mut last_seq = Store::meta_i64(tx, queue::LAST_SEQ_KEY)?.unwrap_or(0);
    let upgrade = version < USER_VERSION;
    if upgrade {
        dedup::migrate_v1(tx, &index)?;
        last_seq = last_seq.max(queue::migrate_v2(tx)?);
        let has_format: bool = tx.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('chunks') WHERE name = 'format'",
            [],
            |r| r.get(0),
        )?;
        if !has_format {
            tx.execute_batch(queue::ADD_FORMAT)?;
        }
        tx.pragma_update(None, "user_version", USER_VERSION)?;
    }
    // Never reuse a sequence number, whatever the meta row says.
    if let Some(t) = queue::tail(tx)? {
        last_seq = last_seq.max(t.last);
    }
    Ok((index, last_seq, upgrade))
}

/// Saves the corrections the running totals need ([`Drift`]) and commits the opening
/// transaction. Returns `true` when a full disk refused the corrections of a usable file: they
/// are then kept in memory only.
fn commit_corrections(
    tx: Transaction<'_>,
    path: &Path,
    last_seq: i64,
    upgraded: bool,
) -> rusqlite::Result<bool> {
    let drift = Drift::of(&tx, last_seq)?;
    if upgraded || drift.is_none() {
        // A new or upgraded file is whole or not at all, its totals and high-water mark
        // included: a full disk here is an error (the caller says so).
        drift.save(&tx)?;
        tx.commit()?;
        return Ok(false);
    }
    // A usable file whose corrections cannot be written still serves what it holds:
    // delivery needs no room, and page commits fail (pausing polling) until there is.
    match drift.save(&tx).and_then(|()| tx.commit()) {
        Ok(()) => Ok(false),
        Err(e) if disk_full(&e) => {
            tracing::error!(path = %path.display(), error = %e,
                queue_bytes = ?drift.queue_bytes, last_seq = ?drift.last_seq,
                "disk full at start: the corrected queue totals cannot be saved; running with them in memory (delivery continues, polling pauses until there is room)");
            Ok(true)
        }
        Err(e) => Err(e),
    }
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
    use crate::store::fixtures::{ind, many, new_store, page, seq_after_emptying_and_restarting};
    use crate::store::now_us;

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
        assert_eq!(seq_after_emptying_and_restarting(s, dir.path(), 8), 21);
        let s = Store::open(dir.path()).unwrap();
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
    fn a_new_state_file_has_16_kib_pages_and_checkpoints_every_40_mb() {
        let (dir, s) = new_store();
        assert_eq!(pragma(&s.lock(), "page_size"), 16_384);
        assert_eq!(pragma(&s.lock(), "wal_autocheckpoint"), 40_000_000 / 16_384);
        drop(s);
        // And keeps them when opened again.
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(pragma(&s.lock(), "page_size"), 16_384);
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
        let (dir, s) = new_store();
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
        let (_dir, s) = new_store();
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
}
