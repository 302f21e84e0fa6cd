//! The wire: tcp, tls, udp, unix and stdout behind one small interface (connect, send a batch,
//! ask what the peer acknowledged, close).
//!
//! TCP and TLS sockets get keepalive and `TCP_USER_TIMEOUT` so a peer that vanished is noticed
//! in about `write_timeout` instead of the kernel's default quarter of an hour. Both report the
//! bytes written to the socket (for TLS: ciphertext, counted under rustls) and the bytes the
//! peer's TCP stack acknowledged (`TCP_INFO`), which is what ack-aware delivery needs.
//! A TLS receiver only talks to refuse (an alert) or to close, so [`Connected::peer_error`]
//! reads through rustls on every check: an alert fails the connection.
//!
//! The parts: `connect.rs` opens a connection (tcp, the tls handshake, udp, unix), `tcp.rs` is
//! the counted TCP socket and what the kernel says about it, `close.rs` lets a connection go
//! without destroying what the receiver acknowledged.

mod close;
mod connect;
mod tcp;

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{UdpSocket, UnixDatagram, UnixStream};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use super::tls::{self, PeerInfo, TlsError};
use tcp::Counted;

pub use connect::{connect, connect_primary, TlsCache};
pub use tcp::stopped_answering;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot resolve {address}: {source}")]
    Resolve { address: String, source: io::Error },
    #[error("{address} resolves to no address")]
    NoAddress { address: String },
    #[error("connect to {address} failed: {reason}")]
    Connect { address: String, reason: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsError),
}

enum Conn {
    Tcp(Counted),
    Tls(Box<Tls>),
    Udp(Udp),
    UnixStream(UnixStream),
    UnixDatagram(UnixDatagram),
    Stdout(tokio::io::Stdout),
}

/// A TLS stream and what it takes to know that the receiver accepted us (see
/// [`Connected::acked`]).
struct Tls {
    stream: TlsStream<Counted>,
    /// When the handshake finished.
    established: Instant,
    /// Bytes read from the socket when the handshake finished (TLS 1.3 only). Anything read
    /// later (session tickets, the answer to our key update) proves the receiver accepted us.
    read_at_handshake: Option<u64>,
    /// Give up waiting for that proof after this long without an alert.
    confirm_after: Duration,
    /// Protocol version, cipher and certificate the handshake settled on.
    peer: PeerInfo,
}

impl Tls {
    fn tcp(&self) -> &Counted {
        self.stream.get_ref().0
    }

    /// Whether the receiver is known to have accepted us: always on TLS 1.2, on TLS 1.3 once
    /// it sent something after the handshake or `confirm_after` passed without an alert.
    fn confirmed(&self) -> bool {
        match self.read_at_handshake {
            Some(at) => self.tcp().read > at || self.established.elapsed() >= self.confirm_after,
            None => true,
        }
    }
}

/// A connected UDP socket and which of the frames sent on it count as delivered.
struct Udp {
    sock: UdpSocket,
    /// Frames sent per batch (a running count) and when, until [`UDP_CONFIRM`] without a
    /// refusal passed.
    unconfirmed: VecDeque<(u64, Instant)>,
    /// Frames sent at least [`UDP_CONFIRM`] ago with no refusal since.
    confirmed: u64,
}

impl Udp {
    fn new(sock: UdpSocket) -> Udp {
        Udp {
            sock,
            unconfirmed: VecDeque::new(),
            confirmed: 0,
        }
    }

    /// Frames sent at least [`UDP_CONFIRM`] ago, with no refusal since.
    fn confirm(&mut self) -> u64 {
        while let Some(&(frames, at)) = self.unconfirmed.front() {
            if at.elapsed() < UDP_CONFIRM {
                break;
            }
            self.confirmed = frames;
            self.unconfirmed.pop_front();
        }
        self.confirmed
    }
}

/// An open connection to one destination.
pub struct Connected {
    conn: Conn,
    /// The address we actually reached, for logs.
    pub peer: String,
    /// Which entry of the destination's address list this connection reached (0 = primary).
    pub address_index: usize,
    /// Datagram transports: frames handed to the kernel on this connection.
    frames_sent: u64,
}

/// How long a UDP datagram must go without an ICMP refusal before it counts as delivered. A
/// refusal (nobody listens on the port) comes back within a round trip; until then the frame
/// stays in flight and is sent again if the refusal comes.
pub const UDP_CONFIRM: Duration = Duration::from_millis(200);

/// Why a datagram send failed, for the log: an ICMP refusal (UDP: nobody listens on the
/// port), a socket that was closed or replaced (unix: the receiving daemon restarted), no
/// route. The frame was not delivered either way.
pub fn datagram_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => format!("the receiver refused a datagram ({e})"),
        _ => format!("a datagram could not be sent ({e})"),
    }
}

