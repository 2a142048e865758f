//! The tokio transport for the DHCP engine: kernel UDP sockets on port 67 (and 4011 in proxy
//! mode), bound to the provisioning interface when one is configured.
//!
//! One task owns the engine and both sockets, so requests are handled one at a time in arrival
//! order; the lease file is rewritten (atomically) before any reply that depends on it is sent,
//! and a reply whose lease could not be saved is withheld rather than promised.

use super::engine::{Engine, RxInfo, PROXY_PORT, SERVER_PORT};
use super::{leases, DhcpConfig, DhcpMode};
use crate::config::NodeEntry;
use crate::server::ServiceContext;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Largest datagram we read; DHCP messages are at most a few hundred bytes in practice.
const RECV_BUF: usize = 4096;

/// A UDP socket on `0.0.0.0:port` that can broadcast, bound to `interface` if given.
pub fn bind(port: u16, interface: Option<&str>) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    if let Some(dev) = interface {
        s.bind_device(Some(dev.as_bytes())).map_err(|e| {
            io::Error::new(e.kind(), format!("binding the DHCP socket to {dev}: {e}"))
        })?;
    }
    s.set_nonblocking(true)?;
    let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    s.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("binding UDP {addr}: {e}")))?;
    UdpSocket::from_std(s.into())
}

async fn recv_opt(sock: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// The engine with its lease table loaded from the context's lease keeper, shared by both
/// transports: (engine, keeper, leases loaded, mode).
pub(crate) fn open_engine(
    ctx: &ServiceContext,
    cfg: DhcpConfig,
    nodes: &[NodeEntry],
) -> io::Result<(Engine, Arc<dyn leases::LeaseKeeper>, usize, DhcpMode)> {
    let keeper = ctx.lease_keeper();
    let table = keeper.load()?;
    let loaded = table.len();
    let mode = cfg.mode;
    let engine = Engine::new(
        cfg,
        ctx.server_ip,
        ctx.http_base.clone(),
        nodes,
        ctx.policy.clone(),
        &ctx.metrics,
        table,
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok((engine, keeper, loaded, mode))
}

/// Serve DHCP on kernel sockets until `shutdown`.
pub async fn serve(
    ctx: Arc<ServiceContext>,
    cfg: DhcpConfig,
    nodes: Vec<NodeEntry>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    // `mode = "auto"`: look for another server before answering anything.
    let cfg = tokio::select! {
        r = super::probe_edge::decide_kernel(&ctx, cfg) => r?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let (mut engine, keeper, loaded, mode) = open_engine(&ctx, cfg, &nodes)?;
    let iface = ctx.interface.as_deref();
    let main = bind(SERVER_PORT, iface)?;
    let proxy = match mode {
        DhcpMode::Proxy => Some(bind(PROXY_PORT, iface)?),
        DhcpMode::Authoritative | DhcpMode::Auto => None,
    };
    info!(
        "dhcp: serving ({}) on {} port 67{}; {} known node(s), {loaded} lease(s) from {}",
        mode.as_str(),
        iface.unwrap_or("all interfaces"),
        if proxy.is_some() { " and 4011" } else { "" },
        nodes.len(),
        keeper.describe()
    );
    /// Packets handled per lease-file commit, at most, per socket.
    const BATCH: usize = 64;
    let mut buf = vec![0u8; RECV_BUF];
    let mut buf_proxy = vec![0u8; RECV_BUF];
    loop {
        let (res, local_port) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = main.recv_from(&mut buf) => (r.map(|(n, a)| (n, a, false)), SERVER_PORT),
            r = recv_opt(proxy.as_ref(), &mut buf_proxy) => (r.map(|(n, a)| (n, a, true)), PROXY_PORT),
        };
        let (n, src, on_proxy) = match res {
            Ok(r) => r,
            Err(e) => {
                // UDP surfaces ICMP errors of earlier sends here; they concern no one now.
                warn!("dhcp: receive on port {local_port}: {e}");
                continue;
            }
        };
        // Group commit: handle this packet and whatever else is already queued (bounded),
        // persist the lease table once, then send every reply. Each ACK still leaves only after
        // its lease is on disk, but under load one fsync serves a whole batch.
        if let Some(t) = keeper.reload() {
            engine.set_leases(t);
        }
        let mut replies = Vec::new();
        if let SocketAddr::V4(src) = src {
            let pkt = if on_proxy { &buf_proxy[..n] } else { &buf[..n] };
            replies.extend(engine.handle(pkt, RxInfo { src, local_port }, SystemTime::now()));
        }
        for (sock, port, b) in [
            (Some(&main), SERVER_PORT, &mut buf),
            (proxy.as_ref(), PROXY_PORT, &mut buf_proxy),
        ] {
            let Some(sock) = sock else { continue };
            for _ in 0..BATCH {
                match sock.try_recv_from(b) {
                    Ok((n, SocketAddr::V4(src))) => replies.extend(engine.handle(
                        &b[..n],
                        RxInfo {
                            src,
                            local_port: port,
                        },
                        SystemTime::now(),
                    )),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        warn!("dhcp: receive on port {port}: {e}");
                        break;
                    }
                }
            }
        }
        if engine.take_dirty() {
            if let Err(e) = keeper.save(engine.leases()) {
                error!(
                    "dhcp: {}; {} repl(ies) withheld",
                    error_chain(&e as &dyn std::error::Error),
                    replies.len()
                );
                continue;
            }
        }
        for reply in replies {
            let sock = match (reply.from_port, proxy.as_ref()) {
                (PROXY_PORT, Some(p)) => p,
                _ => &main,
            };
            if let Err(e) = sock.send_to(&reply.payload, reply.to).await {
                warn!("dhcp: sending to {}: {e}", reply.to);
            }
        }
    }
    info!("dhcp: stopped");
    Ok(())
}

/// An error with its chain of sources on one line (`a: b: c`).
pub(crate) use fsutil::error_chain;
