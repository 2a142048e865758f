//! The API on a kernel socket for operators (`[api] listen = "127.0.0.1:6385"`).
//!
//! Nodes reach the API on the netboot HTTP server of the provisioning network (which may be the
//! userspace wire, invisible to the host's own sockets); operators and the CLI reach the same
//! handler here, on the management side. Every request under `/v1/`, and `/metrics`, goes to
//! the [`ApiHandler`]: the REST endpoints keep their bearer-token check.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use netboot::http::{ApiHandler, ApiRequest, API_BODY_LIMIT};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Serve `api` on a bound listener until shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Arc<dyn ApiHandler>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "API listening");
    }
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "API accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let api = api.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let api = api.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(api, req, peer).await) }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
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
    let r = api
        .handle(ApiRequest {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
            headers: parts.headers,
            body,
            peer,
        })
        .await;
    reply(r.status, &r.content_type, r.body)
}
