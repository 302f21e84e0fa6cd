//! The dedup index: the last queued version of every indicator in the dedup window.
//!
//! On disk it is an append-only table, `seen_log`: one row per committed page, written in the
//! same transaction as the page's events, holding every version the page queued as packed
//! 20-byte records (identity hash u64, `last_seen` µs i64, confidence hash u32; little-endian;
//! `last_seen` absent = i64::MIN, confidence absent = 0). One row per page costs next to
//! nothing; the b-tree keyed by identity text that it replaces cost 10–30 CPU seconds per
//! million indicators on a backfill (every commit rewrote pages all over the tree) and was the
//! pipeline's bottleneck.
//!
//! Lookups go to memory: a sorted array of (identity hash, `last_seen`, confidence hash),
//! 20 bytes per indicator, loaded from `seen_log` on the first commit after start (the newest
//! row of each identity wins). It changes only after a transaction commits, so a page that
//! fails leaves both in step.
//!
//! The identity hash is SipHash-2-4 under a random key made when the state file is created
//! (kept in `meta`): 64 bits make an accidental collision in a million identities about one in
//! fifty million, and without the key nobody can craft one to hide an indicator behind another.
//! The confidence is compared by a 32-bit hash; a change between two confidences that collide
//! (one in two billion) is taken as no change.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::encode::cef::Act;
use crate::indicator::Indicator;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS seen_log (
    id INTEGER PRIMARY KEY,
    recorded_us INTEGER NOT NULL,
    versions BLOB NOT NULL
);
";

/// `last_seen` absent (no real timestamp is this far back: chrono stops at year −262144).
const NO_TIME: i64 = i64::MIN;

/// The version of an indicator as the index keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    last_us: i64,
    /// 0 = no confidence.
    conf: u32,
}

impl Version {
    pub fn of(ind: &Indicator) -> Version {
        Version {
            last_us: ind.last_seen.map_or(NO_TIME, |t| t.timestamp_micros()),
            conf: conf_hash(ind.confidence.as_deref()),
        }
    }

    /// Whether `self` (just fetched) is news against `seen` (the last queued): a newer
    /// `last_seen`, or a changed confidence at the same `last_seen`. An older `last_seen`
    /// (a stale copy from a cache or a shifted page) is not; neither is a missing one.
    pub fn against(self, seen: Option<Version>) -> Option<Act> {
        let Some(seen) = seen else {
            return Some(Act::Add);
        };
        let newer = self.last_us != NO_TIME && self.last_us > seen.last_us;
        let same_time = self.last_us == seen.last_us;
        (newer || (same_time && self.conf != seen.conf)).then_some(Act::Update)
    }
}

fn conf_hash(c: Option<&str>) -> u32 {
    let Some(c) = c else { return 0 };
    // FNV-1a; 0 is kept for "none".
    let mut h: u32 = 0x811c_9dc5;
    for b in c.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// One identity's last version; packed so a million take 20 MB.
#[repr(C, packed(4))]
#[derive(Clone, Copy)]
struct Entry {
    key: u64,
    last_us: i64,
    conf: u32,
}

const RECORD: usize = 20;

impl Entry {
    fn write(self, out: &mut Vec<u8>) {
        let (key, last_us, conf) = (self.key, self.last_us, self.conf);
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&last_us.to_le_bytes());
        out.extend_from_slice(&conf.to_le_bytes());
    }

    /// The records of one `seen_log` row (a torn trailing record is ignored).
    fn read_all(blob: &[u8]) -> impl Iterator<Item = Entry> + '_ {
        blob.chunks_exact(RECORD).map(|r| {
            let u64_at = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&r[i..i + 8]);
                b
            };
            let mut c = [0u8; 4];
            c.copy_from_slice(&r[16..20]);
            Entry {
                key: u64::from_le_bytes(u64_at(0)),
                last_us: i64::from_le_bytes(u64_at(8)),
                conf: u32::from_le_bytes(c),
            }
        })
    }

    fn version(self) -> Version {
        Version {
            last_us: self.last_us,
            conf: self.conf,
        }
    }
}

/// Sorts by key (stably) and keeps only the last entry of each key.
fn sort_keeping_last(entries: &mut Vec<Entry>) {
    entries.sort_by_key(|e| e.key);
    let mut kept = 0;
    for i in 0..entries.len() {
        if i + 1 == entries.len() || entries[i + 1].key != entries[i].key {
            entries[kept] = entries[i];
            kept += 1;
        }
    }
    entries.truncate(kept);
}

