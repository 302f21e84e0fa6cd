//! The wire: tcp, tls, udp, unix and stdout behind one small interface (connect, send a batch,
//! ask what the peer acknowledged, close).
//!
//! TCP and TLS sockets get keepalive and `TCP_USER_TIMEOUT` so a peer that vanished is noticed
//! in about `write_timeout` instead of the kernel's default quarter of an hour. Both report the
//! bytes written to the socket (for TLS: ciphertext, counted under rustls) and the bytes the
//! peer's TCP stack acknowledged (`TCP_INFO`), which is what ack-aware delivery needs.
//! A TLS receiver only talks to refuse (an alert) or to close, so [`Connected::peer_error`]
//! reads through rustls on every check: an alert fails the connection.

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
}

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
    }
}

/// Connects to the first address of the list that answers, re-resolving names every time and
/// trying every address a name resolves to.
pub async fn connect(
    cfg: &DestinationConfig,
    tls_cache: &mut TlsCache,
) -> Result<Connected, TransportError> {
    connect_within(cfg, tls_cache, cfg.address.len()).await
}

/// Tries only the first address of the list (the fail-back probe).
pub async fn connect_primary(
    cfg: &DestinationConfig,
    tls_cache: &mut TlsCache,
) -> Result<Connected, TransportError> {
    connect_within(cfg, tls_cache, 1).await
}

async fn connect_within(
    cfg: &DestinationConfig,
    tls_cache: &mut TlsCache,
    entries: usize,
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
                let addrs = match resolve(address).await {
                    Ok(a) => a,
                    Err(e) => {
                        reasons.push(e.to_string());
                        continue;
                    }
                };
                for addr in addrs {
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
                            c.confirm_after = cfg.write_timeout / 2;
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

/// Keepalive and `TCP_USER_TIMEOUT` (Linux): dead peers are found in about `write_timeout`.
/// Best effort: a failure only costs slower detection, so it is logged, not fatal.
fn tune_tcp(stream: &TcpStream, write_timeout: Duration) {
    let _ = stream.set_nodelay(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let fd = stream.as_raw_fd();
        let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
            // SAFETY: fd is a live socket owned by `stream`; value is a plain c_int.
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
        };
        let idle = (write_timeout.as_secs() / 2).clamp(1, 60) as libc::c_int;
        set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, idle.clamp(1, 10));
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3);
        let user_timeout = write_timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, user_timeout);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = write_timeout;
}

/// Bytes of payload the peer's TCP stack has acknowledged on this connection
/// (`TCP_INFO.tcpi_bytes_acked`, Linux ≥ 4.1). Unlike `SIOCOUTQ`, the counter survives a reset:
/// the kernel purges the send queue on RST, so "nothing unacknowledged" would then be a lie,
/// while "bytes acknowledged" stays exact. `None` where the platform cannot tell.
fn bytes_acked(stream: &TcpStream) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
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
        (rc == 0 && len as usize >= needed).then_some(info.tcpi_bytes_acked)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        None
    }
}

impl Connected {
    /// Frames go one per datagram, without stream framing.
    pub fn is_datagram(&self) -> bool {
        matches!(self.conn, Conn::Udp(_) | Conn::UnixDatagram(_))
    }

    /// Frame ends map to exact wire offsets (plain TCP). Under TLS only a whole flushed batch
    /// maps to a wire offset.
    pub fn exact_offsets(&self) -> bool {
        matches!(self.conn, Conn::Tcp(_))
    }

