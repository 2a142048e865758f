//! Golden images: manifests, the element-based builder and the content-addressed store.

pub mod manifest;
pub mod store;

pub use manifest::{Boot, Identity, Layout, Manifest, Stream};
pub use store::{Image, ImageStore};