/// Where [`DedupIndex::look_up_page`] found a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Main(usize),
    Recent(usize),
    Absent,
}

/// What [`DedupIndex::look_up_page`] found, per key of the page.
pub struct PageLookup {
    /// The version last recorded.
    pub known: Vec<Option<Version>>,
    /// Whether the key occurs more than once in the page.
    pub repeated: Vec<bool>,
    /// Where it was, for [`DedupIndex::apply_at`].
    pub slots: Vec<Slot>,
}

/// The index of the first entry of sorted `entries` whose key is ≥ `key`, probing 1, 2, 4, …
/// entries ahead before a binary search of the last step: cheap when the answer is near the
/// front.
fn gallop(entries: &[Entry], key: u64) -> usize {
    let mut lo = 0;
    let mut step = 1;
    while lo + step <= entries.len() && entries[lo + step - 1].key < key {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step).min(entries.len());
    lo + entries[lo..hi].partition_point(|e| e.key < key)
}

/// `recent` is merged into the main array once it holds more than this many keys (or an
/// eighth of the main array, whichever is more).
const RECENT_MIN: usize = 1 << 16;

/// Hashes identities under one state file's key (cheap to copy: the poller hashes a page
/// before it takes the store's lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keyer {
    sip: (u64, u64),
}

impl Keyer {
    /// A keyer with a fixed key, for hashing without a state file (tests, tools): its keys
    /// match no state file's.
    pub fn fixed() -> Keyer {
        Keyer { sip: (1, 2) }
    }

    /// The identity's hash: its `id`, else its type and value (an indicator without an id).
    pub fn key(&self, ind: &Indicator) -> u64 {
        use std::hash::Hasher;
        // The bytes of `Indicator::identity`, written without building the string (the tests
        // check that both agree).
        let mut h = self.hasher();
        match &ind.id {
            Some(id) => {
                h.write(b"id:");
                h.write(id.as_bytes());
            }
            None => {
                h.write(b"tv:");
                h.write(ind.ioc_type.as_str().as_bytes());
                h.write(b":");
                h.write(ind.value.as_bytes());
            }
        }
        h.finish()
    }

    /// The key of an indicator whose id is `id`: what a queue record whose id is a UUID does
    /// not store (see `record`).
    pub fn key_of_id(&self, id: &str) -> u64 {
        use std::hash::Hasher;
        let mut h = self.hasher();
        h.write(b"id:");
        h.write(id.as_bytes());
        h.finish()
    }

    /// The hash of an identity written out (`id:…` / `tv:type:value`), as version 1 kept it:
    /// the same bytes [`Keyer::key`] hashes.
    fn key_of_identity(&self, identity: &str) -> u64 {
        use std::hash::Hasher;
        let mut h = self.hasher();
        h.write(identity.as_bytes());
        h.finish()
    }

    /// SipHash-2-4 under this state file's key: exactly that algorithm (checked against the
    /// reference vectors in the tests), which std keeps stable under the deprecated name,
    /// unlike `DefaultHasher`.
    #[allow(deprecated)]
    fn hasher(&self) -> std::hash::SipHasher {
        std::hash::SipHasher::new_with_keys(self.sip.0, self.sip.1)
    }
}

pub struct DedupIndex {
    keyer: Keyer,
    /// Sorted by key, one entry per key.
    entries: Vec<Entry>,
    /// Keys added since `entries` was last rebuilt: sorted by key, one entry per key, none of
    /// them in `entries`. Merging every page's new keys into the main array rewrote all of it
    /// (and its directory) per page, quadratic over a backfill (~10 % of a million's CPU);
    /// they are merged here first and into `entries` when this grows past an eighth of it.
    recent: Vec<Entry>,
    /// `dir[p]` is the first entry whose key's top `bits` bits are ≥ `p`: a lookup binary
    /// searches only the few entries of its prefix (keys are uniform hashes), one or two cache
    /// misses instead of twenty on a million entries.
    dir: Vec<u32>,
    bits: u32,
    loaded: bool,
}

