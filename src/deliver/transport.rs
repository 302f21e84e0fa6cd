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
                            return Ok(Connected {
                                conn: Conn::Tcp(stream),
                                peer: addr.to_string(),
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

/// Bytes written to the socket that the peer has not acknowledged yet (`SIOCOUTQ`).
/// `None` where the platform cannot tell.
fn unacked_bytes(stream: &TcpStream) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (== SIOCOUTQ for TCP) writes one c_int through the pointer.
        let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        (rc == 0).then_some(n.max(0) as usize)
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
                s.write_all(buf).await?;
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

    /// Closes gracefully: waits (up to `timeout`) until the peer acknowledged every byte, then
    /// sends FIN and drains what the peer sends until it closes too. Returns false when bytes
    /// may still be unacknowledged.
    pub async fn close(self, timeout: Duration) -> bool {
        match self.conn {
            Conn::Tcp(mut s) => {
                let deadline = tokio::time::Instant::now() + timeout;
                let mut acked = true;
                while let Some(n) = unacked_bytes(&s) {
                    if n == 0 {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        acked = false;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
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
                acked
            }
            Conn::Stdout(mut o) => o.flush().await.is_ok(),
            Conn::Udp(_) => true,
        }
    }
}
