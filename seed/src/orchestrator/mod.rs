//! The stack engine's sans-IO core: a stored [`StackRecord`] and a snapshot of the nodes
//! ([`NodeInfo`], with their published metadata and signals) in, an updated record and
//! [`Action`]s out. No store, no clock, no sockets: the daemon (`daemon::stacks`) reads the
//! store, calls [`reconcile`], commits the new record (with the node allocations it asks for,
//! compare-and-swap) and only then carries out the actions.
//!
//! [`reconcile`] is level-triggered: it looks at where everything is and says what is missing,
//! so calling it again after a crash, or twice in a row, is always safe. In one pass it:
//!
//! 1. schedules every server member without a node onto free nodes (`available`, not in
//!    maintenance, not allocated) matching its `profile` capability and minimum RAM/disk — all
//!    or nothing: if one member has no node, the stack fails before anything is allocated;
//! 2. walks the members in dependency order: servers are deployed (at most
//!    [`Config::max_in_flight`] deploys at a time), retried [`Config::retries`] times on deploy
//!    failure, then replaced by another matching node (or the stack fails); configs and random
//!    strings complete at once; deployments are published into their nodes' metadata and
//!    complete on the node's signal; wait conditions complete after `count` signals;
//! 3. publishes each deployed node's merged metadata (os-collect-config's shape: `deployments`
//!    plus the node's identity) where it differs from what is published;
//! 4. releases nodes allocated to this stack that no member holds any more (scale-in,
//!    replacement, stack delete);
//! 5. when every member is complete, evaluates the outputs and completes the stack.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};

use crate::daemon::metadata::{Signal, SignalStatus};
use crate::inventory::{Allocation, Node};
use crate::lifecycle::{DeployTarget, State};
use crate::template::{self, plan, Member, Resolver, ResourceType, Stack, Template};

#[cfg(test)]
mod tests;

