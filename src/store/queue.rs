//! The queue's rows: events are stored in chunks of up to [`CHUNK_EVENTS`] consecutive
//! sequence numbers, one SQLite row (and one blob) per chunk, not one row per event.
//!
//! A row per event cost ~2.3 CPU s per million to insert and ~1.3 s to delete again (b-tree
//! work per row, profiled in the benchmark); a chunk row amortises that over hundreds of
//! events, and delivery reads a batch as one blob. Sequence numbers are assigned here (the
//! table is emptied whenever everything is delivered, so the high-water mark is kept in
//! `meta`), consecutive within a chunk: event `i` of a chunk has `first_seq + i`.
//!
//! A chunk's `format` says how its blob lays out each event (see `record`): chunks written
//! before the live set existed keep format 1 until they are delivered. Blobs are checked when
//! read: a damaged one is an error, never a panic.

use chrono::DateTime;
use rusqlite::{params, Connection, Transaction};

use super::record::{self, Damage, Record};
use super::Event;

/// Events per chunk at most (delivery reads batches of this size, so a read is one row).
pub const CHUNK_EVENTS: usize = 512;
/// Bytes of CEF per chunk at most (a chunk of 8 KiB URLs stays a modest blob).
const CHUNK_BYTES: usize = 512 * 1024;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chunks (
    first_seq INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    enqueued_us INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    events BLOB NOT NULL,
    format INTEGER NOT NULL DEFAULT 1
);
";

/// What a file whose `chunks` table predates the `format` column gets at its upgrade: every
/// row it holds is format 1.
pub const ADD_FORMAT: &str = "ALTER TABLE chunks ADD COLUMN format INTEGER NOT NULL DEFAULT 1";

/// The meta key holding the highest sequence number ever assigned.
pub const LAST_SEQ_KEY: &str = "last_seq";

/// Metadata of one chunk row.
#[derive(Debug, Clone, Copy)]
pub struct Chunk {
    pub first: i64,
    pub last: i64,
    pub bytes: i64,
    pub enqueued_us: i64,
    pub format: i64,
}

impl Chunk {
    pub fn count(&self) -> i64 {
        self.last - self.first + 1
    }

    /// From a row of `first_seq, last_seq, bytes, enqueued_us, format`.
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Chunk> {
        Ok(Chunk {
            first: r.get(0)?,
            last: r.get(1)?,
            bytes: r.get(2)?,
            enqueued_us: r.get(3)?,
            format: r.get(4)?,
        })
    }

    /// A reader of `blob`, this chunk's events.
    fn records<'a>(&self, blob: &'a [u8]) -> rusqlite::Result<Records<'a>> {
        Records::new(blob, self.format, self.first)
    }
}

/// Collects one commit's events into chunk rows.
pub struct Writer {
    buf: Vec<u8>,
    enqueued_us: i64,
    /// Sequence number of the next event.
    next: i64,
    /// First sequence number of the chunk being filled.
    first: i64,
    cef_bytes: usize,
}

impl Writer {
    /// Events get sequence numbers after `last_seq`.
    pub fn new(last_seq: i64, enqueued_us: i64) -> Writer {
        Writer {
            buf: Vec::new(),
            enqueued_us,
            next: last_seq + 1,
            first: last_seq + 1,
            cef_bytes: 0,
        }
    }

    /// Appends one event; writes the chunk row when it is full. Returns the event's sequence
    /// number.
    pub fn push(&mut self, tx: &Transaction<'_>, event: &Record<'_>) -> rusqlite::Result<i64> {
        if self.buf.is_empty() {
            self.buf.reserve(64 * 1024);
        }
        event.write(&mut self.buf);
        self.cef_bytes += event.cef_len();
        let seq = self.next;
        self.next += 1;
        if (self.next - self.first) as usize >= CHUNK_EVENTS || self.cef_bytes >= CHUNK_BYTES {
            self.flush(tx)?;
        }
        Ok(seq)
    }

