//! What a node says back about its configuration: a [`Signal`] that one software deployment
//! or wait condition completed or failed. The engine reads them ([`super::NodeInfo::signals`]);
//! the daemon stores them (`daemon::metadata`, which re-exports these types) as nodes post them.
//!
//! The types are the API's (`POST /v1/node/signal` carries them): defined once in the `api`
//! crate, below both the engine and the daemon, so the engine still imports nothing of its
//! driver.

pub use api::metadata::{Signal, SignalStatus};
