//! The hyper edge of the HTTP boot server and its router.
//!
//! Connections are HTTP/1.1 with keep-alive. Files are streamed in 256 KiB reads
//! (`ReaderStream` over a `tokio::fs::File` limited to the requested range), never read whole.
//! Request paths are percent-decoded and then resolved by [`crate::tftp::root::Root`], which
//! refuses `..` and symlinks out of the root (403), so `%2e%2e` cannot escape either.

use super::range::{self, ByteRange};
use super::HttpConfig;
use crate::server::ServiceContext;
use crate::tftp::root::{ResolveError, Root};
use crate::MacAddr;
use bytes::Bytes;
use futures::TryStreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Bytes per file read: large reads keep syscalls and wakeups per MiB low.
const READ_CHUNK: usize = 256 * 1024;

type Body = BoxBody<Bytes, std::io::Error>;

/// Shared by every connection.
pub(crate) struct App {
    ctx: Arc<ServiceContext>,
    root: Root,
    http_base: String,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    /// Open connections, bounded ([`super::limits`]).
    slots: super::limits::Slots,
}

fn bind_tcp(addr: SocketAddr, interface: Option<&str>) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    if let Some(ifname) = interface {
        s.bind_device(Some(ifname.as_bytes())).map_err(|e| {
            std::io::Error::new(e.kind(), format!("binding to device {ifname}: {e}"))
        })?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding TCP {addr}: {e}")))?;
    s.listen(1024)?;
    tokio::net::TcpListener::from_std(s.into())
}

/// Serve HTTP until `shutdown`: on `ctx.server_ip` (or 0.0.0.0 if that address is not
/// configured here), bound to `ctx.interface` if set.
pub async fn serve(
    ctx: Arc<ServiceContext>,
    cfg: HttpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let root = Root::new(&cfg.root)?;
    let listener = bind_here(&ctx, cfg.port)?;
    info!(addr = %listener.local_addr()?, root = %root.path().display(), "HTTP listening");
    let https = match &cfg.https {
        Some(h) => {
            let l = bind_here(&ctx, h.port)?;
            info!(addr = %l.local_addr()?, "HTTPS listening");
            Some((l, tokio_rustls::TlsAcceptor::from(h.config.clone())))
        }
        None => None,
    };
    let app = App::new(ctx, cfg.port, root);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = super::accept(&listener, "HTTP accept") => if let Some((stream, peer)) = r {
                let _ = stream.set_nodelay(true);
                spawn_connection(app.clone(), stream, peer, shutdown.clone());
            },
            r = super::accept_maybe(https.as_ref().map(|h| &h.0), "HTTPS accept") => {
                if let (Some((stream, peer)), Some((_, tls))) = (r, &https) {
                    let _ = stream.set_nodelay(true);
                    spawn_tls_connection(app.clone(), tls.clone(), stream, peer, shutdown.clone());
                }
            }
        }
    }
    Ok(())
}

/// A listener on `port` of `ctx.server_ip` (or 0.0.0.0 if that address is not configured
/// here, or floats), bound to `ctx.interface` if set.
fn bind_here(ctx: &ServiceContext, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let iface = ctx.interface.as_deref();
    match bind_tcp(SocketAddr::new(ctx.bind_ip().into(), port), iface) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            warn!(server_ip = %ctx.server_ip, port, "server_ip not configured here; listening on 0.0.0.0");
            bind_tcp(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port), iface)
        }
        Err(e) => Err(e),
    }
}

impl App {
    /// The shared state of one HTTP server on `port`, serving files from `root`.
    pub(crate) fn new(ctx: Arc<ServiceContext>, port: u16, root: Root) -> Arc<Self> {
        let http_base = ctx
            .http_base
            .clone()
            .unwrap_or_else(|| format!("http://{}:{}", ctx.server_ip, port));
        Arc::new(App {
            requests: ctx
                .metrics
                .counter("http_requests_total", "HTTP requests received"),
            bytes: ctx
                .metrics
                .counter("http_bytes_sent_total", "HTTP response body bytes sent"),
            ctx,
            root,
            http_base,
            slots: super::limits::Slots::default(),
        })
    }
}

