//! The task's connection: one attempt at a time after the backoff, moving back to the primary
//! address when it answers again, and giving a connection up so that what it did not
//! acknowledge is sent again on the next one.

use std::time::Duration;

use tokio::time::Instant;

use super::{Task, CLOSE_WITHIN};
use crate::config::Protocol;
use crate::deliver::transport::{self, Connected, TransportError};
use crate::metrics;

impl Task {
    /// Drops the connection; everything not acknowledged is sent again on the next one, after
    /// the backoff (a receiver that accepts and then closes or refuses at once is not
    /// hammered). How the socket is let go is [`Connected::abandon`]'s choice.
    ///
    /// [`Connected::abandon`]: transport::Connected::abandon
    pub(super) fn disconnected(&mut self, why: &str) {
        // On plain TCP what the peer acknowledged is delivered, and so is what a unix socket
        // took. On TLS the failure may be the receiver refusing us, which voids everything it
        // acknowledged; on UDP it may be a refusal of frames old enough to look confirmed by
        // now (the last settle absorbed what was confirmed before it): replay it all.
        let voids = self.conn.as_ref().is_some_and(|c| c.tls().is_some())
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
                replay = self.acks.in_flight(),
                retry_in = ?wait,
                "destination disconnected; unacknowledged events will be sent again"
            );
            c.abandon();
        }
        self.acks.replay();
    }

    /// On a fallback address, probes the first address of the list every `retry_max` and
    /// moves back when it answers. The old connection is closed after what it acknowledged is
    /// recorded; the rest is replayed on the primary.
    pub(super) async fn fail_back(&mut self) {
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
        self.acks.replay();
        self.acks.new_connection();
        self.conn = Some(primary);
    }

    /// One connection attempt, once the backoff after the last failure has passed. Returns
    /// true when connected.
    pub(super) async fn connect(&mut self) -> bool {
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
                self.connected(c);
                true
            }
            Err(e) => {
                self.connect_failed(&e);
                false
            }
        }
    }

    /// Takes a new connection: logs what it reached, exports the certificate's expiry, starts
    /// its acknowledgement count.
    fn connected(&mut self, c: Connected) {
        match c.tls() {
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
        self.acks.new_connection();
    }

    /// A failed attempt: the next one after the backoff. Logged as a warning the first time,
    /// every tenth time, and always for a TLS configuration error; otherwise at debug level.
    fn connect_failed(&mut self, e: &TransportError) {
        metrics::get().destination_up(&self.dest.name, false);
        self.failures += 1;
        let wait = self.backoff.next_delay();
        if matches!(e, TransportError::Tls(_)) || self.failures == 1 || self.failures % 10 == 0 {
            tracing::warn!(destination = %self.dest.name, error = %e, failures = self.failures, retry_in = ?wait, "cannot connect to destination");
        } else {
            tracing::debug!(destination = %self.dest.name, error = %e, failures = self.failures, retry_in = ?wait, "cannot connect to destination");
        }
        self.next_connect = Some(Instant::now() + wait);
    }
}
