//! The wire: tcp, tls, udp, unix and stdout behind one small interface (connect, send a batch,
//! ask what the peer acknowledged, close).
//!
//! TCP and TLS sockets get keepalive and `TCP_USER_TIMEOUT` so a peer that vanished is noticed
//! in about `write_timeout` instead of the kernel's default quarter of an hour. Both report the
//! bytes written to the socket (for TLS: ciphertext, counted under rustls) and the bytes the
//! peer's TCP stack acknowledged (`TCP_INFO`), which is what ack-aware delivery needs.
//! A TLS receiver only talks to refuse (an alert) or to close, so [`Connected::peer_error`]
//! reads through rustls on every check: an alert fails the connection.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use super::tls::{self, FilesFingerprint, PeerInfo, TlsError};
use crate::config::{split_host_port, DestinationConfig, Protocol};
use crate::liveness::Heartbeat;

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

/// A TCP stream that counts the bytes written to and read from the socket (under TLS:
/// ciphertext).
struct Counted {
    inner: TcpStream,
    written: u64,
    read: u64,
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

enum Conn {
    Tcp(Counted),
    Tls(Box<TlsStream<Counted>>),
    Udp(UdpSocket),
    UnixStream(UnixStream),
    UnixDatagram(UnixDatagram),
    Stdout(tokio::io::Stdout),
}

/// An open connection to one destination.
pub struct Connected {
    conn: Conn,
    /// The address we actually reached, for logs.
    pub peer: String,
    /// Protocol version, cipher and certificate of a TLS connection.
    pub tls: Option<PeerInfo>,
    /// `tcpi_bytes_acked` right after connecting: Linux counts the SYN as one acknowledged
    /// byte, so payload acknowledgements are counted from here.
    ack_base: u64,
    /// When a TLS connection finished its handshake (see [`Connected::acked`]).
    established: Instant,
    /// TLS: bytes read from the socket when the handshake finished. Anything read later
    /// (session tickets, the answer to our key update) proves the receiver accepted us.
    read_at_handshake: Option<u64>,
    /// TLS: give up waiting for that proof after this long without an alert.
    confirm_after: Duration,
    /// Which entry of the destination's address list this connection reached (0 = primary).
    pub address_index: usize,
    /// Datagram transports: frames handed to the kernel on this connection.
    frames_sent: u64,
    /// UDP: frames sent per batch and when, until [`UDP_CONFIRM`] without a refusal passed.
    udp_unconfirmed: VecDeque<(u64, Instant)>,
    /// UDP: frames sent at least [`UDP_CONFIRM`] ago with no refusal since.
    udp_confirmed: u64,
}

/// How long a UDP datagram must go without an ICMP refusal before it counts as delivered. A
/// refusal (nobody listens on the port) comes back within a round trip; until then the frame
/// stays in flight and is sent again if the refusal comes.
pub const UDP_CONFIRM: Duration = Duration::from_millis(200);

/// The rustls configuration of one destination, rebuilt when its files change on disk so a
/// renewed certificate is picked up at the next reconnect without a restart.
#[derive(Default)]
pub struct TlsCache {
    built: Option<(Arc<rustls::ClientConfig>, Option<FilesFingerprint>)>,
}

impl TlsCache {
    fn get(&mut self, dest: &DestinationConfig) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let now = tls::files_fingerprint(dest);
        if let Some((cfg, fp)) = &self.built {
            if *fp == now {
                return Ok(cfg.clone());
            }
            tracing::info!(destination = %dest.name, "TLS files changed on disk; reloading them");
        }
        let cfg = tls::client_config(dest)?;
        self.built = Some((cfg.clone(), now));
        Ok(cfg)
    }
}

