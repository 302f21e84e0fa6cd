//! One delivery task per destination: read a batch after its own position → frame → send →
//! move the position. Destinations never wait for each other; the store is all they share.
//!
//! The position moves after the batch was written (and, at close, acknowledged by the peer's
//! TCP stack); a failed write moves nothing and the batch is sent again on the next
//! connection, so delivery is at least once. The duplicate window is documented in the README.

pub mod transport;

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::config::{DestinationConfig, MsgId, Oversize, Protocol, SyslogConfig};
use crate::encode::{cef, rfc5424};
use crate::store::{Event, Store};
use transport::{Connected, TransportError};

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
    msg: &mut Vec<u8>,
    buf: &mut Vec<u8>,
) -> Framed {
    msg.clear();
    rfc5424::write_message(msg, header, ev.enqueued, &ev.ioc_type, ev.seq, &ev.cef);
    let mut outcome = Framed::Whole;
    if msg.len() > dest.max_message_size {
        let head_len = msg.len() - ev.cef.len();
        let room = dest.max_message_size.saturating_sub(head_len);
        let cut = match dest.oversize {
            Oversize::Truncate => cef::truncate_to(&ev.cef, room),
            Oversize::Drop => None,
        };
        let Some(line) = cut else {
            return Framed::Dropped;
        };
        msg.truncate(head_len);
        msg.extend_from_slice(line.as_bytes());
        outcome = Framed::Truncated;
    }
    if transport::is_stream(dest.protocol) {
        rfc5424::frame(buf, dest.framing, msg);
    } else {
        buf.extend_from_slice(msg);
    }
    outcome
}

/// Handles a delivery task needs.
#[derive(Clone)]
pub struct Wiring {
    pub store: Store,
    /// Bumped by the poller after each commit.
    pub tail: watch::Receiver<i64>,
    /// Becomes true when the task must finish (after the agent decided how long to drain).
    pub stop: watch::Receiver<bool>,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How long a close may wait for the peer to acknowledge what was written.
    pub close_timeout: Duration,
}

/// Spawns the task; it returns true when it ended with every written byte acknowledged.
pub fn spawn(dest: DestinationConfig, header: rfc5424::Header, w: Wiring) -> JoinHandle<bool> {
    tokio::spawn(async move { Task::new(dest, header, w).run().await })
}

struct Task {
    dest: DestinationConfig,
    header: rfc5424::Header,
    w: Wiring,
    conn: Option<Connected>,
    backoff: Backoff,
    failures: u32,
}

impl Task {
    fn new(dest: DestinationConfig, header: rfc5424::Header, w: Wiring) -> Task {
        let backoff = Backoff::new(w.retry_initial, w.retry_max);
        Task {
            dest,
            header,
            w,
            conn: None,
            backoff,
            failures: 0,
        }
    }

    fn stopping(&self) -> bool {
        *self.w.stop.borrow()
    }

    /// Sleeps, waking early when the task must stop.
    async fn pause(&mut self, d: Duration) {
        let mut stop = self.w.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }

    fn disconnected(&mut self, why: &str) {
        if let Some(c) = self.conn.take() {
            tracing::warn!(destination = %self.dest.name, peer = %c.peer, reason = why, "destination disconnected; unacknowledged events will be sent again");
        }
    }

