//! What the `queue` commands show and do to the state file: the per-destination stats, a peek
//! at what waits, a purge, the integrity check.
//!
//! They work on the same file as a running agent (SQLite's locking keeps them apart) and go
//! through the same rules: a purge moves positions forward like an acknowledgement, never
//! back, and deletes only what every destination has passed; `verify` opens the file
//! read-only, so a damaged file is reported, never moved aside or repaired.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::positions::stored_position;
use super::{queue, Event, Store, StoreError, FILE_NAME};

/// Per-destination view for `queue stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationStats {
    pub name: String,
    pub events: i64,
    pub bytes: i64,
    pub oldest: Option<DateTime<Utc>>,
}

impl Store {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
