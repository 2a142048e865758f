//! The metadata service: what a node reads and posts with its own credential, and the operator
//! routes beside it.
//!
//! Node side (`Authorization: Bearer <node credential>`, [`super::credentials`], checked by the
//! API's node-credential extractor):
//! - `GET /v1/node/metadata[?since=N&wait=S]` → `{counter, data}` of the credential's node.
//!   With `since`, it answers at once if the counter differs from N (a node ahead of a rebuilt
//!   store is answered too), else when the node's metadata changes, else after S seconds (at
//!   most [`MAX_WAIT_SECS`]) with `304 Not Modified`. `data` always carries the node's identity
//!   (`seed.node`). `?node=OTHER` for another node's data is 403; no or an unknown credential 401.
//! - `POST /v1/node/signal` with a [`Signal`] → stored for the credential's node.
//!
//! Operator side (the admin token): `PUT/GET /v1/nodes/NAME/metadata` (publish by hand / read
//! back with the node's signals) and `POST /v1/nodes/NAME/credential` (issue a fresh credential,
//! revoking the old one; returned once, never stored in clear).
//!
//! Metadata carries secrets (generated passwords): logs name the node, the counter and the
//! deployment, never the data, outputs, reasons or credentials.

use super::api::{blocking, ApiError, AppState, Name, NodeCredential, Payload, SecretsReader};
use super::api::{BadRequest, NotFound, Unauthorized};
use super::metadata::{self, Metadata, Signal};
use super::{credentials, Daemon, DaemonError};
use crate::store::nodes;
use ::api::metadata::{CredentialIssued, MetadataPublished, NodeMetadata, SignalStored};
use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, StatusCode, Uri};
use std::time::Duration;
use tracing::{debug, info, warn};

/// The longest a long-poll is held.
pub const MAX_WAIT_SECS: u64 = 60;

/// A `since` or `wait` that is not a number.
#[derive(Debug, thiserror::Error)]
#[error("{what} must be a non-negative integer, not {value:?}")]
pub struct BadQuery {
    what: &'static str,
    value: String,
}

/// The parameters of `GET /v1/node/metadata`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub since: Option<u64>,
    pub wait_secs: u64,
    pub node: Option<String>,
}

impl Query {
    /// Parse `since=N&wait=S&node=NAME` (unknown keys ignored; `wait` capped at
    /// [`MAX_WAIT_SECS`]).
    pub fn parse(q: Option<&str>) -> Result<Query, BadQuery> {
        let mut out = Query::default();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
            let num = |what: &'static str| {
                v.parse::<u64>().map_err(|_| BadQuery {
                    what,
                    value: v.to_string(),
                })
            };
            match k {
                "since" => out.since = Some(num("since")?),
                "wait" => out.wait_secs = num("wait")?.min(MAX_WAIT_SECS),
                "node" => out.node = Some(v.into_owned()),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// What a node is served: its published data (an empty object if none) with its identity under
/// `seed.node`, which a published document cannot override.
pub fn document(node: &str, published: Option<Metadata>) -> Metadata {
    let (counter, data) = published.map_or((0, serde_json::Value::Null), |m| (m.counter, m.data));
    let mut data = match data {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let seed = data
        .entry("seed")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    if !seed.is_object() {
        *seed = serde_json::Value::Object(Default::default());
    }
    if let Some(seed) = seed.as_object_mut() {
        seed.insert("node".into(), node.into());
    }
    Metadata {
        counter,
        data: serde_json::Value::Object(data),
    }
}

/// This node's metadata document, long-polled on its change counter.
///
/// With `since`, answers at once if the counter differs from it (a node ahead of a rebuilt
/// store is answered too), else when the node's metadata changes, else after `wait` seconds
/// (at most 60) with 304. `data` always carries the node's identity (`seed.node`).
#[utoipa::path(get, path = "/v1/node/metadata", tag = "node",
    security(("node_credential" = [])),
    params(
        ("since" = Option<u64>, Query, description = "The counter the node has"),
        ("wait" = Option<u64>, Query, description = "Seconds to wait for a change (at most 60)"),
        ("node" = Option<String>, Query, description = "Only the credential's own node"),
    ),
    responses(
        (status = 200, description = "The document", body = Metadata),
        (status = 304, description = "Unchanged after waiting"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, description = "Another node's metadata", body = ::api::ErrorBody),
    ))]
pub(super) async fn node_metadata(
    s: AppState,
    NodeCredential(node): NodeCredential,
    uri: Uri,
) -> Result<Response, ApiError> {
    let d = &s.daemon;
    let q = Query::parse(uri.query()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(other) = q.node.as_deref().filter(|o| *o != node) {
        warn!(node = %node, asked = %other, "a node asked for another node's metadata");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a node credential reads only its own node's metadata",
        ));
    }
    // Subscribed before reading, so a change between the read and the wait still wakes us.
    let mut rx = d.metadata_notifier().subscribe(&node);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait_secs);
    let mut logged = false;
    loop {
        let published = metadata::get(d.store(), &node)?;
        let counter = published.as_ref().map_or(0, |m| m.counter);
        if q.since != Some(counter) {
            debug!(node = %node, counter, "metadata served");
            return Ok(Json(document(&node, published)).into_response());
        }
        if tokio::time::Instant::now() >= deadline {
            debug!(node = %node, counter, "metadata unchanged");
            let json = [(header::CONTENT_TYPE, "application/json")];
            return Ok((StatusCode::NOT_MODIFIED, json).into_response());
        }
        if !logged {
            debug!(node = %node, since = counter, wait = q.wait_secs, "metadata long-poll waiting");
            logged = true;
        }
        // Timeout or a wake: either way, read the store again (then answer or 304).
        let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
    }
}

