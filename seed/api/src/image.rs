//! Golden images in the seed's image store, as `GET /v1/images…` shows them.

use crate::manifest::Manifest;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One image: its manifest and where the seed keeps its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImageView {
    pub manifest: Manifest,
    /// The stream's path on the seed's host.
    pub stream: String,
    /// `<sha256>/<file>`: the stream's path relative to the image store (and so in its URL).
    pub relative: String,
    /// The stream was re-hashed against the manifest for this answer (`?verify=true`).
    #[serde(default)]
    pub verified: bool,
}

/// The query of `GET /v1/images/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImageQuery {
    /// Re-hash the stream against the manifest before answering.
    #[serde(default)]
    pub verify: bool,
}