impl Connected {
    fn new(conn: Conn, peer: String) -> Connected {
        Connected {
            conn,
            peer,
            address_index: 0,
            frames_sent: 0,
        }
    }

    /// Protocol version, cipher and certificate of a TLS connection; `None` on the others.
    pub fn tls(&self) -> Option<&PeerInfo> {
        match &self.conn {
            Conn::Tls(t) => Some(&t.peer),
            _ => None,
        }
    }

    /// Frames go one per datagram, without stream framing.
    pub fn is_datagram(&self) -> bool {
        matches!(self.conn, Conn::Udp(_) | Conn::UnixDatagram(_))
    }

    /// The largest message the socket takes, where it is less than any `max_message_size`
    /// allows: a unix datagram socket refuses (EMSGSIZE) a datagram larger than its send buffer,
    /// and sending it again would never succeed.
    pub fn max_datagram(&self) -> Option<usize> {
        let Conn::UnixDatagram(sock) = &self.conn else {
            return None;
        };
        use std::os::fd::AsRawFd;
        let mut sndbuf: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `sndbuf` and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &mut sndbuf as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        // The kernel keeps some of the buffer for its own bookkeeping of the datagram.
        (rc == 0).then(|| usize::try_from(sndbuf).unwrap_or(0).saturating_sub(1024))
    }

    /// Frame ends map to exact positions on this connection: byte offsets on plain TCP, frame
    /// counts on datagram transports. Under TLS only a whole flushed batch maps to a wire
    /// offset.
    pub fn exact_offsets(&self) -> bool {
        matches!(
            self.conn,
            Conn::Tcp(_) | Conn::Udp(_) | Conn::UnixDatagram(_)
        )
    }

