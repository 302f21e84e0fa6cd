//! The delivery task of one destination: the loop that reads a batch, frames it, sends it,
//! and moves the destination's position past what the peer acknowledged; connecting (with
//! backoff), failing back to the primary address, and draining at stop.
//!
//! The task owns its connection and reaches the rest of the process only through [`Wiring`]:
//! the store, the poller's wake-up, the shutdown signal and the watchdog.

use std::time::Duration;

use tokio::time::Instant;

use super::acks::Acks;
use super::frame::Frames;
use super::position::Position;
use super::transport::{self, Connected, TlsCache};
use super::Wiring;
use crate::backoff::Backoff;
use crate::config::{DestinationConfig, Protocol};
use crate::encode::rfc5424;
use crate::liveness::Heartbeat;
use crate::metrics;
use crate::store::Event;

mod connection;

/// Events read and written per round trip to the store.
const BATCH: usize = 512;

/// At most this many frames are written and not yet acknowledged: it bounds what a crash or
/// a dead connection can make us send twice (the README's duplicate window).
const MAX_IN_FLIGHT: usize = 2 * BATCH;

/// The same for UDP, where a frame counts as delivered only after
/// [`transport::UDP_CONFIRM`] without a refusal: a window of [`MAX_IN_FLIGHT`] would cap UDP
/// at ~5,000 frames a second.
const UDP_MAX_IN_FLIGHT: usize = 32 * BATCH;

/// How long closing a connection may take at stop or fail-back (TLS close_notify, FIN, reading
/// until the peer closes too).
const CLOSE_WITHIN: Duration = Duration::from_millis(500);

/// What one round of the delivery loop may spend besides its timeouts (store calls, the
/// fail-back probe's fixed waits) before the watchdog calls it stuck.
const LOOP_ALLOWANCE: Duration = Duration::from_secs(5);

/// One destination's delivery loop and everything it keeps between rounds.
pub(super) struct Task {
    dest: DestinationConfig,
    header: rfc5424::Header,
    w: Wiring,
    conn: Option<Connected>,
    tls: TlsCache,
    backoff: Backoff,
    failures: u32,
    /// What the peer is known to have, and what is in flight.
    acks: Acks,
    /// What the store has recorded of it.
    position: Position,
    /// While connected to a fallback address: when the primary was last probed.
    last_probe: Instant,
    /// No connection attempt before this instant (the backoff after a failure).
    next_connect: Option<Instant>,
    /// The queue's tail and our `sent` when a read last found nothing after `sent`: until
    /// either changes there is nothing to read (the tail moves with every commit, `sent` moves
    /// back when a connection fails).
    drained_at: Option<(i64, i64)>,
    beat: Heartbeat,
}

impl Task {
    pub(super) fn new(dest: DestinationConfig, header: rfc5424::Header, w: Wiring) -> Task {
        let backoff = Backoff::new(w.retry_initial, w.retry_max);
        let position = Position::new(w.store.clone(), dest.name.clone());
        let beat = w
            .liveness
            .register(format!("delivery to {}", dest.name), LOOP_ALLOWANCE);
        Task {
            dest,
            header,
            w,
            conn: None,
            tls: TlsCache::default(),
            backoff,
            failures: 0,
            acks: Acks::new(),
            position,
            last_probe: Instant::now(),
            next_connect: None,
            drained_at: None,
            beat,
        }
    }

    /// The longest one round of the delivery loop can take when nothing hangs: a backoff, a
    /// connect attempt to every address (TCP, then TLS), a write, and an allowance for the
    /// store and the fail-back probe.
    fn round_bound(&self) -> Duration {
        let addresses = self.dest.address.len().max(1) as u32;
        self.w.retry_max
            + self.dest.connect_timeout * 2 * addresses
            + self.dest.write_timeout
            + LOOP_ALLOWANCE
    }

    fn stopping(&self) -> bool {
        self.w.shutdown.is_stopping()
    }

