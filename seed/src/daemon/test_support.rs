//! What the daemon's unit tests share: an [`ApiRequest`] as the HTTP edge would hand it over.

use netboot::http::ApiRequest;

/// `method path` (a `?query` is split off as the server does) from peer 10.0.0.2, with
/// `Authorization: Bearer <token>` when there is one, and `body`.
pub(crate) fn request(
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> ApiRequest {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (path, None),
    };
    let mut headers = http::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
    }
    ApiRequest {
        method,
        path: path.into(),
        query,
        headers,
        body: bytes::Bytes::from(body.to_string()),
        peer: "10.0.0.2:1234".parse().unwrap(),
    }
}