    /// The reason the peer is gone — it closed, reset, (TLS) sent an alert, or (datagrams) a
    /// send was refused — or `None` while the connection is healthy. Receivers never talk back
    /// otherwise, so this reads and discards whatever arrived; writing after any of these would
    /// lose data.
    pub fn peer_error(&mut self) -> Option<String> {
        let pending = match &self.conn {
            Conn::Udp(u) => Some(u.sock.take_error()),
            Conn::UnixDatagram(s) => Some(s.take_error()),
            _ => None,
        };
        if let Some(pending) = pending {
            return match pending {
                Ok(None) => None,
                Ok(Some(e)) | Err(e) => Some(datagram_error(&e)),
            };
        }
        let mut scratch = [0u8; 4096];
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            // One non-blocking poll: Pending means "nothing to read", which is the healthy case.
            let r = match &mut self.conn {
                Conn::Tcp(s) => Pin::new(&mut s.inner).poll_read(&mut cx, &mut buf),
                Conn::Tls(t) => Pin::new(&mut t.stream).poll_read(&mut cx, &mut buf),
                Conn::UnixStream(s) => Pin::new(s).poll_read(&mut cx, &mut buf),
                _ => return None,
            };
            match r {
                Poll::Pending => return None,
                Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                    return Some("peer closed the connection".into())
                }
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(e)) => {
                    return Some(match &self.conn {
                        Conn::Tls(_) => tls::describe_error(&e),
                        _ => e.to_string(),
                    })
                }
            }
        }
    }

    /// Sends a batch. `ends` are the byte offsets where each frame ends (datagram transports
    /// send each frame on its own). On a datagram transport the first frame the kernel refuses
    /// ends the batch with that error: the frames before it were sent (see
    /// [`Connected::written`]), it and the rest were not.
    pub async fn send(&mut self, buf: &[u8], ends: &[usize]) -> io::Result<()> {
        match &mut self.conn {
            Conn::Tcp(s) => {
                // Write by write, so the byte count stays exact even when the caller's
                // timeout cancels this future half-way.
                let mut off = 0;
                while off < buf.len() {
                    let n = s.write(&buf[off..]).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    off += n;
                }
                Ok(())
            }
            Conn::Tls(t) => {
                t.stream.write_all(buf).await?;
                t.stream.flush().await
            }
            Conn::UnixStream(s) => s.write_all(buf).await,
            Conn::Stdout(o) => {
                o.write_all(buf).await?;
                o.flush().await
            }
            Conn::Udp(_) | Conn::UnixDatagram(_) => {
                let mut start = 0;
                for &end in ends {
                    let frame = &buf[start..end];
                    match &self.conn {
                        Conn::Udp(u) => u.sock.send(frame).await?,
                        Conn::UnixDatagram(sock) => sock.send(frame).await?,
                        _ => 0,
                    };
                    // Counted as it goes: a timeout may cancel the batch half-way.
                    self.frames_sent += 1;
                    start = end;
                }
                if let Conn::Udp(u) = &mut self.conn {
                    u.unconfirmed.push_back((self.frames_sent, Instant::now()));
                }
                Ok(())
            }
        }
    }

    fn tcp(&self) -> Option<&Counted> {
        match &self.conn {
            Conn::Tcp(s) => Some(s),
            Conn::Tls(t) => Some(t.tcp()),
            _ => None,
        }
    }

    /// How far writing got on this connection: bytes on TCP and TLS, frames on datagram
    /// transports.
    pub fn written(&self) -> u64 {
        if self.is_datagram() {
            return self.frames_sent;
        }
        self.tcp().map(|t| t.written).unwrap_or(0)
    }

    /// How far the peer is known to have what was written (in the units of
    /// [`Connected::written`]), when the transport can tell. `None` means "written" is all we
    /// can know (unix stream sockets and stdout hand data straight to the reader).
    ///
    /// TCP and TLS: the bytes the peer's TCP stack acknowledged. A TLS 1.3 receiver that
    /// refuses our client certificate does so *after* our side of the handshake completed, with
    /// an alert; its TCP stack may already have acknowledged our first frames. So on TLS 1.3
    /// nothing counts as acknowledged until the receiver sent something after the handshake
    /// (session tickets, the answer to our key update) — proof it accepted us — or, for a
    /// receiver that sends nothing at all, until half of `write_timeout` passed without an
    /// alert.
    ///
    /// Unix datagram sockets: every frame sent is in the receiver's queue. UDP: frames sent at
    /// least [`UDP_CONFIRM`] ago without a refusal.
    pub fn acked(&mut self) -> Option<u64> {
        match &mut self.conn {
            Conn::UnixDatagram(_) => return Some(self.frames_sent),
            Conn::Udp(u) => return Some(u.confirm()),
            _ => {}
        }
        let acked = self.tcp()?.acked()?;
        Some(if self.confirmed() { acked } else { 0 })
    }

    /// Whether the receiver is known to have accepted this connection (always, except on a
    /// fresh TLS 1.3 connection; see [`Connected::acked`]).
    pub fn confirmed(&self) -> bool {
        match &self.conn {
            Conn::Tls(t) => t.confirmed(),
            _ => true,
        }
    }

    /// Waits (up to `timeout`) until the peer acknowledged every byte written. `Ok` when it
    /// did, or when the transport cannot tell; `Err` with the reason as soon as the peer refuses
    /// or closes (the reason is read once: a second read of a failed TLS stream may not repeat
    /// it), or when `timeout` passes.
    pub async fn wait_acked(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(why) = self.peer_error() {
                return Err(why);
            }
            match self.acked() {
                None => return Ok(()),
                Some(a) if a >= self.written() => return Ok(()),
                Some(_) if Instant::now() >= deadline => {
                    return Err(format!(
                        "the peer did not acknowledge what was sent within {timeout:?}"
                    ))
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DestinationConfig;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn tcp_dest(address: String) -> DestinationConfig {
        let mut d = crate::demo::destination(Some(&format!("tcp://{address}"))).unwrap();
        d.write_timeout = Duration::from_secs(5);
        d
    }

    #[tokio::test]
    async fn acked_counts_exactly_the_payload_the_peer_received() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got.len()
        });
        let mut c = connect(&tcp_dest(addr), &mut TlsCache::default(), None)
            .await
            .unwrap();
        assert_eq!(c.acked(), Some(0));
        let payload = vec![b'x'; 100_000];
        c.send(&payload, &[payload.len()]).await.unwrap();
        assert!(c.wait_acked(Duration::from_secs(10)).await.is_ok());
        assert_eq!(c.acked(), Some(100_000));
        assert_eq!(c.written(), 100_000);
        c.close(Duration::from_millis(500)).await;
        assert_eq!(server.await.unwrap(), 100_000);
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_leaves_bytes_unacknowledged() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let _ = rx.await; // hold the socket open without reading
            drop(s);
        });
        let mut c = connect(&tcp_dest(addr), &mut TlsCache::default(), None)
            .await
            .unwrap();
        // Far more than any loopback receive buffer: part of it must stay unacknowledged.
        let chunk = vec![b'y'; 1 << 20];
        let mut sent = 0u64;
        for _ in 0..64 {
            match tokio::time::timeout(Duration::from_millis(200), c.send(&chunk, &[chunk.len()]))
                .await
            {
                Ok(Ok(_)) => sent += chunk.len() as u64,
                _ => break,
            }
        }
        assert!(c.wait_acked(Duration::from_millis(300)).await.is_err());
        let acked = c.acked().unwrap();
        assert!(
            acked < c.written().max(sent),
            "acked {acked} of {}",
            c.written()
        );
        let _ = tx.send(());
        server.await.unwrap();
    }
}
