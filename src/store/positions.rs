//! Each destination's position in the queue, and the deletion of what all of them passed.
//!
//! Delivery reads after its destination's position and moves it forward when the receiver
//! has the events ([`Store::ack`]); a position never moves back. A new destination starts
//! after everything queued so far, and a destination no longer configured is forgotten, so it
//! does not hold events forever. A chunk is deleted once every destination has passed all of
//! it — in batches, not on every acknowledgement — and sequence numbers are never reused,
//! even after the queue was emptied.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{queue, Event, Store, StoreError};

/// Delivered events are deleted when every destination has passed the whole queue (a
/// truncate), else a whole chunk at a time once at least this many are deletable; until then
/// they stay in the file and in `queue_bytes`, but no destination reads them again.
const GC_BATCH: i64 = 4 * queue::CHUNK_EVENTS as i64;

/// A destination's recorded position, if the state file knows the destination.
pub(super) fn stored_position(
    conn: &Connection,
    destination: &str,
) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT acked_seq FROM positions WHERE destination = ?1",
        params![destination],
        |r| r.get(0),
    )
    .optional()
}

impl Store {
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
    pub(super) fn collect_garbage(tx: &Transaction<'_>, at_least: i64) -> rusqlite::Result<()> {
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

    /// Deletes the chunks wholly at or below `cut`, keeping the byte total right.
    pub(super) fn delete_through(tx: &Transaction<'_>, cut: i64) -> rusqlite::Result<()> {
        let freed = queue::delete_through(tx, cut)?;
        Self::free(tx, freed)
    }

    pub(super) fn free(tx: &Transaction<'_>, bytes: i64) -> rusqlite::Result<()> {
        if bytes > 0 {
            tx.execute(
                "UPDATE totals SET queue_bytes = MAX(0, queue_bytes - ?1) WHERE id = 1",
                params![bytes],
            )?;
        }
        Ok(())
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

    /// Whether anything waits for one destination: two index probes. Reads through the reader
    /// connection.
    pub fn has_pending(&self, destination: &str) -> Result<bool, StoreError> {
        let conn = self.read_lock();
        let acked = stored_position(&conn, destination).map_err(|e| self.err(e))?;
        let tail = queue::tail(&conn).map_err(|e| self.err(e))?;
        Ok(matches!((acked, tail), (Some(a), Some(t)) if t.last > a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{ind, many, new_store, page, seq_after_emptying_and_restarting};

    #[test]
    fn events_are_deleted_only_when_every_destination_passed_them() {
        let (dir, s) = new_store();
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
    fn the_queue_is_never_emptied_while_meta_lags_its_tail() {
        let (dir, s) = new_store();
        s.sync_destinations(&["a".into()]).unwrap();
        s.commit_page(&page(&s, &many(5)), None).unwrap();
        // A high-water mark open could not save (a full disk): only memory has it.
        s.lock()
            .execute(
                "DELETE FROM meta WHERE key = ?1",
                params![queue::LAST_SEQ_KEY],
            )
            .unwrap();
        assert_eq!(
            seq_after_emptying_and_restarting(s, dir.path(), 5),
            6,
            "sequence numbers are never reused"
        );
    }
}
