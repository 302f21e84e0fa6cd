//! The latest event of each identity, for the indicator lifecycle: an event (an addition, an
//! update, a refresh, an expiry or a revocation of one identity) is *current* when no later
//! event of the same identity exists. Only a current addition, update or refresh is live; an
//! older event of the identity is stale and must never be expired or refreshed.
//!
//! The answer must hold for every identity the live set knows — millions, for months — while
//! the agent keeps neither a row per identity (a SQLite row per event costs several CPU
//! seconds per million to insert) nor an in-memory map (20 MB per million). So it is kept the
//! way log-structured stores keep an index: every commit appends one *run*, a blob of its
//! `(identity hash, sequence number)` pairs sorted by identity, 16 bytes a pair; runs of one
//! level are merged into one run of the next level once there are [`FANOUT`] of them, keeping
//! only the highest sequence number of each identity. The number of runs therefore grows with
//! the logarithm of the events, and the latest event of an identity is the highest sequence
//! number any run holds for it.
//!
//! Runs are read as they stream from the blob, never loaded whole: a lookup of a few
//! identities binary-searches each run in place; a lookup of many (an expiry wave) walks each
//! run once beside the sorted identities. Merging streams too, so memory stays a few buffers
//! whatever the size of the set.

use std::io::{Read, Seek, SeekFrom};

use rusqlite::blob::Blob;
use rusqlite::{params, Connection, DatabaseName, Transaction};

/// The runs. `level` 0 is one commit's; a run of level `n + 1` is [`FANOUT`] runs of level
/// `n` merged. `data` holds `entries` pairs (identity hash, then sequence number, both u64
/// little-endian), sorted by identity hash, each identity once.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS latest_runs (
    id INTEGER PRIMARY KEY,
    level INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    data BLOB NOT NULL
);
";

/// How many runs of one level are merged into one run of the next.
pub const FANOUT: usize = 4;

/// Bytes of one pair in a run.
const PAIR: usize = 16;

/// Pairs read from a blob at a time while a run streams.
const READ_PAIRS: usize = 4096;

/// Below this many identities per pair of a run, a lookup binary-searches the run in place
/// instead of walking it (each probe costs a seek and a 16-byte read).
const SEARCH_BELOW: u64 = 64;

/// Appends one run of `pairs` (identity hash, sequence number), in any order; an identity
/// given more than once keeps its highest sequence number. Nothing is written for none.
pub fn append(tx: &Transaction<'_>, pairs: &mut [(u64, u64)]) -> rusqlite::Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    pairs.sort_unstable();
    let mut data = Vec::with_capacity(pairs.len() * PAIR);
    let mut entries = 0i64;
    for (i, &(ident, seq)) in pairs.iter().enumerate() {
        // Sorted by identity, then sequence: the last of a group is the highest.
        if pairs.get(i + 1).is_some_and(|next| next.0 == ident) {
            continue;
        }
        data.extend_from_slice(&ident.to_le_bytes());
        data.extend_from_slice(&seq.to_le_bytes());
        entries += 1;
    }
    tx.execute(
        "INSERT INTO latest_runs (level, entries, data) VALUES (0, ?1, ?2)",
        params![entries, data],
    )?;
    Ok(())
}

/// One run's row.
#[derive(Debug, Clone, Copy)]
struct RunRow {
    id: i64,
    level: i64,
    entries: u64,
}

fn runs(conn: &Connection) -> rusqlite::Result<Vec<RunRow>> {
    let mut st = conn.prepare_cached("SELECT id, level, entries FROM latest_runs ORDER BY id")?;
    let rows = st.query_map([], |r| {
        Ok(RunRow {
            id: r.get(0)?,
            level: r.get(1)?,
            entries: r.get::<_, i64>(2)?.max(0) as u64,
        })
    })?;
    rows.collect()
}

/// A run read in order, a buffer at a time.
struct Cursor<'c> {
    blob: Blob<'c>,
    left: u64,
    buf: Vec<u8>,
    at: usize,
}

