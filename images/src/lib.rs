//! Golden images: manifests, the element-based builder and the content-addressed store.

pub mod manifest;

pub use manifest::{Boot, Identity, Layout, Manifest, Stream};
