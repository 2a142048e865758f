//! Golden images: manifests, the element-based builder and the content-addressed store.
