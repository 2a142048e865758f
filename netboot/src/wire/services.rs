//! The netboot services on a [`Stack`]: the same DHCP engine and hyper HTTP service as on
//! kernel sockets, fed by wire sockets instead.

use super::stack::Stack;
use crate::config::NodeEntry;
use crate::dhcp::engine::{Engine, RxInfo, PROXY_PORT, SERVER_PORT};
use crate::dhcp::{leases, DhcpConfig, DhcpMode};
use crate::server::ServiceContext;
use crate::tftp::root::Root;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Listening TCP sockets kept per HTTP port, i.e. handshakes accepted at once.
const HTTP_BACKLOG: usize = 16;

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
    let path = leases::lease_path(&ctx.state_dir);
    let table = leases::load(&path)?;
    let loaded = table.len();
    let mode = cfg.mode;
    let mut engine = Engine::new(
        cfg,
        ctx.server_ip,
        ctx.http_base.clone(),
        &nodes,
        ctx.policy.clone(),
        &ctx.metrics,
        table,
    )
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let main = stack.udp_bind(SERVER_PORT)?;
    let proxy = match mode {
        DhcpMode::Proxy => Some(stack.udp_bind(PROXY_PORT)?),
        DhcpMode::Authoritative => None,
    };
    info!(
        "dhcp: serving ({}) on the wire port 67{}; {} known node(s), {loaded} lease(s) from {}",
        match mode {
            DhcpMode::Authoritative => "authoritative",
            DhcpMode::Proxy => "proxy",
        },
        if proxy.is_some() { " and 4011" } else { "" },
        nodes.len(),
        path.display()
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
        let reply = engine.handle(pkt, RxInfo { src, local_port }, SystemTime::now());
        if engine.take_dirty() {
            if let Err(e) = leases::save(&path, engine.leases()) {
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
    let app = crate::http::server::App::new(ctx, cfg.port, root);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "HTTP accept on the wire");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        crate::http::server::spawn_connection(app.clone(), stream, peer.into(), shutdown.clone());
    }
    Ok(())
}

/// TFTP on the wire is not implemented yet: the section is reported and ignored (iPXE ROMs
/// fetch everything over HTTP, which the wire serves).
pub async fn serve_tftp(
    _stack: Stack,
    _ctx: Arc<ServiceContext>,
    _cfg: crate::tftp::TftpConfig,
    _shutdown: CancellationToken,
) -> io::Result<()> {
    warn!("tftp: not served on the userspace wire yet; [tftp] ignored");
    Ok(())
}
