//! The page commit: the one way indicators enter the queue.
//!
//! A page is judged against the dedup index (an identity whose version is new is queued, as
//! an addition or an update; anything else is a duplicate), its events are queued, its new
//! versions recorded, the queue limit enforced and — on the last page of a cycle — the
//! cycle's end stored, all in one transaction. The in-memory index and the delivery side's
//! tail learn of the page only after that transaction commits, so a page that fails leaves
//! no trace anywhere.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{params, Transaction};

use super::dedup::{self, DedupIndex, Version};
use super::open::Drift;
use super::record::{Id, Kind, Record};
use super::{latest, now_us, queue, Store, StoreError};
use crate::encode::cef::Act;
use crate::indicator::Indicator;

/// One indicator made ready for the queue before the store's lock is taken (on the poller's
/// thread, while the previous page commits): its dedup key and version, its CEF line, encoded
/// as an addition ([`Store::commit_page`] rewrites `act` when it turns out to be an update),
/// and what the live set keeps of it. Holds one allocation, where the decoded indicator held a
/// dozen.
#[derive(Debug, Clone)]
pub struct Prepared {
    key: u64,
    version: Version,
    last_seen_ms: Option<i64>,
    /// The id when it is a canonical UUID (then not in `text`): read here, on the poller's
    /// thread, rather than inside the commit.
    uuid: Option<[u8; 16]>,
    /// The type label, the CEF line, the id unless it is a UUID, and the whole value when the
    /// line holds a cut copy of it (else nothing), one after the other.
    text: String,
    /// Where the line, the id and the value start in `text`.
    line_at: usize,
    id_at: usize,
    value_at: usize,
    /// Where the line's `act` value starts (see `cef::encode_queued`).
    act_at: Option<usize>,
    /// Values cut to their length limits while encoding.
    cuts: usize,
}

impl Prepared {
    /// `key` is `ind`'s dedup key ([`Keyer::key`](super::Keyer::key)); `line`, `act_at` and
    /// `cuts` are what `cef::encode_queued` gave for it.
    pub fn new(
        key: u64,
        ind: &Indicator,
        line: &str,
        act_at: Option<usize>,
        cuts: usize,
    ) -> Prepared {
        let id = ind.id.as_deref().unwrap_or_default();
        let uuid = Id::uuid(id);
        let id = if uuid.is_some() { "" } else { id };
        // Only a line with something cut can hold a cut value.
        let value = if cuts > 0 { ind.value.as_str() } else { "" };
        let mut text =
            String::with_capacity(ind.type_raw.len() + line.len() + id.len() + value.len());
        text.push_str(&ind.type_raw);
        let line_at = text.len();
        text.push_str(line);
        let id_at = text.len();
        text.push_str(id);
        let value_at = text.len();
        text.push_str(value);
        Prepared {
            key,
            version: Version::of(ind),
            last_seen_ms: ind.last_seen.map(|t| t.timestamp_millis()),
            uuid,
            text,
            line_at,
            id_at,
            value_at,
            act_at,
            cuts,
        }
    }

    /// The event for the queue, as `kind`, with `line` (this item's line or a rewrite of it).
    fn record<'a>(&'a self, kind: Kind, line: &'a str) -> Record<'a> {
        Record {
            kind,
            key: Some(self.key),
            last_seen_ms: self.last_seen_ms,
            id: match self.uuid {
                Some(b) => Id::Uuid(b),
                None => Id::Text(self.text.get(self.id_at..self.value_at).unwrap_or_default()),
            },
            value: self.text.get(self.value_at..).unwrap_or_default(),
            label: self.text.get(..self.line_at).unwrap_or_default(),
            cef: line,
        }
    }

