//! Runs the enabled netboot services on kernel sockets (tokio) until shutdown.
//!
//! This is the I/O edge for the standalone `seed netboot` and for the seed daemon: it builds the
//! shared [`ServiceContext`] and spawns one task per enabled service. With a `[wire]` section the
//! same services run on the userspace wire instead ([`crate::wire`], smoltcp).

use crate::config::NetbootConfig;
use crate::metrics::Metrics;
use crate::BootPolicy;
use std::net::Ipv4Addr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every service needs besides its own section of the config.
pub struct ServiceContext {
    /// The seed's address on the provisioning network.
    pub server_ip: Ipv4Addr,
    /// The interface sockets are bound to, if any.
    pub interface: Option<String>,
    /// Where state that survives a restart lives.
    pub state_dir: std::path::PathBuf,
    /// Which node boots what.
    pub policy: Arc<dyn BootPolicy>,
    /// Counters, rendered at the HTTP server's `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The base URL of the HTTP boot server (`http://server_ip:port`), if it runs.
    pub http_base: Option<String>,
    /// Handler for `/v1/…` on the HTTP server (the seed daemon's agent and REST APIs).
    pub api: Option<Arc<dyn crate::http::ApiHandler>>,
    /// Where DHCP leases are kept: `None` is the lease file in `state_dir`.
    pub leases: Option<Arc<dyn crate::dhcp::leases::LeaseKeeper>>,
    /// `server_ip` comes and goes (HA): listen on every address, never on it alone.
    pub floating: bool,
}

impl ServiceContext {
    /// The address TFTP and HTTP bind: `server_ip`, or every address when it floats.
    pub fn bind_ip(&self) -> Ipv4Addr {
        if self.floating {
            Ipv4Addr::UNSPECIFIED
        } else {
            self.server_ip
        }
    }

    /// The lease keeper: the given one, or the file in the state directory.
    pub fn lease_keeper(&self) -> Arc<dyn crate::dhcp::leases::LeaseKeeper> {
        self.leases.clone().unwrap_or_else(|| {
            Arc::new(crate::dhcp::leases::LeaseFile(
                crate::dhcp::leases::lease_path(&self.state_dir),
            ))
        })
    }
}

/// A service failed to start or died.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("userspace wire")]
    Wire(#[source] std::io::Error),
    #[error("DHCP service")]
    Dhcp(#[source] std::io::Error),
    #[error("TFTP service")]
    Tftp(#[source] std::io::Error),
    #[error("HTTP service")]
    Http(#[source] std::io::Error),
}

/// Run every service enabled in `cfg` until `shutdown` is cancelled or one of them fails.
pub async fn run(
    cfg: NetbootConfig,
    policy: Arc<dyn BootPolicy>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    run_with_api(cfg, policy, metrics, None, shutdown).await
}

/// [`run`], with an API handler for `/v1/…` on the HTTP server.
pub async fn run_with_api(
    cfg: NetbootConfig,
    policy: Arc<dyn BootPolicy>,
    metrics: Arc<Metrics>,
    api: Option<Arc<dyn crate::http::ApiHandler>>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    run_with_leases(cfg, policy, metrics, api, None, shutdown).await
}

/// [`run_with_api`], with the DHCP leases kept by `leases` instead of the state directory's
/// file (the seed daemon's store in HA).
pub async fn run_with_leases(
    cfg: NetbootConfig,
    policy: Arc<dyn BootPolicy>,
    metrics: Arc<Metrics>,
    api: Option<Arc<dyn crate::http::ApiHandler>>,
    leases: Option<Arc<dyn crate::dhcp::leases::LeaseKeeper>>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let http_base = cfg
        .http
        .as_ref()
        .map(|h| format!("http://{}:{}", cfg.server_ip, h.port));
    let ctx = Arc::new(ServiceContext {
        server_ip: cfg.server_ip,
        interface: cfg.interface.clone(),
        state_dir: cfg.state_dir.clone(),
        policy,
        metrics,
        http_base,
        api,
        leases,
        floating: cfg.floating_server_ip,
    });
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(wire) = cfg.wire.clone() {
        return run_on_wire(&cfg, &wire, ctx, shutdown).await;
    }
    if let Some(dhcp) = cfg.dhcp.clone() {
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        let nodes = cfg.nodes.clone();
        tasks.spawn(async move {
            crate::dhcp::serve(ctx, dhcp, nodes, sd)
                .await
                .map_err(ServeError::Dhcp)
        });
    }
    if let Some(tftp) = cfg.tftp.clone() {
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        tasks.spawn(async move {
            crate::tftp::serve(ctx, tftp, sd)
                .await
                .map_err(ServeError::Tftp)
        });
    }
    if let Some(http) = cfg.http.clone() {
        let (ctx, sd) = (ctx.clone(), shutdown.clone());
        tasks.spawn(async move {
            crate::http::serve(ctx, http, sd)
                .await
                .map_err(ServeError::Http)
        });
    }
    join_all(tasks, shutdown).await
}

/// The services on the userspace wire (`[wire]`): DHCP and HTTP on smoltcp sockets.
async fn run_on_wire(
    cfg: &NetbootConfig,
    wire: &crate::wire::WireConfig,
    ctx: Arc<ServiceContext>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    use crate::wire::services;
    let stack = crate::wire::start(
        wire,
        cfg.server_ip,
        &cfg.state_dir,
        &ctx.metrics,
        shutdown.clone(),
    )
    .map_err(ServeError::Wire)?;
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(dhcp) = cfg.dhcp.clone() {
        let (ctx, sd, st) = (ctx.clone(), shutdown.clone(), stack.clone());
        let nodes = cfg.nodes.clone();
        let mac = wire.mac_for(cfg.server_ip);
        tasks.spawn(async move {
            // `mode = "auto"`: look for another server before answering anything.
            let dhcp = tokio::select! {
                r = crate::dhcp::probe_edge::decide_on_wire(&ctx, dhcp, &st, mac) => {
                    r.map_err(ServeError::Dhcp)?
                }
                _ = sd.cancelled() => return Ok(()),
            };
            services::serve_dhcp(st, ctx, dhcp, nodes, sd)
                .await
                .map_err(ServeError::Dhcp)
        });
    }
    if let Some(tftp) = cfg.tftp.clone() {
        let (ctx, sd, st) = (ctx.clone(), shutdown.clone(), stack.clone());
        tasks.spawn(async move {
            services::serve_tftp(st, ctx, tftp, sd)
                .await
                .map_err(ServeError::Tftp)
        });
    }
    if let Some(http) = cfg.http.clone() {
        let (ctx, sd, st) = (ctx.clone(), shutdown.clone(), stack.clone());
        tasks.spawn(async move {
            services::serve_http(st, ctx, http, sd)
                .await
                .map_err(ServeError::Http)
        });
    }
    join_all(tasks, shutdown).await
}

async fn join_all(
    mut tasks: tokio::task::JoinSet<Result<(), ServeError>>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shutdown.cancel();
                return Err(e);
            }
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
    Ok(())
}