    /// Sleeps, waking early when the task must stop.
    async fn pause(&mut self, d: Duration) {
        let mut stop = self.w.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.stopped() => {}
        }
    }

    fn window(&self) -> usize {
        match self.dest.protocol {
            Protocol::Udp => UDP_MAX_IN_FLIGHT,
            _ => MAX_IN_FLIGHT,
        }
    }

    /// Notices a peer that closed or refused us (first: on TLS an alert voids what its TCP
    /// stack acknowledged), then moves `acked` past every in-flight frame the peer
    /// acknowledged. Returns false when the peer stopped acknowledging for longer than
    /// `write_timeout` (a stalled receiver).
    fn settle(&mut self) -> bool {
        if let Some(why) = self.conn.as_mut().and_then(|c| c.peer_error()) {
            self.disconnected(&why);
            return true;
        }
        self.absorb_acks()
    }

    /// Moves `acked` past every in-flight frame the peer acknowledged (see [`Task::settle`]).
    fn absorb_acks(&mut self) -> bool {
        let Some(conn) = &mut self.conn else {
            return true;
        };
        // `None`: the transport cannot tell (unix stream sockets, stdout), written counts.
        let acked_to = conn.acked();
        let delivered = self.acks.confirmed(acked_to);
        if delivered > 0 {
            metrics::get().delivered(&self.dest.name, delivered);
            // The receiver took data: it works, so the next failure starts the backoff over.
            // A connect alone proves nothing (a receiver may accept and close at once).
            self.backoff.reset();
            self.failures = 0;
            if self.dest.protocol == Protocol::Udp {
                // Nor does a UDP connect: a confirmed frame does.
                metrics::get().destination_up(&self.dest.name, true);
            }
        }
        self.acks.progressing(acked_to, self.stall_limit())
    }

    /// How long the peer may confirm nothing of what is in flight before the connection counts
    /// as stalled. A UDP frame cannot be confirmed before [`transport::UDP_CONFIRM`].
    fn stall_limit(&self) -> Duration {
        match self.dest.protocol {
            Protocol::Udp => self.dest.write_timeout.max(2 * transport::UDP_CONFIRM),
            _ => self.dest.write_timeout,
        }
    }

    /// Writes `acked` to the store when it moved (see [`Position::persist`]).
    async fn persist(&mut self, force: bool) {
        let in_flight = !self.acks.all_confirmed();
        self.position
            .persist(self.acks.acked(), in_flight, force)
            .await;
    }

    /// Delivers until the stop signal, then drains (see [`Task::finish`]); true when it ended
    /// with every written frame acknowledged.
    pub(super) async fn run(mut self) -> bool {
        let Some(start) = self.start().await else {
            return false;
        };
        self.acks.start_at(start);
        self.position.start_at(start);
        let mut frames = Frames::default();
        while !self.stopping() {
            self.beat.expect_within(self.round_bound());
            if !self.settle() {
                self.disconnected(&format!(
                    "the peer acknowledged nothing for {:?}",
                    self.dest.write_timeout
                ));
            }
            self.persist(false).await;
            self.fail_back().await;
            let Some(batch) = self.next_batch().await else {
                continue;
            };
            if let Some(why) = self.conn.as_mut().and_then(|c| c.peer_error()) {
                self.disconnected(&why);
                continue;
            }
            if self.conn.is_none() && !self.connect().await {
                continue;
            }
            let datagram = self.conn.as_ref().is_some_and(|c| c.is_datagram());
            frames.fill(
                &self.dest,
                &self.header,
                &batch,
                datagram,
                self.max_message(),
            );
            self.send(&frames, datagram).await;
        }
        self.finish().await
    }

    /// The destination's position from the store (created at the tail for a new destination),
    /// retried every second; `None` when the task must stop first.
    async fn start(&mut self) -> Option<i64> {
        let name = self.dest.name.clone();
        loop {
            self.beat
                .expect_within(Duration::from_secs(1) + LOOP_ALLOWANCE);
            let n = name.clone();
            match self.w.store.call(move |s| s.ensure_position(&n)).await {
                Ok(p) => return Some(p),
                Err(e) => {
                    tracing::error!(destination = %name, error = %e, "cannot read the queue position");
                    if self.stopping() {
                        return None;
                    }
                    self.pause(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// The next events to send, read after what was sent; `None` after waiting instead (the
    /// window is full, the queue holds nothing new, or the store failed).
    async fn next_batch(&mut self) -> Option<Vec<Event>> {
        if self.acks.in_flight() + BATCH > self.window() {
            // Enough in flight: wait for acknowledgements before reading more.
            self.idle().await;
            return None;
        }
        let drained = (*self.w.tail.borrow(), self.acks.sent());
        if self.drained_at == Some(drained) {
            self.idle().await;
            return None;
        }
        let after = self.acks.sent();
        match self.w.store.call(move |s| s.read_after(after, BATCH)).await {
            Ok(batch) if batch.is_empty() => {
                self.drained_at = Some(drained);
                self.idle().await;
                None
            }
            Ok(batch) => Some(batch),
            Err(e) => {
                tracing::error!(destination = %self.dest.name, error = %e, "cannot read the queue");
                self.pause(Duration::from_secs(1)).await;
                None
            }
        }
    }

    /// The longest message the connection takes: `max_message_size`, or less where a datagram
    /// socket takes less.
    fn max_message(&self) -> usize {
        let max = self.dest.max_message_size;
        let socket = self.conn.as_ref().and_then(|c| c.max_datagram());
        socket.map_or(max, |m| m.min(max))
    }

    /// Writes a framed batch on the connection and records what went out as in flight; on a
    /// failure, drops the connection (what it took is kept, the rest is sent again).
    async fn send(&mut self, frames: &Frames, datagram: bool) {
        if crate::failpoint::hit("delivery-panics") {
            panic!("failpoint delivery-panics: destination {}", self.dest.name);
        }
        if crate::failpoint::hit("delivery-hangs") {
            tracing::warn!(destination = %self.dest.name, "failpoint delivery-hangs: this task stops here");
            std::future::pending::<()>().await;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let base = conn.written();
        let result = tokio::time::timeout(
            self.dest.write_timeout,
            conn.send(&frames.buf, &frames.ends),
        )
        .await;
        // Plain TCP maps every frame to its byte offset and datagram transports to its count,
        // so after a failure the frames that did go out are known; TLS maps only the flushed
        // batch.
        let exact = conn.exact_offsets();
        let after = conn.written();
        let complete = matches!(result, Ok(Ok(())));
        self.acks
            .written(&frames.positions, (base, after), exact, complete);
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) if datagram => self.disconnected(&transport::datagram_error(&e)),
            Ok(Err(e)) => self.disconnected(&format!("write failed: {e}")),
            Err(_) => self.disconnected(&format!(
                "write stalled for more than {:?}",
                self.dest.write_timeout
            )),
        }
    }

    /// Nothing to send: wait for new events, the stop signal, or (with frames in flight) the
    /// next acknowledgement check; notice a peer that went away meanwhile.
    async fn idle(&mut self) {
        // With frames in flight the next check is soon: acknowledgements cannot be awaited
        // (they are read from TCP_INFO), and on a fast receiver a 20 ms nap per full window
        // capped delivery at ~50k frames/s. A check is one getsockopt. Likewise while the
        // position is being written: when the last acknowledgement arrived during that write,
        // the loop must come back soon to record it. A 1 s nap here held `once`'s exit, and
        // every SIGTERM drain, up to a second after the last frame was delivered.
        let tick = if self.acks.all_confirmed() && !self.position.writing() {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(2)
        };
        // The task's own receivers, not clones: `changed()` must mark what it saw, or it
        // returns at once forever after the first commit and the task spins.
        let Wiring { tail, shutdown, .. } = &mut self.w;
        tokio::select! {
            _ = tail.changed() => {}
            _ = shutdown.stopped() => {}
            _ = tokio::time::sleep(tick) => {}
        }
        if let Some(why) = self.conn.as_mut().and_then(|c| c.peer_error()) {
            self.disconnected(&why);
        }
    }

    /// At stop: wait (until the stop's deadline) for the peer to acknowledge what is in
    /// flight, record it, close. True when nothing written is left unacknowledged.
    async fn finish(mut self) -> bool {
        let deadline = self.w.shutdown.deadline().unwrap_or_else(Instant::now);
        while self.conn.is_some() && !self.acks.all_confirmed() && Instant::now() < deadline {
            if let Some(why) = self.conn.as_mut().and_then(|c| c.peer_error()) {
                self.disconnected(&why);
                break;
            }
            self.settle();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.settle();
        self.persist(true).await;
        let complete = self.acks.all_confirmed();
        if let Some(c) = self.conn.take() {
            if !complete {
                tracing::warn!(destination = %self.dest.name, peer = %c.peer, unacknowledged = self.acks.in_flight(),
                    "closing before the peer acknowledged every frame; they stay queued");
            }
            c.close(CLOSE_WITHIN).await;
        }
        metrics::get().destination_up(&self.dest.name, false);
        complete
    }
}