/// Serve one accepted connection (a kernel `TcpStream` or a userspace wire stream) with hyper
/// in its own task, until the peer closes it or `shutdown` (then gracefully).
pub(crate) fn spawn_connection<S>(
    app: Arc<App>,
    stream: S,
    peer: SocketAddr,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    // Over the limit: the stream is dropped, which closes it.
    let Some(slot) = app.slots.take(peer) else {
        return;
    };
    tokio::spawn(async move {
        let _slot = slot;
        connection(app, stream, peer, shutdown).await
    });
}

/// [`spawn_connection`] for the HTTPS port: the TLS handshake (bounded like the request
/// headers) in the connection's task and slot, then the same service.
pub(crate) fn spawn_tls_connection<S>(
    app: Arc<App>,
    tls: tokio_rustls::TlsAcceptor,
    stream: S,
    peer: SocketAddr,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let Some(slot) = app.slots.take(peer) else {
        return;
    };
    tokio::spawn(async move {
        let _slot = slot;
        let hs = tokio::time::timeout(super::limits::HEADER_READ_TIMEOUT, tls.accept(stream));
        match hs.await {
            Ok(Ok(stream)) => connection(app, stream, peer, shutdown).await,
            Ok(Err(e)) => debug!(%peer, error = %e, "HTTPS handshake failed"),
            Err(_) => debug!(%peer, "HTTPS handshake timed out"),
        }
    });
}