impl DedupIndex {
    pub fn new(sip: (u64, u64)) -> DedupIndex {
        DedupIndex {
            keyer: Keyer { sip },
            entries: Vec::new(),
            recent: Vec::new(),
            dir: vec![0, 0],
            bits: 0,
            loaded: false,
        }
    }

    pub fn keyer(&self) -> Keyer {
        self.keyer
    }

    #[cfg(test)]
    pub fn key(&self, ind: &Indicator) -> u64 {
        self.keyer.key(ind)
    }

    /// Reads `seen_log` into memory unless that was done already.
    pub fn ensure_loaded(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if self.loaded {
            return Ok(());
        }
        let mut entries = Vec::new();
        let mut st = conn.prepare("SELECT versions FROM seen_log ORDER BY id")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            entries.extend(Entry::read_all(r.get_ref(0)?.as_blob()?));
        }
        // Rows of one key are in commit order: the last wins.
        sort_keeping_last(&mut entries);
        entries.shrink_to_fit();
        self.entries = entries;
        self.loaded = true;
        self.rebuild_dir();
        Ok(())
    }

    /// About four entries per directory slot, at most 2^20 slots (4 MiB).
    fn rebuild_dir(&mut self) {
        let n = self.entries.len();
        let bits = (usize::BITS - (n / 4).leading_zeros()).min(20);
        let slots = 1usize << bits;
        let mut dir = std::mem::take(&mut self.dir);
        dir.clear();
        dir.reserve(slots + 1);
        let mut i = 0usize;
        for p in 0..slots as u64 {
            while i < n && self.prefix(self.entries[i].key, bits) < p {
                i += 1;
            }
            dir.push(i as u32);
        }
        dir.push(n as u32);
        self.dir = dir;
        self.bits = bits;
    }

    fn prefix(&self, key: u64, bits: u32) -> u64 {
        if bits == 0 {
            0
        } else {
            key >> (64 - bits)
        }
    }

    fn find(&self, key: u64) -> Result<usize, usize> {
        let p = self.prefix(key, self.bits) as usize;
        let (lo, hi) = (self.dir[p] as usize, self.dir[p + 1] as usize);
        match self.entries[lo..hi].binary_search_by_key(&key, |e| e.key) {
            Ok(i) => Ok(lo + i),
            Err(i) => Err(lo + i),
        }
    }

    #[cfg(test)]
    pub fn get(&self, key: u64) -> Option<Version> {
        self.version_at(self.slot(key))
    }

    #[cfg(test)]
    fn slot(&self, key: u64) -> Slot {
        if let Ok(i) = self.recent.binary_search_by_key(&key, |e| e.key) {
            return Slot::Recent(i);
        }
        match self.find(key) {
            Ok(i) => Slot::Main(i),
            Err(_) => Slot::Absent,
        }
    }

    fn version_at(&self, slot: Slot) -> Option<Version> {
        match slot {
            Slot::Recent(i) => self.recent.get(i).map(|e| e.version()),
            Slot::Main(i) => self.entries.get(i).map(|e| e.version()),
            Slot::Absent => None,
        }
    }

    /// For each key of a page: the version last recorded for it, and whether
    /// its key occurs more than once in the page. The lookups are made in key order: the
    /// index is read front to back instead of at random (fewer cache and TLB misses).
    pub fn look_up_page(&self, keys: &[u64]) -> PageLookup {
        let mut order: Vec<(u64, u32)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, i as u32))
            .collect();
        order.sort_unstable();
        let mut found = PageLookup {
            known: vec![None; keys.len()],
            repeated: vec![false; keys.len()],
            slots: vec![Slot::Absent; keys.len()],
        };
        // `recent` is searched forward from the previous key's place (galloping): the keys
        // come in order, so each search covers the few entries between two of them.
        let mut from = 0;
        for (w, &(key, i)) in order.iter().enumerate() {
            from += gallop(&self.recent[from..], key);
            let slot = match self.recent.get(from) {
                Some(e) if e.key == key => Slot::Recent(from),
                _ => match self.find(key) {
                    Ok(m) => Slot::Main(m),
                    Err(_) => Slot::Absent,
                },
            };
            found.known[i as usize] = self.version_at(slot);
            found.slots[i as usize] = slot;
            if w > 0 && order[w - 1].0 == key {
                found.repeated[i as usize] = true;
                found.repeated[order[w - 1].1 as usize] = true;
            }
        }
        found
    }

    /// Merges sorted, key-unique `fresh` (no key of which is in `into`) into sorted `into`,
    /// in place from the back.
    fn merge(into: &mut Vec<Entry>, fresh: &[Entry]) {
        let Some(&filler) = fresh.first() else {
            return;
        };
        let old = into.len();
        into.resize(old + fresh.len(), filler);
        let (mut i, mut j, mut w) = (old, fresh.len(), old + fresh.len());
        while j > 0 {
            w -= 1;
            if i > 0 && into[i - 1].key > fresh[j - 1].key {
                into[w] = into[i - 1];
                i -= 1;
            } else {
                into[w] = fresh[j - 1];
                j -= 1;
            }
        }
    }

    /// Moves `recent` into the main array.
    fn consolidate(&mut self) {
        if self.recent.is_empty() {
            return;
        }
        let recent = std::mem::take(&mut self.recent);
        Self::merge(&mut self.entries, &recent);
        self.rebuild_dir();
    }

    /// Takes in what a committed page recorded (in page order: a later one of the same key
    /// wins).
    #[cfg(test)]
    pub fn apply(&mut self, updates: &[(u64, Version)]) {
        let slots: Vec<Slot> = updates.iter().map(|u| self.slot(u.0)).collect();
        self.apply_at(updates, &slots);
    }

    /// [`DedupIndex::apply`] with each key's slot as [`DedupIndex::look_up_page`] found it (the
    /// index must not have changed since): known keys are not looked up twice.
    pub fn apply_at(&mut self, updates: &[(u64, Version)], slots: &[Slot]) {
        if !self.loaded || updates.is_empty() {
            return;
        }
        let mut fresh: Vec<Entry> = Vec::new();
        for (&(key, v), &slot) in updates.iter().zip(slots) {
            let e = Entry {
                key,
                last_us: v.last_us,
                conf: v.conf,
            };
            let at = match slot {
                Slot::Recent(i) => self.recent.get_mut(i),
                Slot::Main(i) => self.entries.get_mut(i),
                Slot::Absent => None,
            };
            match at {
                Some(old) if old.key == key => *old = e,
                _ => fresh.push(e),
            }
        }
        if fresh.is_empty() {
            return;
        }
        // Within the page a key can be new twice: keep its last.
        sort_keeping_last(&mut fresh);
        Self::merge(&mut self.recent, &fresh);
        if self.recent.len() > RECENT_MIN.max(self.entries.len() / 8) {
            self.consolidate();
        }
    }

    /// Forgets versions recorded before `before_us`: deletes their rows, and drops an identity
    /// from memory when its last version was in a deleted row. Returns how many versions were
    /// forgotten.
    ///
    /// A row's stamp is this host's clock at its commit, and rows are appended in commit
    /// order: a row was committed no later than the stamp of any later row, and no later than
    /// `now_us`. A stamp ahead of those (the clock jumped forward, then was set back) therefore
    /// holds back nothing behind it: every row up to the last one stamped before `before_us`
    /// is old (every row, when `now_us` is before it), whatever its own stamp says, and every
    /// row after that one may be recent and is kept.
    pub fn prune(
        &mut self,
        tx: &Transaction<'_>,
        before_us: i64,
        now_us: i64,
    ) -> rusqlite::Result<usize> {
        // Found from the newest row back, reading stamps only: the rows kept, and the one that
        // ends them, are all that is scanned.
        let last_id: Option<i64> = if now_us < before_us {
            tx.query_row("SELECT MAX(id) FROM seen_log", [], |r| r.get(0))?
        } else {
            tx.query_row(
                "SELECT id FROM seen_log WHERE recorded_us < ?1 ORDER BY id DESC LIMIT 1",
                params![before_us],
                |r| r.get(0),
            )
            .optional()?
        };
        let Some(last_id) = last_id else {
            return Ok(0);
        };
        // Blobs are read only for the rows deleted, and only when memory must follow.
        let mut versions = 0;
        let mut gone: Vec<Entry> = Vec::new();
        if self.loaded {
            let mut st = tx.prepare("SELECT versions FROM seen_log WHERE id <= ?1 ORDER BY id")?;
            let mut rows = st.query(params![last_id])?;
            while let Some(r) = rows.next()? {
                let blob = r.get_ref(0)?.as_blob()?;
                versions += blob.len() / RECORD;
                gone.extend(Entry::read_all(blob));
            }
        } else {
            let bytes: i64 = tx.query_row(
                "SELECT COALESCE(SUM(length(versions) / ?2), 0) FROM seen_log WHERE id <= ?1",
                params![last_id, RECORD as i64],
                |r| r.get(0),
            )?;
            versions = bytes as usize;
        }
        tx.execute("DELETE FROM seen_log WHERE id <= ?1", params![last_id])?;
        if !gone.is_empty() {
            self.consolidate();
            // Per identity, the last version the deleted rows held (they are in commit order).
            // Memory holds that same version only when no later row recorded another: then the
            // identity is gone from disk, and it goes from memory. (Consecutive versions of one
            // identity always differ, so a later row holding it again must follow a different
            // one in between; only a flip back to a deleted version, A -> B -> A across the
            // cut, is forgotten early: it is then queued once more, never lost.)
            sort_keeping_last(&mut gone);
            self.entries.retain(|e| {
                let key = e.key;
                match gone.binary_search_by_key(&key, |g| g.key) {
                    Ok(i) => gone[i].version() != e.version(),
                    Err(_) => true,
                }
            });
            self.rebuild_dir();
        }
        Ok(versions)
    }

    pub fn len(&self) -> usize {
        self.entries.len() + self.recent.len()
    }

    /// Frees the in-memory copy (the next commit reads `seen_log` again). Returns the bytes
    /// given back.
    pub fn unload(&mut self) -> usize {
        let bytes = (self.entries.capacity() + self.recent.capacity())
            * std::mem::size_of::<Entry>()
            + self.dir.capacity() * std::mem::size_of::<u32>();
        self.entries = Vec::new();
        self.recent = Vec::new();
        self.dir = vec![0, 0];
        self.bits = 0;
        self.loaded = false;
        bytes
    }
}

