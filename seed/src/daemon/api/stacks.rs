//! `/v1/stacks…`: create, update, delete and look at stacks ([`crate::daemon::stacks`] keeps
//! them and runs the reconcile loop); the operators' token.

use super::error::{BadRequest, Conflict, NotFound, Unauthorized};
use super::{blocking, ApiError, AppState, Name, Operator, Payload};
use crate::daemon::stacks::{self as store, StacksError};
use crate::daemon::Daemon;
use crate::inventory::Node;
use crate::orchestrator::StackRecord;
use crate::store::nodes;
use ::api::stack::{MemberView, ReplaceRequest, StackEvent, StackRequest, StackView};
use axum::Json;
use http::StatusCode;
use std::collections::BTreeMap;

/// A stack as the API shows it, with its nodes' states.
fn view(d: &Daemon, rec: &StackRecord) -> Result<StackView, ApiError> {
    let nodes: BTreeMap<String, Node> = nodes::list(d.store())?
        .into_iter()
        .map(|(n, _)| (n.name.clone(), n))
        .collect();
    Ok(StackView {
        name: rec.name.clone(),
        status: rec.status.name(),
        reason: rec.reason.clone(),
        members: rec
            .members
            .iter()
            .map(|(m, r)| MemberView {
                name: m.clone(),
                status: serde_json::to_value(r.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                node: r.node.clone(),
                node_state: r
                    .node
                    .as_ref()
                    .and_then(|n| nodes.get(n))
                    .map(|n| n.lifecycle.state.name().to_string()),
                reason: r.reason.clone(),
            })
            .collect(),
        outputs: rec.outputs.clone(),
        created_ms: rec.created_ms,
        updated_ms: rec.updated_ms,
    })
}

/// The stack a request acted on, as a view with `status`.
async fn shown(
    s: AppState,
    status: StatusCode,
    f: impl FnOnce(&Daemon) -> Result<StackRecord, StacksError> + Send + 'static,
) -> Result<(StatusCode, Json<StackView>), ApiError> {
    blocking(move || {
        let rec = f(&s.daemon)?;
        Ok((status, Json(view(&s.daemon, &rec)?)))
    })
    .await
}

/// Every stack.
#[utoipa::path(get, path = "/v1/stacks", tag = "stacks",
    security(("token" = [])),
    responses(
        (status = 200, description = "The stacks", body = Vec<StackView>),
        (status = 401, response = Unauthorized),
    ))]
pub(super) async fn list_stacks(
    _: Operator,
    s: AppState,
) -> Result<Json<Vec<StackView>>, ApiError> {
    let d = &s.daemon;
    let all = store::list(d.store())?;
    let views: Result<Vec<_>, _> = all.iter().map(|(r, _)| view(d, r)).collect();
    Ok(Json(views?))
}

/// Create a stack from a template (nothing is allocated until the reconcile loop runs).
#[utoipa::path(post, path = "/v1/stacks", tag = "stacks",
    security(("token" = [])),
    request_body = StackRequest,
    responses(
        (status = 201, description = "Created", body = StackView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn create_stack(
    _: Operator,
    s: AppState,
    Payload(b): Payload<StackRequest>,
) -> Result<(StatusCode, Json<StackView>), ApiError> {
    shown(s, StatusCode::CREATED, move |d| d.stack_create(&b)).await
}

/// One stack: status, members (member → node → state) and outputs.
#[utoipa::path(get, path = "/v1/stacks/{name}", tag = "stacks",
    security(("token" = [])),
    params(("name" = String, Path, description = "The stack's name")),
    responses(
        (status = 200, description = "The stack", body = StackView),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ))]
pub(super) async fn show_stack(
    _: Operator,
    s: AppState,
    Name(name): Name,
) -> Result<Json<StackView>, ApiError> {
    let d = &s.daemon;
    let (rec, _) = store::get(d.store(), &name)?.ok_or(StacksError::NotFound(name))?;
    Ok(Json(view(d, &rec)?))
}

/// Update a stack to a new template and/or parameters; only what changed is redone.
#[utoipa::path(put, path = "/v1/stacks/{name}", tag = "stacks",
    security(("token" = [])),
    params(("name" = String, Path, description = "The stack's name")),
    request_body = StackRequest,
    responses(
        (status = 202, description = "Accepted", body = StackView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn update_stack(
    _: Operator,
    s: AppState,
    Name(name): Name,
    Payload(b): Payload<StackRequest>,
) -> Result<(StatusCode, Json<StackView>), ApiError> {
    shown(s, StatusCode::ACCEPTED, move |d| d.stack_update(&name, &b)).await
}

/// Move one server of a completed (or failed) stack to another free node matching it — its
/// machine died, or is to be retired — keeping the member's name and metadata; its node is
/// released (torn down) and what depends on the server is done again on the new node.
#[utoipa::path(post, path = "/v1/stacks/{name}/replace", tag = "stacks",
    security(("token" = [])),
    params(("name" = String, Path, description = "The stack's name")),
    request_body = ReplaceRequest,
    responses(
        (status = 202, description = "Accepted", body = StackView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn replace_member(
    _: Operator,
    s: AppState,
    Name(name): Name,
    Payload(b): Payload<ReplaceRequest>,
) -> Result<(StatusCode, Json<StackView>), ApiError> {
    shown(s, StatusCode::ACCEPTED, move |d| {
        d.stack_replace(&name, &b.member)
    })
    .await
}

/// Delete a stack: its nodes are released and cleaned, then the record goes.
#[utoipa::path(delete, path = "/v1/stacks/{name}", tag = "stacks",
    security(("token" = [])),
    params(("name" = String, Path, description = "The stack's name")),
    responses(
        (status = 202, description = "Accepted", body = StackView),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn delete_stack(
    _: Operator,
    s: AppState,
    Name(name): Name,
) -> Result<(StatusCode, Json<StackView>), ApiError> {
    shown(s, StatusCode::ACCEPTED, move |d| d.stack_delete(&name)).await
}

/// A stack's events, oldest first.
#[utoipa::path(get, path = "/v1/stacks/{name}/events", tag = "stacks",
    security(("token" = [])),
    params(("name" = String, Path, description = "The stack's name")),
    responses(
        (status = 200, description = "The events", body = Vec<StackEvent>),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    ))]
pub(super) async fn stack_events(
    _: Operator,
    s: AppState,
    Name(name): Name,
) -> Result<Json<Vec<StackEvent>>, ApiError> {
    let d = &s.daemon;
    if store::get(d.store(), &name)?.is_none() {
        return Err(StacksError::NotFound(name).into());
    }
    Ok(Json(store::events(d.store(), &name)?))
}
