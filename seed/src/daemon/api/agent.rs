//! `/v1/agent/…`: the deploy ramdisk's agent reports its facts, heartbeats and posts deploy (or
//! wipe) progress; each answer is what it should do next. Every call must carry the per-boot
//! agent token of the node its MAC belongs to ([`super::auth::agent`]).

use super::error::{BadRequest, NotFound, Unauthorized};
use super::{auth, blocking, ApiError, AppState, Payload, Peer};
use crate::daemon::{Daemon, FACTS};
use crate::inventory::{Disk, Mac, Properties};
use crate::lifecycle::{Event, State as NodeState};
use crate::store::{nodes, Expect, Op};
use ::api::{Ack, Command, Facts, Heartbeat, Progress, Report};
use axum::Json;
use http::HeaderMap;
use std::sync::Arc;
use tracing::info;

/// Report the machine's facts (inspection).
///
/// While the node is deploying the report only says the agent is up; the agent then heartbeats
/// for its command.
#[utoipa::path(post, path = "/v1/agent/facts", tag = "agent",
    security(("agent_token" = [])),
    request_body = Report,
    responses(
        (status = 200, description = "The seed knows this machine", body = Ack),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ))]
pub(super) async fn facts(
    s: AppState,
    peer: Peer,
    headers: HeaderMap,
    Payload(report): Payload<Report>,
) -> Result<Json<Ack>, ApiError> {
    blocking(move || {
        let d = &s.daemon;
        let Some(name) = find(d, &report.boot_mac, &report.facts)? else {
            info!(boot_mac = %report.boot_mac, peer = %peer.0, "facts from an unknown machine refused");
            return Err(ApiError::not_found(format!(
                "no node has MAC {} or any reported NIC",
                report.boot_mac
            )));
        };
        auth::agent(d, &headers, &name, &report.boot_mac, peer, "/v1/agent/facts")?;
        let ack = Ack {
            node: name.clone(),
            heartbeat_secs: d.settings().heartbeat_secs,
        };
        // The ramdisk's agent reports facts at every boot: while deploying they only say "up",
        // and the agent goes on to heartbeat for its deploy command.
        if d.facts_are_no_inspection(&name)? {
            return Ok(Json(ack));
        }
        let stored = serde_json::to_vec(&report.facts).unwrap_or_default();
        let props = properties(&report.facts);
        let n = d.apply(
            &name,
            Event::Inspected(props),
            vec![Op::put(FACTS, &name, stored, Expect::Any)],
        )?;
        if d.settings().provide_after_inspect && n.lifecycle.state == NodeState::Manageable {
            if let Err(e) = d.apply(&name, Event::Provide, vec![]) {
                tracing::warn!(node = %name, error = %e, "provide after inspection");
            }
        }
        Ok(Json(ack))
    })
    .await
}

/// Still here: the answer is the agent's next command.
///
/// A deploy's command carries the node's credential: only the node's own agent gets it.
#[utoipa::path(post, path = "/v1/agent/heartbeat", tag = "agent",
    security(("agent_token" = [])),
    request_body = Heartbeat,
    responses(
        (status = 200, description = "What to do next", body = Command),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ))]
pub(super) async fn heartbeat(
    s: AppState,
    peer: Peer,
    headers: HeaderMap,
    Payload(hb): Payload<Heartbeat>,
) -> Result<Json<Command>, ApiError> {
    blocking(move || {
        let d = &s.daemon;
        let name = caller(d, &headers, &hb.boot_mac, peer, "/v1/agent/heartbeat")?;
        Ok(Json(d.pending_command(&name)))
    })
    .await
}

/// A deploy's (or wipe's) progress: recorded (dropped if it is about another `op` than the
/// node's current one); the answer is the agent's next command.
///
/// `done` means the image is written (the seed boots the node from its disk); `failed` fails
/// the deploy with the agent's `error`.
#[utoipa::path(post, path = "/v1/agent/progress", tag = "agent",
    security(("agent_token" = [])),
    request_body = Progress,
    responses(
        (status = 200, description = "What to do next", body = Command),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ))]
pub(super) async fn progress(
    s: AppState,
    peer: Peer,
    headers: HeaderMap,
    Payload(p): Payload<Progress>,
) -> Result<Json<Command>, ApiError> {
    blocking(move || {
        let d = &s.daemon;
        let name = caller(d, &headers, &p.boot_mac, peer, "/v1/agent/progress")?;
        d.agent_progress(&name, p)?;
        Ok(Json(d.pending_command(&name)))
    })
    .await
}

/// The node whose agent calls `route` from `boot_mac`: it owns the MAC ([`node_of`]) and the
/// call carries its agent token ([`auth::agent`]).
fn caller(
    d: &Arc<Daemon>,
    headers: &HeaderMap,
    boot_mac: &str,
    peer: Peer,
    route: &str,
) -> Result<String, ApiError> {
    let name = node_of(d, boot_mac)?;
    auth::agent(d, headers, &name, boot_mac, peer, route)?;
    Ok(name)
}

/// The node owning `mac` (400 if it is not a MAC, 404 if no node has it).
fn node_of(d: &Daemon, mac: &str) -> Result<String, ApiError> {
    let mac: Mac = mac
        .parse()
        .map_err(|e: crate::inventory::BadMac| ApiError::bad_request(e.to_string()))?;
    nodes::by_mac(d.store(), mac)?
        .ok_or_else(|| ApiError::not_found(format!("no node has MAC {mac}")))
}

/// The node owning the boot MAC, else any of the reported NICs' MACs.
fn find(d: &Arc<Daemon>, boot_mac: &str, facts: &Facts) -> Result<Option<String>, ApiError> {
    let boot: Mac = boot_mac
        .parse()
        .map_err(|e: crate::inventory::BadMac| ApiError::bad_request(e.to_string()))?;
    let others = facts.nics.iter().filter_map(|n| n.mac.parse::<Mac>().ok());
    for mac in std::iter::once(boot).chain(others) {
        if let Some(name) = nodes::by_mac(d.store(), mac)? {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// What inspection found, in inventory terms.
pub fn properties(f: &Facts) -> Properties {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Properties {
        cpus: Some(f.cpus),
        memory_mib: Some(f.memory_mib),
        disks: f
            .disks
            .iter()
            .map(|d| Disk {
                name: d.name.clone(),
                size_bytes: d.size_bytes,
                model: opt(&d.model),
                serial: opt(&d.serial),
                partitions: vec![],
            })
            .collect(),
        boot_mode: Some(f.boot_mode),
        arch: None,
    }
}