/// Records the versions a page queued, in page order (inside the page's transaction).
pub fn record(
    tx: &Transaction<'_>,
    versions: &[(u64, Version)],
    recorded_us: i64,
) -> rusqlite::Result<()> {
    if versions.is_empty() {
        return Ok(());
    }
    let mut blob = Vec::with_capacity(versions.len() * RECORD);
    for &(key, v) in versions {
        Entry {
            key,
            last_us: v.last_us,
            conf: v.conf,
        }
        .write(&mut blob);
    }
    tx.prepare_cached("INSERT INTO seen_log (recorded_us, versions) VALUES (?1, ?2)")?
        .execute(params![recorded_us, blob])?;
    Ok(())
}

/// The SipHash key of this state file, made on first use.
pub fn sip_key(tx: &Transaction<'_>) -> rusqlite::Result<(u64, u64)> {
    let stored: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'seen_key'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(k) = stored.as_deref().and_then(parse_key) {
        return Ok(k);
    }
    let mut bytes = [0u8; 16];
    let made = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    if made.is_err() {
        // No randomness from the OS: fall back to the clock and pid (still unpredictable
        // enough to stop a crafted collision, and never fatal).
        let t = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
        bytes[..8].copy_from_slice(&t.to_le_bytes());
        bytes[8..].copy_from_slice(&u64::from(std::process::id()).to_le_bytes());
    }
    let k0 = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
    let k1 = u64::from_le_bytes(bytes[8..].try_into().unwrap_or_default());
    tx.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('seen_key', ?1)",
        params![format!("{k0:016x}{k1:016x}")],
    )?;
    Ok((k0, k1))
}