impl<'c> Cursor<'c> {
    fn open(conn: &'c Connection, run: RunRow) -> rusqlite::Result<Cursor<'c>> {
        Ok(Cursor {
            blob: conn.blob_open(DatabaseName::Main, "latest_runs", "data", run.id, true)?,
            left: run.entries,
            buf: Vec::new(),
            at: 0,
        })
    }

    /// The next pair, or `None` at the end of the run.
    fn next_pair(&mut self) -> rusqlite::Result<Option<(u64, u64)>> {
        if self.at == self.buf.len() {
            if self.left == 0 {
                return Ok(None);
            }
            let n = self.left.min(READ_PAIRS as u64);
            self.buf.resize(n as usize * PAIR, 0);
            self.blob.read_exact(&mut self.buf).map_err(io_error)?;
            self.left -= n;
            self.at = 0;
        }
        let pair = decode(&self.buf[self.at..self.at + PAIR]);
        self.at += PAIR;
        Ok(Some(pair))
    }
}

fn decode(b: &[u8]) -> (u64, u64) {
    let mut ident = [0u8; 8];
    let mut seq = [0u8; 8];
    ident.copy_from_slice(&b[..8]);
    seq.copy_from_slice(&b[8..PAIR]);
    (u64::from_le_bytes(ident), u64::from_le_bytes(seq))
}

/// A run that cannot be read or written as its row says (a damaged file) is an error of the
/// whole lookup, never a panic.
fn io_error(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Blob,
        format!("a run of the latest-event index is damaged: {e}").into(),
    )
}

/// The pair at `index` of a run.
fn pair_at(blob: &mut Blob<'_>, index: u64) -> rusqlite::Result<(u64, u64)> {
    let mut b = [0u8; PAIR];
    blob.seek(SeekFrom::Start(index * PAIR as u64))
        .map_err(io_error)?;
    blob.read_exact(&mut b).map_err(io_error)?;
    Ok(decode(&b))
}