async fn resolve(address: &str) -> Result<Vec<SocketAddr>, TransportError> {
    let (host, port) = split_host_port(address).ok_or_else(|| TransportError::NoAddress {
        address: address.to_string(),
    })?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| TransportError::Resolve {
            address: address.to_string(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(TransportError::NoAddress {
            address: address.to_string(),
        });
    }
    Ok(addrs)
}

fn connected(conn: Conn, peer: String) -> Connected {
    Connected {
        conn,
        peer,
        tls: None,
        ack_base: 0,
        established: Instant::now(),
        read_at_handshake: None,
        confirm_after: Duration::ZERO,
        address_index: 0,
        frames_sent: 0,
        udp_unconfirmed: VecDeque::new(),
        udp_confirmed: 0,
    }
}

/// Connects to the first address of the list that answers, re-resolving names every time and
/// trying every address a name resolves to.
pub async fn connect(
    cfg: &DestinationConfig,
    tls_cache: &mut TlsCache,
    beat: Option<&Heartbeat>,
) -> Result<Connected, TransportError> {
    connect_within(cfg, tls_cache, cfg.address.len(), beat).await
}

/// Tries only the first address of the list (the fail-back probe).
pub async fn connect_primary(
    cfg: &DestinationConfig,
    tls_cache: &mut TlsCache,
    beat: Option<&Heartbeat>,
) -> Result<Connected, TransportError> {
    connect_within(cfg, tls_cache, 1, beat).await
}

/// How long a name lookup may take before the watchdog calls the task stuck (the system
/// resolver gives up after its own timeouts, usually within half a minute).
const RESOLVE_BOUND: Duration = Duration::from_secs(30);

/// A connection attempt promises the watchdog its bound before each step: a name may resolve
/// to many addresses, each tried with `connect_timeout` for TCP and again for TLS.
fn promise(beat: Option<&Heartbeat>, bound: Duration) {
    if let Some(b) = beat {
        b.expect_within(bound);
    }
}

async fn connect_within(
    cfg: &DestinationConfig,
    tls_cache: &mut TlsCache,
    entries: usize,
    beat: Option<&Heartbeat>,
) -> Result<Connected, TransportError> {
    match cfg.protocol {
        Protocol::Stdout => Ok(connected(
            Conn::Stdout(tokio::io::stdout()),
            "stdout".into(),
        )),
        Protocol::Tcp | Protocol::Tls => {
            let client = match cfg.protocol {
                Protocol::Tls => Some(tls_cache.get(cfg)?),
                _ => None,
            };
            let mut reasons = Vec::new();
            for (index, address) in cfg.address.iter().enumerate().take(entries) {
                promise(beat, RESOLVE_BOUND);
                let addrs = match resolve(address).await {
                    Ok(a) => a,
                    Err(e) => {
                        reasons.push(e.to_string());
                        continue;
                    }
                };
                for addr in addrs {
                    promise(beat, cfg.connect_timeout * 2 + RESOLVE_BOUND);
                    let stream =
                        match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                reasons.push(format!("{addr}: {e}"));
                                continue;
                            }
                            Err(_) => {
                                reasons.push(format!(
                                    "{addr}: no answer within {:?}",
                                    cfg.connect_timeout
                                ));
                                continue;
                            }
                        };
                    tune_tcp(&stream, cfg.write_timeout);
                    let ack_base = bytes_acked(&stream).unwrap_or(0);
                    let counted = Counted {
                        inner: stream,
                        written: 0,
                        read: 0,
                    };
                    let Some(client) = &client else {
                        let mut c = connected(Conn::Tcp(counted), addr.to_string());
                        c.ack_base = ack_base;
                        c.address_index = index;
                        return Ok(c);
                    };
                    let name = tls::server_name(cfg, address)?;
                    let handshake =
                        tokio_rustls::TlsConnector::from(client.clone()).connect(name, counted);
                    match tokio::time::timeout(cfg.connect_timeout, handshake).await {
                        Ok(Ok(mut stream)) => {
                            if !cfg.tls_verify {
                                tracing::warn!(destination = %cfg.name, peer = %addr,
                                    "tls_verify = false: the receiver's certificate is NOT verified; anyone on the path can read and alter the events");
                            }
                            let info = tls::peer_info(stream.get_ref().1);
                            // TLS 1.3 receivers judge a client certificate after our side of
                            // the handshake is done. Ask for a key update: a receiver that
                            // accepted us answers it (and usually sends session tickets),
                            // one that refused us sends an alert instead.
                            let read_at_handshake = if info.version == "TLSv1.3" {
                                if stream.get_mut().1.refresh_traffic_keys().is_ok() {
                                    let _ = stream.flush().await;
                                }
                                Some(stream.get_ref().0.read)
                            } else {
                                None
                            };
                            let mut c = connected(Conn::Tls(Box::new(stream)), addr.to_string());
                            c.ack_base = ack_base;
                            c.tls = Some(info);
                            c.read_at_handshake = read_at_handshake;
                            c.confirm_after =
                                (cfg.write_timeout / 2).max(Duration::from_millis(200));
                            c.address_index = index;
                            return Ok(c);
                        }
                        Ok(Err(e)) => reasons.push(format!(
                            "{addr}: TLS handshake failed: {}",
                            tls::describe_error(&e)
                        )),
                        Err(_) => reasons.push(format!(
                            "{addr}: TLS handshake not finished within {:?}",
                            cfg.connect_timeout
                        )),
                    }
                }
            }
            Err(TransportError::Connect {
                address: cfg.address[..entries.min(cfg.address.len())].join(", "),
                reason: reasons.join("; "),
            })
        }
        Protocol::Udp => {
            let address = cfg.address.first().map(String::as_str).unwrap_or_default();
            let addr = resolve(address).await?[0];
            let bind: SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let connect = async {
                let sock = UdpSocket::bind(bind).await?;
                sock.connect(addr).await?;
                Ok::<_, io::Error>(sock)
            };
            let sock = connect.await.map_err(|e| TransportError::Connect {
                address: address.to_string(),
                reason: e.to_string(),
            })?;
            Ok(connected(Conn::Udp(sock), addr.to_string()))
        }
        Protocol::Unix => {
            let path = cfg.address.first().map(String::as_str).unwrap_or_default();
            let fail = |e: io::Error| TransportError::Connect {
                address: path.to_string(),
                reason: e.to_string(),
            };
            // /dev/log is a datagram socket; a relay may listen on a stream socket. Ask the
            // socket itself: a stream connect to a datagram socket fails with EPROTOTYPE.
            match UnixStream::connect(path).await {
                Ok(s) => Ok(connected(Conn::UnixStream(s), path.to_string())),
                Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
                    let sock = UnixDatagram::unbound().map_err(fail)?;
                    sock.connect(path).map_err(fail)?;
                    Ok(connected(Conn::UnixDatagram(sock), path.to_string()))
                }
                Err(e) => Err(fail(e)),
            }
        }
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
fn bytes_acked(stream: &TcpStream) -> Option<u64> {
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

fn half_open(stream: &TcpStream) -> bool {
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
            Conn::Udp(s) => Some(s.take_error()),
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
                Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(&mut cx, &mut buf),
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
            Conn::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
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
                        Conn::Udp(sock) => sock.send(frame).await?,
                        Conn::UnixDatagram(sock) => sock.send(frame).await?,
                        _ => 0,
                    };
                    // Counted as it goes: a timeout may cancel the batch half-way.
                    self.frames_sent += 1;
                    start = end;
                }
                if matches!(self.conn, Conn::Udp(_)) {
                    self.udp_unconfirmed
                        .push_back((self.frames_sent, Instant::now()));
                }
                Ok(())
            }
        }
    }

    fn tcp(&self) -> Option<&Counted> {
        match &self.conn {
            Conn::Tcp(s) => Some(s),
            Conn::Tls(s) => Some(s.get_ref().0),
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
        match self.conn {
            Conn::UnixDatagram(_) => return Some(self.frames_sent),
            Conn::Udp(_) => {
                while let Some(&(frames, at)) = self.udp_unconfirmed.front() {
                    if at.elapsed() < UDP_CONFIRM {
                        break;
                    }
                    self.udp_confirmed = frames;
                    self.udp_unconfirmed.pop_front();
                }
                return Some(self.udp_confirmed);
            }
            _ => {}
        }
        let t = self.tcp()?;
        let raw = bytes_acked(&t.inner)?;
        if !self.confirmed() {
            return Some(0);
        }
        // Capped at `written`: the peer's acknowledgement of our FIN counts one more.
        Some(raw.saturating_sub(self.ack_base).min(t.written))
    }

    /// Whether the receiver is known to have accepted this connection (always, except on a
    /// fresh TLS 1.3 connection; see [`Connected::acked`]).
    pub fn confirmed(&self) -> bool {
        match (self.read_at_handshake, self.tcp()) {
            (Some(at), Some(t)) => t.read > at || self.established.elapsed() >= self.confirm_after,
            _ => true,
        }
    }

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
        use std::os::fd::AsRawFd;
        let fd = t.inner.as_raw_fd();
        if half_open(&t.inner) {
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: the fd is a live socket owned by `t`; linger is plain data.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
            return;
        }
        // Closing a socket with unread input sends a reset: discard what the peer sent last
        // (receivers only send TLS records, which no longer matter).
        let mut scratch = [0u8; 4096];
        while matches!(t.inner.try_read(&mut scratch), Ok(n) if n > 0) {}
        Connected::leave(&t.inner);
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

    /// Closes gracefully: TLS `close_notify` / TCP FIN, then drains what the peer sends (e.g.
    /// session tickets) until it closes too, so our close never turns into a reset that
    /// destroys data in the receiver's buffer — all within `within`, after which the socket
    /// is left to the kernel as in [`Connected::abandon`]. Callers that need delivery confirmed
    /// call [`Connected::wait_acked`] first.
    pub async fn close(self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut scratch = [0u8; 4096];
        match self.conn {
            Conn::Tcp(ref s) if half_open(&s.inner) => self.abandon(),
            Conn::Tcp(mut s) => {
                let _ = s.inner.shutdown().await;
                let _ = tokio::time::timeout_at(deadline, async {
                    while let Ok(n) = s.inner.read(&mut scratch).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
                Connected::leave(&s.inner);
            }
            Conn::Tls(ref s) if half_open(&s.get_ref().0.inner) => self.abandon(),
            Conn::Tls(mut s) => {
                // shutdown() sends close_notify, then FIN; a receiver with a closed window
                // leaves it in our buffer until the deadline.
                let _ = tokio::time::timeout_at(deadline, s.shutdown()).await;
                let _ = tokio::time::timeout_at(deadline, async {
                    while let Ok(n) = s.read(&mut scratch).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
                Connected::leave(&s.get_ref().0.inner);
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

    /// Prepares a TCP socket to be dropped without a reset: FIN after what the kernel still
    /// holds, and no user timeout — the orphaned socket must not be dropped silently while a slow
    /// receiver keeps its window closed, or the receiver's next window update is answered with
    /// a reset that discards what it acknowledged (see [`Connected::abandon`]).
    fn leave(stream: &TcpStream) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
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
