//! What handlers take from a request besides the credentials ([`super::auth`]): the peer's
//! address, the `{name}` of the path, a JSON body as an API type (refused with the API's own
//! error body, whatever the request's content type says), and [`blocking`] for work that
//! commits to the store.

use super::{ApiError, AppState};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use http::request::Parts;
use std::net::SocketAddr;

/// The address the request came from: the HTTP edge puts it into the request's extensions
/// (`PeerAddr`); absent (in-process calls), 0.0.0.0:0.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The request extension carrying the peer's address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub SocketAddr);

impl Peer {
    pub fn of(parts: &Parts) -> Peer {
        Peer(
            parts
                .extensions
                .get::<PeerAddr>()
                .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |p| p.0),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer::of(parts))
    }
}

/// The daemon, token and metrics of the [`super::Api`] the request came through: the request
/// carries them (an extension), so the one route table of the process serves every `Api`.
impl AppState {
    pub fn of(parts: &Parts) -> Result<AppState, ApiError> {
        parts.extensions.get::<AppState>().cloned().ok_or_else(|| {
            ApiError::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "the request reached the router without its daemon",
            )
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AppState {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        AppState::of(parts)
    }
}

/// The `{name}` segment of the route's path (a node, a stack, an image).
#[derive(Debug, Clone)]
pub struct Name(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Name {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, s)
            .await
            .map(|Path(n)| Name(n))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// What a body of this type is called in the 400 answering one that does not parse
/// (`not a facts report: missing field …`).
pub trait Described {
    const WHAT: &'static str;
}

impl Described for ::api::Report {
    const WHAT: &'static str = "not a facts report";
}
impl Described for ::api::Heartbeat {
    const WHAT: &'static str = "not a heartbeat";
}
impl Described for ::api::Progress {
    const WHAT: &'static str = "not a progress report";
}
impl Described for ::api::Signal {
    const WHAT: &'static str = "not a signal";
}
impl Described for ::api::StackRequest {
    const WHAT: &'static str = "not a stack request";
}
impl Described for ::api::TokenRequest {
    const WHAT: &'static str =
        "expected {\"name\": NAME, \"role\": \"admin\"|\"operator\"|\"reader\", \"expires_in_secs\": N}";
}
impl Described for ::api::node::DeployRequest {
    const WHAT: &'static str = "expected {\"image\": NAME, \"root_hint\": HINT}";
}
impl Described for ::api::ha::MemberRequest {
    const WHAT: &'static str = "expected {\"name\": NAME, \"peer_url\": \"http://HOST:2380\"}";
}
impl Described for ::api::stack::ReplaceRequest {
    const WHAT: &'static str = "expected {\"member\": MEMBER_OR_NODE}";
}
impl Described for ::api::node::UndeployRequest {
    const WHAT: &'static str = "expected {\"full_wipe\": BOOL} or nothing";
}

/// A JSON body as the API type `T`. Unlike axum's `Json`, the content type is not checked
/// (agents and `curl -d` send what they send) and a refusal is the API's `{"error": …}`.
#[derive(Debug)]
pub struct Payload<T>(pub T);

impl<T, S> FromRequest<S> for Payload<T>
where
    T: serde::de::DeserializeOwned + Described,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &S) -> Result<Self, ApiError> {
        let body = Bytes::from_request(req, s)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        parse(&body).map(Payload)
    }
}

/// `body` as `T`, or the 400 naming what was expected.
pub fn parse<T: serde::de::DeserializeOwned + Described>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("{}: {e}", T::WHAT)))
}

/// Run `f` on tokio's blocking pool: handlers whose work commits to the store (an fsync with
/// the redb store) keep it off the async workers, which serve every other connection.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}
