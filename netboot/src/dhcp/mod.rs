//! DHCPv4 server: authoritative (reservations + optional dynamic pool) and ProxyDHCP, with PXE
//! boot file selection. `engine` is the sans-IO core; `udp` is the tokio transport.

use crate::config::NodeEntry;
use crate::server::ServiceContext;
use serde::Deserialize;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The `[dhcp]` section. (Filled in by the DHCP work.)
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpConfig {}

/// Serve DHCP until shutdown.
pub async fn serve(
    _ctx: Arc<ServiceContext>,
    _cfg: DhcpConfig,
    _nodes: Vec<NodeEntry>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    shutdown.cancelled().await;
    Ok(())
}
