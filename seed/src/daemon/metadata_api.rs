//! The metadata service: what a node reads and posts with its own credential, and the operator
//! routes beside it.
//!
//! Node side (`Authorization: Bearer <node credential>`, [`super::credentials`]):
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

use super::metadata::{self, Metadata, Signal};
use super::{credentials, Daemon, DaemonError};
use crate::store::nodes;
use http::StatusCode;
use netboot::http::{ApiRequest, ApiResponse};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// The longest a long-poll is held.
pub const MAX_WAIT_SECS: u64 = 60;

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn error(status: StatusCode, msg: &str) -> ApiResponse {
    ApiResponse::json(status, &ErrorBody { error: msg })
}

fn internal(e: &dyn std::error::Error) -> ApiResponse {
    tracing::error!(error = %e, "metadata API");
    error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
}

fn not_modified() -> ApiResponse {
    ApiResponse {
        status: StatusCode::NOT_MODIFIED,
        content_type: "application/json",
        body: String::new(),
    }
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
    pub fn parse(q: Option<&str>) -> Result<Query, String> {
        let mut out = Query::default();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
            let num = |what: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("{what} must be a non-negative integer, not {v:?}"))
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

/// The node whose credential the request carries, or the 401 to answer.
pub fn authenticate(d: &Daemon, req: &ApiRequest) -> Result<String, ApiResponse> {
    let given = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = given else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "missing `Authorization: Bearer <node credential>`",
        ));
    };
    match credentials::verify(d.store(), token) {
        Ok(Some(node)) => Ok(node),
        Ok(None) => {
            warn!(peer = %req.peer, path = %req.path, "unknown node credential refused");
            Err(error(StatusCode::UNAUTHORIZED, "unknown node credential"))
        }
        Err(e) => Err(internal(&e)),
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

/// `GET /v1/node/metadata`: the credential's node's document, long-polled on `since`/`wait`.
pub async fn get(d: Arc<Daemon>, req: ApiRequest) -> ApiResponse {
    let node = match authenticate(&d, &req) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let q = match Query::parse(req.query.as_deref()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    if let Some(other) = q.node.as_deref().filter(|o| *o != node) {
        warn!(node = %node, asked = %other, "a node asked for another node's metadata");
        return error(
            StatusCode::FORBIDDEN,
            "a node credential reads only its own node's metadata",
        );
    }
    // Subscribed before reading, so a change between the read and the wait still wakes us.
    let mut rx = d.metadata_notifier().subscribe(&node);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait_secs);
    let mut logged = false;
    loop {
        let published = match metadata::get(d.store(), &node) {
            Ok(m) => m,
            Err(e) => return internal(&e),
        };
        let counter = published.as_ref().map_or(0, |m| m.counter);
        if q.since != Some(counter) {
            debug!(node = %node, counter, "metadata served");
            return ApiResponse::json(StatusCode::OK, &document(&node, published));
        }
        if tokio::time::Instant::now() >= deadline {
            debug!(node = %node, counter, "metadata unchanged");
            return not_modified();
        }
        if !logged {
            debug!(node = %node, since = counter, wait = q.wait_secs, "metadata long-poll waiting");
            logged = true;
        }
        // Timeout or a wake: either way, read the store again (then answer or 304).
        let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
    }
}

/// `POST /v1/node/signal`: store the credential's node's [`Signal`].
pub fn signal(d: &Daemon, req: &ApiRequest) -> ApiResponse {
    let node = match authenticate(d, req) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let sig: Signal = match serde_json::from_slice(&req.body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not a signal: {e}")),
    };
    if sig.deployment.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "the signal names no deployment");
    }
    match d.store_signal(&node, &sig) {
        Ok(()) => ApiResponse::json(
            StatusCode::OK,
            &serde_json::json!({"node": node, "deployment": sig.deployment}),
        ),
        Err(e) => internal(&e),
    }
}

fn node_exists(d: &Daemon, name: &str) -> Result<(), ApiResponse> {
    match nodes::get(d.store(), name) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(error(
            StatusCode::NOT_FOUND,
            &DaemonError::NotFound(name.into()).to_string(),
        )),
        Err(e) => Err(internal(&e)),
    }
}

/// `PUT /v1/nodes/NAME/metadata` (operator): publish a JSON object as the node's metadata.
pub fn put(d: &Daemon, name: &str, req: &ApiRequest) -> ApiResponse {
    if let Err(r) = node_exists(d, name) {
        return r;
    }
    let data: serde_json::Value = match serde_json::from_slice(&req.body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "metadata must be a JSON object"),
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not JSON: {e}")),
    };
    match d.publish_metadata(name, data) {
        Ok(counter) => ApiResponse::json(
            StatusCode::OK,
            &serde_json::json!({"node": name, "counter": counter}),
        ),
        Err(e) => internal(&e),
    }
}

/// `GET /v1/nodes/NAME/metadata` (operator): the document the node is served, and its signals.
pub fn show(d: &Daemon, name: &str) -> ApiResponse {
    if let Err(r) = node_exists(d, name) {
        return r;
    }
    let res =
        metadata::get(d.store(), name).and_then(|m| Ok((m, metadata::signals(d.store(), name)?)));
    match res {
        Ok((m, signals)) => {
            let doc = document(name, m);
            ApiResponse::json(
                StatusCode::OK,
                &serde_json::json!({
                    "node": name,
                    "counter": doc.counter,
                    "data": doc.data,
                    "signals": signals,
                }),
            )
        }
        Err(e) => internal(&e),
    }
}

/// `POST /v1/nodes/NAME/credential` (operator): a fresh credential for the node, shown once.
pub fn issue_credential(d: &Daemon, name: &str) -> ApiResponse {
    if let Err(r) = node_exists(d, name) {
        return r;
    }
    match credentials::issue(d.store(), name) {
        Ok(token) => {
            info!(
                node = name,
                "node credential issued (the previous one is revoked)"
            );
            ApiResponse::json(
                StatusCode::CREATED,
                &serde_json::json!({"node": name, "credential": token}),
            )
        }
        Err(e) => internal(&e),
    }
}

#[cfg(test)]
mod tests;
