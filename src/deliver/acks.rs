//! What the peer is known to have: the frames written on the current connection and not yet
//! confirmed, in order, and the highest seq confirmed.
//!
//! The rules it keeps:
//! * A frame is confirmed when the connection's acknowledged line (in the units of
//!   [`Connected::written`]) passes its end, or at once where the transport cannot tell.
//!   Confirmation moves in seq order: a frame never counts before the ones written ahead of it.
//! * When a connection is given up, everything not confirmed is sent again on the next one
//!   ([`Acks::replay`]): at least once, never lost.
//! * A peer that confirms nothing of what is in flight for longer than a limit is stalled
//!   ([`Acks::progressing`]); the stall clock starts when something is written into an empty
//!   window and restarts whenever the acknowledged line moves.
//!
//! [`Connected::written`]: super::transport::Connected::written

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// A frame (or a dropped event) written on the current connection and not yet known to be
/// delivered.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: i64,
    /// Where it ends on the connection, in the units of [`Connected::written`].
    ///
    /// [`Connected::written`]: super::transport::Connected::written
    end: u64,
    /// False for an event dropped as oversize: it moves the position but is not counted as
    /// delivered, and proves nothing about the receiver.
    frame: bool,
}

/// The delivery task's view of what went out and what came back (see the module docs).
pub(super) struct Acks {
    /// Highest seq the peer is known to have (acknowledged, or written where we cannot tell).
    acked: i64,
    /// Highest seq written on the current connection (= `acked` when none).
    sent: i64,
    /// Written on this connection and not yet known to be delivered, in order.
    inflight: VecDeque<InFlight>,
    /// Acknowledged bytes at the last check, and when that number last grew.
    last_acked_bytes: u64,
    last_ack_progress: Instant,
}

impl Acks {
    pub(super) fn new() -> Acks {
        Acks {
            acked: 0,
            sent: 0,
            inflight: VecDeque::new(),
            last_acked_bytes: 0,
            last_ack_progress: Instant::now(),
        }
    }

    /// Starts from the position recorded in the store: everything up to `seq` is delivered.
    pub(super) fn start_at(&mut self, seq: i64) {
        (self.acked, self.sent) = (seq, seq);
    }

    /// Highest seq the peer is known to have.
    pub(super) fn acked(&self) -> i64 {
        self.acked
    }

    /// Highest seq written on the current connection; the next batch is read after it.
    pub(super) fn sent(&self) -> i64 {
        self.sent
    }