    /// The reason the peer is gone — it closed, reset, or (TLS) sent an alert — or `None`
    /// while the connection is healthy. Receivers never talk back otherwise, so this reads
    /// and discards whatever arrived; writing after any of these would lose data.
    pub fn peer_error(&mut self) -> Option<String> {
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
    /// send each frame on its own). Returns how many datagrams failed (e.g. ICMP port
    /// unreachable surfacing as ECONNREFUSED): counted, not fatal.
    pub async fn send(&mut self, buf: &[u8], ends: &[usize]) -> io::Result<usize> {
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
                Ok(0)
            }
            Conn::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await?;
                Ok(0)
            }
            Conn::UnixStream(s) => {
                s.write_all(buf).await?;
                Ok(0)
            }
            Conn::Stdout(o) => {
                o.write_all(buf).await?;
                o.flush().await?;
                Ok(0)
            }
            Conn::Udp(_) | Conn::UnixDatagram(_) => {
                let mut failed = 0;
                let mut start = 0;
                for &end in ends {
                    let r = match &self.conn {
                        Conn::Udp(sock) => sock.send(&buf[start..end]).await,
                        Conn::UnixDatagram(sock) => sock.send(&buf[start..end]).await,
                        _ => Ok(0),
                    };
                    if let Err(e) = r {
                        failed += 1;
                        tracing::debug!(error = %e, "datagram not sent");
                    }
                    start = end;
                }
                Ok(failed)
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

    /// Bytes written to the socket on this connection so far.
    pub fn written(&self) -> u64 {
        self.tcp().map(|t| t.written).unwrap_or(0)
    }

    /// Bytes the peer acknowledged on this connection, when the transport can tell (TCP and
    /// TLS on Linux). `None` means "position after write" is all we can know.
    ///
    /// A TLS 1.3 receiver that refuses our client certificate does so *after* our side of the
    /// handshake completed, with an alert; its TCP stack may already have acknowledged our
    /// first frames. So on TLS 1.3 nothing counts as acknowledged until the receiver sent
    /// something after the handshake (session tickets, the answer to our key update) — proof
    /// it accepted us — or, for a receiver that sends nothing at all, until half of
    /// `write_timeout` passed without an alert.
    pub fn acked(&self) -> Option<u64> {
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

    /// Drops the connection with a reset (SO_LINGER 0): what sits in the send buffer is
    /// discarded instead of being delivered by the kernel after we gave up on it — we send it
    /// again on the next connection, so delivering it late would only duplicate it.
    pub fn abort(self) {
        if let Some(t) = self.tcp() {
            use std::os::fd::AsRawFd;
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: the fd is a live socket owned by `t`; linger is plain data.
            unsafe {
                libc::setsockopt(
                    t.inner.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
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

    /// Closes gracefully: TLS `close_notify` / TCP FIN, then drains what the peer sends (e.g.
    /// session tickets) until it closes too, so our close never turns into a reset that
    /// destroys data in the receiver's buffer. Callers that need delivery confirmed call
    /// [`Connected::wait_acked`] first.
    pub async fn close(self) {
        let mut scratch = [0u8; 4096];
        let drain = Duration::from_millis(500);
        match self.conn {
            Conn::Tcp(mut s) => {
                let _ = s.inner.shutdown().await;
                let _ = tokio::time::timeout(drain, async {
                    while let Ok(n) = s.inner.read(&mut scratch).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
            Conn::Tls(mut s) => {
                // shutdown() sends close_notify, then FIN.
                let _ = tokio::time::timeout(drain, s.shutdown()).await;
                let _ = tokio::time::timeout(drain, async {
                    while let Ok(n) = s.read(&mut scratch).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
            Conn::UnixStream(mut s) => {
                let _ = s.shutdown().await;
            }
            Conn::Stdout(mut o) => {
                let _ = o.flush().await;
            }
            Conn::Udp(_) | Conn::UnixDatagram(_) => {}
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
        let mut c = connect(&tcp_dest(addr), &mut TlsCache::default())
            .await
            .unwrap();
        assert_eq!(c.acked(), Some(0));
        let payload = vec![b'x'; 100_000];
        c.send(&payload, &[payload.len()]).await.unwrap();
        assert!(c.wait_acked(Duration::from_secs(10)).await.is_ok());
        assert_eq!(c.acked(), Some(100_000));
        assert_eq!(c.written(), 100_000);
        c.close().await;
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
        let mut c = connect(&tcp_dest(addr), &mut TlsCache::default())
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
