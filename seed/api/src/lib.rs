//! The seed's HTTP API as Rust types: every request, response and view of the daemon's `/v1/`
//! surface, shared by both ends — the daemon (`seed::daemon::api`, which also generates the
//! OpenAPI document from these types), the CLI (`seed::cli::client`), the deploy ramdisk's agent
//! and `seed-config` on deployed nodes.
//!
//! A leaf crate: serde, `utoipa` for the schemas, nothing async, so the static ramdisk agent
//! links it cheaply.
//!
//! - [`agent`]: the ramdisk agent's calls and the seed's commands; [`agent::KernelArgs`];
//! - [`facts`]: the hardware a facts report carries;
//! - [`node`]: node views and the operators' node requests (and the inventory's plain data);
//! - [`metadata`]: the metadata service's document and signals;
//! - [`stack`]: stack requests, views and events;
//! - [`image`] and [`manifest`]: golden images;
//! - [`ha`]: the HA control plane's hand-off;
//! - [`error`]: `{"error": "…"}`;
//! - [`token`]: named API tokens and their roles;
//! - [`Mac`]: the workspace's one MAC address type; [`Secret`]: its one secret wrapper.

pub mod agent;
pub mod error;
pub mod facts;
pub mod ha;
pub mod image;
mod mac;
pub mod manifest;
pub mod metadata;
pub mod node;
pub mod secret;
pub mod stack;
pub mod token;

pub use agent::{Ack, Command, DeployCommand, Heartbeat, Phase, Progress, Report};
pub use error::ErrorBody;
pub use facts::Facts;
pub use image::ImageView;
pub use mac::{BadMac, Mac};
pub use metadata::{Metadata, Signal, SignalStatus};
pub use node::{NodeView, Properties};
pub use secret::Secret;
pub use stack::{StackEvent, StackRequest, StackView};
pub use token::{Role, TokenCreated, TokenRequest, TokenView};
