//! The API's three credentials, one check each (all `Authorization: Bearer …`):
//!
//! - [`Operator`] and [`Admin`]: an API token — `[api] token` (the bootstrap admin, named
//!   `config`) or a named token of [`crate::daemon::api_tokens`] with its role. [`Operator`]
//!   asks for `reader` on `GET`/`HEAD` and `operator` otherwise; [`SecretsReader`] asks for
//!   `operator` even on `GET` (what it reads holds secrets); [`Admin`] for `admin` (tokens).
//!   No, unknown, expired or revoked token: 401; a role too low: 403 naming the role needed.
//!   Every operator handler takes one first, so the refusal comes before anything else is
//!   looked at; the routes test checks each route the OpenAPI document says needs a token
//!   refuses a request without one. The request is authenticated once ([`authenticate`], by
//!   the dispatcher, which also hands the caller to the audit line).
//! - [`NodeCredential`]: a deployed node's credential ([`super::super::credentials`]); the
//!   extractor's value is the node's name, so a handler can only act for the node whose
//!   credential it was given.
//! - [`agent`]: a ramdisk agent's per-boot token. The node it must belong to is found by the
//!   MAC in the body, so this one is a check the agent handlers call after parsing the body.
//!
//! Tokens and credentials never reach a log line: refusals log the node, MAC, peer and path.

use super::extract::Peer;
use super::{ApiError, AppState};
use crate::daemon::api_tokens::{self, constant_time_eq, Caller, Lookup, CONFIG_NAME};
use crate::daemon::{credentials, now_ms, Daemon};
use ::api::token::Role;
use axum::extract::FromRequestParts;
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};
use std::sync::Arc;
use tracing::warn;

/// The answer to an operator request without a valid API token.
pub const OPERATOR_REFUSED: &str = "missing or wrong `Authorization: Bearer <token>`";

/// Who an operator request is, as the dispatcher found it (a request extension).
#[derive(Debug, Clone)]
pub enum Authn {
    Caller(Caller),
    /// No token, or one refused: the 401's message.
    Refused(String),
    /// The store could not be read: the 500's message.
    Failed(String),
}

impl Authn {
    /// The caller, when known.
    pub fn caller(&self) -> Option<&Caller> {
        match self {
            Authn::Caller(c) => Some(c),
            _ => None,
        }
    }
}

/// Who the token of `headers` is: the config's token first (constant time), then the store's.
pub fn authenticate(s: &AppState, headers: &HeaderMap) -> Authn {
    let Some(given) = bearer(headers).filter(|t| !t.is_empty()) else {
        return Authn::Refused(OPERATOR_REFUSED.into());
    };
    if constant_time_eq(given.as_bytes(), s.token.as_bytes()) {
        return Authn::Caller(Caller {
            name: CONFIG_NAME.into(),
            role: Role::Admin,
        });
    }
    match api_tokens::lookup(s.daemon.store(), given, now_ms() / 1000) {
        Ok(Lookup::Valid(c)) => Authn::Caller(c),
        Ok(Lookup::Unknown) => Authn::Refused(OPERATOR_REFUSED.into()),
        Ok(Lookup::Revoked(n)) => Authn::Refused(format!("API token `{n}` is revoked")),
        Ok(Lookup::Expired(n)) => Authn::Refused(format!("API token `{n}` has expired")),
        Err(e) => Authn::Failed(format!("reading the API tokens: {e}")),
    }
}

/// The request's caller if its role is `needed` or above: else 401 (no valid token) or 403.
fn require(parts: &Parts, needed: Role) -> Result<Caller, ApiError> {
    let authn = match parts.extensions.get::<Authn>() {
        Some(a) => a.clone(),
        None => authenticate(&AppState::of(parts)?, &parts.headers),
    };
    match authn {
        Authn::Caller(c) if c.role >= needed => Ok(c),
        Authn::Caller(c) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token `{}` has role {}: {} {} needs role {needed}",
                c.name,
                c.role,
                parts.method,
                parts.uri.path()
            ),
        )),
        Authn::Refused(why) => Err(ApiError::unauthorized(why)),
        Authn::Failed(why) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, why)),
    }
}

/// An operator request: role `reader` for `GET`/`HEAD`, `operator` for anything else.
#[derive(Debug, Clone)]
pub struct Operator(#[allow(dead_code)] pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let needed = if matches!(parts.method, Method::GET | Method::HEAD) {
            Role::Reader
        } else {
            Role::Operator
        };
        require(parts, needed).map(Operator)
    }
}

/// A read of secrets (a node's metadata holds generated passwords): role `operator`.
#[derive(Debug, Clone)]
pub struct SecretsReader(#[allow(dead_code)] pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for SecretsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        require(parts, Role::Operator).map(SecretsReader)
    }
}

/// Token management: role `admin`.
#[derive(Debug, Clone)]
pub struct Admin(#[allow(dead_code)] pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        require(parts, Role::Admin).map(Admin)
    }
}

/// Whether `headers` carry a valid API token (any role).
pub fn operator_ok(s: &AppState, headers: &HeaderMap) -> bool {
    matches!(authenticate(s, headers), Authn::Caller(_))
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
