//! `/v1/ha/…`: the HA control plane. `POST /v1/ha/handoff` makes the daemon that receives it
//! leave the control plane to the others ([`crate::ha::handoff`]); these routes are never
//! forwarded to the leader: they are about the daemon asked.

use super::error::{Conflict, Forbidden, NotFound, Unauthorized};
use super::{blocking, Admin, ApiError, AppState, Operator};
use crate::ha::handoff::{self, HandoffError};
use ::api::ha::Handoff;
use axum::Json;
use http::StatusCode;
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
