//! `/v1/nodes…`: the operators' node routes (the API's token) — enroll an instackenv list,
//! list, show, and the requests that move a node (inspect, manage, provide, deploy, undeploy) —
//! and `/v1/node/booted`, a deployed image's first word (the node's credential).

use super::error::{BadRequest, Conflict, NotFound, Unauthorized};
use super::{blocking, extract, ApiError, AppState, Name, NodeCredential, Operator, Payload, Peer};
use crate::daemon::{Daemon, FACTS};
use crate::inventory::{parse_instackenv, Format, Node};
use crate::lifecycle::{DeployTarget, Event};
use crate::store::nodes;
use ::api::node::{BmcView, Booted, DeployRequest, Enrolled, NodeView, UndeployRequest};
use ::api::Facts;
use axum::body::Bytes;
use axum::Json;
use http::{header, HeaderMap, StatusCode};
use std::sync::Arc;
use tracing::info;

/// A node as the API shows it (no password), from the record alone: no facts, no progress
/// (the CLI shows a store it opened itself this way).
pub fn node_view(n: &Node) -> NodeView {
    let lc = &n.lifecycle;
    NodeView {
        name: n.name.clone(),
        macs: n.macs.clone(),
        state: lc.state.name().to_string(),
        reason: lc.state.reason().map(str::to_string),
        maintenance: lc.maintenance.clone(),
        last_error: lc.last_error.clone(),
        bmc: BmcView {
            driver: n.bmc.driver.to_string(),
            address: n.bmc.address.clone(),
            port: n.bmc.port,
            username: n.bmc.username.clone(),
        },
        properties: n.properties.clone(),
        capabilities: n.capabilities.clone(),
        facts: None,
        progress: None,
        boot_retries: lc.boot_retries,
        updated_ms: n.updated_ms,
    }
}

/// The view with the node's last facts report (what every node answer carries).
fn view(d: &Daemon, n: &Node) -> NodeView {
    NodeView {
        facts: facts_of(d, &n.name),
        ..node_view(n)
    }
}

/// The view with the agent's last deploy progress (what `list` and `show` answer).
fn with_progress(d: &Daemon, n: &Node) -> NodeView {
    NodeView {
        progress: d.last_progress(&n.name),
        ..view(d, n)
    }
}

/// The node's last facts report, if it parses.
fn facts_of(d: &Daemon, name: &str) -> Option<Facts> {
    let rec = d.store().get(FACTS, name).ok()??;
    serde_json::from_slice(&rec.value).ok()
}

/// Every node.
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes",
    security(("token" = [])),
    responses(
        (status = 200, description = "The nodes, by name", body = Vec<NodeView>),
        (status = 401, response = Unauthorized),
    ))]
pub(super) async fn list_nodes(_: Operator, s: AppState) -> Result<Json<Vec<NodeView>>, ApiError> {
    let d = &s.daemon;
    let all = nodes::list(d.store())?;
    Ok(Json(all.iter().map(|(n, _)| with_progress(d, n)).collect()))
}

/// Enroll nodes from an instackenv list (all of them or none).
///
/// TripleO's `instackenv.json` (or YAML unless the content type says JSON): `nodes: [{name,
/// mac: [..], pm_type: ipmi, pm_addr, pm_port, pm_user, pm_password, capabilities, cpu, memory,
/// disk, arch, boot_chain}]`. A taken name or MAC, or any bad entry, refuses the whole list.
#[utoipa::path(post, path = "/v1/nodes", tag = "nodes",
    security(("token" = [])),
    request_body(description = "An instackenv list", content(
        ("application/json"), ("application/yaml"))),
    responses(
        (status = 201, description = "The names enrolled", body = Enrolled),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 409, response = Conflict),
        (status = 422, description = "Nothing enrolled: an entry is wrong, or a name or MAC is taken",
            body = ::api::ErrorBody),
    ))]
pub(super) async fn enroll_nodes(
    _: Operator,
    s: AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let format = if json { Format::Json } else { Format::Yaml };
    blocking(move || {
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
        let d = &s.daemon;
        let taken: Vec<_> = nodes::list(d.store())?
            .into_iter()
            .map(|(n, _)| (n.name, n.macs))
            .collect();
        let new = parse_instackenv(text, format, &taken, crate::daemon::now_ms()).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("nothing enrolled: {}", crate::daemon::chain(&e)),
            )
        })?;
        d.enroll(&new)?;
        let enrolled: Vec<String> = new.into_iter().map(|n| n.name).collect();
        info!(count = enrolled.len(), "nodes enrolled through the API");
        Ok((StatusCode::CREATED, Json(Enrolled { enrolled })))
    })
    .await
}

/// One node, with its facts and the agent's last deploy progress.
#[utoipa::path(get, path = "/v1/nodes/{name}", tag = "nodes",
    security(("token" = [])),
    params(("name" = String, Path, description = "The node's name")),
    responses(
        (status = 200, description = "The node", body = NodeView),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ))]
pub(super) async fn show_node(
    _: Operator,
    s: AppState,
    Name(name): Name,
) -> Result<Json<NodeView>, ApiError> {
    let d = &s.daemon;
    match nodes::get(d.store(), &name)? {
        Some((n, _)) => Ok(Json(with_progress(d, &n))),
        None => Err(ApiError::not_found(format!("no node named {name:?}"))),
    }
}

/// A node request's answer: 202 and the node as the request left it.
type Accepted = (StatusCode, Json<NodeView>);

