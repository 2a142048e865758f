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

/// One etcd member of the control plane's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    /// etcd's member id, in hex (a u64 does not fit a JSON number everywhere).
    pub id: String,
    /// Empty until the member has started.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty until the member has started.
    pub client_urls: Vec<String>,
    /// A raft learner, not voting yet: promoted once it has started and caught up.
    pub learner: bool,
}

/// A seed daemon in the election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DaemonView {
    pub name: String,
    /// Where its API answers.
    pub api: String,
    pub leader: bool,
}

/// The control plane as one daemon sees it (`GET /v1/ha/members`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Membership {
    /// The daemon that answered.
    pub me: String,
    pub members: Vec<MemberView>,
    /// The daemons that campaign (the leader among them).
    pub daemons: Vec<DaemonView>,
}

/// Add an etcd member (`POST /v1/ha/members`): start it afterwards with the answer's initial
/// cluster and `--initial-cluster-state existing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberRequest {
    /// Its name (also its seed daemon's `[store] name`): letters, digits, '-', '_', '.'.
    pub name: String,
    /// Where it will answer its peers, e.g. `http://10.0.1.2:2380`.
    pub peer_url: String,
}

/// A member added: how to start it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberAdded {
    pub id: String,
    pub name: String,
    /// etcd's `--initial-cluster`: `name=peer_url,…`, every member and this one.
    pub initial_cluster: String,
    /// etcd's `--initial-cluster-state`: always `existing`.
    pub initial_cluster_state: String,
}
