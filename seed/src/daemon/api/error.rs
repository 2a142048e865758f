//! The API's one error type: every refusal and failure is an [`ApiError`], answered as its
//! status with `{"error": "…"}` ([`api::ErrorBody`]). Internal failures are logged here, once.

use super::super::stacks::StacksError;
use super::super::DaemonError;
use crate::orchestrator::StackError;
use crate::store::StoreError;
use ::api::ErrorBody;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use utoipa::ToResponse;

/// A refusal or failure: the status and the sentence the caller gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// A failure of the seed itself (500): logged, and its text answered, with its whole
    /// cause (`embedded store: …`, not just `embedded store`).
    pub fn internal(e: &dyn std::error::Error) -> Self {
        let message = crate::daemon::chain(e);
        tracing::error!(error = %message, "API");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The store cannot be reached or has no quorum (503): nothing is wrong with the request,
    /// nothing was done that the store does not show; retry when the store is back.
    pub fn store_unavailable(e: &StoreError) -> Self {
        let message = format!(
            "the store is unavailable (no etcd quorum or no member reachable), nothing was \
             done: {}; retry",
            crate::daemon::chain(e)
        );
        tracing::warn!(error = %message, "API");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// A store failure as the API answers it: 503 when the store is unavailable, else 500.
    pub fn store(e: &StoreError) -> Self {
        if e.is_unavailable() {
            Self::store_unavailable(e)
        } else {
            Self::internal(e)
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::store(&e)
    }
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> Self {
        match &e {
            DaemonError::NotFound(_) => ApiError::not_found(e.to_string()),
            DaemonError::Refused(inner) => ApiError::new(StatusCode::CONFLICT, inner.to_string()),
            DaemonError::Store(s) if s.is_conflict() => {
                ApiError::new(StatusCode::CONFLICT, s.to_string())
            }
            DaemonError::Store(s) => ApiError::store(s),
        }
    }
}

impl From<StacksError> for ApiError {
    fn from(e: StacksError) -> Self {
        let status = match &e {
            StacksError::NotFound(_) | StacksError::Stack(StackError::NoServer { .. }) => {
                StatusCode::NOT_FOUND
            }
            StacksError::Exists(_) | StacksError::Stack(StackError::Busy { .. }) => {
                StatusCode::CONFLICT
            }
            StacksError::BadName(_)
            | StacksError::Image { .. }
            | StacksError::Stack(StackError::Template(_)) => StatusCode::BAD_REQUEST,
            StacksError::Store(s) if s.is_conflict() => StatusCode::CONFLICT,
            StacksError::Store(s) if s.is_unavailable() => return ApiError::store_unavailable(s),
            StacksError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The work of a handler ran on the blocking pool and never finished (it panicked).
impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(&e)
    }
}

// The answers the OpenAPI document refers to (`#/components/responses/…`).

/// The request is malformed: not the JSON the route takes, a bad MAC, a bad parameter.
#[derive(ToResponse)]
#[response(description = "The request is malformed")]
pub struct BadRequest(#[allow(dead_code)] ErrorBody);

/// The credential the route needs is missing or wrong.
#[derive(ToResponse)]
#[response(description = "Missing or wrong `Authorization: Bearer …`")]
pub struct Unauthorized(#[allow(dead_code)] ErrorBody);

/// No such node, stack or image.
#[derive(ToResponse)]
#[response(description = "No such node, stack or image")]
pub struct NotFound(#[allow(dead_code)] ErrorBody);

/// The state does not allow the request now (the lifecycle refuses, a name is taken, a stack is
/// busy, another writer got there first).
#[derive(ToResponse)]
#[response(description = "Refused in the current state")]
pub struct Conflict(#[allow(dead_code)] ErrorBody);

/// The token is valid but its role is too low for the route (the answer names the role needed).
#[derive(ToResponse)]
#[response(description = "The token's role is too low for this request")]
pub struct Forbidden(#[allow(dead_code)] ErrorBody);
