//! One delivery task per destination: read a batch after its own position → frame → send →
//! move the position. Destinations never wait for each other; the store is all they share.
//!
//! Ack-aware: the durable position moves only past frames the peer's TCP stack has
//! acknowledged. Each written frame is remembered with the byte offset where it ends on the
//! current connection; `TCP_INFO` says how many bytes the peer acknowledged; frames below that
//! line are delivered. When a connection fails, every frame not known to be acknowledged is
//! sent again on the next one (at least once). Transports that cannot tell (udp, stdout, other
//! systems than Linux) fall back to "delivered once written".

pub mod tls;
pub mod transport;

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::{DestinationConfig, MsgId, Oversize, Protocol, SyslogConfig};
use crate::encode::{cef, rfc5424};
use crate::liveness::{Heartbeat, Liveness};
use crate::metrics;
use crate::shutdown::Shutdown;
use crate::store::{Event, Store};
use transport::{Connected, TlsCache, TransportError};

/// Events read and written per round trip to the store.
const BATCH: usize = 512;

/// The machine's hostname for the RFC 5424 HOSTNAME field when the config leaves it empty.
pub fn machine_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "-".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Builds the constant part of every frame for a destination.
pub fn header_for(dest: &DestinationConfig, syslog: &SyslogConfig) -> rfc5424::Header {
    let hostname = if syslog.hostname.is_empty() {
        machine_hostname()
    } else {
        syslog.hostname.clone()
    };
    let msgid = match &syslog.msgid {
        MsgId::IocType => None,
        MsgId::Fixed(m) => Some(m.as_str()),
    };
    rfc5424::Header::new(
        dest.format,
        syslog.facility,
        syslog.severity,
        &hostname,
        &syslog.app_name,
        std::process::id(),
        msgid,
        syslog.structured_data,
    )
}

/// What happened to one event while framing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed {
    Whole,
    Truncated,
    Dropped,
}

/// Frames one event into `buf` (appending) within `max_message_size`, truncating or dropping
/// per `oversize`. `msg` is scratch space reused across calls.
pub fn frame_event(
    dest: &DestinationConfig,
    header: &rfc5424::Header,
    ev: &Event,
    datagram: bool,
    msg: &mut Vec<u8>,
    buf: &mut Vec<u8>,
) -> Framed {
    frame_event_within(dest, header, ev, datagram, dest.max_message_size, msg, buf)
}

/// [`frame_event`] within `max` bytes instead of the destination's `max_message_size` (a
/// datagram socket may take less).
fn frame_event_within(
    dest: &DestinationConfig,
    header: &rfc5424::Header,
    ev: &Event,
    datagram: bool,
    max: usize,
    msg: &mut Vec<u8>,
    buf: &mut Vec<u8>,
) -> Framed {
    msg.clear();
    let line = ev.cef();
    rfc5424::write_message(msg, header, ev.enqueued, ev.ioc_type(), ev.seq, line);
    let mut outcome = Framed::Whole;
    if msg.len() > max {
        let head_len = msg.len() - line.len();
        if head_len >= max {
            // Not even the header fits (a datagram socket smaller than any sane message).
            return Framed::Dropped;
        }
        let room = max - head_len;
        let cut = match dest.oversize {
            Oversize::Truncate => cef::truncate_to(line, room),
            Oversize::Drop => None,
        };
        let Some(line) = cut else {
            return Framed::Dropped;
        };
        msg.truncate(head_len);
        msg.extend_from_slice(line.as_bytes());
        outcome = Framed::Truncated;
    }
    if datagram {
        buf.extend_from_slice(msg);
    } else {
        rfc5424::frame(buf, dest.framing, msg);
    }
    outcome
}

/// Handles a delivery task needs.
#[derive(Clone)]
pub struct Wiring {
    pub store: Store,
    /// Bumped by the poller after each commit.
    pub tail: watch::Receiver<i64>,
    /// Fires when the task must finish, with the instant by which it must be done (the agent
    /// decided how long to drain before).
    pub shutdown: Shutdown,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Where the task promises its next beat, for the watchdog.
    pub liveness: Liveness,
}

