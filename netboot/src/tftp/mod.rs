//! Read-only TFTP server (RFC 1350, 2347, 2348, 2349, 7440). `engine` is the sans-IO core of
//! one transfer; `udp` is the tokio transport (one ephemeral socket per transfer); `root` keeps
//! every request inside the served directory; `packet` is the wire format.

pub mod engine;
pub mod packet;
pub mod root;
pub mod udp;

use crate::server::ServiceContext;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The `[tftp]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TftpConfig {
    /// Read-only root directory; nothing outside it is ever served.
    pub root: PathBuf,
    /// UDP port of the request socket.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Retransmission timeout in seconds when the client does not negotiate one.
    #[serde(default = "default_timeout")]
    pub timeout: u8,
    /// Retransmissions of one window before a transfer is abandoned.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Largest `blksize` agreed to (8..=65464).
    #[serde(default = "default_max_blksize")]
    pub max_blksize: u16,
    /// Largest `windowsize` agreed to.
    #[serde(default = "default_max_windowsize")]
    pub max_windowsize: u16,
    /// Concurrent transfers; requests beyond are refused with an error (each holds a socket
    /// and a file descriptor).
    #[serde(default = "default_max_transfers")]
    pub max_transfers: usize,
}

fn default_port() -> u16 {
    69
}
fn default_timeout() -> u8 {
    1
}
fn default_retries() -> u32 {
    5
}
fn default_max_blksize() -> u16 {
    engine::MAX_BLKSIZE
}
fn default_max_windowsize() -> u16 {
    256
}
fn default_max_transfers() -> usize {
    // Two descriptors per transfer (socket, file): stays well inside the usual 1024 soft limit.
    400
}

impl TftpConfig {
    /// The engine limits this section describes.
    pub fn limits(&self) -> engine::Limits {
        engine::Limits {
            default_timeout: std::time::Duration::from_secs(u64::from(self.timeout.max(1))),
            max_retries: self.retries,
            max_window: self.max_windowsize.max(1),
            max_blksize: self
                .max_blksize
                .clamp(engine::MIN_BLKSIZE, engine::MAX_BLKSIZE),
        }
    }
}

/// Serve TFTP until shutdown.
pub async fn serve(
    ctx: Arc<ServiceContext>,
    cfg: TftpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    udp::serve(ctx, cfg, shutdown).await
}
