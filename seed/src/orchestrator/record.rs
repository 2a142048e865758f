//! What the engine reads and writes: the stored [`StackRecord`] (with its members and events),
//! the snapshot of a node it sees ([`NodeInfo`]) and the [`Action`]s it asks for.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use std::collections::{BTreeMap, BTreeSet};

use super::Signal;
use crate::inventory::{Allocation, Node};
use crate::lifecycle::{DeployTarget, State};

/// A stack's status, named as Heat names it (`CREATE_IN_PROGRESS`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    CreateInProgress,
    CreateComplete,
    CreateFailed,
    UpdateInProgress,
    UpdateComplete,
    UpdateFailed,
    DeleteInProgress,
    DeleteComplete,
    DeleteFailed,
}

impl Status {
    /// `CREATE`, `UPDATE` or `DELETE`.
    pub fn action(self) -> &'static str {
        use Status::*;
        match self {
            CreateInProgress | CreateComplete | CreateFailed => "CREATE",
            UpdateInProgress | UpdateComplete | UpdateFailed => "UPDATE",
            DeleteInProgress | DeleteComplete | DeleteFailed => "DELETE",
        }
    }

    pub fn in_progress(self) -> bool {
        matches!(
            self,
            Status::CreateInProgress | Status::UpdateInProgress | Status::DeleteInProgress
        )
    }

    pub(super) fn complete(self) -> Status {
        match self.action() {
            "CREATE" => Status::CreateComplete,
            "UPDATE" => Status::UpdateComplete,
            _ => Status::DeleteComplete,
        }
    }

    pub(super) fn failed(self) -> Status {
        match self.action() {
            "CREATE" => Status::CreateFailed,
            "UPDATE" => Status::UpdateFailed,
            _ => Status::DeleteFailed,
        }
    }

    /// `CREATE_IN_PROGRESS`, …
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Where one member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MemberStatus {
    /// Not started (or to be redone by an update).
    #[default]
    Init,
    InProgress,
    Complete,
    Failed,
}

/// What the stack knows about one member.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MemberRecord {
    pub status: MemberStatus,
    /// Servers: the node this member is allocated to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Servers: nodes that failed this member (never picked for it again).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    /// Resolved attributes (`get_attr`): server name/node/ip/mac, random value, deployment
    /// outputs, wait condition data.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Json>,
    /// When the member started (wait-condition timeouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A stack as stored: what was asked (template text, parameters, removed group indices) and
/// where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackRecord {
    pub name: String,
    /// The template's file name (for error messages).
    pub file: String,
    pub template: String,
    pub params: Vec<(String, String)>,
    #[serde(default)]
    pub removed: BTreeMap<String, BTreeSet<usize>>,
    pub status: Status,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub members: BTreeMap<String, MemberRecord>,
    /// Evaluated when the stack completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Map<String, Json>>,
    /// The last event's number (events are keyed `<stack>/<seq>`).
    #[serde(default)]
    pub event_seq: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// One line of a stack's history (stored, and shown by `GET /v1/stacks/{name}/events`): the
/// API's type, stored as is.
pub use api::StackEvent;

/// What the engine sees of a node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeInfo {
    pub name: String,
    pub state: State,
    pub maintenance: bool,
    /// Consecutive attempts of the node's current/last step (deploy retries).
    pub attempts: u32,
    pub memory_mib: Option<u64>,
    /// The largest disk, GiB.
    pub disk_gib: u64,
    pub profile: Option<String>,
    pub allocation: Option<Allocation>,
    pub mac: Option<String>,
    pub ip: Option<String>,
    /// The metadata published for the node and its change counter.
    pub metadata: Option<Json>,
    pub metadata_counter: u64,
    pub signals: Vec<Signal>,
}

impl NodeInfo {
    /// The inventory part of the snapshot (metadata and signals are filled in by the caller).
    pub fn from_node(n: &Node) -> NodeInfo {
        NodeInfo {
            name: n.name.clone(),
            state: n.lifecycle.state.clone(),
            maintenance: n.lifecycle.maintenance.is_some(),
            attempts: n.lifecycle.attempts,
            memory_mib: n.properties.memory_mib,
            disk_gib: n
                .properties
                .disks
                .iter()
                .map(|d| d.size_bytes >> 30)
                .max()
                .unwrap_or(0),
            profile: n.capabilities.profile().map(str::to_string),
            allocation: n.allocation.clone(),
            mac: n.macs.first().map(|m| m.to_string()),
            ip: None,
            metadata: None,
            metadata_counter: 0,
            signals: vec![],
        }
    }

    pub(super) fn free(&self) -> bool {
        self.state == State::Available && !self.maintenance && self.allocation.is_none()
    }
}

/// What the daemon must do after committing the new record.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write `allocation = {stack, member}` on the node, compare-and-swap, in the same commit
    /// as the record.
    Allocate { member: String, node: String },
    /// Apply `Event::Deploy(target)` to the node (it is allocated to `member`).
    Deploy {
        member: String,
        node: String,
        target: DeployTarget,
    },
    /// Publish the node's merged metadata.
    Publish { node: String, metadata: Json },
    /// Take the node back: clear its metadata and signals, delete it (when active or failed)
    /// and clear its allocation once it is no longer deployed or deploying.
    Release { node: String },
    /// Append to the stack's events (in the same commit as the record).
    Event(StackEvent),
}

/// The new record and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub record: StackRecord,
    pub actions: Vec<Action>,
}

impl Outcome {
    /// Allocations asked for.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, &str)> {
        self.actions.iter().filter_map(|a| match a {
            Action::Allocate { member, node } => Some((member.as_str(), node.as_str())),
            _ => None,
        })
    }
}