/// How the engine paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Deploys in flight per stack at most.
    pub max_in_flight: usize,
    /// Deploy attempts on one node after the first, before the member moves to another node.
    pub retries: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_in_flight: 10,
            retries: 1,
        }
    }
}

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

    fn complete(self) -> Status {
        match self.action() {
            "CREATE" => Status::CreateComplete,
            "UPDATE" => Status::UpdateComplete,
            _ => Status::DeleteComplete,
        }
    }

    fn failed(self) -> Status {
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

/// One line of a stack's history (stored, and shown by `GET /v1/stacks/{name}/events`).
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

    fn free(&self) -> bool {
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

/// Why a stack could not be created or updated (nothing was stored).
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Template(#[from] template::Error),
    #[error("stack {name} is {status}; wait until it completes or fails")]
    Busy { name: String, status: Status },
}

fn restore(rec: &StackRecord) -> Result<Stack, template::Error> {
    let t = Template::parse(&rec.file, &rec.template)?;
    Stack::restore(t, &rec.params, rec.removed.clone())
}

/// A new stack record for `stack create` (the template is checked: errors name
/// FILE:LINE:COLUMN).
pub fn create(
    name: &str,
    file: &str,
    text: &str,
    params: Vec<(String, String)>,
    now_ms: u64,
) -> Result<StackRecord, StackError> {
    let stack = Stack::new(Template::parse(file, text)?, &params)?;
    let mut rec = StackRecord {
        name: name.to_string(),
        file: file.to_string(),
        template: text.to_string(),
        params,
        removed: stack.removed.clone(),
        status: Status::CreateInProgress,
        reason: "Stack CREATE started".into(),
        members: stack
            .members
            .iter()
            .map(|m| (m.name.clone(), MemberRecord::default()))
            .collect(),
        outputs: None,
        event_seq: 0,
        created_ms: now_ms,
        updated_ms: now_ms,
    };
    event(
        &mut rec,
        now_ms,
        name,
        Status::CreateInProgress,
        "Stack CREATE started",
    );
    Ok(rec)
}

/// The record for `stack update` of `old` to a new template text and parameters: members the
/// plan replaces start again (a replaced server gets a new node, its old one is released),
/// members updated in place are redone on their node, deleted members go (their nodes are
/// released), new members are added.
pub fn update(
    old: &StackRecord,
    file: &str,
    text: &str,
    params: Vec<(String, String)>,
    now_ms: u64,
) -> Result<(StackRecord, template::Plan), StackError> {
    if old.status.in_progress() {
        return Err(StackError::Busy {
            name: old.name.clone(),
            status: old.status,
        });
    }
    let before = restore(old)?;
    let after = before.update(Template::parse(file, text)?, &params)?;
    let todo = plan(&before, &after);
    let mut rec = old.clone();
    rec.file = file.to_string();
    rec.template = text.to_string();
    rec.params = params;
    rec.removed = after.removed.clone();
    rec.status = Status::UpdateInProgress;
    rec.reason = "Stack UPDATE started".into();
    rec.outputs = None;
    rec.updated_ms = now_ms;
    for name in &todo.delete {
        rec.members.remove(name);
    }
    for name in todo.create.iter().chain(&todo.replace) {
        rec.members.insert(name.clone(), MemberRecord::default());
    }
    for name in &todo.update {
        let m = rec.members.entry(name.clone()).or_default();
        m.status = MemberStatus::Init;
        m.reason = None;
    }
    // An update after a failure tries again what did not complete (Heat does the same).
    for m in rec.members.values_mut() {
        if m.status != MemberStatus::Complete {
            m.status = MemberStatus::Init;
            m.reason = None;
        }
    }
    let name = rec.name.clone();
    event(
        &mut rec,
        now_ms,
        &name,
        Status::UpdateInProgress,
        "Stack UPDATE started",
    );
    Ok((rec, todo))
}

/// Start deleting a stack: every node is released.
pub fn delete(old: &StackRecord, now_ms: u64) -> StackRecord {
    let mut rec = old.clone();
    rec.status = Status::DeleteInProgress;
    rec.reason = "Stack DELETE started".into();
    rec.updated_ms = now_ms;
    let name = rec.name.clone();
    event(
        &mut rec,
        now_ms,
        &name,
        Status::DeleteInProgress,
        "Stack DELETE started",
    );
    rec
}

/// Append an event to the record's counter; the caller turns it into an action.
fn event(
    rec: &mut StackRecord,
    now_ms: u64,
    resource: &str,
    status: Status,
    reason: &str,
) -> StackEvent {
    rec.event_seq += 1;
    StackEvent {
        id: rec.event_seq,
        time_ms: now_ms,
        resource: resource.to_string(),
        status: status.name(),
        reason: reason.to_string(),
    }
}

/// The event that [`create`], [`update`] and [`delete`] counted but did not return: the
/// record's last one, rebuilt for the caller to store with the record.
pub fn last_event(rec: &StackRecord) -> StackEvent {
    StackEvent {
        id: rec.event_seq,
        time_ms: rec.updated_ms,
        resource: rec.name.clone(),
        status: rec.status.name(),
        reason: rec.reason.clone(),
    }
}

/// Evaluation against the record: servers' reference is their node's name, every other
/// member's is its own name; attributes are what the record resolved.
struct View<'a> {
    rec: &'a StackRecord,
}

impl Resolver for View<'_> {
    fn reference(&self, member: &str) -> Option<Json> {
        let m = self.rec.members.get(member)?;
        match &m.node {
            Some(n) => Some(Json::String(n.clone())),
            None => Some(Json::String(member.to_string())),
        }
    }
    fn attribute(&self, member: &str, attribute: &str) -> Option<Json> {
        self.rec
            .members
            .get(member)?
            .attributes
            .get(attribute)
            .cloned()
    }
}

/// One pass of the engine over a stack. See the module documentation.
pub fn reconcile<R: Rng>(
    record: &StackRecord,
    nodes: &[NodeInfo],
    now_ms: u64,
    cfg: &Config,
    rng: &mut R,
) -> Outcome {
    let mut p = Pass {
        rec: record.clone(),
        actions: vec![],
        nodes: nodes.iter().map(|n| (n.name.clone(), n)).collect(),
        now_ms,
        cfg: *cfg,
    };
    match p.rec.status {
        Status::DeleteInProgress => p.delete(),
        s if s.in_progress() => match restore(&p.rec) {
            Ok(stack) => p.run(&stack, rng),
            Err(e) => p.fail(&format!("the stored template no longer loads: {e}")),
        },
        _ => {}
    }
    if p.rec.status != Status::DeleteComplete {
        p.release_strays();
    }
    if p.rec != *record {
        p.rec.updated_ms = now_ms;
    }
    Outcome {
        record: p.rec,
        actions: p.actions,
    }
}

struct Pass<'a> {
    rec: StackRecord,
    actions: Vec<Action>,
    nodes: BTreeMap<String, &'a NodeInfo>,
    now_ms: u64,
    cfg: Config,
}

/// A server's scheduling needs.
#[derive(Debug, Clone, Default)]
struct Needs {
    profile: Option<String>,
    min_ram_mib: u64,
    min_disk_gib: u64,
}

