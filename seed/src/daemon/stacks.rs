//! Stacks in the store and the daemon's reconcile loop around [`crate::orchestrator`].
//!
//! Tables: `stacks` (name → [`StackRecord`] JSON) and `stack-events` (`<stack>/<seq>` →
//! [`StackEvent`]). A node's allocation lives on the node record ([`Node::allocation`]).
//!
//! One pass ([`Daemon::reconcile_stacks`]) per stack: read the record, the nodes, their
//! metadata and signals; ask the engine; commit the new record, its events and the node
//! allocations it asks for in ONE commit, compare-and-swap on the record and on every node
//! allocated (so a node is never allocated twice, and never allocated without the stack
//! knowing); only then apply the deploys to the nodes (`Daemon::apply(Event::Deploy)`),
//! publish metadata and release nodes. A crash anywhere leaves the store in a state from which
//! the next pass, level-triggered, asks for the same remaining work. The loop runs every
//! second and whenever a node changes.
//!
//! The `/v1/stacks` routes are in `daemon::api` (stacks); their views are [`api::stack`]'s.

use super::{lock, metadata, now_ms, Daemon, DaemonError};
use crate::inventory::Allocation;
use crate::lifecycle::{Event, State};
use crate::orchestrator::{self, Action, Config, NodeInfo, StackError, StackEvent, StackRecord};
use crate::store::json::{decode, encode};
use crate::store::{nodes, Expect, Op, Revision, Store, StoreError};
use ::api::stack::StackRequest;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// The stack records.
pub const STACKS: &str = "stacks";
/// The stack events, keyed `<stack>/<seq, 12 digits>`.
pub const EVENTS: &str = "stack-events";

