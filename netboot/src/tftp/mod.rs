//! Read-only TFTP server (RFC 1350, 2347, 2348, 2349, 7440). `engine` is the sans-IO core;
//! `udp` is the tokio transport.

use crate::server::ServiceContext;
use serde::Deserialize;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The `[tftp]` section. (Filled in by the TFTP work.)
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TftpConfig {}

/// Serve TFTP until shutdown.
pub async fn serve(
    _ctx: Arc<ServiceContext>,
    _cfg: TftpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    shutdown.cancelled().await;
    Ok(())
}
