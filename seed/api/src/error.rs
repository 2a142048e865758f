//! The body of every refusal and failure: `{"error": "…"}` (a sentence a person can act on).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What every 4xx/5xx answer of the API carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}