/// Spawns the task; it returns true when it ended with every written frame acknowledged.
pub fn spawn(dest: DestinationConfig, header: rfc5424::Header, w: Wiring) -> JoinHandle<bool> {
    tokio::spawn(async move { Task::new(dest, header, w).run().await })
}

/// How often acknowledgements are written to the store at most while frames are in flight.
/// Position updates are not fsync'd (a lost one only means re-sending, never losing), so this
/// only bounds the write rate.
const PERSIST_EVERY: Duration = Duration::from_millis(20);

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

/// One batch framed for the wire, with the buffers reused from batch to batch.
#[derive(Default)]
struct Frames {
    /// Scratch for one message before framing.
    msg: Vec<u8>,
    /// The batch as it goes on the wire.
    buf: Vec<u8>,
    /// Where each frame sent ends in `buf` (datagram transports send each on its own).
    ends: Vec<usize>,
    /// Every event of the batch with its position on this connection once it is sent (a byte
    /// offset into `buf`, or on datagram transports a count of frames), and whether it is a
    /// frame at all. A dropped event "ends" where the frame before it ended: it is done with once
    /// everything before it is delivered.
    positions: Vec<(i64, usize, bool)>,
}

/// A frame (or a dropped event) written on the current connection and not yet known to be
/// delivered.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: i64,
    /// Where it ends on the connection, in the units of [`Connected::written`].
    ///
    /// [`Connected::written`]: transport::Connected::written
    end: u64,
    /// False for an event dropped as oversize: it moves the position but is not counted as
    /// delivered, and proves nothing about the receiver.
    frame: bool,
}

impl Frames {
    /// Frames `batch` within `max` bytes a message, counting and logging what had to be
    /// truncated or dropped.
    fn fill(
        &mut self,
        dest: &DestinationConfig,
        header: &rfc5424::Header,
        batch: &[Event],
        datagram: bool,
        max: usize,
    ) {
        self.buf.clear();
        self.ends.clear();
        self.positions.clear();
        let name = &dest.name;
        for ev in batch {
            let framed = frame_event_within(
                dest,
                header,
                ev,
                datagram,
                max,
                &mut self.msg,
                &mut self.buf,
            );
            match framed {
                Framed::Whole => self.ends.push(self.buf.len()),
                Framed::Truncated => {
                    self.ends.push(self.buf.len());
                    metrics::get().truncated(name);
                    tracing::warn!(destination = %name, seq = ev.seq, max, "event longer than max_message_size; truncated");
                }
                Framed::Dropped => {
                    metrics::get().dropped(name, "oversize", 1);
                    tracing::warn!(destination = %name, seq = ev.seq, max, "event longer than max_message_size; dropped");
                }
            }
            let at = if datagram {
                self.ends.len()
            } else {
                self.buf.len()
            };
            self.positions.push((ev.seq, at, framed != Framed::Dropped));
        }
    }
}