    /// How many frames (and dropped events) are written and not yet confirmed.
    pub(super) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Nothing written is left unconfirmed.
    pub(super) fn all_confirmed(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Records what a send put on the connection. `positions` are the batch's events with
    /// where each ends in the batch (a byte offset, or on datagram transports a count of
    /// frames) and whether it is a frame at all; `base` and `after` are the connection's
    /// [`Connected::written`] before and after the send. With `exact` offsets every frame maps
    /// to its own end; otherwise only the whole batch, once `complete`, maps to `after`. After
    /// a failed send only the frames known to have gone out are recorded.
    ///
    /// [`Connected::written`]: super::transport::Connected::written
    pub(super) fn written(
        &mut self,
        positions: &[(i64, usize, bool)],
        (base, after): (u64, u64),
        exact: bool,
        complete: bool,
    ) {
        let before = self.inflight.len();
        for &(seq, end, frame) in positions {
            let end = if exact { base + end as u64 } else { after };
            if !complete && (!exact || end > after) {
                break;
            }
            self.inflight.push_back(InFlight { seq, end, frame });
        }
        if complete {
            self.sent = positions.last().map_or(self.sent, |f| f.0);
            if before == 0 {
                // Nothing was in flight before: the stall clock starts now.
                self.last_ack_progress = Instant::now();
            }
        }
    }

    /// Moves `acked` past every in-flight frame that ends at or below `acked_to` (`None`: the
    /// transport cannot tell, so written counts). Returns how many frames that delivered.
    pub(super) fn confirmed(&mut self, acked_to: Option<u64>) -> u64 {
        let mut delivered = 0u64;
        while let Some(f) = self.inflight.front() {
            if acked_to.is_some_and(|a| f.end > a) {
                break;
            }
            self.acked = self.acked.max(f.seq);
            delivered += u64::from(f.frame);
            self.inflight.pop_front();
        }
        delivered
    }

    /// False when the peer's acknowledged line has not moved for `limit` while frames are in
    /// flight (a stalled receiver); call after [`Acks::confirmed`] with the same `acked_to`.
    pub(super) fn progressing(&mut self, acked_to: Option<u64>, limit: Duration) -> bool {
        let Some(acked_to) = acked_to else {
            return true;
        };
        if acked_to > self.last_acked_bytes || self.inflight.is_empty() {
            self.last_acked_bytes = acked_to;
            self.last_ack_progress = Instant::now();
            return true;
        }
        self.last_ack_progress.elapsed() < limit
    }

    /// The connection is given up: everything not confirmed is to be sent again, so the next
    /// read starts after `acked`.
    pub(super) fn replay(&mut self) {
        self.inflight.clear();
        self.sent = self.acked;
    }

    /// A new connection: its acknowledged line starts at zero, and so does the stall clock.
    pub(super) fn new_connection(&mut self) {
        self.last_acked_bytes = 0;
        self.last_ack_progress = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three frames of 10 bytes each, seqs 1..=3, written on a fresh connection.
    fn three_written(exact: bool, complete: bool, after: u64) -> Acks {
        let mut a = Acks::new();
        let positions = [(1, 10, true), (2, 20, true), (3, 30, true)];
        a.written(&positions, (0, after), exact, complete);
        a
    }

    #[test]
    fn a_frame_is_confirmed_once_the_acknowledged_line_passes_its_end() {
        let mut a = three_written(true, true, 30);
        assert_eq!(a.sent(), 3);
        assert_eq!(a.confirmed(Some(19)), 1);
        assert_eq!((a.acked(), a.in_flight()), (1, 2));
        assert_eq!(a.confirmed(Some(30)), 2);
        assert_eq!(a.acked(), 3);
        assert!(a.all_confirmed());
    }

    #[test]
    fn where_the_transport_cannot_tell_written_counts_as_confirmed() {
        let mut a = three_written(true, true, 30);
        assert_eq!(a.confirmed(None), 3);
        assert_eq!(a.acked(), 3);
    }

    #[test]
    fn after_a_failed_send_only_frames_known_to_have_gone_out_are_in_flight() {
        // Exact offsets: the 25 bytes written hold the first two frames.
        let a = three_written(true, false, 25);
        assert_eq!((a.in_flight(), a.sent()), (2, 0));
        // Only the whole batch maps to the wire (TLS): nothing is known to have gone out.
        let a = three_written(false, false, 25);
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn replay_sends_again_everything_not_confirmed() {
        let mut a = three_written(true, true, 30);
        a.confirmed(Some(10));
        a.replay();
        assert_eq!((a.acked(), a.sent(), a.in_flight()), (1, 1, 0));
    }

    #[test]
    fn a_dropped_event_moves_the_position_but_is_not_delivered() {
        let mut a = Acks::new();
        a.written(&[(1, 10, true), (2, 10, false)], (0, 10), true, true);
        assert_eq!(a.confirmed(Some(10)), 1);
        assert_eq!(a.acked(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_confirms_nothing_for_the_limit_is_stalled() {
        let limit = Duration::from_secs(5);
        let mut a = three_written(true, true, 30);
        assert!(a.progressing(Some(0), limit));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(a.progressing(Some(0), limit));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!a.progressing(Some(0), limit));
        // The line moved: the clock starts over.
        assert!(a.progressing(Some(10), limit));
    }
}
