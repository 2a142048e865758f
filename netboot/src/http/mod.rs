//! HTTP boot server on hyper: static files streamed from a root, per-node iPXE scripts, and
//! `/metrics`.

use crate::server::ServiceContext;
use serde::Deserialize;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The `[http]` section. (Filled in by the HTTP work.)
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// TCP port to listen on.
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    8080
}

/// Serve HTTP until shutdown.
pub async fn serve(
    _ctx: Arc<ServiceContext>,
    _cfg: HttpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    shutdown.cancelled().await;
    Ok(())
}
