//! The API on a kernel socket for operators (`[api] listen = "127.0.0.1:6385"`).
//!
//! Nodes reach the API on the netboot HTTP server of the provisioning network (which may be the
//! userspace wire, invisible to the host's own sockets); operators and the CLI reach the same
//! handler here, on the management side. Every request under `/v1/`, and `/metrics`, goes to
//! the [`ApiHandler`]: the REST endpoints keep their bearer-token check.
//!
//! With a TLS configuration (`[api] tls`, [`super::api_tls`]) every connection is HTTPS: the
//! TLS handshake, bounded like the request headers, comes before any byte reaches hyper; a
//! client that speaks plain HTTP (or fails the handshake) is dropped.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use netboot::http::{limits, ApiHandler, ApiRequest, API_BODY_LIMIT};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Serve `api` on a bound listener until shutdown: HTTPS with `tls`, else plain HTTP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    api: Arc<dyn ApiHandler>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, https = tls.is_some(), "API listening");
    }
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = limits::Slots::default();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = netboot::http::accept(&listener, "API accept") => match r {
                Some(x) => x,
                None => continue,
            },
        };
        // The same bounds as the boot server: connections, header-read and idle timeouts.
        let Some(slot) = slots.take(peer) else {
            continue;
        };
        let api = api.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(stream, api, peer).await,
                Some(tls) => {
                    let hs = tokio::time::timeout(limits::HEADER_READ_TIMEOUT, tls.accept(stream));
                    match hs.await {
                        Ok(Ok(stream)) => connection(stream, api, peer).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "API TLS handshake"),
                        Err(_) => tracing::debug!(%peer, "API TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// One connection (plain or TLS): HTTP/1 with the boot server's header-read and idle bounds.
async fn connection<S>(stream: S, api: Arc<dyn ApiHandler>, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = limits::Activity::new();
    let seen = activity.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let api = api.clone();
        let busy = seen.request();
        async move {
            let r = handle(api, req, peer).await;
            drop(busy);
            Ok::<_, std::convert::Infallible>(r)
        }
    });
    let conn =
        limits::http1().serve_connection(limits::Watched::new(stream, activity.clone()), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = limits::idle(activity) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle(
    api: Arc<dyn ApiHandler>,
    req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let reply = |status: http::StatusCode, ct: &str, body: String| {
        hyper::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, ct)
            .body(Full::new(Bytes::from(body)))
            .expect("valid response")
    };
    let body = match Limited::new(body, API_BODY_LIMIT).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return reply(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                "too large\n".into(),
            )
        }
    };
    // `/metrics` too: scrapers reach it here without the provisioning network.
    if !parts.uri.path().starts_with("/v1/") && parts.uri.path() != "/metrics" {
        return reply(
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".into(),
        );
    }
    let r = api.handle(ApiRequest::new(parts, body, peer)).await;
    reply(r.status, &r.content_type, r.body)
}