    /// The CEF line as encoded (an addition).
    fn line(&self) -> &str {
        self.text.get(self.line_at..self.id_at).unwrap_or_default()
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

impl CycleEnd {
    /// Stores the cycle's end in the page's transaction; `now` is this host's clock.
    fn save(self, tx: &Transaction<'_>, now: i64) -> rusqlite::Result<()> {
        if let Some(c) = self.cursor {
            Store::set_meta(
                tx,
                "since",
                &c.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            )?;
        }
        // Whether or not the cursor moved: the horizon for forgetting seen versions counts
        // from here, and a source that tells no time must not keep them forever.
        Store::set_meta(tx, "last_success_us", &now.to_string())
    }
}

impl Store {
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
        let last_seq = inner.last_seq;
        let tx = inner.conn.transaction().map_err(|e| self.err(e))?;
        if inner.unsaved {
            // What open could not save goes in first, so the limit below sees the real total.
            Drift::of(&tx, last_seq)
                .and_then(|d| d.save(&tx))
                .map_err(|e| self.err(e))?;
        }
        let now = now_us();
        let verdicts = Verdicts::judge(&inner.dedup, items);
        let mut outcome = verdicts.outcome();
        let queued =
            Queued::write(&tx, items, &verdicts, last_seq, now).map_err(|e| self.err(e))?;
        outcome.dropped = self.enforce_limit(&tx, queued.bytes)?;
        if let Some(end) = end {
            end.save(&tx, now).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        inner.last_seq = queued.last_seq;
        inner.unsaved = false;
        inner.dedup.apply_at(&verdicts.recorded, &verdicts.slots);
        if let (Some(t), Some(watch)) = (queued.new_tail(), &self.tail) {
            watch.send_replace(t);
        }
        outcome.cuts = queued.cuts;
        Ok(outcome)
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
}

/// What the dedup index says of each item of a page, and the versions the page records.
struct Verdicts {
    /// Per item: queued as an addition or an update, or `None` for a duplicate.
    acts: Vec<Option<Act>>,
    /// The versions queued: recorded with the page, and applied to the index once the
    /// transaction commits.
    recorded: Vec<(u64, Version)>,
    /// Where the index found each of them, for [`DedupIndex::apply_at`].
    slots: Vec<dedup::Slot>,
}

impl Verdicts {
    fn judge(index: &DedupIndex, items: &[Prepared]) -> Verdicts {
        let keys: Vec<u64> = items.iter().map(|p| p.key).collect();
        let found = index.look_up_page(&keys);
        // This page's versions are looked up first, so an identity twice in one page is
        // judged against its earlier copy.
        let mut in_page: HashMap<u64, Version> = HashMap::new();
        let mut verdicts = Verdicts {
            acts: Vec::with_capacity(items.len()),
            recorded: Vec::new(),
            slots: Vec::new(),
        };
        for (i, p) in items.iter().enumerate() {
            // Only a key that occurs more than once in the page needs the page's own
            // record of it.
            let before = if found.repeated[i] {
                in_page.get(&p.key).copied().or(found.known[i])
            } else {
                found.known[i]
            };
            let act = p.version.against(before);
            if act.is_some() {
                if found.repeated[i] {
                    in_page.insert(p.key, p.version);
                }
                verdicts.recorded.push((p.key, p.version));
                verdicts.slots.push(found.slots[i]);
            }
            verdicts.acts.push(act);
        }
        verdicts
    }

    /// The page's counts (what the limit drops and the cuts are added later).
    fn outcome(&self) -> PageOutcome {
        let mut outcome = PageOutcome::default();
        for act in &self.acts {
            match act {
                None => outcome.duplicates += 1,
                Some(Act::Add) => outcome.added += 1,
                Some(Act::Update) => outcome.updated += 1,
            }
        }
        outcome
    }
}

/// What a page put in the queue.
struct Queued {
    /// The highest sequence number before the page.
    before: i64,
    /// The highest after it.
    last_seq: i64,
    bytes: i64,
    /// Values cut to their length limits in the events queued.
    cuts: usize,
}

impl Queued {
    /// Queues the page's new versions in order, each line's `act` set to its verdict, and
    /// records what that changes besides the chunks: the sequence high-water mark, the
    /// page's row in the dedup log, the byte total.
    fn write(
        tx: &Transaction<'_>,
        items: &[Prepared],
        verdicts: &Verdicts,
        last_seq: i64,
        now: i64,
    ) -> rusqlite::Result<Queued> {
        let mut chunks = queue::Writer::new(last_seq, now);
        let mut scratch = String::new();
        let (mut bytes, mut cuts) = (0i64, 0usize);
        // Each queued event becomes its identity's latest (see `latest`).
        let mut latest = Vec::with_capacity(verdicts.recorded.len());
        for (p, act) in items.iter().zip(&verdicts.acts) {
            let Some(act) = *act else { continue };
            let mut line = p.line();
            if let (Act::Update, Some(at)) = (act, p.act_at) {
                scratch.clear();
                scratch.push_str(line);
                crate::encode::cef::set_act(&mut scratch, at, act);
                line = &scratch;
            }
            let kind = match act {
                Act::Add => Kind::Add,
                Act::Update => Kind::Update,
            };
            let event = p.record(kind, line);
            let seq = chunks.push(tx, &event)?;
            latest.push((p.key, seq as u64));
            bytes += event.cef_len() as i64;
            cuts += p.cuts;
        }
        let queued = Queued {
            before: last_seq,
            last_seq: chunks.finish(tx)?,
            bytes,
            cuts,
        };
        if let Some(t) = queued.new_tail() {
            Store::set_meta(tx, queue::LAST_SEQ_KEY, &t.to_string())?;
        }
        dedup::record(tx, &verdicts.recorded, now)?;
        latest::append(tx, &mut latest)?;
        if bytes > 0 {
            tx.execute(
                "UPDATE totals SET queue_bytes = queue_bytes + ?1 WHERE id = 1",
                params![bytes],
            )?;
        }
        Ok(queued)
    }

    /// The queue's new tail, when the page queued anything.
    fn new_tail(&self) -> Option<i64> {
        (self.last_seq > self.before).then_some(self.last_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixtures::{ind, many, new_store, page};
    use std::time::Duration;

    #[test]
    fn same_version_is_queued_once_and_a_new_version_again() {
        let (_dir, s) = new_store();
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
        let (dir, s) = new_store();
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

    #[test]
    fn a_cycle_that_ends_without_a_cursor_records_its_success_and_keeps_the_cursor() {
        let (_dir, s) = new_store();
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
}
