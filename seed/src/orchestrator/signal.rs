//! What a node says back about its configuration: a [`Signal`] that one software deployment
//! or wait condition completed or failed. The engine reads them ([`super::NodeInfo::signals`]);
//! the daemon stores them (`daemon::metadata`, which re-exports these types) as nodes post them.

use serde::{Deserialize, Serialize};

/// How a deployment ended on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalStatus {
    Complete,
    Failed,
}

/// A node's report that one of its deployments (or wait conditions) finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// The software deployment or wait-condition handle this signal is for.
    pub deployment: String,
    pub status: SignalStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Outputs (`deploy_stdout`, … or any key/value the node sends).
    #[serde(default)]
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// The metadata counter the node had applied when it signalled.
    #[serde(default)]
    pub counter: u64,
}