/// Why a stack request was refused.
#[derive(Debug, thiserror::Error)]
pub enum StacksError {
    #[error("no stack named {0:?}")]
    NotFound(String),
    #[error("a stack named {0:?} exists already")]
    Exists(String),
    #[error("{0:?} is not a valid stack name (letters, digits, `-`, `_`, `.`; 1 to 64)")]
    BadName(String),
    #[error(transparent)]
    Stack(#[from] StackError),
    /// A server names an image the seed's store does not have: refused before anything is
    /// stored, allocated or powered.
    #[error("server {member}: {why}; nothing was changed")]
    Image { member: String, why: String },
    /// As `DaemonError::Store`: the message carries the whole cause, on one line.
    #[error("store: {}", super::chain(.0))]
    Store(StoreError),
}

impl From<StoreError> for StacksError {
    fn from(e: StoreError) -> Self {
        StacksError::Store(e)
    }
}

/// A stack record and its revision.
pub fn get(store: &dyn Store, name: &str) -> Result<Option<(StackRecord, Revision)>, StoreError> {
    match store.get(STACKS, name)? {
        Some(r) => Ok(Some((decode(STACKS, name, &r.value)?, r.revision))),
        None => Ok(None),
    }
}

/// Every stack record.
pub fn list(store: &dyn Store) -> Result<Vec<(StackRecord, Revision)>, StoreError> {
    store
        .list(STACKS, "")?
        .into_iter()
        .map(|(k, r)| Ok((decode(STACKS, &k, &r.value)?, r.revision)))
        .collect()
}

/// A stack's events, oldest first.
pub fn events(store: &dyn Store, name: &str) -> Result<Vec<StackEvent>, StoreError> {
    store
        .list(EVENTS, &format!("{name}/"))?
        .into_iter()
        .map(|(k, r)| decode(EVENTS, &k, &r.value))
        .collect()
}

/// The stack's record written as `expect` says, with its latest event, in one commit.
fn record_ops(name: &str, rec: &StackRecord, expect: Expect) -> Result<Vec<Op>, StoreError> {
    Ok(vec![
        Op::put(STACKS, name, encode(STACKS, name, rec)?, expect),
        event_op(name, &orchestrator::last_event(rec))?,
    ])
}

fn event_op(stack: &str, e: &StackEvent) -> Result<Op, StoreError> {
    let key = format!("{stack}/{:012}", e.id);
    Ok(Op::put(EVENTS, &key, encode(EVENTS, &key, e)?, Expect::Any))
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The engine's pacing: deploys in flight, and retries on one node before moving the member
/// (3: a daemon restart may fail a deploy that was under way, and that should not cost a node).
/// 32 in flight: the seed streams images over one provisioning link; more parallel writes only
/// share the same bandwidth.
pub const ENGINE: Config = Config {
    max_in_flight: 32,
    retries: 3,
};

/// A request's template parameters, as the orchestrator takes them.
fn params(req: &StackRequest) -> Vec<(String, String)> {
    req.params.clone().into_iter().collect()
}

impl Daemon {
    /// `stack create`: check the template, store the record (nothing is allocated yet).
    pub fn stack_create(&self, req: &StackRequest) -> Result<StackRecord, StacksError> {
        let name = req.name.as_str();
        if !valid_name(name) {
            return Err(StacksError::BadName(name.into()));
        }
        let rec = orchestrator::create(name, &req.file, &req.template, params(req), now_ms())?;
        self.check_images(&rec)?;
        match self.store.commit(record_ops(name, &rec, Expect::Absent)?) {
            Err(e) if e.is_conflict() => return Err(StacksError::Exists(name.into())),
            r => r?,
        };
        info!(stack = name, "stack create");
        self.stacks_wake.notify_one();
        Ok(rec)
    }

    /// `stack update` of stack `name` (`req.name` is ignored): a new template and/or
    /// parameters; only what changed is redone.
    pub fn stack_update(&self, name: &str, req: &StackRequest) -> Result<StackRecord, StacksError> {
        let (old, rev) =
            get(&*self.store, name)?.ok_or_else(|| StacksError::NotFound(name.into()))?;
        let (rec, todo) =
            orchestrator::update(&old, &req.file, &req.template, params(req), now_ms())?;
        self.check_images(&rec)?;
        self.store
            .commit(record_ops(name, &rec, Expect::Revision(rev))?)?;
        info!(stack = name, create = ?todo.create, delete = ?todo.delete, replace = ?todo.replace, update = ?todo.update, "stack update");
        self.stacks_wake.notify_one();
        Ok(rec)
    }

    /// Every image the servers of `rec` name is in the image store (when the daemon has one).
    fn check_images(&self, rec: &StackRecord) -> Result<(), StacksError> {
        use ::images::store::StoreError as ImageError;
        let Some(store) = self.images() else {
            return Ok(());
        };
        for (member, image) in orchestrator::server_images(rec).map_err(StackError::from)? {
            let why = match store.get(&image) {
                Err(ImageError::NotFound(_)) => format!(
                    "no image named {image:?} in the seed's image store (`seed image list` \
                     shows them)"
                ),
                Err(e @ ImageError::BadName(_)) => e.to_string(),
                _ => continue,
            };
            return Err(StacksError::Image { member, why });
        }
        Ok(())
    }

    /// `stack replace`: server `member` (its name or its node's) moves to another free node
    /// matching it; its node is released and never picked for it again.
    pub fn stack_replace(&self, name: &str, member: &str) -> Result<StackRecord, StacksError> {
        let (old, rev) =
            get(&*self.store, name)?.ok_or_else(|| StacksError::NotFound(name.into()))?;
        let rec = orchestrator::replace(&old, member, now_ms())?;
        self.store
            .commit(record_ops(name, &rec, Expect::Revision(rev))?)?;
        info!(stack = name, member, "stack replace");
        self.stacks_wake.notify_one();
        Ok(rec)
    }

    /// `stack delete`: every node of the stack is released, then the record goes.
    pub fn stack_delete(&self, name: &str) -> Result<StackRecord, StacksError> {
        let (old, rev) =
            get(&*self.store, name)?.ok_or_else(|| StacksError::NotFound(name.into()))?;
        let rec = orchestrator::delete(&old, now_ms());
        self.store
            .commit(record_ops(name, &rec, Expect::Revision(rev))?)?;
        info!(stack = name, "stack delete");
        self.stacks_wake.notify_one();
        Ok(rec)
    }

    /// Run the reconcile loop: every second, and whenever a node or stack changes.
    pub fn spawn_stacks(self: &Arc<Self>) {
        self.spawn_stacks_until(tokio_util::sync::CancellationToken::new());
    }

    /// The reconcile loop until `stop` (in HA: the end of this daemon's term).
    pub fn spawn_stacks_until(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let me = self.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let d = me.clone();
                let started = std::time::Instant::now();
                match tokio::task::spawn_blocking(move || d.reconcile_stacks()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "stack reconcile"),
                    Err(e) => warn!(error = %e, "stack reconcile task"),
                }
                let took = started.elapsed();
                tokio::select! {
                    _ = me.stacks_wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => break,
                }
                // A pass reads every node, and with thousands of nodes changing state a pass
                // would start on every change: pause as long as the last pass took (capped), so
                // the wakes in that time coalesce into one pass and the loop stays under half a
                // core. With a few nodes a pass takes microseconds and this costs nothing.
                tokio::time::sleep(took.min(Duration::from_millis(500))).await;
            }
        });
    }

    /// One pass over every stack.
    pub fn reconcile_stacks(self: &Arc<Self>) -> Result<(), DaemonError> {
        for (rec, rev) in list(&*self.store)? {
            if let Err(e) = self.reconcile_stack(&rec, rev) {
                if matches!(&e, DaemonError::Store(s) if s.is_conflict()) {
                    debug!(stack = %rec.name, error = %e, "stack changed meanwhile; next pass");
                } else {
                    warn!(stack = %rec.name, error = %e, "stack reconcile");
                }
            }
        }
        Ok(())
    }

    fn snapshot(&self, stack: &str) -> Result<Vec<NodeInfo>, StoreError> {
        let mut out = vec![];
        for (n, _) in nodes::list(&*self.store)? {
            let mut info = NodeInfo::from_node(&n);
            if n.allocation.as_ref().is_some_and(|a| a.stack == stack) {
                if let Some(m) = metadata::get(&*self.store, &n.name)? {
                    info.metadata = Some(m.data);
                    info.metadata_counter = m.counter;
                }
                info.signals = metadata::signals(&*self.store, &n.name)?;
            }
            out.push(info);
        }
        Ok(out)
    }

    fn reconcile_stack(
        self: &Arc<Self>,
        rec: &StackRecord,
        rev: Revision,
    ) -> Result<(), DaemonError> {
        let snapshot = self.snapshot(&rec.name)?;
        let out = orchestrator::reconcile(rec, &snapshot, now_ms(), &ENGINE, &mut rand::rng());
        if out.record == *rec && out.actions.is_empty() {
            return Ok(());
        }
        let name = &rec.name;
        // The record, its events and the allocations: one commit, before anything acts.
        {
            let _g = lock(&self.lifecycle_lock);
            let mut ops = vec![];
            if out.record.status == orchestrator::Status::DeleteComplete {
                ops.push(Op::delete(STACKS, name, Expect::Revision(rev)));
                for (k, _) in self.store.list(EVENTS, &format!("{name}/"))? {
                    ops.push(Op::delete(EVENTS, &k, Expect::Any));
                }
            } else {
                ops.push(Op::put(
                    STACKS,
                    name,
                    encode(STACKS, name, &out.record)?,
                    Expect::Revision(rev),
                ));
                for a in &out.actions {
                    if let Action::Event(e) = a {
                        ops.push(event_op(name, e)?);
                    }
                }
            }
            for (member, node) in out.allocations() {
                let (mut n, nrev) = nodes::get(&*self.store, node)?
                    .ok_or_else(|| DaemonError::NotFound(node.into()))?;
                if n.allocation.is_some() || n.lifecycle.state != State::Available {
                    debug!(stack = %name, node, "node taken meanwhile; next pass");
                    return Ok(());
                }
                n.allocation = Some(Allocation {
                    stack: name.clone(),
                    member: member.into(),
                });
                ops.push(Op::put(
                    nodes::NODES,
                    node,
                    encode(nodes::NODES, node, &n)?,
                    Expect::Revision(nrev),
                ));
            }
            self.store.commit(ops)?;
        }
        if out.record.status != rec.status {
            info!(stack = %name, status = %out.record.status, reason = %out.record.reason, "stack");
        }
        for a in out.actions {
            match a {
                Action::Allocate { member, node } => {
                    info!(stack = %name, member, node, "allocated")
                }
                Action::Deploy {
                    member,
                    node,
                    target,
                } => match self.apply(&node, Event::Deploy(target), vec![]) {
                    Ok(_) => info!(stack = %name, member, node, "deploy"),
                    Err(e) => warn!(stack = %name, member, node, error = %e, "deploy not started"),
                },
                Action::Publish { node, metadata } => {
                    self.publish_metadata(&node, metadata)?;
                }
                Action::Release { node } => self.release(name, &node)?,
                Action::Event(_) => {}
            }
        }
        Ok(())
    }

    /// Take a node back from `stack`: forget its metadata, delete what is deployed, and clear
    /// its allocation once nothing of the stack runs on it. Safe to repeat.
    fn release(self: &Arc<Self>, stack: &str, node: &str) -> Result<(), DaemonError> {
        let Some((n, _)) = nodes::get(&*self.store, node)? else {
            return Ok(());
        };
        if n.allocation.as_ref().is_none_or(|a| a.stack != stack) {
            return Ok(());
        }
        metadata::clear(&*self.store, node)?;
        if matches!(
            n.lifecycle.state,
            State::Active | State::DeployFailed { .. }
        ) {
            if let Err(e) = self.apply(node, Event::Delete { full_wipe: false }, vec![]) {
                warn!(stack, node, error = %e, "delete on release");
                return Ok(());
            }
        }
        let _g = lock(&self.lifecycle_lock);
        let Some((mut n, rev)) = nodes::get(&*self.store, node)? else {
            return Ok(());
        };
        // A deploy in flight finishes (or times out) first; the next pass deletes it then.
        if matches!(
            n.lifecycle.state,
            State::Active | State::Deploying | State::DeployFailed { .. }
        ) || n.allocation.as_ref().is_none_or(|a| a.stack != stack)
        {
            return Ok(());
        }
        n.allocation = None;
        self.store.commit(vec![Op::put(
            nodes::NODES,
            node,
            encode(nodes::NODES, node, &n)?,
            Expect::Revision(rev),
        )])?;
        info!(stack, node, state = %n.lifecycle.state, "released");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