    fn flush(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if self.next == self.first {
            return Ok(());
        }
        tx.prepare_cached(
            "INSERT INTO chunks (first_seq, last_seq, enqueued_us, bytes, events, format) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            self.first,
            self.next - 1,
            self.enqueued_us,
            self.cef_bytes as i64,
            self.buf,
            record::FORMAT
        ])?;
        self.buf.clear();
        self.first = self.next;
        self.cef_bytes = 0;
        Ok(())
    }

    /// Writes the last partial chunk; returns the last sequence number assigned.
    pub fn finish(mut self, tx: &Transaction<'_>) -> rusqlite::Result<i64> {
        self.flush(tx)?;
        Ok(self.next - 1)
    }
}

fn damaged(first_seq: i64, what: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        4,
        rusqlite::types::Type::Blob,
        format!("queue chunk starting at seq {first_seq} is damaged: {what}").into(),
    )
}

/// Walks a chunk's blob: yields its events in order; damage is an error naming the chunk.
struct Records<'a> {
    reader: record::Reader<'a>,
    first_seq: i64,
}

impl<'a> Records<'a> {
    fn new(blob: &'a [u8], format: i64, first_seq: i64) -> rusqlite::Result<Records<'a>> {
        let reader = record::Reader::new(blob, format).map_err(|e| damaged(first_seq, e))?;
        Ok(Records { reader, first_seq })
    }

    /// The next record, or `None` at the end of the blob.
    fn next_record(&mut self) -> rusqlite::Result<Option<Record<'a>>> {
        self.reader
            .next_record()
            .map_err(|e: Damage| damaged(self.first_seq, e))
    }

    /// Skips `n` records, returning the CEF bytes skipped.
    fn skip(&mut self, n: i64) -> rusqlite::Result<i64> {
        let mut bytes = 0;
        for _ in 0..n {
            match self.next_record()? {
                Some(r) => bytes += r.cef.len() as i64,
                None => return Err(damaged(self.first_seq, "fewer events than its range")),
            }
        }
        Ok(bytes)
    }
}

