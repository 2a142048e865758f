//! `/v1/ha/…`: the HA control plane. `POST /v1/ha/handoff` makes the daemon that receives it
//! leave the control plane to the others ([`crate::ha::handoff`]); `/v1/ha/members…` shows and
//! changes the etcd membership ([`crate::ha::members`]). These routes are never forwarded to
//! the leader: they are about the daemon asked, or etcd's own (any member changes it).

use super::error::{BadRequest, Conflict, Forbidden, NotFound, Unauthorized};
use super::{blocking, Admin, ApiError, AppState, Name, Operator, Payload};
use crate::ha::handoff::{self, HandoffError};
use crate::ha::members::{self, MemberChangeError};
use crate::ha::Ha;
use ::api::ha::{Handoff, MemberAdded, MemberRequest, MemberView, Membership};
use axum::Json;
use http::StatusCode;
use std::sync::Arc;
use tracing::info;

impl From<HandoffError> for ApiError {
    fn from(e: HandoffError) -> Self {
        match e {
            HandoffError::Refused(r) => ApiError::new(StatusCode::CONFLICT, r.to_string()),
            HandoffError::Store(e) => e.into(),
            e @ HandoffError::Persist { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, fsutil::error_chain(&e))
            }
        }
    }
}

/// Hand this daemon's place in the control plane over to the other daemons: it leaves the
/// election, its etcd member leaves the cluster, then it stops (or powers its machine off).
/// Everything is checked first (the other members started and healthy, another daemon
/// campaigning, every image replicated): 409 with the reason, and nothing changed. Asked again
/// while under way: the hand-off as it stands.
#[utoipa::path(post, path = "/v1/ha/handoff", tag = "ha",
    security(("token" = [])),
    responses(
        (status = 202, description = "Under way: poll GET /v1/ha/handoff", body = Handoff),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn start_handoff(
    Admin(by): Admin,
    s: AppState,
) -> Result<(StatusCode, Json<Handoff>), ApiError> {
    let Some(h) = s.handoff.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            handoff::Refused::NotHa.to_string(),
        ));
    };
    blocking(move || {
        let r = h.request()?;
        info!(by = %by.name, step = ?r.step, "hand-off asked for");
        Ok((StatusCode::ACCEPTED, Json(r)))
    })
    .await
}

/// This daemon's hand-off as it stands (with its last error), or, on a daemon that stays, the
/// last hand-off of another that left.
#[utoipa::path(get, path = "/v1/ha/handoff", tag = "ha",
    security(("token" = [])),
    responses(
        (status = 200, description = "The hand-off", body = Handoff),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ))]
pub(super) async fn show_handoff(_: Operator, s: AppState) -> Result<Json<Handoff>, ApiError> {
    if let Some(r) = s.handoff.as_ref().and_then(|h| h.view()) {
        return Ok(Json(r));
    }
    blocking(move || {
        let mut all = handoff::recorded(s.daemon.store())?;
        all.sort_by_key(|r| r.updated_ms);
        all.pop().map(Json).ok_or_else(|| {
            ApiError::not_found("no hand-off: this daemon has not been asked for one")
        })
    })
    .await
}

impl From<MemberChangeError> for ApiError {
    fn from(e: MemberChangeError) -> Self {
        match e {
            MemberChangeError::BadName(_) | MemberChangeError::BadUrl(_) => {
                ApiError::bad_request(e.to_string())
            }
            MemberChangeError::NotFound(_) => ApiError::not_found(e.to_string()),
            MemberChangeError::Exists(_)
            | MemberChangeError::Myself(_)
            | MemberChangeError::Refused(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            MemberChangeError::Store(e) => e.into(),
        }
    }
}

/// This daemon's HA membership, or 409 on a daemon with one redb file.
fn ha_of(s: &AppState) -> Result<Arc<Ha>, ApiError> {
    s.handoff.as_ref().map(|h| h.ha().clone()).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "this daemon is not in an HA control plane (its store is one redb file)",
        )
    })
}

/// The etcd members of the store and the seed daemons that campaign, the leader marked.
#[utoipa::path(get, path = "/v1/ha/members", tag = "ha",
    security(("token" = [])),
    responses(
        (status = 200, description = "The membership", body = Membership),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn list_members(_: Operator, s: AppState) -> Result<Json<Membership>, ApiError> {
    let ha = ha_of(&s)?;
    blocking(move || Ok(Json(members::membership(&ha)?))).await
}

/// Add an etcd member that will answer at `peer_url` (one at a time: etcd refuses another
/// while the last one added has not started, 409). Start it with the answer's initial cluster.
#[utoipa::path(post, path = "/v1/ha/members", tag = "ha",
    security(("token" = [])),
    request_body = MemberRequest,
    responses(
        (status = 201, description = "Added: start it now", body = MemberAdded),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn add_member(
    Admin(by): Admin,
    s: AppState,
    Payload(req): Payload<MemberRequest>,
) -> Result<(StatusCode, Json<MemberAdded>), ApiError> {
    let ha = ha_of(&s)?;
    blocking(move || {
        let added = members::add(&ha, &req)?;
        info!(member = %added.name, by = %by.name, "etcd member added through the API");
        Ok((StatusCode::CREATED, Json(added)))
    })
    .await
}

/// Remove an etcd member by name or hex id (a dead member being replaced); never the daemon's
/// own (that is a hand-off).
#[utoipa::path(delete, path = "/v1/ha/members/{name}", tag = "ha",
    security(("token" = [])),
    params(("name" = String, Path, description = "The member's name or hex id")),
    responses(
        (status = 200, description = "Removed", body = MemberView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn remove_member(
    Admin(by): Admin,
    s: AppState,
    Name(name): Name,
) -> Result<Json<MemberView>, ApiError> {
    let ha = ha_of(&s)?;
    blocking(move || {
        let gone = members::remove(&ha, &name)?;
        info!(member = %gone.name, by = %by.name, "etcd member removed through the API");
        Ok(Json(gone))
    })
    .await
}
