//! What operators ask of a stack: [`create`], [`update`] and [`delete`] build the record the
//! daemon stores; the engine's passes then do the work.

use super::{MemberRecord, MemberStatus, StackEvent, StackRecord, Status};
use crate::template::{self, plan, ResourceType, Stack, Template};
use std::collections::BTreeSet;

/// Why a stack could not be created or updated (nothing was stored).
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Template(#[from] template::Error),
    #[error("stack {name} is {status}; wait until it completes or fails")]
    Busy { name: String, status: Status },
    #[error("stack {stack} has no server {member:?} (a server member's name, or its node's)")]
    NoServer { stack: String, member: String },
}

/// The image each server of `rec` deploys, where it is known before anything runs (a literal
/// or a parameter; one computed from another resource's attribute is left to the deploy):
/// (member, image). The daemon checks them against its image store at create and update, so a
/// misspelled image is refused before any node is allocated or power-cycled.
pub fn server_images(rec: &StackRecord) -> Result<Vec<(String, String)>, template::Error> {
    let stack = restore(rec)?;
    let view = super::View { rec };
    Ok(stack
        .members
        .iter()
        .filter(|m| m.rtype == ResourceType::Server)
        .filter_map(|m| {
            let e = m.properties.get("image")?;
            match stack.evaluate(e, &view) {
                Ok(serde_json::Value::String(image)) => Some((m.name.clone(), image)),
                _ => None,
            }
        })
        .collect())
}

pub(super) fn restore(rec: &StackRecord) -> Result<Stack, template::Error> {
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

/// The record for `stack replace`: server `member` (its name, or its node's) moves to another
/// free node matching it, keeping its name, properties and metadata (Heat's mark-unhealthy and
/// update, TripleO's "recover from the loss by scaling out again"). Its node is never picked
/// for it again and is released (torn down) by the next pass; what depends on the server
/// (its deployments, their signals) is done again with the new node.
pub fn replace(old: &StackRecord, member: &str, now_ms: u64) -> Result<StackRecord, StackError> {
    if old.status.in_progress() {
        return Err(StackError::Busy {
            name: old.name.clone(),
            status: old.status,
        });
    }
    let stack = restore(old)?;
    let no_server = || StackError::NoServer {
        stack: old.name.clone(),
        member: member.to_string(),
    };
    let m = stack
        .members
        .iter()
        .filter(|m| m.rtype == ResourceType::Server)
        .find(|m| {
            m.name == member
                || old.members.get(&m.name).and_then(|r| r.node.as_deref()) == Some(member)
        })
        .ok_or_else(no_server)?;
    let mut rec = old.clone();
    let node = unplace(&mut rec, &stack, &m.name);
    if let Some(r) = rec.members.get_mut(&m.name) {
        r.reason = None;
    }
    rec.status = Status::UpdateInProgress;
    rec.reason = match &node {
        Some(n) => format!("Stack UPDATE started: replacing {} (on {n})", m.name),
        None => format!("Stack UPDATE started: replacing {}", m.name),
    };
    rec.outputs = None;
    rec.updated_ms = now_ms;
    let (name, reason) = (rec.name.clone(), rec.reason.clone());
    event(&mut rec, now_ms, &name, Status::UpdateInProgress, &reason);
    Ok(rec)
}

/// Take server `member` off its node for good (`stack replace`, or the engine moving it off a
/// node that failed it): the node is excluded for it, its attributes go, it starts again
/// (`Init`) and so does what depends on it. The node it had.
pub(super) fn unplace(rec: &mut StackRecord, stack: &Stack, member: &str) -> Option<String> {
    let r = rec.members.get_mut(member)?;
    let node = r.node.take();
    r.excluded.extend(node.clone());
    r.attributes.clear();
    r.status = MemberStatus::Init;
    restart_dependents(rec, stack, member);
    node
}

/// Everything that depends on `member`, directly or not, is done again (`Init`): a replaced
/// server's deployments publish to its new node and wait for its signal, wait conditions count
/// again. Servers among them stay on their nodes (an active one completes at once), random
/// strings keep their value.
fn restart_dependents(rec: &mut StackRecord, stack: &Stack, member: &str) {
    let mut changed: BTreeSet<&str> = BTreeSet::from([member]);
    // Members come in dependency order: one walk sees every chain.
    for m in &stack.members {
        if m.depends_on.iter().any(|d| changed.contains(d.as_str())) {
            changed.insert(&m.name);
            if let Some(r) = rec.members.get_mut(&m.name) {
                if r.status != MemberStatus::Init {
                    r.status = MemberStatus::Init;
                    r.reason = None;
                    r.started_ms = None;
                }
            }
        }
    }
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
pub(super) fn event(
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