/// Up to `limit` events after `after`, oldest first. A chunk is split only when it alone holds
/// more than `limit` events after `after`, so reads stay aligned to chunks.
pub fn read_after(conn: &Connection, after: i64, limit: usize) -> rusqlite::Result<Vec<Event>> {
    // The chunk holding `after + 1` (or the first one after it) and those after it.
    let mut st = conn.prepare_cached(
        "SELECT first_seq, last_seq, enqueued_us, events, format FROM chunks
         WHERE first_seq >= COALESCE((SELECT MAX(first_seq) FROM chunks WHERE first_seq <= ?1 + 1), ?1 + 1)
         ORDER BY first_seq",
    )?;
    let mut rows = st.query(params![after])?;
    let mut out: Vec<Event> = Vec::new();
    while let Some(r) = rows.next()? {
        let (first, last): (i64, i64) = (r.get(0)?, r.get(1)?);
        if last <= after {
            continue;
        }
        let start = first.max(after + 1);
        let wanted = (last - start + 1) as usize;
        if !out.is_empty() && out.len() + wanted > limit {
            break;
        }
        let enqueued = DateTime::from_timestamp_micros(r.get(2)?).unwrap_or_default();
        let mut records = Records::new(r.get_ref(3)?.as_blob()?, r.get(4)?, first)?;
        records.skip(start - first)?;
        let take = wanted.min(limit - out.len());
        // The chunk's labels and lines in one text the events share.
        let mut text = String::with_capacity(records.reader.rest().len());
        let mut spans = Vec::with_capacity(take);
        for _ in 0..take {
            let Some(rec) = records.next_record()? else {
                return Err(damaged(first, "fewer events than its range"));
            };
            let at = text.len();
            text.push_str(rec.label);
            text.push_str(rec.cef);
            spans.push((rec.kind, at, at + rec.label.len(), text.len()));
        }
        // An `Arc<String>`, not `Arc<str>`: that conversion would copy the chunk once more.
        let text = std::sync::Arc::new(text);
        out.reserve(take);
        for (seq, (kind, a, b, c)) in (start..).zip(spans) {
            out.push(Event::shared(seq, enqueued, kind, &text, a..b, b..c));
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Every chunk's metadata, oldest first (a scan of the rows, not of the blobs).
pub fn chunks(conn: &Connection) -> rusqlite::Result<Vec<Chunk>> {
    let mut st = conn.prepare_cached(
        "SELECT first_seq, last_seq, bytes, enqueued_us, format FROM chunks ORDER BY first_seq",
    )?;
    let rows = st.query_map([], Chunk::from_row)?;
    rows.collect()
}

/// The oldest chunk.
pub fn head(conn: &Connection) -> rusqlite::Result<Option<Chunk>> {
    edge(conn, "ASC")
}

/// The newest chunk.
pub fn tail(conn: &Connection) -> rusqlite::Result<Option<Chunk>> {
    edge(conn, "DESC")
}

fn edge(conn: &Connection, order: &str) -> rusqlite::Result<Option<Chunk>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached(&format!(
        "SELECT first_seq, last_seq, bytes, enqueued_us, format FROM chunks ORDER BY first_seq {order} LIMIT 1"
    ))?
    .query_row([], Chunk::from_row)
    .optional()
}

fn blob(conn: &Connection, chunk: &Chunk) -> rusqlite::Result<Vec<u8>> {
    conn.prepare_cached("SELECT events FROM chunks WHERE first_seq = ?1")?
        .query_row(params![chunk.first], |r| r.get(0))
}

/// The CEF length of every event of `chunk`, in order.
pub fn sizes(conn: &Connection, chunk: &Chunk) -> rusqlite::Result<Vec<i64>> {
    let blob = blob(conn, chunk)?;
    let mut records = chunk.records(&blob)?;
    let mut out = Vec::with_capacity(chunk.count().max(0) as usize);
    while let Some(r) = records.next_record()? {
        out.push(r.cef.len() as i64);
    }
    if out.len() as i64 != chunk.count() {
        return Err(damaged(chunk.first, "event count does not match its range"));
    }
    Ok(out)
}

/// CEF bytes of the events of `chunk` after `after` (reads the blob: only ever for the one
/// chunk a position falls inside).
pub fn bytes_after(conn: &Connection, chunk: &Chunk, after: i64) -> rusqlite::Result<i64> {
    if after < chunk.first {
        return Ok(chunk.bytes);
    }
    if after >= chunk.last {
        return Ok(0);
    }
    let blob = blob(conn, chunk)?;
    let mut records = chunk.records(&blob)?;
    let skipped = records.skip(after - chunk.first + 1)?;
    Ok(chunk.bytes - skipped)
}

/// Events and CEF bytes after `after`, and the oldest such event's enqueue time.
pub fn waiting(
    conn: &Connection,
    all: &[Chunk],
    after: i64,
) -> rusqlite::Result<(i64, i64, Option<i64>)> {
    let (mut events, mut bytes, mut oldest) = (0i64, 0i64, None);
    for c in all.iter().filter(|c| c.last > after) {
        events += c.last - c.first.max(after + 1) + 1;
        bytes += bytes_after(conn, c, after)?;
        oldest = Some(oldest.map_or(c.enqueued_us, |o: i64| o.min(c.enqueued_us)));
    }
    Ok((events, bytes, oldest))
}

/// Deletes the chunks wholly at or below `cut`; returns the CEF bytes freed.
pub fn delete_through(tx: &Transaction<'_>, cut: i64) -> rusqlite::Result<i64> {
    let mut freed = 0i64;
    let mut st = tx.prepare_cached(
        "DELETE FROM chunks WHERE first_seq <= ?1 AND last_seq <= ?1 RETURNING bytes",
    )?;
    let mut rows = st.query(params![cut])?;
    while let Some(r) = rows.next()? {
        freed += r.get::<_, i64>(0)?;
    }
    Ok(freed)
}

/// Removes the events of the oldest chunk up to and including `through` (which lies inside
/// it): the chunk is rewritten without them. Returns the CEF bytes freed.
pub fn trim_head(tx: &Transaction<'_>, chunk: &Chunk, through: i64) -> rusqlite::Result<i64> {
    let blob = blob(tx, chunk)?;
    let mut records = chunk.records(&blob)?;
    let freed = records.skip(through - chunk.first + 1)?;
    tx.prepare_cached(
        "UPDATE chunks SET first_seq = ?2, bytes = bytes - ?3, events = ?4 WHERE first_seq = ?1",
    )?
    .execute(params![
        chunk.first,
        through + 1,
        freed,
        records.reader.rest()
    ])?;
    Ok(freed)
}

/// Moves a version 2 queue (a row per event in `events`) into chunks, keeping every sequence
/// number; returns the highest one ever assigned (AUTOINCREMENT's record included).
pub fn migrate_v2(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    let old: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'events'",
        [],
        |r| r.get(0),
    )?;
    if !old {
        return Ok(0);
    }
    let mut last_seq: i64 =
        tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
    let has_sequence: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'sqlite_sequence'",
        [],
        |r| r.get(0),
    )?;
    if has_sequence {
        let recorded: Option<i64> = tx.query_row(
            "SELECT MAX(seq) FROM sqlite_sequence WHERE name = 'events'",
            [],
            |r| r.get(0),
        )?;
        last_seq = last_seq.max(recorded.unwrap_or(0));
    }
    {
        let mut read =
            tx.prepare("SELECT seq, enqueued_us, ioc_type, cef FROM events ORDER BY seq")?;
        let mut rows = read.query([])?;
        let mut w: Option<Writer> = None;
        while let Some(r) = rows.next()? {
            let (seq, enqueued_us): (i64, i64) = (r.get(0)?, r.get(1)?);
            // A chunk holds consecutive events of one enqueue time: start another at a gap.
            let fits = w
                .as_ref()
                .is_some_and(|w| w.next == seq && w.enqueued_us == enqueued_us);
            if !fits {
                if let Some(done) = w.take() {
                    done.finish(tx)?;
                }
                w = Some(Writer::new(seq - 1, enqueued_us));
            }
            if let Some(w) = w.as_mut() {
                w.push(
                    tx,
                    &Record::legacy(r.get_ref(2)?.as_str()?, r.get_ref(3)?.as_str()?),
                )?;
            }
        }
        if let Some(done) = w {
            done.finish(tx)?;
        }
    }
    tx.execute_batch("DROP TABLE events")?;
    Ok(last_seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{Id, Kind};

    fn open() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    fn fill(c: &mut Connection, n: usize) -> i64 {
        let tx = c.transaction().unwrap();
        let mut w = Writer::new(0, 7);
        for i in 0..n {
            let line = format!("line {i}");
            let kind = if i % 2 == 0 { Kind::Add } else { Kind::Expire };
            let id = format!("id-{i}");
            let event = Record {
                kind,
                key: Some(i as u64),
                last_seen_ms: Some(i as i64),
                id: Id::Text(&id),
                value: "",
                label: "ipv4",
                cef: &line,
            };
            w.push(&tx, &event).unwrap();
        }
        let last = w.finish(&tx).unwrap();
        tx.commit().unwrap();
        last
    }

    #[test]
    fn events_come_back_in_order_from_any_position() {
        let mut c = open();
        assert_eq!(fill(&mut c, 1300), 1300);
        assert_eq!(chunks(&c).unwrap().len(), 3);
        for after in [0, 1, 511, 512, 700, 1299, 1300] {
            let mut all = Vec::new();
            let mut at = after;
            loop {
                let b = read_after(&c, at, 512).unwrap();
                if b.is_empty() {
                    break;
                }
                assert!(b.len() <= 512);
                at = b.last().unwrap().seq;
                all.extend(b);
            }
            assert_eq!(all.len() as i64, 1300 - after);
            for (k, e) in all.iter().enumerate() {
                assert_eq!(e.seq, after + 1 + k as i64);
                assert_eq!(e.cef(), format!("line {}", e.seq - 1));
                assert_eq!(e.ioc_type(), "ipv4");
                let kind = if e.seq % 2 == 1 {
                    Kind::Add
                } else {
                    Kind::Expire
                };
                assert_eq!(e.kind, kind);
            }
        }
        // A read that starts inside a chunk stops at its end rather than split the next one.
        assert_eq!(read_after(&c, 700, 512).unwrap().len(), 1024 - 700);
        assert_eq!(read_after(&c, 0, 3).unwrap().len(), 3);
    }

    #[test]
    fn trimming_and_deleting_keep_bytes_and_sequence_numbers_right() {
        let mut c = open();
        fill(&mut c, 1000);
        let all = chunks(&c).unwrap();
        let total: i64 = all.iter().map(|c| c.bytes).sum();
        let tx = c.transaction().unwrap();
        let freed = trim_head(&tx, &all[0], 9).unwrap();
        assert_eq!(freed, "line 0".len() as i64 * 9); // "line 0".."line 8"
        assert_eq!(delete_through(&tx, 511).unwrap(), 0, "only whole chunks");
        let freed2 = delete_through(&tx, 512).unwrap();
        assert_eq!(freed + freed2, all[0].bytes);
        tx.commit().unwrap();
        let left = chunks(&c).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].bytes, total - all[0].bytes);
        let (n, bytes, oldest) = waiting(&c, &left, 600).unwrap();
        assert_eq!(n, 400);
        assert_eq!(
            bytes,
            (600..1000)
                .map(|i| format!("line {i}").len() as i64)
                .sum::<i64>()
        );
        assert_eq!(oldest, Some(7));
    }

    /// A format 1 chunk as a version 3 file holds it.
    fn old_chunk(c: &Connection, first: i64, lines: &[&str]) {
        let mut blob = Vec::new();
        for l in lines {
            blob.extend_from_slice(&4u16.to_le_bytes());
            blob.extend_from_slice(b"ipv4");
            blob.extend_from_slice(&(l.len() as u32).to_le_bytes());
            blob.extend_from_slice(l.as_bytes());
        }
        let bytes: usize = lines.iter().map(|l| l.len()).sum();
        c.execute(
            "INSERT INTO chunks (first_seq, last_seq, enqueued_us, bytes, events) VALUES (?1, ?2, 5, ?3, ?4)",
            params![first, first + lines.len() as i64 - 1, bytes as i64, blob],
        )
        .unwrap();
    }

    #[test]
    fn format_1_chunks_left_by_an_older_release_are_read_trimmed_and_deleted_beside_format_2() {
        let mut c = open();
        old_chunk(&c, 1, &["old 1", "old 2", "old 3"]);
        let tx = c.transaction().unwrap();
        let mut w = Writer::new(3, 7);
        w.push(&tx, &Record::legacy("url", "migrated 4")).unwrap();
        assert_eq!(w.finish(&tx).unwrap(), 4);
        tx.commit().unwrap();
        let all = chunks(&c).unwrap();
        assert_eq!(all.iter().map(|c| c.format).collect::<Vec<_>>(), [1, 2]);
        let got = read_after(&c, 1, 10).unwrap();
        assert_eq!(
            got.iter()
                .map(|e| (e.seq, e.kind, e.cef()))
                .collect::<Vec<_>>(),
            [
                (2, Kind::Legacy, "old 2"),
                (3, Kind::Legacy, "old 3"),
                (4, Kind::Legacy, "migrated 4")
            ]
        );
        assert_eq!(sizes(&c, &all[0]).unwrap(), [5, 5, 5]);
        let tx = c.transaction().unwrap();
        assert_eq!(trim_head(&tx, &all[0], 1).unwrap(), 5);
        tx.commit().unwrap();
        assert_eq!(read_after(&c, 0, 1).unwrap()[0].cef(), "old 2");
        let tx = c.transaction().unwrap();
        assert_eq!(delete_through(&tx, 3).unwrap(), 10);
        tx.commit().unwrap();
        assert_eq!(chunks(&c).unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_blob_is_an_error_not_a_panic() {
        let mut c = open();
        fill(&mut c, 10);
        c.execute("UPDATE chunks SET events = X'0500616263'", [])
            .unwrap();
        let e = read_after(&c, 0, 10).unwrap_err();
        assert!(e.to_string().contains("damaged"), "{e}");
        c.execute("UPDATE chunks SET events = X'0300697076FFFFFFFF'", [])
            .unwrap();
        assert!(read_after(&c, 0, 10).is_err());
    }
}
