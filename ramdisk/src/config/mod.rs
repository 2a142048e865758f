//! The node configuration agent, in the spirit of os-collect-config / os-refresh-config /
//! os-apply-config.
//!
//! - [`metadata`]: read the metadata files (the `os_config_files.json` list or `-m` files)
//!   and deep-merge them in order, later wins; look one key up (`--key`).
//! - [`mustache`]: the template engine, with os-apply-config's (pystache) semantics.
//! - [`control`]: `.oac` control files beside templates (`mode`, `owner`, `group`,
//!   `allow_empty`).
//! - [`apply`]: render a template tree that mirrors `/` into real files, atomically, leaving
//!   unchanged files untouched.
//! - [`runparts`] and [`refresh`]: the phases `pre-configure.d`, (apply), `configure.d`,
//!   `post-configure.d`, `migration.d`, run as `dib-run-parts` does ([`sortn`] its order,
//!   [`environment`] its `environment.d`), under a lock.
//! - [`collect`]: long-poll the seed's metadata service with the node's credential, cache the
//!   document on the state partition (used when the seed is gone), refresh on a new counter and
//!   signal each deployment's outcome.

pub mod apply;
pub mod collect;
pub mod control;
pub mod deployments;
pub mod environment;
pub mod metadata;
pub mod mustache;
pub mod refresh;
pub mod runparts;
pub mod sortn;
pub mod value_types;

/// An error and its sources, joined with `": "` (for logs).
pub use fsutil::error_chain;
