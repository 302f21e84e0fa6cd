//! The live set: every indicator sent and not yet expired or revoked. Each queued event
//! keeps what its lifecycle lines need (see `record`), and the latest-event index (see
//! `latest`) tells which event of an identity is its current one.

use rusqlite::TransactionBehavior;

use super::{latest, Store, StoreError};

impl Store {
    /// Merges the latest-event index's runs (see `latest::compact`); returns how many merges
    /// were made. Called before each poll cycle, never inside a page commit: a backfill's
    /// pages each append one run, and merging them costs as much again as appending, so it is
    /// done once the backfill is over, not while it runs.
    pub fn compact_latest(&self) -> Result<usize, StoreError> {
        let mut guard = self.lock();
        let tx = guard
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        let merges = latest::compact(&tx).map_err(|e| self.err(e))?;
        if merges > 0 {
            tx.commit().map_err(|e| self.err(e))?;
        }
        Ok(merges)
    }

    /// The latest event (its sequence number) of each identity in `keys`, in their order.
    pub fn latest_events(&self, keys: &[u64]) -> Result<Vec<Option<u64>>, StoreError> {
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let found = latest::latest(&self.read_lock(), &sorted).map_err(|e| self.err(e))?;
        Ok(keys
            .iter()
            .map(|k| sorted.binary_search(k).ok().and_then(|i| found[i]))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::fixtures::{ind, new_store, page};
    use crate::store::record::{self, Id, Kind};
    use crate::store::Store;

    #[test]
    fn a_queued_event_keeps_its_key_a_uuid_id_in_16_bytes_and_its_last_seen() {
        let (_dir, s) = new_store();
        let uuid = "123e4567-e89b-42d3-a456-426614174000";
        let (with_uuid, plain) = (
            ind(uuid, "2026-05-17T00:00:00Z", "low"),
            ind("abc", "2026-05-17T00:00:01Z", "low"),
        );
        s.commit_page(&page(&s, &[with_uuid.clone(), plain.clone()]), None)
            .unwrap();
        let blob: Vec<u8> = s
            .lock()
            .query_row("SELECT events FROM chunks", [], |r| r.get(0))
            .unwrap();
        let mut reader = record::Reader::new(&blob, record::FORMAT).unwrap();
        let a = reader.next_record().unwrap().unwrap();
        assert_eq!((a.kind, a.key), (Kind::Add, None));
        assert!(matches!(a.id, Id::Uuid(_)));
        assert_eq!(a.id.to_string(), uuid);
        let keyer = s.keyer();
        assert_eq!(keyer.key_of_id(&a.id.to_string()), keyer.key(&with_uuid));
        assert_eq!(
            a.last_seen_ms,
            with_uuid.last_seen.map(|t| t.timestamp_millis())
        );
        let b = reader.next_record().unwrap().unwrap();
        assert_eq!((b.key, b.id), (Some(keyer.key(&plain)), Id::Text("abc")));
        assert_eq!(b.cef, "abc:act=add");
    }

    #[test]
    fn each_queued_event_becomes_its_identitys_latest_across_commits_and_merges() {
        let (dir, s) = new_store();
        let keyer = s.keyer();
        let v1 = ind("x", "2026-05-17T00:00:00Z", "low");
        let y = ind("y", "2026-05-17T00:00:00Z", "low");
        let (kx, ky) = (keyer.key(&v1), keyer.key(&y));
        s.commit_page(&page(&s, &[v1.clone(), y]), None).unwrap();
        assert_eq!(
            s.latest_events(&[kx, ky, 7]).unwrap(),
            [Some(1), Some(2), None]
        );
        // A duplicate queues nothing and leaves the index; a new version moves it.
        s.commit_page(&page(&s, &[v1]), None).unwrap();
        for i in 0..(super::latest::FANOUT * 2) {
            let when = format!("2026-05-18T00:00:{i:02}Z");
            s.commit_page(&page(&s, &[ind("x", &when, "low")]), None)
                .unwrap();
        }
        assert!(s.compact_latest().unwrap() > 0);
        assert_eq!(s.compact_latest().unwrap(), 0, "nothing left to merge");
        let last = s.tail().unwrap() as u64;
        assert_eq!(s.latest_events(&[kx, ky]).unwrap(), [Some(last), Some(2)]);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.latest_events(&[kx]).unwrap(),
            [Some(last)],
            "kept in the file"
        );
    }
}
