//! HTTP boot server on hyper: static files streamed from a root (with `Range`, `HEAD`,
//! `Last-Modified`), per-node iPXE scripts at `/ipxe/{mac}`, the generic `/boot.ipxe`, and
//! `/metrics`. `server` is the tokio/hyper edge and the request router; `range` parses `Range`.

pub mod range;
pub mod server;

use crate::server::ServiceContext;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The `[http]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Static files (kernels, initrds, images); nothing outside it is ever served.
    pub root: PathBuf,
    /// TCP port to listen on.
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    8080
}

/// Serve HTTP until shutdown.
pub async fn serve(
    ctx: Arc<ServiceContext>,
    cfg: HttpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    server::serve(ctx, cfg, shutdown).await
}