struct Task {
    dest: DestinationConfig,
    header: rfc5424::Header,
    w: Wiring,
    conn: Option<Connected>,
    tls: TlsCache,
    backoff: Backoff,
    failures: u32,
    /// Highest seq the peer is known to have (acknowledged, or written where we cannot tell).
    acked: i64,
    /// Highest seq recorded in the store.
    persisted: i64,
    last_persist: Instant,
    /// After a failed position write: not before this instant again (unless forced), so a
    /// broken store is retried once a second rather than in a loop.
    persist_retry_at: Option<Instant>,
    /// A position being written in the background: (seq, the write). Delivery does not wait
    /// for it; it would otherwise stall behind every page commit holding the store.
    persisting: Option<(
        i64,
        tokio::task::JoinHandle<Result<(), crate::store::StoreError>>,
    )>,
    /// Highest seq written on the current connection (= `acked` when none).
    sent: i64,
    /// Written on this connection and not yet known to be delivered, in order.
    inflight: VecDeque<InFlight>,
    /// Acknowledged bytes at the last check, and when that number last grew.
    last_acked_bytes: u64,
    last_ack_progress: Instant,
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
    fn new(dest: DestinationConfig, header: rfc5424::Header, w: Wiring) -> Task {
        let backoff = Backoff::new(w.retry_initial, w.retry_max);
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
            acked: 0,
            persisted: 0,
            last_persist: Instant::now(),
            persist_retry_at: None,
            persisting: None,
            sent: 0,
            inflight: VecDeque::new(),
            last_acked_bytes: 0,
            last_ack_progress: Instant::now(),
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
        let mut delivered = 0u64;
        while let Some(f) = self.inflight.front() {
            if acked_to.is_some_and(|a| f.end > a) {
                break;
            }
            self.acked = self.acked.max(f.seq);
            delivered += u64::from(f.frame);
            self.inflight.pop_front();
        }
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
        let Some(acked_to) = acked_to else {
            return true;
        };
        if acked_to > self.last_acked_bytes || self.inflight.is_empty() {
            self.last_acked_bytes = acked_to;
            self.last_ack_progress = Instant::now();
            return true;
        }
        self.last_ack_progress.elapsed() < self.stall_limit()
    }

    /// How long the peer may confirm nothing of what is in flight before the connection counts
    /// as stalled. A UDP frame cannot be confirmed before [`transport::UDP_CONFIRM`].
    fn stall_limit(&self) -> Duration {
        match self.dest.protocol {
            Protocol::Udp => self.dest.write_timeout.max(2 * transport::UDP_CONFIRM),
            _ => self.dest.write_timeout,
        }
    }

    /// Writes `acked` to the store when it moved: in the background, at most one write at a
    /// time and one per [`PERSIST_EVERY`] while frames are in flight. With `force` (at stop),
    /// waits for the write in flight and writes the latest position before returning.
    async fn persist(&mut self, force: bool) {
        if let Some((seq, h)) = self.persisting.take() {
            if !force && !h.is_finished() {
                self.persisting = Some((seq, h));
                return;
            }
            self.record_persisted(seq, h.await);
        }
        if self.acked <= self.persisted {
            return;
        }
        if !force && !self.inflight.is_empty() && self.last_persist.elapsed() < PERSIST_EVERY {
            return;
        }
        if !force && self.persist_retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let (name, seq, store) = (self.dest.name.clone(), self.acked, self.w.store.clone());
        self.last_persist = Instant::now();
        let h = tokio::task::spawn_blocking(move || store.ack(&name, seq));
        if force {
            self.record_persisted(seq, h.await);
        } else {
            self.persisting = Some((seq, h));
        }
    }

    fn record_persisted(
        &mut self,
        seq: i64,
        done: Result<Result<(), crate::store::StoreError>, tokio::task::JoinError>,
    ) {
        self.persist_retry_at = Some(Instant::now() + Duration::from_secs(1));
        match done {
            Ok(Ok(())) => {
                self.persisted = self.persisted.max(seq);
                self.persist_retry_at = None;
            }
            // The events are delivered; not recording it only means sending them again after
            // a restart. Keep going and retry at the next persist.
            Ok(Err(e)) => {
                tracing::error!(destination = %self.dest.name, error = %e, "cannot record delivery progress")
            }
            Err(e) => {
                tracing::error!(destination = %self.dest.name, error = %e, "recording delivery progress stopped")
            }
        }
    }