/// Tell the seed how one of this node's deployments (or wait conditions) went.
#[utoipa::path(post, path = "/v1/node/signal", tag = "node",
    security(("node_credential" = [])),
    request_body = Signal,
    responses(
        (status = 200, description = "Stored", body = SignalStored),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
    ))]
pub(super) async fn node_signal(
    s: AppState,
    NodeCredential(node): NodeCredential,
    Payload(sig): Payload<Signal>,
) -> Result<Json<SignalStored>, ApiError> {
    if sig.deployment.trim().is_empty() {
        return Err(ApiError::bad_request("the signal names no deployment"));
    }
    blocking(move || {
        s.daemon.store_signal(&node, &sig)?;
        Ok(Json(SignalStored {
            node,
            deployment: sig.deployment,
        }))
    })
    .await
}

fn node_exists(d: &Daemon, name: &str) -> Result<(), ApiError> {
    match nodes::get(d.store(), name)? {
        Some(_) => Ok(()),
        None => Err(DaemonError::NotFound(name.into()).into()),
    }
}

/// The document a node is served, and the signals it sent.
#[utoipa::path(get, path = "/v1/nodes/{name}/metadata", tag = "nodes",
    security(("token" = [])),
    params(("name" = String, Path, description = "The node's name")),
    responses(
        (status = 200, description = "The node's document and signals", body = NodeMetadata),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ))]
pub(super) async fn show_metadata(
    _: SecretsReader,
    s: AppState,
    Name(name): Name,
) -> Result<Json<NodeMetadata>, ApiError> {
    let d = &s.daemon;
    node_exists(d, &name)?;
    let doc = document(&name, metadata::get(d.store(), &name)?);
    let signals = metadata::signals(d.store(), &name)?;
    Ok(Json(NodeMetadata {
        node: name,
        counter: doc.counter,
        data: doc.data,
        signals,
    }))
}

/// Publish a JSON object as the node's metadata by hand (its long-polls wake).
#[utoipa::path(put, path = "/v1/nodes/{name}/metadata", tag = "nodes",
    security(("token" = [])),
    params(("name" = String, Path, description = "The node's name")),
    request_body(content = Object, description = "The document: a JSON object"),
    responses(
        (status = 200, description = "Published", body = MetadataPublished),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ))]
pub(super) async fn put_metadata(
    _: SecretsReader,
    s: AppState,
    Name(name): Name,
    body: Bytes,
) -> Result<Json<MetadataPublished>, ApiError> {
    node_exists(&s.daemon, &name)?;
    let data: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => return Err(ApiError::bad_request("metadata must be a JSON object")),
        Err(e) => return Err(ApiError::bad_request(format!("not JSON: {e}"))),
    };
    blocking(move || {
        let counter = s.daemon.publish_metadata(&name, data)?;
        Ok(Json(MetadataPublished {
            node: name,
            counter,
        }))
    })
    .await
}

/// A fresh credential for the node, shown once (the previous one is revoked; only its hash is
/// stored).
#[utoipa::path(post, path = "/v1/nodes/{name}/credential", tag = "nodes",
    security(("token" = [])),
    params(("name" = String, Path, description = "The node's name")),
    responses(
        (status = 201, description = "The credential", body = CredentialIssued),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ))]
pub(super) async fn issue_credential(
    _: SecretsReader,
    s: AppState,
    Name(name): Name,
) -> Result<(StatusCode, Json<CredentialIssued>), ApiError> {
    node_exists(&s.daemon, &name)?;
    blocking(move || {
        let credential = credentials::issue(s.daemon.store(), &name)?;
        info!(
            node = %name,
            "node credential issued (the previous one is revoked)"
        );
        Ok((
            StatusCode::CREATED,
            Json(CredentialIssued {
                node: name,
                credential: credential.into(),
            }),
        ))
    })
    .await
}

#[cfg(test)]
mod tests;
