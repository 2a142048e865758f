//! The metadata service: a node's configuration document (served to the node's own credential,
//! long-polled on its change counter) and the signals the node posts back; the operators' view
//! and publishing of them.
//!
//! Metadata carries secrets (generated passwords): nothing here implements a `Debug` that a log
//! line should print whole, and [`CredentialIssued`] hides its credential.

use serde::{Deserialize, Serialize};
use std::fmt;
use utoipa::ToSchema;

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metadata")
            .field("counter", &self.counter)
            .field("data", &format_args!("***"))
            .finish()
    }
}

impl fmt::Debug for NodeMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeMetadata")
            .field("node", &self.node)
            .field("counter", &self.counter)
            .field("data", &format_args!("***"))
            .field("signals", &self.signals.len())
            .finish()
    }
}

/// A node's metadata document and its change counter (`GET /v1/node/metadata`). `Debug`
/// shows the counter, never the document (generated passwords).
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Metadata {
    /// Bumped on every change; a node that has seen counter N long-polls for > N. 0: nothing
    /// published yet.
    pub counter: u64,
    /// The document (a JSON object; `seed.node` is always the node's own name).
    pub data: serde_json::Value,
}

/// How a deployment ended on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignalStatus {
    Complete,
    Failed,
}

/// A signal status that is neither `complete` nor `failed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a signal status (complete or failed)")]
pub struct BadSignalStatus(pub String);

impl std::str::FromStr for SignalStatus {
    type Err = BadSignalStatus;
    fn from_str(s: &str) -> Result<Self, BadSignalStatus> {
        match s {
            "complete" => Ok(SignalStatus::Complete),
            "failed" => Ok(SignalStatus::Failed),
            _ => Err(BadSignalStatus(s.into())),
        }
    }
}

/// A node's report that one of its deployments (or wait conditions) finished
/// (`POST /v1/node/signal`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Signal {
    /// The software deployment or wait-condition handle this signal is for.
    pub deployment: String,
    pub status: SignalStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Outputs (`deploy_stdout`, … or any key/value the node sends).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// The metadata counter the node had applied when it signalled.
    #[serde(default)]
    pub counter: u64,
}

/// The answer to a stored signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignalStored {
    pub node: String,
    pub deployment: String,
}

/// The answer of `PUT /v1/nodes/{name}/metadata`: the counter now published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MetadataPublished {
    pub node: String,
    pub counter: u64,
}

/// `GET /v1/nodes/{name}/metadata`: the document the node is served, and its signals. `Debug`
/// hides the document.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeMetadata {
    pub node: String,
    pub counter: u64,
    pub data: serde_json::Value,
    pub signals: Vec<Signal>,
}

/// `POST /v1/nodes/{name}/credential`: a fresh node credential, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CredentialIssued {
    pub node: String,
    /// `Authorization: Bearer <credential>` on `/v1/node/…` (secret: `***` in `Debug`).
    #[schema(value_type = String)]
    pub credential: crate::Secret,
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn documents_stay_out_of_debug() {
        let data = serde_json::json!({"admin_password": "hunter2"});
        let m = Metadata {
            counter: 3,
            data: data.clone(),
        };
        let n = NodeMetadata {
            node: "n1".into(),
            counter: 3,
            data,
            signals: vec![],
        };
        for text in [format!("{m:?}"), format!("{n:?}")] {
            assert!(!text.contains("hunter2") && text.contains("***"), "{text}");
        }
    }
}
