//! The TCP socket under tcp and tls destinations: byte counters for what went out and came
//! in, the socket options that make a vanished peer noticed, and what the kernel says the peer
//! acknowledged (`TCP_INFO`, Linux).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that counts the bytes written to and read from the socket (under TLS:
/// ciphertext).
pub(super) struct Counted {
    pub(super) inner: TcpStream,
    pub(super) written: u64,
    pub(super) read: u64,
    /// `tcpi_bytes_acked` right after connecting: Linux counts the SYN as one acknowledged
    /// byte, so payload acknowledgements are counted from here.
    pub(super) ack_base: u64,
}

impl Counted {
    /// Tunes a fresh connection (see [`tune_tcp`]) and starts counting on it.
    pub(super) fn new(stream: TcpStream, write_timeout: Duration) -> Counted {
        tune_tcp(&stream, write_timeout);
        let ack_base = bytes_acked(&stream).unwrap_or(0);
        Counted {
            inner: stream,
            written: 0,
            read: 0,
            ack_base,
        }
    }

    /// Payload bytes the peer's TCP stack acknowledged on this connection, capped at what was
    /// written (the peer's acknowledgement of our FIN counts one more); `None` where the
    /// platform cannot tell.
    pub(super) fn acked(&self) -> Option<u64> {
        let raw = bytes_acked(&self.inner)?;
        Some(raw.saturating_sub(self.ack_base).min(self.written))
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.read += (buf.filled().len() - before) as u64;
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Keepalive and `TCP_USER_TIMEOUT` (Linux): a peer that vanished is noticed by the kernel in
/// about twice `write_timeout`. Delivery's own stall check (no acknowledgement progress for
/// `write_timeout`) comes first and decides how to close; the kernel's limit is the backstop.
/// It is not `write_timeout` itself: since Linux 5.11 it also ends a connection whose receiver
/// kept its window closed that long, silently — and the receiver's next window update is then
/// answered with a reset that discards what it had acknowledged and not yet read.
/// Best effort: a failure only costs slower detection, so it is logged, not fatal.
fn tune_tcp(stream: &TcpStream, write_timeout: Duration) {
    let _ = stream.set_nodelay(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = stream.as_raw_fd();
        let idle = (write_timeout.as_secs() / 2).clamp(1, 60) as libc::c_int;
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
        set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle);
        set_int_opt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            idle.clamp(1, 10),
        );
        set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
        let user_timeout = (2 * write_timeout.as_millis()).min(i32::MAX as u128) as libc::c_int;
        set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, user_timeout);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = write_timeout;
}

#[cfg(target_os = "linux")]
fn set_int_opt(fd: std::os::fd::RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: fd is a live socket owned by the caller; value is a plain c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(option = name, error = %io::Error::last_os_error(), "setsockopt failed");
    }
}

/// What the kernel knows about a TCP connection (`TCP_INFO`, Linux), when it can tell all the
/// fields read here (Linux ≥ 4.1).
#[cfg(target_os = "linux")]
fn tcp_info(stream: &TcpStream) -> Option<libc::tcp_info> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain old data; zeroed is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info` and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        )
    };
    let needed =
        std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + std::mem::size_of::<u64>();
    (rc == 0 && len as usize >= needed).then_some(info)
}

/// Bytes of payload the peer's TCP stack has acknowledged on this connection
/// (`TCP_INFO.tcpi_bytes_acked`). Unlike `SIOCOUTQ`, the counter survives a reset: the kernel
/// purges the send queue on RST, so "nothing unacknowledged" would then be a lie, while
/// "bytes acknowledged" stays exact. `None` where the platform cannot tell.
pub(super) fn bytes_acked(stream: &TcpStream) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        tcp_info(stream).map(|i| i.tcpi_bytes_acked)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        None
    }
}

/// A peer stopped answering altogether (half-open: gone, or cut off by the network) when the
/// kernel has retransmitted data, or probed a closed window, at least twice in a row without
/// any acknowledgement. A receiver that is only slow answers every zero-window probe, which
/// resets both counts.
pub fn stopped_answering(retransmits: u8, probes: u8) -> bool {
    retransmits >= 2 || probes >= 2
}

pub(super) fn half_open(stream: &TcpStream) -> bool {
    #[cfg(target_os = "linux")]
    {
        tcp_info(stream).is_some_and(|i| stopped_answering(i.tcpi_retransmits, i.tcpi_probes))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        false
    }
}

/// Prepares a TCP socket to be dropped without a reset: FIN after what the kernel still
/// holds, and no user timeout — the orphaned socket must not be dropped silently while a slow
/// receiver keeps its window closed, or the receiver's next window update is answered with
/// a reset that discards what it acknowledged (see [`Connected::abandon`]).
///
/// [`Connected::abandon`]: super::Connected::abandon
pub(super) fn leave(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    #[cfg(target_os = "linux")]
    set_int_opt(
        stream.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        0,
    );
    // SAFETY: the fd is a live socket owned by `stream`.
    unsafe {
        libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR);
    }
}