impl Needs {
    fn describe(&self) -> String {
        let mut parts = vec![];
        if let Some(p) = &self.profile {
            parts.push(format!("profile={p}"));
        }
        if self.min_ram_mib > 0 {
            parts.push(format!("RAM>={} MiB", self.min_ram_mib));
        }
        if self.min_disk_gib > 0 {
            parts.push(format!("disk>={} GiB", self.min_disk_gib));
        }
        if parts.is_empty() {
            "any node".into()
        } else {
            parts.join(", ")
        }
    }

    fn fits(&self, n: &NodeInfo) -> bool {
        self.profile
            .as_ref()
            .is_none_or(|p| n.profile.as_deref() == Some(p.as_str()))
            && (self.min_ram_mib == 0 || n.memory_mib.unwrap_or(0) >= self.min_ram_mib)
            && (self.min_disk_gib == 0 || n.disk_gib >= self.min_disk_gib)
    }
}

impl Pass<'_> {
    fn event(&mut self, resource: &str, status: Status, reason: &str) {
        let e = event(&mut self.rec, self.now_ms, resource, status, reason);
        self.actions.push(Action::Event(e));
    }

    /// A member's event, named after the stack's action (`CREATE_COMPLETE` …).
    fn member_event(&mut self, member: &str, progress: MemberStatus, reason: &str) {
        let action = self.rec.status.action();
        let suffix = match progress {
            MemberStatus::Init | MemberStatus::InProgress => "IN_PROGRESS",
            MemberStatus::Complete => "COMPLETE",
            MemberStatus::Failed => "FAILED",
        };
        self.rec.event_seq += 1;
        self.actions.push(Action::Event(StackEvent {
            id: self.rec.event_seq,
            time_ms: self.now_ms,
            resource: member.to_string(),
            status: format!("{action}_{suffix}"),
            reason: reason.to_string(),
        }));
    }

    fn set_member(&mut self, member: &str, status: MemberStatus, reason: &str) {
        let m = self.rec.members.entry(member.to_string()).or_default();
        if m.status == status {
            return;
        }
        m.status = status;
        if status == MemberStatus::InProgress && m.started_ms.is_none() {
            m.started_ms = Some(self.now_ms);
        }
        m.reason = (!reason.is_empty()).then(|| reason.to_string());
        self.member_event(member, status, reason);
    }

    fn fail(&mut self, reason: &str) {
        let status = self.rec.status.failed();
        self.rec.status = status;
        self.rec.reason = reason.to_string();
        let name = self.rec.name.clone();
        self.event(&name, status, reason);
    }

    fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name).copied()
    }

    fn run<R: Rng>(&mut self, stack: &Stack, rng: &mut R) {
        // Records follow the members: new ones start, gone ones go (their nodes are strays).
        let wanted: BTreeSet<&str> = stack.members.iter().map(|m| m.name.as_str()).collect();
        self.rec.members.retain(|k, _| wanted.contains(k.as_str()));
        for m in &stack.members {
            self.rec.members.entry(m.name.clone()).or_default();
        }
        if !self.schedule(stack) {
            return;
        }
        let mut in_flight = self
            .rec
            .members
            .values()
            .filter_map(|m| m.node.as_deref())
            .filter(|n| self.node(n).is_some_and(|n| n.state == State::Deploying))
            .count();
        for m in &stack.members {
            if !self.rec.status.in_progress() {
                return;
            }
            let ready = m
                .depends_on
                .iter()
                .all(|d| self.rec.members.get(d).map(|r| r.status) == Some(MemberStatus::Complete));
            match m.rtype {
                ResourceType::Server => self.server(stack, m, ready, &mut in_flight),
                _ if !ready => {}
                ResourceType::RandomString => self.random(stack, m, rng),
                ResourceType::SoftwareConfig | ResourceType::StructuredConfig => {
                    self.config(stack, m)
                }
                ResourceType::WaitConditionHandle => {
                    let r = self.rec.members.get_mut(&m.name).expect("record");
                    r.attributes
                        .insert("signal".into(), Json::String(m.name.clone()));
                    r.attributes.insert(
                        "endpoint".into(),
                        Json::String(format!("/v1/node/signal/{}", m.name)),
                    );
                    self.set_member(&m.name, MemberStatus::Complete, "");
                }
                ResourceType::WaitCondition => self.wait_condition(stack, m),
                ResourceType::SoftwareDeployment
                | ResourceType::StructuredDeployment
                | ResourceType::SoftwareDeploymentGroup
                | ResourceType::StructuredDeploymentGroup => {
                    if self.rec.members[&m.name].status == MemberStatus::Init {
                        self.set_member(&m.name, MemberStatus::InProgress, "");
                    }
                }
                ResourceType::ResourceGroup => {
                    // Groups are expanded into their members; a group is never a member.
                    self.set_member(&m.name, MemberStatus::Complete, "");
                }
            }
        }
        if !self.rec.status.in_progress() {
            return;
        }
        self.publish(stack);
        if !self.rec.status.in_progress() {
            return;
        }
        if self
            .rec
            .members
            .values()
            .all(|m| m.status == MemberStatus::Complete)
        {
            let view = View { rec: &self.rec };
            let mut outputs = Map::new();
            for o in &stack.template.outputs {
                let v = stack
                    .evaluate(&o.value, &view)
                    .unwrap_or_else(|e| json!({ "error": e.to_string() }));
                outputs.insert(o.name.clone(), v);
            }
            self.rec.outputs = Some(outputs);
            let status = self.rec.status.complete();
            self.rec.status = status;
            self.rec.reason = format!("Stack {} completed successfully", status.action());
            let (name, reason) = (self.rec.name.clone(), self.rec.reason.clone());
            self.event(&name, status, &reason);
        }
    }

    fn needs(&self, stack: &Stack, m: &Member) -> Needs {
        let view = View { rec: &self.rec };
        let get = |k: &str| {
            m.properties
                .get(k)
                .and_then(|e| stack.evaluate(e, &view).ok())
        };
        let num = |v: Option<Json>| {
            v.and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
                .unwrap_or(0)
        };
        Needs {
            // An empty profile asks for none (a template parameter defaulting to "" lets the
            // same template run on nodes enrolled without a profile).
            profile: get("profile")
                .and_then(|v| v.as_str().map(str::to_string))
                .filter(|p| !p.is_empty()),
            min_ram_mib: num(get("min_ram_mib")),
            min_disk_gib: num(get("min_disk_gib")),
        }
    }

    /// Give every server without a node one, all or nothing. Returns false if the stack failed.
    fn schedule(&mut self, stack: &Stack) -> bool {
        let mut want: Vec<(&Member, Needs)> = stack
            .members
            .iter()
            .filter(|m| m.rtype == ResourceType::Server)
            .filter(|m| self.rec.members[&m.name].node.is_none())
            .map(|m| (m, self.needs(stack, m)))
            .collect();
        if want.is_empty() {
            return true;
        }
        // Most constrained first; each takes the smallest node that fits (best fit).
        want.sort_by_key(|(m, n)| {
            (
                n.profile.is_none(),
                std::cmp::Reverse(n.min_ram_mib),
                std::cmp::Reverse(n.min_disk_gib),
                m.name.clone(),
            )
        });
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut picks = vec![];
        let mut short: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (m, needs) in &want {
            let excluded = &self.rec.members[&m.name].excluded;
            let best = self
                .nodes
                .values()
                .filter(|n| n.free() && !taken.contains(&n.name) && !excluded.contains(&n.name))
                .filter(|n| needs.fits(n))
                .min_by_key(|n| (n.memory_mib.unwrap_or(0), n.disk_gib, n.name.clone()));
            match best {
                Some(n) => {
                    taken.insert(n.name.clone());
                    picks.push((m.name.clone(), n.name.clone()));
                }
                None => {
                    let free = self.nodes.values().filter(|n| n.free() && needs.fits(n));
                    let e = short.entry(needs.describe()).or_insert((0, free.count()));
                    e.0 += 1;
                }
            }
        }
        if !short.is_empty() {
            let wanted: BTreeMap<String, usize> =
                want.iter().fold(BTreeMap::new(), |mut acc, (_, n)| {
                    *acc.entry(n.describe()).or_default() += 1;
                    acc
                });
            let detail: Vec<String> = short
                .iter()
                .map(|(d, (_, free))| {
                    format!(
                        "{} server(s) need {d}, {free} free node(s) match",
                        wanted.get(d).copied().unwrap_or(0)
                    )
                })
                .collect();
            self.fail(&format!("not enough nodes: {}", detail.join("; ")));
            return false;
        }
        for (member, node) in picks {
            self.rec.members.get_mut(&member).expect("record").node = Some(node.clone());
            self.actions.push(Action::Allocate { member, node });
        }
        true
    }

    fn target(&self, stack: &Stack, m: &Member) -> Result<DeployTarget, String> {
        let view = View { rec: &self.rec };
        let get = |k: &str| {
            m.properties
                .get(k)
                .map(|e| stack.evaluate(e, &view).map_err(|e| e.to_string()))
                .transpose()
        };
        let image = match get("image")? {
            Some(Json::String(s)) => s,
            other => return Err(format!("`image` must be a string, not {other:?}")),
        };
        let hint = get("root_device_hint")?.and_then(|h| {
            let h = h.as_object()?.clone();
            let s = |k: &str| {
                h.get(k)
                    .map(|v| v.to_string().trim_matches('"').to_string())
            };
            s("serial")
                .map(|v| format!("serial={v}"))
                .or_else(|| s("model").map(|v| format!("model={v}")))
                .or_else(|| s("size_gib").map(|v| format!("size>={v}")))
                .or_else(|| s("min_size_gib").map(|v| format!("size>={v}")))
        });
        Ok(DeployTarget {
            image,
            root_hint: hint,
        })
    }

    fn server(&mut self, stack: &Stack, m: &Member, ready: bool, in_flight: &mut usize) {
        let rec = self.rec.members[&m.name].clone();
        let Some(node_name) = rec.node.clone() else {
            return;
        };
        let Some(node) = self.node(&node_name).cloned() else {
            self.replace(stack, m, &node_name, "the node is gone from the inventory");
            return;
        };
        match &node.state {
            State::Available if !node.maintenance => {
                if !ready || *in_flight >= self.cfg.max_in_flight {
                    return;
                }
                match self.target(stack, m) {
                    Ok(target) => {
                        *in_flight += 1;
                        self.set_member(&m.name, MemberStatus::InProgress, "");
                        self.actions.push(Action::Deploy {
                            member: m.name.clone(),
                            node: node_name,
                            target,
                        });
                    }
                    Err(e) => {
                        self.set_member(&m.name, MemberStatus::Failed, &e);
                        self.fail(&format!("{}: {e}", m.name));
                    }
                }
            }
            State::Deploying => self.set_member(&m.name, MemberStatus::InProgress, ""),
            State::Active => {
                let view = View { rec: &self.rec };
                let name = m
                    .properties
                    .get("name")
                    .and_then(|e| stack.evaluate(e, &view).ok())
                    .unwrap_or_else(|| Json::String(m.name.clone()));
                let attrs = &mut self
                    .rec
                    .members
                    .get_mut(&m.name)
                    .expect("record")
                    .attributes;
                attrs.insert("name".into(), name);
                attrs.insert("node".into(), Json::String(node_name.clone()));
                attrs.insert(
                    "mac".into(),
                    node.mac.clone().map_or(Json::Null, Json::String),
                );
                attrs.insert(
                    "ip".into(),
                    node.ip.clone().map_or(Json::Null, Json::String),
                );
                self.set_member(&m.name, MemberStatus::Complete, "");
            }
            State::DeployFailed { reason } => {
                if node.attempts <= self.cfg.retries && !node.maintenance {
                    if *in_flight >= self.cfg.max_in_flight {
                        return;
                    }
                    match self.target(stack, m) {
                        Ok(target) => {
                            *in_flight += 1;
                            let why = format!(
                                "deploy on {node_name} failed ({reason}); retry {} of {}",
                                node.attempts, self.cfg.retries
                            );
                            self.member_event(&m.name, MemberStatus::InProgress, &why);
                            self.actions.push(Action::Deploy {
                                member: m.name.clone(),
                                node: node_name,
                                target,
                            });
                        }
                        Err(e) => self.fail(&format!("{}: {e}", m.name)),
                    }
                } else {
                    let why = format!(
                        "deploy on {node_name} failed {} time(s): {reason}",
                        node.attempts
                    );
                    self.replace(stack, m, &node_name, &why);
                }
            }
            _ => {}
        }
    }

    /// Move a member off a node that failed it, onto another matching free node.
    fn replace(&mut self, stack: &Stack, m: &Member, node: &str, why: &str) {
        let r = self.rec.members.get_mut(&m.name).expect("record");
        r.node = None;
        r.excluded.push(node.to_string());
        r.attributes.clear();
        r.status = MemberStatus::Init;
        self.member_event(
            &m.name,
            MemberStatus::InProgress,
            &format!("{why}; replacing"),
        );
        let needs = self.needs(stack, m);
        let excluded = self.rec.members[&m.name].excluded.clone();
        let taken: BTreeSet<&str> = self
            .rec
            .members
            .values()
            .filter_map(|r| r.node.as_deref())
            .collect();
        let next = self
            .nodes
            .values()
            .filter(|n| n.free() && !excluded.contains(&n.name) && !taken.contains(n.name.as_str()))
            .filter(|n| needs.fits(n))
            .min_by_key(|n| (n.memory_mib.unwrap_or(0), n.disk_gib, n.name.clone()))
            .map(|n| n.name.clone());
        match next {
            Some(n) => {
                self.rec.members.get_mut(&m.name).expect("record").node = Some(n.clone());
                self.actions.push(Action::Allocate {
                    member: m.name.clone(),
                    node: n,
                });
            }
            None => {
                let reason = format!(
                    "{}: {why}, and no other free node has {}",
                    m.name,
                    needs.describe()
                );
                self.set_member(&m.name, MemberStatus::Failed, &reason);
                self.fail(&reason);
            }
        }
    }

    fn random<R: Rng>(&mut self, stack: &Stack, m: &Member, rng: &mut R) {
        if self.rec.members[&m.name].attributes.contains_key("value") {
            self.set_member(&m.name, MemberStatus::Complete, "");
            return;
        }
        let view = View { rec: &self.rec };
        let value = stack
            .properties(&m.name, &view)
            .map_err(|e| e.to_string())
            .and_then(|p| template::random_string(&p, rng).map_err(|e| e.to_string()));
        match value {
            Ok(v) => {
                let r = self.rec.members.get_mut(&m.name).expect("record");
                r.attributes.insert("value".into(), Json::String(v));
                self.set_member(&m.name, MemberStatus::Complete, "");
            }
            Err(e) => {
                self.set_member(&m.name, MemberStatus::Failed, &e);
                self.fail(&format!("{}: {e}", m.name));
            }
        }
    }

    fn config(&mut self, stack: &Stack, m: &Member) {
        let view = View { rec: &self.rec };
        match stack.properties(&m.name, &view) {
            Ok(props) => {
                let r = self.rec.members.get_mut(&m.name).expect("record");
                // The evaluated properties are kept whole: deployments read group/inputs too.
                r.attributes = match props {
                    Json::Object(mut o) => {
                        o.entry("config").or_insert(Json::Null);
                        o
                    }
                    _ => Map::new(),
                };
                self.set_member(&m.name, MemberStatus::Complete, "");
            }
            Err(e) => {
                let e = e.to_string();
                self.set_member(&m.name, MemberStatus::Failed, &e);
                self.fail(&format!("{}: {e}", m.name));
            }
        }
    }

    /// The nodes of this stack's servers, by node name.
    fn stack_nodes(&self) -> BTreeSet<String> {
        self.rec
            .members
            .values()
            .filter_map(|r| r.node.clone())
            .collect()
    }

    fn wait_condition(&mut self, stack: &Stack, m: &Member) {
        let r = self.rec.members[&m.name].clone();
        if r.status == MemberStatus::Complete || r.status == MemberStatus::Failed {
            return;
        }
        self.set_member(&m.name, MemberStatus::InProgress, "");
        let view = View { rec: &self.rec };
        let get = |k: &str| {
            m.properties
                .get(k)
                .and_then(|e| stack.evaluate(e, &view).ok())
        };
        let handle = get("handle")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let count = get("count").and_then(|v| v.as_u64()).unwrap_or(1) as usize;
        let timeout_ms = get("timeout").and_then(|v| v.as_u64()).unwrap_or(0) * 1000;
        let mut data = Map::new();
        for node in self.stack_nodes() {
            let Some(n) = self.node(&node) else { continue };
            for s in n.signals.iter().filter(|s| s.deployment == handle) {
                if s.status == SignalStatus::Failed {
                    let reason = format!(
                        "{}: {node} signalled failure: {}",
                        m.name,
                        s.reason.clone().unwrap_or_default()
                    );
                    self.set_member(&m.name, MemberStatus::Failed, &reason);
                    self.fail(&reason);
                    return;
                }
                data.insert(node.clone(), Json::Object(s.outputs.clone()));
            }
        }
        if data.len() >= count {
            let r = self.rec.members.get_mut(&m.name).expect("record");
            r.attributes.insert("data".into(), Json::Object(data));
            self.set_member(&m.name, MemberStatus::Complete, "");
        } else if timeout_ms > 0
            && self
                .rec
                .members
                .get(&m.name)
                .and_then(|r| r.started_ms)
                .is_some_and(|s| self.now_ms >= s + timeout_ms)
        {
            let reason = format!(
                "{}: {} of {count} signal(s) on `{handle}` before the timeout",
                m.name,
                data.len()
            );
            self.set_member(&m.name, MemberStatus::Failed, &reason);
            self.fail(&reason);
        }
    }

    /// A deployment's entry in its nodes' metadata, and those nodes (with the server key).
    fn deployment(
        &self,
        stack: &Stack,
        m: &Member,
    ) -> Result<(Json, Vec<(String, String)>), String> {
        let view = View { rec: &self.rec };
        let props = stack
            .properties(&m.name, &view)
            .map_err(|e| e.to_string())?;
        let targets: Vec<(String, String)> = match m.rtype {
            ResourceType::SoftwareDeployment | ResourceType::StructuredDeployment => props
                .get("server")
                .and_then(Json::as_str)
                .map(|s| vec![(s.to_string(), s.to_string())])
                .unwrap_or_default(),
            _ => props
                .get("servers")
                .and_then(Json::as_object)
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
        };
        let config_name = props.get("config").and_then(Json::as_str).unwrap_or("");
        let config = self
            .rec
            .members
            .get(config_name)
            .map(|r| r.attributes.clone())
            .unwrap_or_default();
        let mut inputs: Vec<Json> = vec![];
        let values = props
            .get("input_values")
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(declared) = config.get("inputs").and_then(Json::as_array) {
            for i in declared {
                let Some(name) = i.get("name").and_then(Json::as_str) else {
                    continue;
                };
                let value = values
                    .get(name)
                    .or_else(|| i.get("default"))
                    .cloned()
                    .unwrap_or(Json::Null);
                inputs.push(json!({ "name": name, "type": i.get("type").cloned().unwrap_or(json!("String")), "value": value }));
            }
        }
        for (k, v) in &values {
            if !inputs.iter().any(|i| i["name"] == json!(k)) {
                inputs.push(json!({ "name": k, "type": "String", "value": v }));
            }
        }
        let entry = json!({
            "name": m.name,
            "group": config.get("group").cloned().unwrap_or(json!("Heat::Ungrouped")),
            "config": config.get("config").cloned().unwrap_or(Json::Null),
            "inputs": inputs,
            "options": config.get("options").cloned().unwrap_or(json!({})),
            "outputs": config.get("outputs").cloned().unwrap_or(json!([])),
        });
        Ok((entry, targets))
    }

    /// Nodes whose metadata must wait: a deployment not started yet will target them as soon
    /// as the servers it waits for are up. Publishing now would hand the node an incomplete
    /// configuration to render and run: a group deployment waits for all its servers, so the
    /// first compute up would render its files without the group's config, and a scale-out
    /// (which restarts the group deployment) would take the config away from the computes
    /// already running. A deployment that waits, directly or not, for another deployment's or
    /// a wait condition's signals holds nothing: those signals may need this node's metadata.
    fn held_nodes(&self, stack: &Stack) -> BTreeSet<String> {
        let mut held = BTreeSet::new();
        for m in stack.members.iter().filter(|m| is_deployment(m.rtype)) {
            if self.rec.members[&m.name].status != MemberStatus::Init
                || self.waits_for_signals(stack, m)
            {
                continue;
            }
            if let Ok((_, targets)) = self.deployment(stack, m) {
                held.extend(targets.into_iter().map(|(_, node)| node));
            }
        }
        held
    }

    /// Whether `m` waits, through its unfinished dependencies, for a signal from a node.
    fn waits_for_signals(&self, stack: &Stack, m: &Member) -> bool {
        let mut todo: Vec<&str> = m.depends_on.iter().map(String::as_str).collect();
        let mut seen = BTreeSet::new();
        while let Some(name) = todo.pop() {
            if !seen.insert(name) {
                continue;
            }
            let done = self.rec.members.get(name).map(|r| r.status) == Some(MemberStatus::Complete);
            let Some(dep) = stack.member(name) else {
                continue;
            };
            if done {
                continue;
            }
            if is_deployment(dep.rtype) || dep.rtype == ResourceType::WaitCondition {
                return true;
            }
            todo.extend(dep.depends_on.iter().map(String::as_str));
        }
        false
    }

    /// Publish merged metadata to deployed nodes; complete deployments their nodes signalled.
    fn publish(&mut self, stack: &Stack) {
        // node → (member, deployments)
        let mut desired: BTreeMap<String, (String, Vec<Json>)> = BTreeMap::new();
        for m in stack
            .members
            .iter()
            .filter(|m| m.rtype == ResourceType::Server)
        {
            let r = &self.rec.members[&m.name];
            if let (Some(node), MemberStatus::Complete) = (&r.node, r.status) {
                desired.insert(node.clone(), (m.name.clone(), vec![]));
            }
        }
        let mut deployments: Vec<(&Member, Vec<(String, String)>)> = vec![];
        for m in &stack.members {
            if !is_deployment(m.rtype) || self.rec.members[&m.name].status == MemberStatus::Init {
                continue;
            }
            match self.deployment(stack, m) {
                Ok((entry, targets)) => {
                    for (_, node) in &targets {
                        if let Some((_, list)) = desired.get_mut(node) {
                            list.push(entry.clone());
                        }
                    }
                    deployments.push((m, targets));
                }
                Err(e) => {
                    self.set_member(&m.name, MemberStatus::Failed, &e);
                    self.fail(&format!("{}: {e}", m.name));
                    return;
                }
            }
        }
        let held = self.held_nodes(stack);
        let mut documents = BTreeMap::new();
        for (node, (member, list)) in desired {
            if held.contains(&node) {
                // Its current document (if any) stays; no signal counts until it is published.
                continue;
            }
            let server = stack.member(&member).expect("member");
            let view = View { rec: &self.rec };
            let server_metadata = server
                .properties
                .get("metadata")
                .and_then(|e| stack.evaluate(e, &view).ok())
                .unwrap_or(json!({}));
            let attrs = &self.rec.members[&member].attributes;
            let doc = json!({
                "deployments": list,
                "identity": {
                    "stack": self.rec.name,
                    "member": member,
                    "node": node,
                    "name": attrs.get("name").cloned().unwrap_or(Json::Null),
                },
                "metadata": server_metadata,
            });
            if self.node(&node).and_then(|n| n.metadata.as_ref()) != Some(&doc) {
                self.actions.push(Action::Publish {
                    node: node.clone(),
                    metadata: doc.clone(),
                });
            }
            documents.insert(node, doc);
        }
        for (m, targets) in deployments {
            if self.rec.members[&m.name].status != MemberStatus::InProgress {
                continue;
            }
            let mut outputs: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
            let mut done = true;
            for (key, node) in &targets {
                let Some(n) = self.node(node) else {
                    done = false;
                    continue;
                };
                // Only a signal about what is published now counts.
                let current = documents
                    .get(node)
                    .is_some_and(|d| n.metadata.as_ref() == Some(d));
                let sig = n
                    .signals
                    .iter()
                    .find(|s| s.deployment == m.name && s.counter >= n.metadata_counter);
                match (current, sig) {
                    (true, Some(s)) if s.status == SignalStatus::Failed => {
                        let reason = format!(
                            "{} on {node}: {}",
                            m.name,
                            s.reason.clone().unwrap_or_else(|| "failed".into())
                        );
                        self.set_member(&m.name, MemberStatus::Failed, &reason);
                        self.fail(&reason);
                        return;
                    }
                    (true, Some(s)) => {
                        outputs.insert(key.clone(), s.outputs.clone());
                    }
                    _ => done = false,
                }
            }
            if done {
                let attrs = &mut self
                    .rec
                    .members
                    .get_mut(&m.name)
                    .expect("record")
                    .attributes;
                attrs.clear();
                let single = matches!(
                    m.rtype,
                    ResourceType::SoftwareDeployment | ResourceType::StructuredDeployment
                );
                for (key, outs) in outputs {
                    for (k, v) in outs {
                        if single {
                            attrs.insert(k, v);
                        } else {
                            attrs
                                .entry(k)
                                .or_insert_with(|| json!({}))
                                .as_object_mut()
                                .expect("object")
                                .insert(key.clone(), v);
                        }
                    }
                }
                self.set_member(&m.name, MemberStatus::Complete, "");
            }
        }
    }

    /// Stack delete: drop every member; done when no node is allocated to the stack.
    fn delete(&mut self) {
        for r in self.rec.members.values_mut() {
            r.node = None;
        }
        self.rec.members.clear();
        let held = self.nodes.values().any(|n| {
            n.allocation
                .as_ref()
                .is_some_and(|a| a.stack == self.rec.name)
        });
        if !held {
            self.rec.status = Status::DeleteComplete;
            self.rec.reason = "Stack DELETE completed successfully".into();
            let (name, reason) = (self.rec.name.clone(), self.rec.reason.clone());
            self.event(&name, Status::DeleteComplete, &reason);
        }
    }

    /// Release nodes allocated to this stack that no member holds.
    fn release_strays(&mut self) {
        let strays: Vec<String> = self
            .nodes
            .values()
            .filter(|n| {
                n.allocation.as_ref().is_some_and(|a| {
                    a.stack == self.rec.name
                        && self
                            .rec
                            .members
                            .get(&a.member)
                            .and_then(|r| r.node.as_deref())
                            != Some(n.name.as_str())
                })
            })
            .map(|n| n.name.clone())
            .collect();
        for node in strays {
            self.actions.push(Action::Release { node });
        }
    }
}

/// Software/structured deployments and their groups: what puts a config into nodes' metadata.
fn is_deployment(t: ResourceType) -> bool {
    matches!(
        t,
        ResourceType::SoftwareDeployment
            | ResourceType::StructuredDeployment
            | ResourceType::SoftwareDeploymentGroup
            | ResourceType::StructuredDeploymentGroup
    )
}
