//! The seed daemon and CLI as a library: inventory, lifecycle, power drivers and orchestration.
//! The `seed` binary (`main.rs`) is a thin clap front end over these modules.

pub mod cache;
pub mod cli;
pub mod daemon;
pub mod ha;
pub mod inventory;
pub mod lifecycle;
pub mod orchestrator;
pub mod power;
/// The one secret wrapper: the `api` crate's, so the daemon and the node side share it.
pub use api::secret;
pub mod sim;
pub mod store;
pub mod template;

#[cfg(test)]
mod layering;
