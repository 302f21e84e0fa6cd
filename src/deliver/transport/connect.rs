//! Opening a connection to a destination: resolve, connect, and for tls the handshake, trying
//! the addresses of the list in order; udp and unix sockets are opened on their only address.
//!
//! Each step promises the watchdog how long it may take (see [`promise`]), so a connect that
//! hangs in a resolver or a handshake is reported rather than mistaken for a stuck task.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};
use tokio::time::Instant;

use super::tcp::Counted;
use super::{Conn, Connected, Tls, TransportError, Udp};
use crate::config::{split_host_port, DestinationConfig, Protocol};
use crate::deliver::tls::{self, FilesFingerprint, TlsError};
use crate::liveness::Heartbeat;

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
        Protocol::Stdout => Ok(Connected::new(
            Conn::Stdout(tokio::io::stdout()),
            "stdout".into(),
        )),
        Protocol::Tcp => connect_stream(cfg, None, entries, beat).await,
        Protocol::Tls => {
            let client = tls_cache.get(cfg)?;
            connect_stream(cfg, Some(&client), entries, beat).await
        }
        Protocol::Udp => connect_udp(cfg).await,
        Protocol::Unix => connect_unix(cfg).await,
    }
}

/// tcp and tls: the first of the first `entries` addresses that answers, trying every address
/// a name resolves to; with `client`, a TLS handshake on top. The error lists why each address
/// failed.
async fn connect_stream(
    cfg: &DestinationConfig,
    client: Option<&Arc<rustls::ClientConfig>>,
    entries: usize,
    beat: Option<&Heartbeat>,
) -> Result<Connected, TransportError> {
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
            let stream = match connect_tcp(cfg, addr).await {
                Ok(s) => s,
                Err(reason) => {
                    reasons.push(reason);
                    continue;
                }
            };
            let conn = match client {
                None => Conn::Tcp(stream),
                Some(client) => {
                    let name = tls::server_name(cfg, address)?;
                    match handshake(cfg, client, name, stream, addr).await {
                        Ok(t) => Conn::Tls(Box::new(t)),
                        Err(reason) => {
                            reasons.push(reason);
                            continue;
                        }
                    }
                }
            };
            let mut c = Connected::new(conn, addr.to_string());
            c.address_index = index;
            return Ok(c);
        }
    }
    Err(TransportError::Connect {
        address: cfg.address[..entries.min(cfg.address.len())].join(", "),
        reason: reasons.join("; "),
    })
}

/// One TCP connection within `connect_timeout`, tuned and counted; the error is the reason for
/// the list.
async fn connect_tcp(cfg: &DestinationConfig, addr: SocketAddr) -> Result<Counted, String> {
    match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(Counted::new(s, cfg.write_timeout)),
        Ok(Err(e)) => Err(format!("{addr}: {e}")),
        Err(_) => Err(format!(
            "{addr}: no answer within {:?}",
            cfg.connect_timeout
        )),
    }
}

/// The TLS handshake on a fresh TCP connection within `connect_timeout`; the error is the
/// reason for the list.
async fn handshake(
    cfg: &DestinationConfig,
    client: &Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
    tcp: Counted,
    addr: SocketAddr,
) -> Result<Tls, String> {
    let handshake = tokio_rustls::TlsConnector::from(client.clone()).connect(name, tcp);
    let mut stream = match tokio::time::timeout(cfg.connect_timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(format!(
                "{addr}: TLS handshake failed: {}",
                tls::describe_error(&e)
            ))
        }
        Err(_) => {
            return Err(format!(
                "{addr}: TLS handshake not finished within {:?}",
                cfg.connect_timeout
            ))
        }
    };
    if !cfg.tls_verify {
        tracing::warn!(destination = %cfg.name, peer = %addr,
            "tls_verify = false: the receiver's certificate is NOT verified; anyone on the path can read and alter the events");
    }
    let info = tls::peer_info(stream.get_ref().1);
    // TLS 1.3 receivers judge a client certificate after our side of the handshake is done.
    // Ask for a key update: a receiver that accepted us answers it (and usually sends session
    // tickets), one that refused us sends an alert instead.
    let read_at_handshake = if info.version == "TLSv1.3" {
        if stream.get_mut().1.refresh_traffic_keys().is_ok() {
            let _ = stream.flush().await;
        }
        Some(stream.get_ref().0.read)
    } else {
        None
    };
    let tls = Tls {
        stream,
        established: Instant::now(),
        read_at_handshake,
        confirm_after: (cfg.write_timeout / 2).max(Duration::from_millis(200)),
        peer: info,
    };
    Ok(tls)
}

/// udp: a socket connected to the first address, so the kernel reports ICMP refusals on it.
async fn connect_udp(cfg: &DestinationConfig) -> Result<Connected, TransportError> {
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
    Ok(Connected::new(Conn::Udp(Udp::new(sock)), addr.to_string()))
}

/// unix: a stream socket, or a datagram socket when that is what listens at the path.
async fn connect_unix(cfg: &DestinationConfig) -> Result<Connected, TransportError> {
    let path = cfg.address.first().map(String::as_str).unwrap_or_default();
    let fail = |e: io::Error| TransportError::Connect {
        address: path.to_string(),
        reason: e.to_string(),
    };
    // /dev/log is a datagram socket; a relay may listen on a stream socket. Ask the socket
    // itself: a stream connect to a datagram socket fails with EPROTOTYPE.
    match UnixStream::connect(path).await {
        Ok(s) => Ok(Connected::new(Conn::UnixStream(s), path.to_string())),
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            let sock = UnixDatagram::unbound().map_err(fail)?;
            sock.connect(path).map_err(fail)?;
            Ok(Connected::new(Conn::UnixDatagram(sock), path.to_string()))
        }
        Err(e) => Err(fail(e)),
    }
}