/// One connection, plain or TLS: HTTP/1 with the header-read and idle bounds.
async fn connection<S>(app: Arc<App>, stream: S, peer: SocketAddr, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    use super::limits;
    let activity = limits::Activity::new();
    let seen = activity.clone();
    let svc = hyper::service::service_fn(move |req| {
        let app = app.clone();
        let busy = seen.request();
        async move {
            let r = app.handle(req, peer).await;
            drop(busy);
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    let conn =
        limits::http1().serve_connection(limits::Watched::new(stream, activity.clone()), svc);
    tokio::pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = limits::idle(activity) => {
            debug!(%peer, "HTTP connection idle: closed");
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|n| match n {}).boxed());
    *r.status_mut() = status;
    let h = r.headers_mut();
    let ct = HeaderValue::from_str(content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

fn status(status: StatusCode) -> Response<Body> {
    let reason = status.canonical_reason().unwrap_or("error");
    text(status, "text/plain; charset=utf-8", format!("{reason}\n"))
}

fn empty() -> Body {
    Empty::new().map_err(|n| match n {}).boxed()
}

impl App {
    async fn handle<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let method = req.method().clone();
        let raw_path = req.uri().path().to_string();
        let mut resp = match (&self.ctx.api, method.clone()) {
            (Some(api), _) if raw_path.starts_with("/v1/") => {
                Self::api(api.clone(), req, peer).await
            }
            (_, Method::GET | Method::HEAD) => self.route(&req, &raw_path, peer).await,
            _ => {
                let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                r
            }
        };
        let st = resp.status();
        if st.is_server_error() {
            warn!(%peer, %method, path = %raw_path, status = st.as_u16(), "HTTP request failed");
        } else {
            debug!(%peer, %method, path = %raw_path, status = st.as_u16(), "HTTP request");
        }
        if method == Method::HEAD {
            *resp.body_mut() = empty();
        } else {
            // Count body bytes as they are actually produced for the connection.
            let bytes = self.bytes.clone();
            let body = std::mem::replace(resp.body_mut(), empty());
            *resp.body_mut() = body
                .map_frame(move |f| {
                    if let Some(d) = f.data_ref() {
                        bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                    f
                })
                .boxed();
        }
        resp
    }

    /// Collect the body (bounded) and hand the request to the daemon's API handler.
    async fn api<B>(
        api: Arc<dyn super::ApiHandler>,
        req: Request<B>,
        peer: SocketAddr,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let limited = http_body_util::Limited::new(body, super::API_BODY_LIMIT);
        let body = match limited.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                warn!(%peer, error = %e, "HTTP API: request body refused");
                return status(StatusCode::PAYLOAD_TOO_LARGE);
            }
        };
        let r = api.handle(super::ApiRequest::new(parts, body, peer)).await;
        text(r.status, &r.content_type, r.body)
    }

    async fn route<B>(&self, req: &Request<B>, raw_path: &str, peer: SocketAddr) -> Response<Body> {
        let decoded = match percent_encoding::percent_decode_str(raw_path).decode_utf8() {
            Ok(p) => p.into_owned(),
            Err(_) => return status(StatusCode::BAD_REQUEST),
        };
        match decoded.as_str() {
            "/metrics" => {
                return text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.ctx.metrics.render(),
                )
            }
            "/boot.ipxe" => {
                return text(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    crate::ipxe::chain_script(&self.http_base),
                )
            }
            _ => {}
        }
        if let Some(m) = decoded.strip_prefix("/ipxe/") {
            let m = m.strip_suffix(".ipxe").unwrap_or(m);
            return match m.parse::<MacAddr>() {
                Ok(mac) => {
                    let action = self.ctx.policy.script_for(mac, peer.ip());
                    debug!(%mac, %peer, ?action, "iPXE script");
                    text(
                        StatusCode::OK,
                        "text/plain; charset=utf-8",
                        crate::ipxe::render(action.as_ref(), &self.http_base),
                    )
                }
                Err(_) => status(StatusCode::NOT_FOUND),
            };
        }
        match self.root.resolve(&decoded) {
            Ok(path) => match self.file(req, &path).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "HTTP: cannot serve file");
                    status(StatusCode::INTERNAL_SERVER_ERROR)
                }
            },
            Err(ResolveError::Escapes) => {
                warn!(path = %raw_path, "HTTP: path escapes the root, refused");
                status(StatusCode::FORBIDDEN)
            }
            Err(ResolveError::NotFound | ResolveError::NotAFile) => status(StatusCode::NOT_FOUND),
            Err(ResolveError::Io(e)) => {
                warn!(path = %raw_path, error = %e, "HTTP: cannot access file");
                status(StatusCode::FORBIDDEN)
            }
        }
    }

    async fn file<B>(
        &self,
        req: &Request<B>,
        path: &std::path::Path,
    ) -> std::io::Result<Response<Body>> {
        let mut file = tokio::fs::File::open(path).await?;
        let meta = file.metadata().await?;
        let len = meta.len();
        let modified = meta.modified().ok();
        let headers = req.headers();

        if let (Some(m), Some(ims)) = (
            modified,
            headers
                .get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok()),
        ) {
            if truncate_secs(m) <= ims {
                let mut r = Response::new(empty());
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                set_file_headers(&mut r, modified);
                return Ok(r);
            }
        }

        let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
        let (code, start, count) = match range::parse(range_header, len) {
            ByteRange::Full => (StatusCode::OK, 0, len),
            ByteRange::Partial { start, end } => {
                (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
            }
            ByteRange::Unsatisfiable => {
                let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    HeaderValue::try_from(format!("bytes */{len}")).expect("ascii"),
                );
                return Ok(r);
            }
        };
        let body = if req.method() == Method::HEAD || count == 0 {
            empty()
        } else {
            if start > 0 {
                file.seek(std::io::SeekFrom::Start(start)).await?;
            }
            let reader = file.take(count);
            let stream = tokio_util::io::ReaderStream::with_capacity(reader, READ_CHUNK);
            StreamBody::new(stream.map_ok(Frame::data)).boxed()
        };
        let mut r = Response::new(body);
        *r.status_mut() = code;
        set_file_headers(&mut r, modified);
        let h = r.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(path)),
        );
        if code == StatusCode::PARTIAL_CONTENT {
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::try_from(format!("bytes {start}-{}/{len}", start + count - 1))
                    .expect("ascii"),
            );
        }
        Ok(r)
    }
}

fn set_file_headers(r: &mut Response<Body>, modified: Option<SystemTime>) {
    let h = r.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(m) = modified {
        if let Ok(v) = HeaderValue::try_from(httpdate::fmt_http_date(m)) {
            h.insert(header::LAST_MODIFIED, v);
        }
    }
}

/// HTTP dates have whole seconds.
fn truncate_secs(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

fn content_type(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("ipxe" | "txt" | "cfg" | "conf") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("html" | "htm") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}