    /// Drops the connection; everything not acknowledged is sent again on the next one, after
    /// the backoff (a receiver that accepts and then closes or refuses at once is not
    /// hammered). How the socket is let go is [`Connected::abandon`]'s choice.
    ///
    /// [`Connected::abandon`]: transport::Connected::abandon
    fn disconnected(&mut self, why: &str) {
        // On plain TCP what the peer acknowledged is delivered, and so is what a unix socket
        // took. On TLS the failure may be the receiver refusing us, which voids everything it
        // acknowledged; on UDP it may be a refusal of frames old enough to look confirmed by
        // now (the last settle absorbed what was confirmed before it): replay it all.
        let voids = self.conn.as_ref().is_some_and(|c| c.tls.is_some())
            || self.dest.protocol == Protocol::Udp;
        if !voids {
            self.absorb_acks();
        }
        metrics::get().destination_up(&self.dest.name, false);
        let wait = self.backoff.next_delay();
        self.next_connect = Some(Instant::now() + wait);
        if let Some(c) = self.conn.take() {
            tracing::warn!(
                destination = %self.dest.name,
                peer = %c.peer,
                reason = why,
                replay = self.inflight.len(),
                retry_in = ?wait,
                "destination disconnected; unacknowledged events will be sent again"
            );
            c.abandon();
        }
        self.inflight.clear();
        self.sent = self.acked;
    }

