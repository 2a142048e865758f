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
//!
//! One file per step: `schedule.rs` (1, and moving a member off a failed node), `members.rs`
//! (2: what each kind of member does), `publish.rs` (3, and completing deployments on their
//! signals), `release.rs` (4, and stack delete); this file walks them in order and ends with 5.
//! The data is in `record.rs`, the operator's requests (create, update, delete) in
//! `requests.rs`.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use serde_json::{json, Map, Value as Json};

use crate::lifecycle::State;
use crate::template::{self, Resolver, ResourceType, Stack};

mod members;
mod publish;
mod record;
mod release;
mod requests;
mod schedule;
mod signal;
#[cfg(test)]
mod tests;

pub use record::{
    Action, MemberRecord, MemberStatus, NodeInfo, Outcome, StackEvent, StackRecord, Status,
};
pub use requests::{create, delete, last_event, replace, server_images, update, StackError};
pub use signal::{Signal, SignalStatus};

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
        s if s.in_progress() => match requests::restore(&p.rec) {
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

impl Pass<'_> {
    fn event(&mut self, resource: &str, status: Status, reason: &str) {
        let e = requests::event(&mut self.rec, self.now_ms, resource, status, reason);
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

    /// The attributes of a member the pass has already recorded.
    fn attributes_mut(&mut self, member: &str) -> &mut Map<String, Json> {
        &mut self
            .rec
            .members
            .get_mut(member)
            .expect("the member was recorded")
            .attributes
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

    /// Member `member` failed with `e`, and the stack with it.
    fn member_failed(&mut self, member: &str, e: &dyn std::fmt::Display) {
        let e = e.to_string();
        self.set_member(member, MemberStatus::Failed, &e);
        self.fail(&format!("{member}: {e}"));
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
                ResourceType::WaitConditionHandle => self.wait_condition_handle(m),
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
            self.complete(stack);
        }
    }

    /// Step 5: every member is complete: evaluate the outputs, complete the stack.
    fn complete(&mut self, stack: &Stack) {
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

/// Why a member cannot be carried out (its reason, in the record and the stack's).
#[derive(Debug, thiserror::Error)]
enum MemberError {
    #[error(transparent)]
    Template(#[from] template::Error),
    #[error("`image` must be a string, not {0:?}")]
    Image(Option<Json>),
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
