//! `stack update` planning: compare the members of the old and the new [`Stack`] and say
//! which are created, deleted, replaced or updated in place.
//!
//! A member is replaced when its type changes or a property marked [`Update::Replace`]
//! changes; updated in place when only [`Update::InPlace`] properties or its metadata change.
//! Changes propagate through references: a property that refers to a replaced member (its id
//! changes) or to an attribute of a changed member counts as changed, so a new software config
//! updates the deployments using it in place, and does not touch the servers.

use std::collections::BTreeSet;

use serde_json::Value as Json;

use super::expr::{Expr, ExprKind};
use super::stack::{Member, Stack};
use super::types::Update;

/// What `stack update` does, member by member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// New members, in creation order.
    pub create: Vec<String>,
    /// Members that go away, in deletion order (dependents first).
    pub delete: Vec<String>,
    /// Members deleted and created again, in creation order.
    pub replace: Vec<String>,
    /// Members updated where they are, in dependency order.
    pub update: Vec<String>,
    /// Members left alone.
    pub unchanged: Vec<String>,
}

impl Plan {
    /// Whether the update changes nothing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.delete.is_empty()
            && self.replace.is_empty()
            && self.update.is_empty()
    }
}

/// Plan the update from `old` to `new` (`new` made with [`Stack::update`] of `old`).
pub fn plan(old: &Stack, new: &Stack) -> Plan {
    let mut plan = Plan::default();
    // Members whose id changes, and members whose attributes may change.
    // A deleted member counts as both: references to its group see a different set.
    let deleted: BTreeSet<&str> = old
        .members
        .iter()
        .filter(|o| new.member(&o.name).is_none())
        .map(|o| o.name.as_str())
        .collect();
    let mut replaced: BTreeSet<&str> = deleted.clone();
    let mut changed: BTreeSet<&str> = deleted;
    for m in &new.members {
        let Some(o) = old.member(&m.name) else {
            plan.create.push(m.name.clone());
            replaced.insert(&m.name);
            changed.insert(&m.name);
            continue;
        };
        match compare(o, m, &replaced, &changed) {
            None => plan.unchanged.push(m.name.clone()),
            Some(Update::InPlace) => {
                plan.update.push(m.name.clone());
                changed.insert(&m.name);
            }
            Some(Update::Replace) => {
                plan.replace.push(m.name.clone());
                replaced.insert(&m.name);
                changed.insert(&m.name);
            }
        }
    }
    plan.delete = old
        .members
        .iter()
        .rev()
        .filter(|o| new.member(&o.name).is_none())
        .map(|o| o.name.clone())
        .collect();
    plan
}

/// How `new` differs from `old`: `None` if not at all.
fn compare(
    old: &Member,
    new: &Member,
    replaced: &BTreeSet<&str>,
    changed: &BTreeSet<&str>,
) -> Option<Update> {
    if old.rtype != new.rtype {
        return Some(Update::Replace);
    }
    let mut worst = None;
    let mut note = |u: Update| {
        if worst != Some(Update::Replace) {
            worst = Some(u);
        }
    };
    for spec in new.rtype.properties() {
        let a = old.properties.get(spec.name);
        let b = new.properties.get(spec.name);
        let differs = a.map(Expr::canonical) != b.map(Expr::canonical)
            || b.is_some_and(|b| refers_to_change(b, replaced, changed));
        if differs {
            note(spec.update);
        }
    }
    let meta = |m: &Member| {
        m.metadata
            .as_ref()
            .map(Expr::canonical)
            .unwrap_or(Json::Null)
    };
    if meta(old) != meta(new)
        || new
            .metadata
            .as_ref()
            .is_some_and(|m| refers_to_change(m, replaced, changed))
    {
        note(Update::InPlace);
    }
    worst
}

/// Whether `e` refers to the id of a replaced member or an attribute of a changed one. A
/// group reference stands for all of its members (`compute` for `compute-0`, …).
fn refers_to_change(e: &Expr, replaced: &BTreeSet<&str>, changed: &BTreeSet<&str>) -> bool {
    let hits = |set: &BTreeSet<&str>, r: &str| {
        set.iter().any(|m| {
            *m == r
                || m.strip_prefix(r)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|i| i.parse::<usize>().is_ok())
        })
    };
    let mut found = false;
    e.walk(&mut |x| match &x.kind {
        ExprKind::GetResource(r) => found |= hits(replaced, r),
        ExprKind::GetAttr { resource, .. } => found |= hits(changed, resource),
        _ => {}
    });
    found
}