/// Run a node request on the blocking pool; 202 with the node.
async fn request(
    s: AppState,
    name: String,
    f: impl FnOnce(&Arc<Daemon>, &str) -> Result<Node, crate::daemon::DaemonError> + Send + 'static,
) -> Result<Accepted, ApiError> {
    blocking(move || {
        let n = f(&s.daemon, &name)?;
        Ok((StatusCode::ACCEPTED, Json(view(&s.daemon, &n))))
    })
    .await
}

/// Inspect the node: PXE-boot the ramdisk, collect its facts (from `enroll` its BMC is verified
/// first).
#[utoipa::path(post, path = "/v1/nodes/{name}/inspect", tag = "nodes",
    security(("token" = [])),
    params(("name" = String, Path, description = "The node's name")),
    responses(
        (status = 202, description = "Accepted; the node as it is now", body = NodeView),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn inspect(
    _: Operator,
    s: AppState,
    Name(name): Name,
) -> Result<Accepted, ApiError> {
    request(s, name, |d, n| d.request_inspect(n)).await
}

/// Verify the node's BMC (`enroll` → `manageable`).
#[utoipa::path(post, path = "/v1/nodes/{name}/manage", tag = "nodes",
    security(("token" = [])),
    params(("name" = String, Path, description = "The node's name")),
    responses(
        (status = 202, description = "Accepted; the node as it is now", body = NodeView),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn manage(
    _: Operator,
    s: AppState,
    Name(name): Name,
) -> Result<Accepted, ApiError> {
    request(s, name, |d, n| d.apply(n, Event::Manage, vec![])).await
}

/// Make the node available for deploys (`manageable` → `available`).
#[utoipa::path(post, path = "/v1/nodes/{name}/provide", tag = "nodes",
    security(("token" = [])),
    params(("name" = String, Path, description = "The node's name")),
    responses(
        (status = 202, description = "Accepted; the node as it is now", body = NodeView),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn provide(
    _: Operator,
    s: AppState,
    Name(name): Name,
) -> Result<Accepted, ApiError> {
    request(s, name, |d, n| d.apply(n, Event::Provide, vec![])).await
}

/// Deploy an image from the seed's store to the node (available, or after a failed deploy).
#[utoipa::path(post, path = "/v1/nodes/{name}/deploy", tag = "nodes",
    security(("token" = [])),
    params(("name" = String, Path, description = "The node's name")),
    request_body = DeployRequest,
    responses(
        (status = 202, description = "Accepted; the node as it is now", body = NodeView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn deploy(
    _: Operator,
    s: AppState,
    Name(name): Name,
    Payload(b): Payload<DeployRequest>,
) -> Result<Accepted, ApiError> {
    if b.image.trim().is_empty() {
        return Err(ApiError::bad_request("the image name is empty"));
    }
    if let Some(Err(e)) = b
        .root_hint
        .as_deref()
        .map(crate::daemon::deploy::check_root_hint)
    {
        return Err(ApiError::bad_request(e.to_string()));
    }
    let target = DeployTarget {
        image: b.image,
        root_hint: b.root_hint.filter(|h| !h.trim().is_empty()),
    };
    let (d, image) = (s.daemon.clone(), target.image.clone());
    blocking(move || check_image(&d, &image)).await?;
    request(s, name, move |d, n| d.request_deploy(n, target)).await
}

/// An image the store does not have is refused at the request, before the node moves: a
/// misspelled name is the operator's mistake, not a node fault, and must not cost the node a
/// `deploy failed`. Only a missing (or malformed) name is refused here; an image that is there
/// but corrupt is still found by the deploy's verification (which re-hashes it), and a seed
/// without an image store says so in the deploy's failure as before.
fn check_image(d: &Daemon, image: &str) -> Result<(), ApiError> {
    use ::images::store::StoreError;
    let Some(store) = d.images() else {
        return Ok(());
    };
    match store.get(image) {
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(format!(
            "no image named {image:?} in the seed's image store (`seed image list` shows \
             them); the node is unchanged"
        ))),
        Err(e @ StoreError::BadName(_)) => {
            Err(ApiError::bad_request(format!("{e}; the node is unchanged")))
        }
        _ => Ok(()),
    }
}

/// Undeploy the node: power off, tear down, clean (the agent wipes), revoke its credential;
/// also abandons a running deploy.
#[utoipa::path(post, path = "/v1/nodes/{name}/undeploy", tag = "nodes",
    security(("token" = [])),
    params(("name" = String, Path, description = "The node's name")),
    request_body(content = Option<UndeployRequest>, description = "Optional"),
    responses(
        (status = 202, description = "Accepted; the node as it is now", body = NodeView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn undeploy(
    _: Operator,
    s: AppState,
    Name(name): Name,
    body: Bytes,
) -> Result<Accepted, ApiError> {
    let b: UndeployRequest = if body.iter().all(u8::is_ascii_whitespace) {
        UndeployRequest::default()
    } else {
        extract::parse(&body)?
    };
    request(s, name, move |d, n| d.request_undeploy(n, b.full_wipe)).await
}

/// The deployed image's first boot: the credential's node becomes active (repeating it once
/// active is fine).
#[utoipa::path(post, path = "/v1/node/booted", tag = "node",
    security(("node_credential" = [])),
    responses(
        (status = 200, description = "The node and its state", body = Booted),
        (status = 401, response = Unauthorized),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn booted(
    s: AppState,
    NodeCredential(name): NodeCredential,
    peer: Peer,
) -> Result<Json<Booted>, ApiError> {
    blocking(move || {
        let n = s.daemon.node_booted(&name)?;
        info!(node = %n.name, peer = %peer.0, "deployed image booted");
        Ok(Json(Booted {
            node: n.name,
            state: n.lifecycle.state.name().to_string(),
        }))
    })
    .await
}
