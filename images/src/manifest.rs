//! The image manifest: what a golden image is, as the builder writes it, the store keeps it,
//! the seed serves it and the deploy agent reads it. JSON on disk (`manifest.json` beside the
//! stream) and on the wire (inside the agent's deploy command), so the types live in the API's
//! crate ([`api::manifest`]) and are re-exported here.

pub use api::manifest::*;