/// The sequence number a run holds for `ident`, by binary search in the blob.
fn search(blob: &mut Blob<'_>, entries: u64, ident: u64) -> rusqlite::Result<Option<u64>> {
    let (mut lo, mut hi) = (0u64, entries);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (at, seq) = pair_at(blob, mid)?;
        match at.cmp(&ident) {
            std::cmp::Ordering::Equal => return Ok(Some(seq)),
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    Ok(None)
}

/// The latest sequence number of each of `idents` (sorted ascending, each once): `None` for
/// an identity no run holds.
pub fn latest(conn: &Connection, idents: &[u64]) -> rusqlite::Result<Vec<Option<u64>>> {
    debug_assert!(idents.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
    let mut found: Vec<Option<u64>> = vec![None; idents.len()];
    let mut keep = |i: usize, seq: u64| {
        found[i] = Some(found[i].map_or(seq, |s: u64| s.max(seq)));
    };
    for run in runs(conn)? {
        if run.entries == 0 || idents.is_empty() {
            continue;
        }
        if (idents.len() as u64).saturating_mul(SEARCH_BELOW) < run.entries {
            let mut blob =
                conn.blob_open(DatabaseName::Main, "latest_runs", "data", run.id, true)?;
            for (i, &ident) in idents.iter().enumerate() {
                if let Some(seq) = search(&mut blob, run.entries, ident)? {
                    keep(i, seq);
                }
            }
        } else {
            let mut cursor = Cursor::open(conn, run)?;
            let mut i = 0;
            while let Some((ident, seq)) = cursor.next_pair()? {
                while i < idents.len() && idents[i] < ident {
                    i += 1;
                }
                if i == idents.len() {
                    break;
                }
                if idents[i] == ident {
                    keep(i, seq);
                }
            }
        }
    }
    Ok(found)
}

/// Merges runs while some level holds [`FANOUT`] of them: the oldest `FANOUT` of that level
/// become one run of the next level. Returns how many merges were made.
pub fn compact(tx: &Transaction<'_>) -> rusqlite::Result<usize> {
    let mut merges = 0;
    loop {
        let all = runs(tx)?;
        let Some(level) = (0..=all.iter().map(|r| r.level).max().unwrap_or(0))
            .find(|l| all.iter().filter(|r| r.level == *l).count() >= FANOUT)
        else {
            return Ok(merges);
        };
        let group: Vec<RunRow> = all
            .into_iter()
            .filter(|r| r.level == level)
            .take(FANOUT)
            .collect();
        merge(tx, &group, level + 1)?;
        merges += 1;
    }
}

/// Writes the union of `group` as one run of `level` (each identity once, with its highest
/// sequence number) and deletes the group. Streams twice: once to count, once to write.
fn merge(tx: &Transaction<'_>, group: &[RunRow], level: i64) -> rusqlite::Result<()> {
    let mut entries = 0u64;
    merged(tx, group, |_| {
        entries += 1;
        Ok(())
    })?;
    tx.execute(
        "INSERT INTO latest_runs (level, entries, data) VALUES (?1, ?2, zeroblob(?3))",
        params![level, entries as i64, (entries as usize * PAIR) as i64],
    )?;
    let id = tx.last_insert_rowid();
    let mut out = tx.blob_open(DatabaseName::Main, "latest_runs", "data", id, false)?;
    let mut buf = Vec::with_capacity(READ_PAIRS * PAIR);
    merged(tx, group, |(ident, seq)| {
        buf.extend_from_slice(&ident.to_le_bytes());
        buf.extend_from_slice(&seq.to_le_bytes());
        if buf.len() >= READ_PAIRS * PAIR {
            std::io::Write::write_all(&mut out, &buf).map_err(io_error)?;
            buf.clear();
        }
        Ok(())
    })?;
    std::io::Write::write_all(&mut out, &buf).map_err(io_error)?;
    drop(out);
    for r in group {
        tx.execute("DELETE FROM latest_runs WHERE id = ?1", params![r.id])?;
    }
    Ok(())
}

/// Calls `each` with the union of `group`'s pairs in identity order, each identity once with
/// its highest sequence number.
fn merged(
    conn: &Connection,
    group: &[RunRow],
    mut each: impl FnMut((u64, u64)) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut cursors = group
        .iter()
        .map(|r| Cursor::open(conn, *r))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut heads = cursors
        .iter_mut()
        .map(Cursor::next_pair)
        .collect::<rusqlite::Result<Vec<_>>>()?;
    while let Some(ident) = heads.iter().flatten().map(|p| p.0).min() {
        let mut seq = 0;
        for (head, cursor) in heads.iter_mut().zip(cursors.iter_mut()) {
            if let Some((i, s)) = *head {
                if i == ident {
                    seq = seq.max(s);
                    *head = cursor.next_pair()?;
                }
            }
        }
        each((ident, seq))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    fn commit(c: &mut Connection, pairs: &[(u64, u64)]) {
        let tx = c.transaction().unwrap();
        append(&tx, &mut pairs.to_vec()).unwrap();
        compact(&tx).unwrap();
        tx.commit().unwrap();
    }

    fn levels(c: &Connection) -> Vec<i64> {
        runs(c).unwrap().iter().map(|r| r.level).collect()
    }

    #[test]
    fn the_latest_event_of_an_identity_is_its_highest_sequence_number_in_any_run() {
        let mut c = db();
        commit(&mut c, &[(7, 1), (9, 2), (7, 3)]);
        commit(&mut c, &[(9, 4)]);
        let got = latest(&c, &[5, 7, 9, 11]).unwrap();
        assert_eq!(got, vec![None, Some(3), Some(4), None]);
    }

    #[test]
    fn runs_merge_by_level_so_their_number_grows_with_the_logarithm() {
        let mut c = db();
        for i in 0..(FANOUT * FANOUT) as u64 {
            commit(&mut c, &[(i % 5, i + 1), (1000 + i, i + 1)]);
        }
        assert_eq!(levels(&c), vec![2], "16 commits are one run of level 2");
        let got = latest(&c, &[0, 1, 2, 3, 4, 1000, 1015]).unwrap();
        assert_eq!(
            got,
            vec![
                Some(16),
                Some(12),
                Some(13),
                Some(14),
                Some(15),
                Some(1),
                Some(16)
            ]
        );
        commit(&mut c, &[(3, 17)]);
        assert_eq!(levels(&c), vec![2, 0]);
        assert_eq!(latest(&c, &[3]).unwrap(), vec![Some(17)]);
    }

    /// Against a plain map, with both lookup strategies (few identities: binary search; many:
    /// walking the runs) and merges of every size.
    #[test]
    fn lookups_agree_with_a_map_whatever_the_merges() {
        let mut c = db();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut seq = 0u64;
        for commit_no in 0..40 {
            let n = 1 + (commit_no * 37) % 300;
            let mut pairs = Vec::new();
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // A small identity space, so identities recur across commits.
                let ident = x % 2000;
                seq += 1;
                pairs.push((ident, seq));
                model.insert(ident, seq);
            }
            commit(&mut c, &pairs);
            let all: Vec<u64> = (0..2100).collect();
            let got = latest(&c, &all).unwrap();
            for (i, g) in all.iter().zip(got) {
                assert_eq!(
                    g,
                    model.get(i).copied(),
                    "identity {i} after commit {commit_no}"
                );
            }
            for probe in [0u64, 17, 1999, 2050] {
                assert_eq!(
                    latest(&c, &[probe]).unwrap()[0],
                    model.get(&probe).copied(),
                    "single lookup of {probe}"
                );
            }
        }
        assert!(runs(&c).unwrap().len() < 12, "{:?}", levels(&c));
    }

    #[test]
    fn a_damaged_run_is_an_error_not_a_panic() {
        let c = db();
        c.execute(
            "INSERT INTO latest_runs (level, entries, data) VALUES (0, 5, x'0102')",
            [],
        )
        .unwrap();
        assert!(latest(&c, &[1, 2, 3]).is_err());
    }
}
