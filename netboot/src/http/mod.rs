//! HTTP boot server on hyper: static files streamed from a root (with `Range`, `HEAD`,
//! `Last-Modified`), per-node iPXE scripts at `/ipxe/{mac}`, the generic `/boot.ipxe`, and
//! `/metrics`. `server` is the tokio/hyper edge and the request router; `range` parses `Range`.
//! With [`HttpConfig::https`], a second port serves the same over TLS (rustls): the agents'
//! channel; iPXE's own fetches stay on the plain port.

pub mod limits;
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
    /// Also serve the same files and `/v1/` over HTTPS (set by the program, not the file:
    /// the seed daemon's agent channel).
    #[serde(skip)]
    pub https: Option<HttpsConfig>,
}

/// The HTTPS port beside the plain one: same files, same API, TLS with `config`.
#[derive(Debug, Clone)]
pub struct HttpsConfig {
    pub port: u16,
    pub config: std::sync::Arc<rustls::ServerConfig>,
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

/// A request under `/v1/`, handed whole (body collected, at most [`API_BODY_LIMIT`]) to the
/// daemon's [`ApiHandler`]. The netboot server itself has no API; the seed daemon plugs its agent
/// and REST APIs in here so they ride the same HTTP server on either transport (kernel sockets or
/// the userspace wire), which is the only server a node in the ramdisk can reach.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: http::Method,
    /// The path, not decoded, without the query.
    pub path: String,
    pub query: Option<String>,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
    pub peer: std::net::SocketAddr,
}

impl ApiRequest {
    /// The request a hyper request's `parts` and collected `body` from `peer` make (the path
    /// not decoded).
    pub fn new(
        parts: http::request::Parts,
        body: bytes::Bytes,
        peer: std::net::SocketAddr,
    ) -> Self {
        ApiRequest {
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            method: parts.method,
            headers: parts.headers,
            body,
            peer,
        }
    }
}

/// Accept a connection on a kernel socket. An accept error (EMFILE and friends) is logged as
/// `what` and waited out for 50 ms, so the connections already open keep being served: `None`
/// then, and the caller's loop goes round again.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    what: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    accept_on(listener, what).await
}

/// [`accept`] on a listener that may not be there (then never).
pub async fn accept_maybe(
    listener: Option<&tokio::net::TcpListener>,
    what: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => accept_on(l, what).await,
        None => std::future::pending().await,
    }
}

async fn accept_on(
    listener: &tokio::net::TcpListener,
    what: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener.accept().await {
        Ok(x) => Some(x),
        Err(e) => {
            tracing::warn!(error = %e, "{what}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            None
        }
    }
}

/// The handler's answer: a status and a JSON (or text) body of the given content type.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: http::StatusCode,
    pub content_type: String,
    pub body: String,
}

impl ApiResponse {
    /// A JSON answer.
    pub fn json(status: http::StatusCode, value: &impl serde::Serialize) -> Self {
        Self {
            status,
            content_type: "application/json".into(),
            body: serde_json::to_string(value).unwrap_or_else(|_| "null".into()),
        }
    }
}

/// Largest request body accepted under `/v1/` (413 beyond).
pub const API_BODY_LIMIT: usize = 1 << 20;

/// Handles every request under `/v1/`.
pub trait ApiHandler: Send + Sync + 'static {
    fn handle(
        &self,
        req: ApiRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ApiResponse> + Send + 'static>>;
}
