//! `/v1/images…`: the golden images in the daemon's image store (the one deploys take their
//! images from); the operators' token. `seed image list|show` read them here when a daemon runs.

use super::error::{Conflict, NotFound, Unauthorized};
use super::{blocking, ApiError, AppState, Name, Operator};
use ::api::image::{ImageQuery, ImageView};
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::Json;
use http::StatusCode;
use images::store::StoreError;
use images::Image;

/// An image as the API shows it (`verified`: its stream was just re-hashed).
pub fn image_view(img: Image, verified: bool) -> ImageView {
    ImageView {
        manifest: img.manifest,
        stream: img.stream.display().to_string(),
        relative: img.relative,
        verified,
    }
}

fn refused(e: StoreError) -> ApiError {
    match &e {
        StoreError::NotFound(_) => ApiError::not_found(e.to_string()),
        StoreError::BadName(_) => ApiError::bad_request(e.to_string()),
        StoreError::Digest { .. } | StoreError::Size { .. } | StoreError::Corrupt { .. } => {
            ApiError::new(StatusCode::CONFLICT, e.to_string())
        }
        StoreError::Io { .. } | StoreError::Manifest { .. } => ApiError::internal(&e),
    }
}

/// Every image in the seed's store.
#[utoipa::path(get, path = "/v1/images", tag = "images",
    security(("token" = [])),
    responses(
        (status = 200, description = "The images, by name", body = Vec<ImageView>),
        (status = 401, response = Unauthorized),
    ))]
pub(super) async fn list_images(
    _: Operator,
    s: AppState,
) -> Result<Json<Vec<ImageView>>, ApiError> {
    blocking(move || {
        let Some(store) = s.daemon.images() else {
            return Ok(Json(vec![]));
        };
        let all = store.list().map_err(refused)?;
        Ok(Json(
            all.into_iter().map(|i| image_view(i, false)).collect(),
        ))
    })
    .await
}

/// One image; with `verify=true` its stream is re-hashed against the manifest first.
#[utoipa::path(get, path = "/v1/images/{name}", tag = "images",
    security(("token" = [])),
    params(("name" = String, Path, description = "The image's name"), ImageQuery),
    responses(
        (status = 200, description = "The image", body = ImageView),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ))]
pub(super) async fn show_image(
    _: Operator,
    s: AppState,
    Name(name): Name,
    q: Result<Query<ImageQuery>, QueryRejection>,
) -> Result<Json<ImageView>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let verify = q.verify;
    blocking(move || {
        let Some(store) = s.daemon.images() else {
            return Err(refused(StoreError::NotFound(name)));
        };
        let img = if verify {
            store.verify(&name)
        } else {
            store.get(&name)
        };
        Ok(Json(image_view(img.map_err(refused)?, verify)))
    })
    .await
}
