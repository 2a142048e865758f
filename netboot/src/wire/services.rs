//! The netboot services on a [`Stack`]: the same DHCP engine and hyper HTTP service as on
//! kernel sockets, fed by wire sockets instead.

use super::stack::Stack;
use super::WireUdp;
use crate::config::NodeEntry;
use crate::dhcp::engine::{RxInfo, PROXY_PORT, SERVER_PORT};
use crate::dhcp::{DhcpConfig, DhcpMode};
use crate::server::ServiceContext;
use crate::tftp::root::Root;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Listening TCP sockets kept per HTTP port, i.e. handshakes accepted at once: a SYN finding
/// none free is reset (smoltcp has no SYN queue). Each costs its buffers (~272 KiB) up front.
const HTTP_BACKLOG: usize = 64;

async fn recv_opt(
    sock: Option<&super::WireUdp>,
    buf: &mut [u8],
) -> io::Result<(usize, std::net::SocketAddrV4)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Serve DHCP on the wire until `shutdown` (as [`crate::dhcp::udp::serve`] does on kernel
/// sockets: one task owns the engine, leases are saved before a reply depending on them).
pub async fn serve_dhcp(
    stack: Stack,
    ctx: Arc<ServiceContext>,
    cfg: DhcpConfig,
    nodes: Vec<NodeEntry>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let (mut engine, keeper, loaded, mode) = crate::dhcp::udp::open_engine(&ctx, cfg, &nodes)?;
    let main = stack.udp_bind(SERVER_PORT)?;
    let proxy = match mode {
        DhcpMode::Proxy => Some(stack.udp_bind(PROXY_PORT)?),
        DhcpMode::Authoritative | DhcpMode::Auto => None,
    };
    info!(
        "dhcp: serving ({}) on the wire port 67{}; {} known node(s), {loaded} lease(s) from {}",
        mode.as_str(),
        if proxy.is_some() { " and 4011" } else { "" },
        nodes.len(),
        keeper.describe()
    );
    let mut buf = vec![0u8; 4096];
    let mut buf_proxy = vec![0u8; 4096];
    loop {
        let (res, local_port) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = main.recv_from(&mut buf) => (r.map(|(n, a)| (n, a, false)), SERVER_PORT),
            r = recv_opt(proxy.as_ref(), &mut buf_proxy) => (r.map(|(n, a)| (n, a, true)), PROXY_PORT),
        };
        let (n, src, on_proxy) = match res {
            Ok(r) => r,
            Err(e) => {
                warn!("dhcp: receive on port {local_port}: {e}");
                continue;
            }
        };
        let pkt = if on_proxy { &buf_proxy[..n] } else { &buf[..n] };
        if let Some(t) = keeper.reload() {
            engine.set_leases(t);
        }
        let reply = engine.handle(pkt, RxInfo { src, local_port }, SystemTime::now());
        if engine.take_dirty() {
            if let Err(e) = keeper.save(engine.leases()) {
                error!(
                    "dhcp: {}; reply withheld",
                    crate::dhcp::udp::error_chain(&e as &dyn std::error::Error)
                );
                continue;
            }
        }
        let Some(reply) = reply else { continue };
        let sock = match (reply.from_port, proxy.as_ref()) {
            (PROXY_PORT, Some(p)) => p,
            _ => &main,
        };
        if let Err(e) = sock.send_to(&reply.payload, reply.to).await {
            warn!("dhcp: sending to {}: {e}", reply.to);
        }
    }
    info!("dhcp: stopped");
    Ok(())
}

/// Serve HTTP on the wire until `shutdown`, each connection by the same hyper service (and
/// `/v1/` API hook) as on kernel sockets.
pub async fn serve_http(
    stack: Stack,
    ctx: Arc<ServiceContext>,
    cfg: crate::http::HttpConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let root = Root::new(&cfg.root)?;
    let mut listener = stack.tcp_listen(cfg.port, HTTP_BACKLOG)?;
    info!(addr = %SocketAddr::new(stack.ip().into(), cfg.port), root = %root.path().display(), "HTTP listening on the wire");
    let mut https = match &cfg.https {
        Some(h) => {
            let l = stack.tcp_listen(h.port, HTTP_BACKLOG)?;
            info!(addr = %SocketAddr::new(stack.ip().into(), h.port), "HTTPS listening on the wire");
            Some((l, tokio_rustls::TlsAcceptor::from(h.config.clone())))
        }
        None => None,
    };
    let app = crate::http::server::App::new(ctx, cfg.port, root);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    crate::http::server::spawn_connection(app.clone(), stream, peer.into(), shutdown.clone());
                }
                Err(e) => accept_failed("HTTP", e).await,
            },
            r = accept_maybe(https.as_mut().map(|h| &mut h.0)) => match r {
                Ok((stream, peer)) => {
                    if let Some((_, tls)) = &https {
                        crate::http::server::spawn_tls_connection(
                            app.clone(), tls.clone(), stream, peer.into(), shutdown.clone(),
                        );
                    }
                }
                Err(e) => accept_failed("HTTPS", e).await,
            },
        }
    }
    Ok(())
}

/// Accept on a wire listener that may not be there (then never).
async fn accept_maybe(
    listener: Option<&mut crate::wire::stack::WireTcpListener>,
) -> io::Result<(crate::wire::stack::WireTcpStream, SocketAddrV4)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// A failed accept on the wire: logged, and waited out for 50 ms.
async fn accept_failed(what: &str, e: io::Error) {
    warn!(error = %e, "{what} accept on the wire");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

/// Serve TFTP on the wire until `shutdown`: the kernel transport's request loop and
/// transfers ([`crate::tftp::udp::serve_on`]) on wire sockets, one ephemeral port per transfer.
pub async fn serve_tftp(
    stack: Stack,
    ctx: Arc<ServiceContext>,
    cfg: crate::tftp::TftpConfig,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let sock = stack.udp_bind(cfg.port)?;
    info!(addr = %SocketAddr::new(stack.ip().into(), cfg.port), root = %cfg.root.display(), "TFTP listening on the wire");
    crate::tftp::udp::serve_on(Arc::new(WireNet { stack }), sock, ctx, cfg, shutdown).await
}

struct WireNet {
    stack: Stack,
}

fn v4(a: SocketAddr) -> io::Result<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the wire is IPv4 only",
        )),
    }
}

impl crate::tftp::udp::Net for WireNet {
    type RequestSock = WireUdp;
    type TransferSock = WireTransfer;
    async fn recv_from(sock: &WireUdp, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        sock.recv_from(buf).await.map(|(n, a)| (n, a.into()))
    }
    async fn send_to(sock: &WireUdp, data: &[u8], to: SocketAddr) -> io::Result<()> {
        sock.send_to(data, v4(to)?).await
    }
    async fn transfer_socket(&self, peer: SocketAddr) -> io::Result<WireTransfer> {
        Ok(WireTransfer {
            sock: self.stack.udp_bind_ephemeral()?,
            peer: v4(peer)?,
        })
    }
}

/// A transfer's wire socket; datagrams from anyone but the peer are dropped (RFC 1350's
/// unknown TID), as the kernel does for a connected socket.
struct WireTransfer {
    sock: WireUdp,
    peer: SocketAddrV4,
}

impl crate::tftp::udp::TransferSock for WireTransfer {
    async fn send(&self, data: &[u8]) -> io::Result<()> {
        self.sock.send_to(data, self.peer).await
    }
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let (n, from) = self.sock.recv_from(buf).await?;
            if from == self.peer {
                return Ok(n);
            }
            debug!(%from, peer = %self.peer, "tftp: datagram from an unknown TID dropped");
        }
    }
}
