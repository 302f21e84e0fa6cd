//! Recording a destination's position — the highest seq delivered — in the store.
//!
//! The rules it keeps:
//! * Delivery never waits for the store: a position is written in the background, at most
//!   one write at a time; delivery would otherwise stall behind every page commit holding the
//!   store.
//! * While frames are in flight, at most one write per [`PERSIST_EVERY`]. Position updates
//!   are not fsync'd (a lost one only means re-sending, never losing), so this only bounds the
//!   write rate.
//! * After a failed write, not again before a second has passed (unless forced), so a broken
//!   store is retried once a second rather than in a loop. The events are delivered either
//!   way; not recording it only means sending them again after a restart.

use std::time::Duration;

use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

use crate::store::{Store, StoreError};

/// How often acknowledgements are written to the store at most while frames are in flight.
const PERSIST_EVERY: Duration = Duration::from_millis(20);

/// The recorded position of one destination and the write that moves it (see the module
/// docs).
pub(super) struct Position {
    store: Store,
    /// The destination's name: the key of its position, and the logs' `destination`.
    name: String,
    /// Highest seq recorded in the store.
    persisted: i64,
    last_persist: Instant,
    /// After a failed position write: not before this instant again (unless forced).
    retry_at: Option<Instant>,
    /// A position being written in the background: (seq, the write).
    writing: Option<(i64, JoinHandle<Result<(), StoreError>>)>,
}

impl Position {
    pub(super) fn new(store: Store, name: String) -> Position {
        Position {
            store,
            name,
            persisted: 0,
            last_persist: Instant::now(),
            retry_at: None,
            writing: None,
        }
    }

    /// Starts from the position read from the store.
    pub(super) fn start_at(&mut self, seq: i64) {
        self.persisted = seq;
    }

    /// A write is under way.
    pub(super) fn writing(&self) -> bool {
        self.writing.is_some()
    }

    /// Writes `acked` when it moved past what is recorded, in the background, when a write is
    /// due (see the module docs; `in_flight`: frames are waiting for acknowledgement). With
    /// `force` (at stop, at fail-back), waits for the write in flight and writes the latest
    /// position before returning.
    pub(super) async fn persist(&mut self, acked: i64, in_flight: bool, force: bool) {
        if let Some((seq, h)) = self.writing.take() {
            if !force && !h.is_finished() {
                self.writing = Some((seq, h));
                return;
            }
            self.written(seq, h.await);
        }
        if acked <= self.persisted || (!force && !self.due(in_flight)) {
            return;
        }
        let (name, seq, store) = (self.name.clone(), acked, self.store.clone());
        self.last_persist = Instant::now();
        let h = tokio::task::spawn_blocking(move || store.ack(&name, seq));
        if force {
            self.written(seq, h.await);
        } else {
            self.writing = Some((seq, h));
        }
    }

    /// Whether an unforced write is due now.
    fn due(&self, in_flight: bool) -> bool {
        if in_flight && self.last_persist.elapsed() < PERSIST_EVERY {
            return false;
        }
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    fn written(&mut self, seq: i64, done: Result<Result<(), StoreError>, JoinError>) {
        self.retry_at = Some(Instant::now() + Duration::from_secs(1));
        match done {
            Ok(Ok(())) => {
                self.persisted = self.persisted.max(seq);
                self.retry_at = None;
            }
            // The events are delivered; not recording it only means sending them again after
            // a restart. Keep going and retry at the next persist.
            Ok(Err(e)) => {
                tracing::error!(destination = %self.name, error = %e, "cannot record delivery progress")
            }
            Err(e) => {
                tracing::error!(destination = %self.name, error = %e, "recording delivery progress stopped")
            }
        }
    }
}
