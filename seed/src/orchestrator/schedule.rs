//! Step 1: scheduling. Every server member without a node gets a free node matching its
//! `profile` capability and minimum RAM/disk, all or nothing; and a member whose node failed it
//! moves to another matching node.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

use super::{Action, MemberStatus, NodeInfo, Pass, View};
use crate::template::{Member, ResourceType, Stack};

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
    /// What member `m` asks of its node (its template properties, evaluated).
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
    pub(super) fn schedule(&mut self, stack: &Stack) -> bool {
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

    /// Move a member off the node that failed it, onto another matching free node.
    pub(super) fn replace(&mut self, stack: &Stack, m: &Member, why: &str) {
        super::requests::unplace(&mut self.rec, stack, &m.name);
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
}