    async fn run(mut self) -> bool {
        let name = self.dest.name.clone();
        let mut pos = loop {
            let n = name.clone();
            match self.w.store.call(move |s| s.position(&n)).await {
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
        let mut msg = Vec::with_capacity(1024);
        let mut buf = Vec::with_capacity(BATCH * 512);
        let mut ends = Vec::with_capacity(BATCH);
        while !self.stopping() {
            let batch = match self.w.store.call(move |s| s.read_after(pos, BATCH)).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(destination = %name, error = %e, "cannot read the queue");
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                let mut tail = self.w.tail.clone();
                let mut stop = self.w.stop.clone();
                tokio::select! {
                    _ = tail.changed() => {}
                    _ = stop.wait_for(|s| *s) => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if self.conn.as_mut().is_some_and(|c| c.peer_gone()) {
                    self.disconnected("peer closed the connection while idle");
                }
                continue;
            }
            if self.conn.as_mut().is_some_and(|c| c.peer_gone()) {
                self.disconnected("peer closed the connection");
            }
            if self.conn.is_none() && !self.connect().await {
                continue;
            }
            buf.clear();
            ends.clear();
            for ev in &batch {
                match frame_event(&self.dest, &self.header, ev, &mut msg, &mut buf) {
                    Framed::Whole => ends.push(buf.len()),
                    Framed::Truncated => {
                        ends.push(buf.len());
                        tracing::warn!(destination = %name, seq = ev.seq, max = self.dest.max_message_size, "event longer than max_message_size; truncated");
                    }
                    Framed::Dropped => {
                        tracing::warn!(destination = %name, seq = ev.seq, max = self.dest.max_message_size, "event longer than max_message_size; dropped");
                    }
                }
            }
            let last = batch.last().map(|e| e.seq).unwrap_or(pos);
            if !buf.is_empty() {
                let Some(conn) = self.conn.as_mut() else {
                    continue;
                };
                match tokio::time::timeout(self.dest.write_timeout, conn.send(&buf, &ends)).await {
                    Ok(Ok(failed)) => {
                        if failed > 0 {
                            tracing::warn!(destination = %name, failed, "datagrams could not be sent (receiver unreachable?)");
                        }
                    }
                    Ok(Err(e)) => {
                        self.disconnected(&format!("write failed: {e}"));
                        let wait = self.backoff.next_delay();
                        self.pause(wait).await;
                        continue;
                    }
                    Err(_) => {
                        self.disconnected(&format!(
                            "write stalled for more than {:?}",
                            self.dest.write_timeout
                        ));
                        let wait = self.backoff.next_delay();
                        self.pause(wait).await;
                        continue;
                    }
                }
            }
            let n = name.clone();
            match self.w.store.call(move |s| s.ack(&n, last)).await {
                Ok(()) => pos = last,
                Err(e) => {
                    // The events went out; not recording it only means sending them again.
                    tracing::error!(destination = %name, error = %e, "cannot record delivery progress");
                    self.pause(Duration::from_secs(1)).await;
                }
            }
        }
        let Some(c) = self.conn.take() else {
            return true;
        };
        let peer = c.peer.clone();
        let acked = c.close(self.w.close_timeout).await;
        if acked {
            tracing::debug!(destination = %name, peer = %peer, "connection closed; the peer acknowledged every byte");
        } else {
            tracing::warn!(destination = %name, peer = %peer, "connection closed before the peer acknowledged every byte");
        }
        acked
    }

    /// One connection attempt; on failure waits the backoff. Returns true when connected.
    async fn connect(&mut self) -> bool {
        let mut stop = self.w.stop.clone();
        let result = tokio::select! {
            r = transport::connect(&self.dest) => r,
            _ = stop.wait_for(|s| *s) => return false,
        };
        match result {
            Ok(c) => {
                if self.failures > 0 || self.dest.protocol != Protocol::Stdout {
                    tracing::info!(destination = %self.dest.name, peer = %c.peer, "destination connected");
                }
                self.conn = Some(c);
                self.failures = 0;
                self.backoff.reset();
                true
            }
            Err(e) => {
                self.failures += 1;
                let wait = self.backoff.next_delay();
                if matches!(e, TransportError::Unsupported(_))
                    || self.failures == 1
                    || self.failures % 10 == 0
                {
                    tracing::warn!(destination = %self.dest.name, error = %e, failures = self.failures, retry_in = ?wait, "cannot connect to destination");
                } else {
                    tracing::debug!(destination = %self.dest.name, error = %e, failures = self.failures, retry_in = ?wait, "cannot connect to destination");
                }
                self.pause(wait).await;
                false
            }
        }
    }
}