    async fn run(mut self) -> bool {
        let name = self.dest.name.clone();
        let start = loop {
            self.beat
                .expect_within(Duration::from_secs(1) + LOOP_ALLOWANCE);
            let n = name.clone();
            match self.w.store.call(move |s| s.ensure_position(&n)).await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::error!(destination = %name, error = %e, "cannot read the queue position");
                    if self.stopping() {
                        return false;
                    }
                    self.pause(Duration::from_secs(1)).await;
                }
            }
        };
        (self.acked, self.persisted, self.sent) = (start, start, start);
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
            if self.inflight.len() + BATCH > self.window() {
                // Enough in flight: wait for acknowledgements before reading more.
                self.idle().await;
                continue;
            }
            let drained = (*self.w.tail.borrow(), self.sent);
            if self.drained_at == Some(drained) {
                self.idle().await;
                continue;
            }
            let after = self.sent;
            let batch = match self.w.store.call(move |s| s.read_after(after, BATCH)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(destination = %name, error = %e, "cannot read the queue");
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                self.drained_at = Some(drained);
                self.idle().await;
                continue;
            }
            if let Some(why) = self.conn.as_mut().and_then(|c| c.peer_error()) {
                self.disconnected(&why);
                continue;
            }
            if self.conn.is_none() && !self.connect().await {
                continue;
            }
            let datagram = self.conn.as_ref().is_some_and(|c| c.is_datagram());
            let max = self.conn.as_ref().map_or(self.dest.max_message_size, |c| {
                c.max_datagram().map_or(self.dest.max_message_size, |m| {
                    m.min(self.dest.max_message_size)
                })
            });
            frames.fill(&self.dest, &self.header, &batch, datagram, max);
            self.send(&frames, datagram).await;
        }
        self.finish().await
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
        let before = self.inflight.len();
        for &(seq, end, frame) in &frames.positions {
            let end = if exact { base + end as u64 } else { after };
            if !complete && (!exact || end > after) {
                break;
            }
            self.inflight.push_back(InFlight { seq, end, frame });
        }
        match result {
            Ok(Ok(())) => {
                self.sent = frames.positions.last().map_or(self.sent, |f| f.0);
                if before == 0 {
                    // Nothing was in flight before: the stall clock starts now.
                    self.last_ack_progress = Instant::now();
                }
            }
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
        let tick = if self.inflight.is_empty() && self.persisting.is_none() {
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
        while self.conn.is_some() && !self.inflight.is_empty() && Instant::now() < deadline {
            if let Some(why) = self.conn.as_mut().and_then(|c| c.peer_error()) {
                self.disconnected(&why);
                break;
            }
            self.settle();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.settle();
        self.persist(true).await;
        let complete = self.inflight.is_empty();
        if let Some(c) = self.conn.take() {
            if !complete {
                tracing::warn!(destination = %self.dest.name, peer = %c.peer, unacknowledged = self.inflight.len(),
                    "closing before the peer acknowledged every frame; they stay queued");
            }
            c.close(CLOSE_WITHIN).await;
        }
        metrics::get().destination_up(&self.dest.name, false);
        complete
    }

    /// On a fallback address, probes the first address of the list every `retry_max` and
    /// moves back when it answers. The old connection is closed after what it acknowledged is
    /// recorded; the rest is replayed on the primary.
    async fn fail_back(&mut self) {
        let on_fallback = self.conn.as_ref().is_some_and(|c| c.address_index > 0);
        if !on_fallback || self.last_probe.elapsed() < self.w.retry_max {
            return;
        }
        self.last_probe = Instant::now();
        let mut stop = self.w.shutdown.clone();
        let probe = tokio::select! {
            r = transport::connect_primary(&self.dest, &mut self.tls, Some(&self.beat)) => r,
            _ = stop.stopped() => return,
        };
        let Ok(primary) = probe else {
            tracing::debug!(destination = %self.dest.name, "primary address still unreachable; staying on the fallback");
            return;
        };
        if let Some(old) = self.conn.as_mut() {
            // Whatever it did not acknowledge is replayed on the primary.
            let _ = old.wait_acked(Duration::from_secs(2)).await;
        }
        self.settle();
        self.persist(true).await;
        if let Some(old) = self.conn.take() {
            tracing::info!(destination = %self.dest.name, from = %old.peer, to = %primary.peer,
                "primary address answers again; failing back");
            old.close(CLOSE_WITHIN).await;
        }
        self.inflight.clear();
        self.sent = self.acked;
        self.last_acked_bytes = 0;
        self.last_ack_progress = Instant::now();
        self.conn = Some(primary);
    }

    /// One connection attempt, once the backoff after the last failure has passed. Returns
    /// true when connected.
    async fn connect(&mut self) -> bool {
        if let Some(at) = self.next_connect {
            let wait = at.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                self.pause(wait).await;
                if self.stopping() {
                    return false;
                }
            }
        }
        let mut stop = self.w.shutdown.clone();
        let result = tokio::select! {
            r = transport::connect(&self.dest, &mut self.tls, Some(&self.beat)) => r,
            _ = stop.stopped() => return false,
        };
        match result {
            Ok(c) => {
                match &c.tls {
                    Some(t) => {
                        tracing::info!(destination = %self.dest.name, peer = %c.peer, tls = %t.version,
                            cipher = %t.cipher, certificate = %t.subject, "destination connected");
                        if let Some(exp) = t.not_after {
                            metrics::get()
                                .tls_expiry
                                .get_or_create(&metrics::DestLabel {
                                    destination: self.dest.name.clone(),
                                })
                                .set(exp.timestamp());
                        }
                    }
                    None if self.dest.protocol != Protocol::Stdout => {
                        tracing::info!(destination = %self.dest.name, peer = %c.peer, "destination connected");
                    }
                    None => {}
                }
                if c.address_index > 0 {
                    self.last_probe = Instant::now();
                    tracing::warn!(destination = %self.dest.name, peer = %c.peer,
                        "connected to a fallback address; probing the first one every retry_max");
                }
                if let Some(max) = c.max_datagram().filter(|m| *m < self.dest.max_message_size) {
                    tracing::info!(destination = %self.dest.name, max,
                        "the datagram socket takes at most this many bytes a message; longer ones are cut or dropped (oversize)");
                }
                self.conn = Some(c);
                self.next_connect = None;
                if self.dest.protocol != Protocol::Udp {
                    metrics::get().destination_up(&self.dest.name, true);
                }
                self.last_acked_bytes = 0;
                self.last_ack_progress = Instant::now();
                true
            }
            Err(e) => {
                metrics::get().destination_up(&self.dest.name, false);
                self.failures += 1;
                let wait = self.backoff.next_delay();
                if matches!(e, TransportError::Tls(_))
                    || self.failures == 1
                    || self.failures % 10 == 0
                {
                    tracing::warn!(destination = %self.dest.name, error = %e, failures = self.failures, retry_in = ?wait, "cannot connect to destination");
                } else {
                    tracing::debug!(destination = %self.dest.name, error = %e, failures = self.failures, retry_in = ?wait, "cannot connect to destination");
                }
                self.next_connect = Some(Instant::now() + wait);
                false
            }
        }
    }
}
