//! Golden images: manifests, the element-based builder and the content-addressed store.
//!
//! - [`element`]: the declarations (`images/images/<NAME>.toml`, `images/elements/*/element.toml`);
//! - [`debian`]: the Debian (systemd) base loaded from its tarball, services as systemd units;
//! - [`tree`]: the root filesystem in memory and its deterministic `tar` + `zstd` stream;
//! - [`build`]: elements → tree → `rootfs.tar.zst` + `manifest.json` (the outside world through
//!   [`build::Host`]; `cargo xtask image build` provides it);
//! - [`manifest`] and [`store`]: the contract the seed and the deploy agent share.

pub mod build;
pub mod debian;
pub mod element;
pub mod manifest;
pub mod store;
pub mod tree;

pub use manifest::{Boot, Identity, Layout, Manifest, Stream};
pub use store::{Image, ImageStore};
