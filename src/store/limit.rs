//! The queue limit: `[queue] max_bytes` and what `when_full` does when a page would pass it.
//!
//! It is enforced inside the page commit, after the page's events are in: events every
//! destination has delivered do not count (they are collected first), and a page is never
//! refused for a queue that is empty, or it would stall polling forever. `pause-polling`
//! refuses the page (the transaction rolls back, the cursor does not move, and its versions
//! come again); `drop-oldest` drops the oldest events, only as many bytes as needed, and
//! every destination's position moves past them — counted per destination, since each lost
//! what it had not delivered.

use rusqlite::{params, Transaction};

use super::{queue, Store, StoreError};
use crate::config::WhenFull;

/// `[queue] max_bytes` and `when_full`, enforced when a page is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimit {
    pub max_bytes: u64,
    pub when_full: WhenFull,
}

impl Store {
    /// Enforce `max_bytes` / `when_full` on every commit from now on.
    pub fn with_limit(mut self, limit: QueueLimit) -> Store {
        self.limit = Some(limit);
        self
    }

    /// Applies the limit to a page just written in `tx` (`page_bytes` of it). Returns the
    /// events dropped per destination (`drop-oldest`), or `QueueFull` (`pause-polling`).
    pub(super) fn enforce_limit(
        &self,
        tx: &Transaction<'_>,
        page_bytes: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let Some(limit) = self.limit else {
            return Ok(Vec::new());
        };
        let mut total = queued_bytes(tx).map_err(|e| self.err(e))?;
        let max = i64::try_from(limit.max_bytes).unwrap_or(i64::MAX);
        if total > max {
            // Delivered events not yet collected do not count against the limit.
            Self::collect_garbage(tx, 1).map_err(|e| self.err(e))?;
            total = queued_bytes(tx).map_err(|e| self.err(e))?;
        }
        if total <= max || page_bytes <= 0 {
            return Ok(Vec::new());
        }
        match limit.when_full {
            WhenFull::PausePolling => {
                // A page bigger than the whole queue still goes in when the queue is
                // empty; otherwise polling would stall forever on it.
                if total - page_bytes > 0 {
                    return Err(StoreError::QueueFull {
                        bytes: total - page_bytes,
                        max: limit.max_bytes,
                    });
                }
                Ok(Vec::new())
            }
            WhenFull::DropOldest => {
                let lost = drop_oldest(tx, total - max).map_err(|e| self.err(e))?;
                let dropped: i64 = lost.iter().map(|(_, n)| *n).sum();
                if dropped > 0 {
                    tracing::warn!(
                        max_bytes = limit.max_bytes,
                        dropped,
                        per_destination = ?lost,
                        "queue full: dropped the oldest events to stay within max_bytes"
                    );
                }
                Ok(lost)
            }
        }
    }
}

/// The bytes queued, as the running total says.
fn queued_bytes(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    tx.query_row("SELECT queue_bytes FROM totals WHERE id = 1", [], |r| {
        r.get(0)
    })
}

/// Drops the oldest events until at least `excess` bytes are free (splitting a chunk if
/// need be, so no more is dropped than needed); every destination's position moves past
/// them. Returns (destination, events it lost) for those that lost any.
fn drop_oldest(tx: &Transaction<'_>, excess: i64) -> rusqlite::Result<Vec<(String, i64)>> {
    let all = queue::chunks(tx)?;
    let Some(cut) = oldest_cut(tx, &all, excess)? else {
        return Ok(Vec::new());
    };
    let lost = losses(tx, &all, cut)?;
    tx.execute(
        "UPDATE positions SET acked_seq = MAX(acked_seq, ?1)",
        params![cut],
    )?;
    Store::delete_through(tx, cut)?;
    if let Some(c) = all.iter().find(|c| c.first <= cut && cut < c.last) {
        let f = queue::trim_head(tx, c, cut)?;
        Store::free(tx, f)?;
    }
    Ok(lost)
}

/// The last sequence number to drop so that at least `excess` bytes are freed: whole chunks
/// while they fit, then event by event. `None` when nothing need go.
fn oldest_cut(
    tx: &Transaction<'_>,
    all: &[queue::Chunk],
    excess: i64,
) -> rusqlite::Result<Option<i64>> {
    let mut freed = 0i64;
    let mut cut = None;
    for c in all {
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
    Ok(cut)
}

/// Per destination, the events up to `cut` it had not acknowledged (those that lost any).
fn losses(
    tx: &Transaction<'_>,
    all: &[queue::Chunk],
    cut: i64,
) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut st = tx.prepare("SELECT destination, acked_seq FROM positions ORDER BY destination")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut lost = Vec::new();
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
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{many, page};
    use crate::store::CycleEnd;
    use chrono::{DateTime, Utc};

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
