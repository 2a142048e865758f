//! `/v1/tokens…`: named API tokens ([`crate::daemon::api_tokens`]); role `admin` only. The
//! secret is in the creation's answer and nowhere else, ever.

use super::error::{BadRequest, Conflict, Forbidden, NotFound, Unauthorized};
use super::{blocking, Admin, ApiError, AppState, Name, Payload};
use crate::daemon::api_tokens::{self, TokenError};
use crate::daemon::now_ms;
use ::api::token::{TokenCreated, TokenRequest, TokenView};
use axum::Json;
use http::StatusCode;
use tracing::info;

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::BadName(_) => ApiError::bad_request(e.to_string()),
            TokenError::Exists(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            TokenError::NotFound(_) => ApiError::not_found(e.to_string()),
            TokenError::Store(e) => e.into(),
        }
    }
}

/// Create a named token with a role; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens",
    security(("token" = [])),
    request_body = TokenRequest,
    responses(
        (status = 201, description = "Created: the token, shown this once", body = TokenCreated),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn create_token(
    Admin(by): Admin,
    s: AppState,
    Payload(req): Payload<TokenRequest>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    blocking(move || {
        let c = api_tokens::create(s.daemon.store(), &req, now_ms() / 1000)?;
        info!(token = %c.view.name, role = %c.view.role, by = %by.name, "API token created");
        Ok((StatusCode::CREATED, Json(c)))
    })
    .await
}

/// Every named token (revoked ones too), without secrets or hashes.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens",
    security(("token" = [])),
    responses(
        (status = 200, description = "The tokens, by name", body = Vec<TokenView>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ))]
pub(super) async fn list_tokens(_: Admin, s: AppState) -> Result<Json<Vec<TokenView>>, ApiError> {
    blocking(move || Ok(Json(api_tokens::list(s.daemon.store())?))).await
}

/// Revoke a token: refused from now on, kept in the list.
#[utoipa::path(delete, path = "/v1/tokens/{name}", tag = "tokens",
    security(("token" = [])),
    params(("name" = String, Path, description = "The token's name")),
    responses(
        (status = 200, description = "Revoked", body = TokenView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ))]
pub(super) async fn revoke_token(
    Admin(by): Admin,
    s: AppState,
    Name(name): Name,
) -> Result<Json<TokenView>, ApiError> {
    blocking(move || {
        let v = api_tokens::revoke(s.daemon.store(), &name)?;
        info!(token = %v.name, by = %by.name, "API token revoked");
        Ok(Json(v))
    })
    .await
}
