//! Letting a connection go without destroying what the receiver acknowledged: a graceful close
//! at stop or fail-back, an immediate one after a failure.
//!
//! The rule both keep: never reset a peer that may still hold data it acknowledged and did not
//! read yet (a reset makes many stacks discard it, and we already counted it as delivered);
//! reset only a peer that stopped answering altogether.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::tcp::{half_open, leave};
use super::{Conn, Connected};

impl Connected {
    /// Gives up on the connection at once, without waiting for anything; what was not
    /// acknowledged is sent again on the next one. A peer that stopped answering altogether
    /// is reset (SO_LINGER 0), so the kernel stops retrying for it. Any other peer is closed
    /// gracefully (FIN after what the kernel still holds): a reset would make a receiver that
    /// is only slow — e.g. one with a closed window — discard data it acknowledged and did not
    /// read yet (Windows stacks do), and we already counted that as delivered. The kernel may
    /// then still deliver what we send again: duplicates, never loss.
    pub fn abandon(self) {
        let Some(t) = self.tcp() else {
            return;
        };
        if half_open(&t.inner) {
            // A failure leaves an ordinary close, which the kernel retries: nothing to lose.
            let _ = t.inner.set_zero_linger();
            return;
        }
        // Closing a socket with unread input sends a reset: discard what the peer sent last
        // (receivers only send TLS records, which no longer matter).
        let mut scratch = [0u8; 4096];
        while matches!(t.inner.try_read(&mut scratch), Ok(n) if n > 0) {}
        leave(&t.inner);
    }

    /// Closes gracefully: TLS `close_notify` / TCP FIN, then drains what the peer sends (e.g.
    /// session tickets) until it closes too, so our close never turns into a reset that
    /// destroys data in the receiver's buffer — all within `within`, after which the socket
    /// is left to the kernel as in [`Connected::abandon`]. Callers that need delivery confirmed
    /// call [`Connected::wait_acked`] first.
    pub async fn close(self, within: Duration) {
        let deadline = Instant::now() + within;
        match self.conn {
            Conn::Tcp(ref s) if half_open(&s.inner) => self.abandon(),
            Conn::Tcp(mut s) => {
                let _ = s.inner.shutdown().await;
                drain_until_closed(&mut s.inner, deadline).await;
                leave(&s.inner);
            }
            Conn::Tls(ref t) if half_open(&t.tcp().inner) => self.abandon(),
            Conn::Tls(mut t) => {
                // shutdown() sends close_notify, then FIN; a receiver with a closed window
                // leaves it in our buffer until the deadline.
                let _ = tokio::time::timeout_at(deadline, t.stream.shutdown()).await;
                drain_until_closed(&mut t.stream, deadline).await;
                leave(&t.tcp().inner);
            }
            Conn::UnixStream(mut s) => {
                let _ = tokio::time::timeout_at(deadline, s.shutdown()).await;
            }
            Conn::Stdout(mut o) => {
                let _ = tokio::time::timeout_at(deadline, o.flush()).await;
            }
            Conn::Udp(_) | Conn::UnixDatagram(_) => {}
        }
    }
}

/// Reads and discards what the peer sends until it closes too (or fails), at most until
/// `deadline`.
async fn drain_until_closed(r: &mut (impl AsyncRead + Unpin), deadline: Instant) {
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout_at(deadline, async {
        while let Ok(n) = r.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