fn parse_key(s: &str) -> Option<(u64, u64)> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    Some((
        u64::from_str_radix(&s[..16], 16).ok()?,
        u64::from_str_radix(&s[16..], 16).ok()?,
    ))
}

/// Moves a version-1 state file's `seen` table (keyed by the identity text) into `seen_log`.
pub fn migrate_v1(tx: &Transaction<'_>, index: &DedupIndex) -> rusqlite::Result<()> {
    let old: bool = tx.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'seen'",
        [],
        |r| r.get(0),
    )?;
    if !old {
        return Ok(());
    }
    {
        let mut read = tx.prepare(
            "SELECT identity, last_seen_us, confidence, recorded_us FROM seen ORDER BY recorded_us",
        )?;
        let mut rows = read.query([])?;
        // Rows of up to a page's size; each is stamped with its newest `recorded_us`, so
        // nothing is forgotten earlier than it would have been.
        let mut chunk: Vec<(u64, Version)> = Vec::new();
        let mut newest = 0i64;
        loop {
            let row = rows.next()?;
            if let Some(r) = row {
                let identity: String = r.get(0)?;
                let v = Version {
                    last_us: r.get::<_, Option<i64>>(1)?.unwrap_or(NO_TIME),
                    conf: conf_hash(r.get_ref(2)?.as_str_or_null()?),
                };
                chunk.push((index.keyer.key_of_identity(&identity), v));
                newest = newest.max(r.get(3)?);
            }
            if chunk.len() >= 10_000 || (row.is_none() && !chunk.is_empty()) {
                record(tx, &chunk, newest)?;
                chunk.clear();
            }
            if row.is_none() {
                break;
            }
        }
    }
    tx.execute_batch("DROP INDEX IF EXISTS seen_recorded; DROP TABLE seen;")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_siphash_2_4() {
        use std::hash::Hasher;
        // Reference vectors (Aumasson & Bernstein): key 00..0f, message 00..(len-1).
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        let expect: [(usize, u64); 3] = [
            (0, 0x726f_db47_dd0e_0e31),
            (1, 0x74f8_39c5_93dc_67fd),
            (15, 0xa129_ca61_49be_45e5),
        ];
        for (len, want) in expect {
            let msg: Vec<u8> = (0..len as u8).collect();
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            h.write(&msg);
            assert_eq!(h.finish(), want, "length {len}");
        }
    }

    #[test]
    fn hashing_an_indicator_equals_hashing_its_identity_text() {
        let idx = DedupIndex::new((7, 9));
        let mut ind =
            crate::decode::item(&serde_json::json!({"id": "abc", "type": "ipv4", "value": "v"}))
                .unwrap();
        assert_eq!(idx.key(&ind), idx.keyer.key_of_identity(&ind.identity()));
        if let Some(id) = &ind.id {
            assert_eq!(idx.key(&ind), idx.keyer.key_of_id(id));
        }
        ind.id = None;
        assert_eq!(idx.key(&ind), idx.keyer.key_of_identity(&ind.identity()));
        assert_ne!(DedupIndex::new((7, 10)).key(&ind), idx.key(&ind));
    }

    #[test]
    fn apply_merges_new_keys_in_order_and_updates_old_ones() {
        let mut idx = DedupIndex::new((1, 2));
        idx.loaded = true;
        let v = |t| Version {
            last_us: t,
            conf: 0,
        };
        idx.apply(&[(50, v(1)), (10, v(1)), (30, v(1))]);
        idx.apply(&[(20, v(2)), (30, v(2)), (60, v(2)), (20, v(3)), (5, v(2))]);
        // New keys wait in `recent`; a key in `recent` is updated there.
        idx.apply(&[(60, v(4))]);
        for merged in [false, true] {
            if merged {
                idx.consolidate();
                assert!(idx.recent.is_empty());
            }
            let mut keys: Vec<u64> = idx.entries.iter().map(|e| e.key).collect();
            keys.extend(idx.recent.iter().map(|e| e.key));
            keys.sort_unstable();
            assert_eq!(keys, vec![5, 10, 20, 30, 50, 60]);
            assert_eq!(idx.get(20), Some(v(3)));
            assert_eq!(idx.get(30), Some(v(2)));
            assert_eq!(idx.get(10), Some(v(1)));
            assert_eq!(idx.get(60), Some(v(4)));
            assert_eq!(idx.get(11), None);
        }
    }

    #[test]
    fn lookups_through_the_directory_find_every_key_and_no_other() {
        let mut idx = DedupIndex::new((1, 2));
        idx.loaded = true;
        let v = Version {
            last_us: 1,
            conf: 0,
        };
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            // splitmix64
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut all = Vec::new();
        for round in 0..20 {
            let mut page: Vec<(u64, Version)> = (0..500).map(|_| (next(), v)).collect();
            // Extremes and repeats of earlier keys.
            page.push((0, v));
            page.push((u64::MAX, v));
            if round > 0 {
                page.push((all[round * 7], v));
            }
            all.extend(page.iter().map(|p| p.0));
            idx.apply(&page);
        }
        all.sort_unstable();
        all.dedup();
        // 10k keys stay below the merge threshold: check them in `recent`, then merged.
        for merged in [false, true] {
            if merged {
                idx.consolidate();
                assert!(idx.recent.is_empty());
            }
            assert_eq!(idx.len(), all.len());
            for &k in &all {
                assert_eq!(idx.get(k), Some(v), "key {k:x}");
                assert_eq!(
                    idx.get(k.wrapping_add(1)).is_some(),
                    all.binary_search(&k.wrapping_add(1)).is_ok()
                );
            }
        }
        // A page's lookups (in key order, galloping through `recent`) find what one lookup
        // per key finds, including keys absent from both arrays and keys repeated in the page.
        idx.apply(&(0..3000).map(|_| (next(), v)).collect::<Vec<_>>());
        assert!(!idx.recent.is_empty() && !idx.entries.is_empty());
        let mut probe: Vec<u64> = all.iter().step_by(3).copied().collect();
        probe.extend((0..2000).map(|_| next()));
        probe.extend(idx.recent.iter().step_by(2).map(|e| e.key));
        probe.extend([0, u64::MAX, all[5], all[5]]);
        let found = idx.look_up_page(&probe);
        for (n, &k) in probe.iter().enumerate() {
            assert_eq!(found.slots[n], idx.slot(k), "key {k:x}");
            assert_eq!(found.known[n], idx.get(k));
            assert_eq!(
                found.repeated[n],
                probe.iter().filter(|&&p| p == k).count() > 1
            );
        }
        // Past the threshold the merge happens by itself.
        let big: Vec<(u64, Version)> = (0..RECENT_MIN as u64 + 1).map(|_| (next(), v)).collect();
        idx.apply(&big);
        assert!(idx.recent.is_empty());
        assert!(big.iter().all(|(k, _)| idx.get(*k) == Some(v)));
    }

    fn v(t: i64) -> Version {
        Version {
            last_us: t,
            conf: 0,
        }
    }

    /// A `seen_log` holding `rows` (stamp, versions) in this order.
    fn log_of(rows: &[(i64, &[(u64, Version)])]) -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let tx = c.transaction().unwrap();
        for (stamp, versions) in rows {
            record(&tx, versions, *stamp).unwrap();
        }
        tx.commit().unwrap();
        c
    }

    fn stamps_left(c: &Connection) -> Vec<i64> {
        let mut st = c
            .prepare("SELECT recorded_us FROM seen_log ORDER BY id")
            .unwrap();
        let rows = st.query_map([], |r| r.get(0)).unwrap();
        rows.map(|r| r.unwrap()).collect()
    }

    /// What the index holds, in key order.
    fn contents(idx: &DedupIndex) -> Vec<(u64, i64, u32)> {
        let mut all: Vec<(u64, i64, u32)> = idx
            .entries
            .iter()
            .chain(idx.recent.iter())
            .map(|e| (e.key, e.last_us, e.conf))
            .collect();
        all.sort_unstable();
        all
    }

    /// Prunes `c` with the index loaded; returns the versions forgotten.
    fn prune_loaded(c: &mut Connection, idx: &mut DedupIndex, before: i64, now: i64) -> usize {
        idx.ensure_loaded(c).unwrap();
        let tx = c.transaction().unwrap();
        let n = idx.prune(&tx, before, now).unwrap();
        tx.commit().unwrap();
        n
    }

    #[test]
    fn a_row_stamped_in_the_future_does_not_hold_back_the_rows_after_it() {
        // The clock jumped ahead for the second commit and was set back: 10_000 is in the
        // future of everything after it.
        let rows: [(i64, &[(u64, Version)]); 4] = [
            (100, &[(1, v(1))]),
            (10_000, &[(2, v(1))]),
            (200, &[(3, v(1))]),
            (300, &[(4, v(1))]),
        ];
        let mut c = log_of(&rows);
        let mut idx = DedupIndex::new((1, 2));
        // Only the first row is provably older than 150: the second was committed before the
        // third, so no later than 200.
        assert_eq!(prune_loaded(&mut c, &mut idx, 150, 1_000), 1);
        assert_eq!(stamps_left(&c), [10_000, 200, 300]);
        // Once the third is old, so is the one stamped in the future before it.
        assert_eq!(prune_loaded(&mut c, &mut idx, 250, 1_000), 2);
        assert_eq!(stamps_left(&c), [300]);
        assert_eq!(contents(&idx), [(4, 1, 0)]);
    }

    #[test]
    fn nothing_is_pruned_that_is_not_provably_old() {
        let rows: [(i64, &[(u64, Version)]); 3] = [
            (100, &[(1, v(1))]),
            (5_000, &[(2, v(1))]),
            (400, &[(3, v(1))]),
        ];
        let mut c = log_of(&rows);
        let mut idx = DedupIndex::new((1, 2));
        // The second row may be as recent as 400: not before 300.
        assert_eq!(prune_loaded(&mut c, &mut idx, 300, 1_000), 1);
        assert_eq!(stamps_left(&c), [5_000, 400]);
        assert_eq!(
            prune_loaded(&mut c, &mut idx, 400, 1_000),
            0,
            "400 is not before 400"
        );
        // The last row stamped in the future was committed no later than now.
        let mut c = log_of(&[(100, &[(1, v(1))]), (5_000, &[(2, v(1))])]);
        let mut idx = DedupIndex::new((1, 2));
        assert_eq!(prune_loaded(&mut c, &mut idx, 800, 1_000), 1);
        assert_eq!(stamps_left(&c), [5_000]);
        assert_eq!(contents(&idx), [(2, 1, 0)]);
        // A horizon past now: every row was committed before it.
        assert_eq!(prune_loaded(&mut c, &mut idx, 2_000, 1_000), 1);
        assert!(stamps_left(&c).is_empty());
        assert!(contents(&idx).is_empty());
        // Nothing old, nothing done; an empty log too.
        assert_eq!(prune_loaded(&mut c, &mut idx, 2_000, 1_000), 0);
    }

    #[test]
    fn memory_forgets_exactly_what_the_deleted_rows_were_the_last_to_hold() {
        let rows: [(i64, &[(u64, Version)]); 3] = [
            // 1: only in deleted rows; 2: changed within them; 3: changed and changed back,
            // the last version after the cut; 4: changed after the cut; 5: only after it.
            (100, &[(1, v(1)), (2, v(1)), (3, v(1)), (4, v(1))]),
            (200, &[(2, v(2)), (3, v(2))]),
            (300, &[(3, v(1)), (4, v(2)), (5, v(1))]),
        ];
        let mut c = log_of(&rows);
        let mut idx = DedupIndex::new((1, 2));
        assert_eq!(prune_loaded(&mut c, &mut idx, 250, 1_000), 6);
        let mut fresh = DedupIndex::new((1, 2));
        fresh.ensure_loaded(&c).unwrap();
        assert_eq!(contents(&fresh), [(3, 1, 0), (4, 2, 0), (5, 1, 0)]);
        assert_eq!(contents(&idx), contents(&fresh));
        // Unloaded, only the rows go (and are counted the same).
        let mut c = log_of(&rows);
        let mut idx = DedupIndex::new((1, 2));
        let tx = c.transaction().unwrap();
        assert_eq!(idx.prune(&tx, 250, 1_000).unwrap(), 6);
        tx.commit().unwrap();
        assert_eq!(stamps_left(&c), [300]);
        assert!(!idx.loaded);
    }

    #[test]
    fn versions_compare_as_the_spec_says() {
        let v = |t: Option<i64>, c: Option<&str>| Version {
            last_us: t.unwrap_or(NO_TIME),
            conf: conf_hash(c),
        };
        let seen = Some(v(Some(100), Some("high")));
        assert_eq!(v(Some(100), Some("high")).against(None), Some(Act::Add));
        assert_eq!(v(Some(100), Some("high")).against(seen), None);
        assert_eq!(v(Some(101), Some("high")).against(seen), Some(Act::Update));
        assert_eq!(v(Some(99), Some("low")).against(seen), None);
        assert_eq!(v(Some(100), Some("low")).against(seen), Some(Act::Update));
        assert_eq!(v(Some(100), None).against(seen), Some(Act::Update));
        assert_eq!(v(None, Some("low")).against(seen), None);
        assert_eq!(
            v(Some(1), None).against(Some(v(None, None))),
            Some(Act::Update)
        );
        assert_eq!(v(None, None).against(Some(v(None, None))), None);
        assert_eq!(
            v(None, Some("x")).against(Some(v(None, None))),
            Some(Act::Update)
        );
    }
}
