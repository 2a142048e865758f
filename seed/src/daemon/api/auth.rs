//! The API's three credentials, one check each (all `Authorization: Bearer …`):
//!
//! - [`Operator`]: the API's token (`[api] token`), compared in constant time. Every operator
//!   handler takes it first, so the 401 comes before anything else is looked at; the routes
//!   test checks each route the OpenAPI document says needs it refuses a request without it.
//! - [`NodeCredential`]: a deployed node's credential ([`super::super::credentials`]); the
//!   extractor's value is the node's name, so a handler can only act for the node whose
//!   credential it was given.
//! - [`agent`]: a ramdisk agent's per-boot token. The node it must belong to is found by the
//!   MAC in the body, so this one is a check the agent handlers call after parsing the body.
//!
//! Tokens and credentials never reach a log line: refusals log the node, MAC, peer and path.

use super::extract::Peer;
use super::{ApiError, AppState};
use crate::daemon::{credentials, Daemon};
use axum::extract::FromRequestParts;
use http::request::Parts;
use http::HeaderMap;
use std::sync::Arc;
use tracing::warn;

/// The answer to an operator request without the API's token.
pub const OPERATOR_REFUSED: &str = "missing or wrong `Authorization: Bearer <token>`";

/// The operator: the request carries the API's token.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        if operator_ok(&AppState::of(parts)?, &parts.headers) {
            Ok(Operator)
        } else {
            Err(ApiError::unauthorized(OPERATOR_REFUSED))
        }
    }
}

/// Whether `headers` carry the API's token.
pub fn operator_ok(s: &AppState, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|given| constant_time_eq(given.as_bytes(), s.token.as_bytes()))
}

/// A deployed node, by its credential: the node's name.
#[derive(Debug, Clone)]
pub struct NodeCredential(pub String);

impl<S: Send + Sync> FromRequestParts<S> for NodeCredential {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let s = AppState::of(parts)?;
        let Some(token) = bearer(&parts.headers).filter(|t| !t.is_empty()) else {
            return Err(ApiError::unauthorized(
                "missing `Authorization: Bearer <node credential>`",
            ));
        };
        match credentials::verify(s.daemon.store(), token)? {
            Some(node) => Ok(NodeCredential(node)),
            None => {
                let Peer(peer) = Peer::of(parts);
                warn!(%peer, path = %parts.uri.path(), "unknown node credential refused");
                Err(ApiError::unauthorized("unknown node credential"))
            }
        }
    }
}

/// Whether the agent call carries node `name`'s current per-boot token (else the 401, counted
/// and logged with the node and MAC, never the token). An accepted call meets the node's PXE
/// boot watchdog: its agent runs. Commits to the store: call it from the blocking pool.
pub fn agent(
    d: &Arc<Daemon>,
    headers: &HeaderMap,
    name: &str,
    mac: &str,
    peer: Peer,
    path: &str,
) -> Result<(), ApiError> {
    let presented = bearer(headers).filter(|t| !t.is_empty());
    let ok = match presented {
        Some(t) => d.agent_token_ok(name, t)?,
        None => false,
    };
    if ok {
        d.boot_seen(name);
        return Ok(());
    }
    d.metrics().agent_auth_failure();
    let why = if presented.is_some() {
        "not the node's current agent token"
    } else {
        "no agent token"
    };
    warn!(node = name, %mac, peer = %peer.0, path, why, "agent call refused");
    Err(ApiError::unauthorized(
        "missing or wrong `Authorization: Bearer <agent token>` (the seed.token= of this \
         node's current ramdisk boot)",
    ))
}

/// The token of `Authorization: Bearer <token>`, trimmed.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Token comparison whose time does not depend on where the first difference is (hand-written:
/// five lines do not justify a crate).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
