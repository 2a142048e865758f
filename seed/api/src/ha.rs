//! The HA control plane as `/v1/ha/…` shows it: the hand-off of a seed to the undercloud.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a hand-off stands. The steps run in this order; each is persisted before it is acted
/// on, so a daemon killed at any step finishes the hand-off when it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HandoffStep {
    /// Out of the election: waiting for another daemon to lead.
    Resigning,
    /// Another daemon leads: taking this daemon's etcd member out of the cluster.
    Removing,
    /// Out of the membership: this daemon answers nothing any more and switches off.
    Done,
}

/// A hand-off: this daemon leaves the control plane to the others (`POST /v1/ha/handoff`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Handoff {
    /// The daemon that hands over (its name is its etcd member's name).
    pub member: String,
    pub step: HandoffStep,
    /// The other daemons that campaign: one of them leads after the hand-off.
    pub successors: Vec<String>,
    /// The client URLs of the etcd members that stay (the store after the hand-off).
    pub endpoints: Vec<String>,
    /// Who leads once this daemon resigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Milliseconds since the epoch.
    pub started_ms: u64,
    pub updated_ms: u64,
    /// Why the current step is being retried (or why the hand-off was given up and this daemon
    /// campaigns again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Given up (`error` says why): this daemon campaigns again; ask again later.
    #[serde(default)]
    pub given_up: bool,
}
