//! The wire: tcp, udp and stdout behind one small interface (connect, send a batch, close).
//!
//! TCP sockets get keepalive and `TCP_USER_TIMEOUT` so a peer that vanished is noticed in
//! about `write_timeout` instead of the kernel's default quarter of an hour, and a close waits
//! until the peer's TCP stack has acknowledged every byte (`SIOCOUTQ` reaches 0), so `once`
//! and a graceful stop only report what the receiver really has.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::config::{split_host_port, DestinationConfig, Protocol};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot resolve {address}: {source}")]
    Resolve { address: String, source: io::Error },
    #[error("{address} resolves to no address")]
    NoAddress { address: String },
    #[error("connect to {address} failed: {reason}")]
    Connect { address: String, reason: String },
    #[error("protocol {0} is not available in this version yet")]
    Unsupported(&'static str),
}

enum Conn {
    Tcp(TcpStream),
    Udp(UdpSocket),
    Stdout(tokio::io::Stdout),
}

/// An open connection to one destination.
pub struct Connected {
    conn: Conn,
    /// The address we actually reached, for logs.
    pub peer: String,
    /// Bytes written to the socket on this connection (what the peer's acknowledgements count).
    written: u64,
    /// `tcpi_bytes_acked` right after connecting: Linux counts the SYN as one acknowledged
    /// byte, so payload acknowledgements are counted from here.
    ack_base: u64,
}

/// Whether frames for this protocol carry stream framing (datagrams do not).
pub fn is_stream(p: Protocol) -> bool {
    !matches!(p, Protocol::Udp)
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

/// Connects to the first address of the list that answers, re-resolving names every time and
/// trying every address a name resolves to.
pub async fn connect(cfg: &DestinationConfig) -> Result<Connected, TransportError> {
    match cfg.protocol {
        Protocol::Stdout => Ok(Connected {
            conn: Conn::Stdout(tokio::io::stdout()),
            peer: "stdout".into(),
            written: 0,
            ack_base: 0,
        }),
        Protocol::Tcp => {
            let mut reasons = Vec::new();
            for address in &cfg.address {
                let addrs = match resolve(address).await {
                    Ok(a) => a,
                    Err(e) => {
                        reasons.push(e.to_string());
                        continue;
                    }
                };
                for addr in addrs {
                    match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await
                    {
                        Ok(Ok(stream)) => {
                            tune_tcp(&stream, cfg.write_timeout);
                            let ack_base = bytes_acked(&stream).unwrap_or(0);
                            return Ok(Connected {
                                conn: Conn::Tcp(stream),
                                peer: addr.to_string(),
                                written: 0,
                                ack_base,
                            });
                        }
                        Ok(Err(e)) => reasons.push(format!("{addr}: {e}")),
                        Err(_) => reasons.push(format!(
                            "{addr}: no answer within {:?}",
                            cfg.connect_timeout
                        )),
                    }
                }
            }
            Err(TransportError::Connect {
                address: cfg.address.join(", "),
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
            Ok(Connected {
                conn: Conn::Udp(sock),
                peer: addr.to_string(),
                written: 0,
                ack_base: 0,
            })
        }
        Protocol::Tls => Err(TransportError::Unsupported("tls")),
        Protocol::Unix => Err(TransportError::Unsupported("unix")),
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
    /// True when the peer closed or reset the connection. Receivers never talk back, so any
    /// readable EOF or error means the connection is gone and writing would lose data.
    pub fn peer_gone(&mut self) -> bool {
        let Conn::Tcp(s) = &mut self.conn else {
            return false;
        };
        let mut scratch = [0u8; 1024];
        loop {
            match s.try_read(&mut scratch) {
                Ok(0) => return true,
                Ok(_) => continue, // a receiver that talks: discard
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }

    /// Sends a batch. `ends` are the byte offsets where each frame ends (datagram transports
    /// send each frame on its own). Returns how many datagrams failed (e.g. ICMP port
    /// unreachable surfacing as ECONNREFUSED): counted, not fatal.
    pub async fn send(&mut self, buf: &[u8], ends: &[usize]) -> io::Result<usize> {
        match &mut self.conn {
            Conn::Tcp(s) => {
                // Counted write by write, so `written` stays exact even when the caller's
                // timeout cancels this future half-way.
                let mut off = 0;
                while off < buf.len() {
                    let n = s.write(&buf[off..]).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    self.written += n as u64;
                    off += n;
                }
                Ok(0)
            }
            Conn::Stdout(o) => {
                o.write_all(buf).await?;
                o.flush().await?;
                Ok(0)
            }
            Conn::Udp(sock) => {
                let mut failed = 0;
                let mut start = 0;
                for &end in ends {
                    if let Err(e) = sock.send(&buf[start..end]).await {
                        failed += 1;
                        tracing::debug!(error = %e, "UDP datagram not sent");
                    }
                    start = end;
                }
                Ok(failed)
            }
        }
    }

    /// Bytes written to the socket on this connection so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes the peer acknowledged on this connection, when the transport can tell (TCP on
    /// Linux). `None` means "position after write" is all we can know.
    pub fn acked(&self) -> Option<u64> {
        match &self.conn {
            // Capped at `written`: the peer's acknowledgement of our FIN counts one more.
            Conn::Tcp(s) => {
                bytes_acked(s).map(|a| a.saturating_sub(self.ack_base).min(self.written))
            }
            _ => None,
        }
    }

    /// Waits (up to `timeout`) until the peer acknowledged every byte written. True when it
    /// did, or when the transport cannot tell.
    pub async fn wait_acked(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.acked() {
                None => return true,
                Some(a) if a >= self.written => return true,
                Some(_) if tokio::time::Instant::now() >= deadline => return false,
                Some(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Closes gracefully: sends FIN, then drains what the peer sends until it closes too (so
    /// our close never turns into a reset that destroys data in the receiver's buffer).
    /// Callers that need delivery confirmed call [`Connected::wait_acked`] first.
    pub async fn close(self) {
        match self.conn {
            Conn::Tcp(mut s) => {
                let _ = s.shutdown().await;
                let mut scratch = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    while let Ok(n) = s.read(&mut scratch).await {
                        if n == 0 {
                            break;
                        }
                    }
                })
                .await;
            }
            Conn::Stdout(mut o) => {
                let _ = o.flush().await;
            }
            Conn::Udp(_) => {}
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
        let mut c = connect(&tcp_dest(addr)).await.unwrap();
        assert_eq!(c.acked(), Some(0));
        let payload = vec![b'x'; 100_000];
        c.send(&payload, &[payload.len()]).await.unwrap();
        assert!(c.wait_acked(Duration::from_secs(10)).await);
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
        let mut c = connect(&tcp_dest(addr)).await.unwrap();
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
        assert!(!c.wait_acked(Duration::from_millis(300)).await);
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
