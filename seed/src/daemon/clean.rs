//! The seed's side of cleaning (Deleting → Cleaning → available):
//! 1. `undeploy`/stack delete → the lifecycle powers the node off ([`Event::Delete`]); when the
//!    node worker's power-off succeeds, [`Daemon::torn_down`] feeds [`Event::TornDown`] (the
//!    credential was already revoked on entering `deleting`, see `after_deploy_transition`).
//! 2. Cleaning's [`crate::lifecycle::Action::WipeDisks`] → [`Daemon::prepare_wipe`] queues
//!    [`Command::Wipe`] for the agent's next heartbeat; the node PXE-boots the ramdisk (the boot
//!    policy answers the ramdisk for `cleaning`).
//! 3. The agent's progress for the current op: `done` → [`Event::Cleaned`] (available, powered
//!    off), `failed` → [`Event::Failed`] (clean failed, with the agent's reason); reports of
//!    another op are dropped (see `agent_progress` in `deploy.rs`).
//!
//! The agent's command is memory only. At start ([`Daemon::resume_cleaning`]) a node left in
//! `deleting` gets its power-off again (whose success tears it down), one in `cleaning` its wipe
//! again (the plan is recomputed from the stored node; it carries no secret), instead of
//! waiting for the step's deadline.

use super::{lock, Daemon};
use crate::inventory::Node;
use crate::lifecycle::{Action, Event, State, WipePlan};
use crate::store::nodes;
use ::api::agent::{Command, WipeCommand, WipeDisk, WipeExtent};
use std::sync::Arc;
use tracing::{debug, info, warn};

/// The agent's command for `plan` (cleaning op `op` of `node`). Disks go by name and, when the
/// inventory has one, serial. If the seed cannot identify one of them (declared only: no name,
/// no serial), the disk list is left empty, which tells the agent to clean every disk it sees:
/// better too much than a disk left with the old image.
pub fn wipe_command(node: &Node, op: u64, plan: &WipePlan) -> WipeCommand {
    let known = &node.properties.disks;
    let mut disks = Vec::new();
    for (i, d) in plan.disks.iter().enumerate() {
        let inv = if d.disk.starts_with('#') {
            known.get(i)
        } else {
            known.iter().find(|k| k.name == d.disk)
        };
        let serial = inv.and_then(|k| k.serial.clone()).unwrap_or_default();
        if d.disk.starts_with('#') && serial.is_empty() {
            disks.clear();
            break;
        }
        disks.push(WipeDisk {
            name: d.disk.clone(),
            serial,
            size_bytes: d.size_bytes,
            extents: d
                .extents
                .iter()
                .map(|e| WipeExtent {
                    offset: e.offset,
                    len: e.len,
                })
                .collect(),
        });
    }
    WipeCommand {
        op,
        full: plan.full,
        disks,
    }
}

impl Daemon {
    /// At start: pick up deletes and cleanings the last run left (see the module doc).
    /// Returns how many nodes were picked up.
    pub(super) fn resume_cleaning(self: &Arc<Self>) -> Result<usize, super::DaemonError> {
        let mut n_resumed = 0;
        for (n, _) in nodes::list(&*self.store)? {
            let lc = &n.lifecycle;
            if lc.maintenance.is_some() {
                continue;
            }
            match lc.state {
                State::Deleting => self.enqueue(&n.name, vec![Action::PowerOff]),
                State::Cleaning => {
                    let plan = WipePlan::for_disks(&n.properties.disks, lc.wipe_full);
                    if !self.prepare_wipe(&n.name, lc.op, &plan) {
                        continue;
                    }
                }
                _ => continue,
            }
            info!(node = %n.name, state = %lc.state, "resumed after a restart");
            n_resumed += 1;
        }
        Ok(n_resumed)
    }

    /// The power-off of node `name`'s deleting step `op` succeeded: the node is torn down and
    /// cleaning starts. Nothing when the node moved on meanwhile.
    pub(super) fn torn_down(self: &Arc<Self>, name: &str, op: u64) {
        let cond = move |n: &Node| n.lifecycle.state == State::Deleting && n.lifecycle.op == op;
        match self.apply_if(name, Event::TornDown, vec![], &cond) {
            Ok(Some(_)) => {}
            Ok(None) => debug!(node = name, op, "torn down, but the node moved on"),
            Err(e) => warn!(node = name, error = %e, "torn down not recorded"),
        }
    }

    /// Queue the agent's wipe for node `name`'s cleaning op `op`. False when the node is no
    /// longer on that op (stale batch: nothing queued).
    pub(super) fn prepare_wipe(&self, name: &str, op: u64, plan: &WipePlan) -> bool {
        let _g = lock(&self.lifecycle_lock);
        let node = match nodes::get(&*self.store, name) {
            Ok(Some((n, _))) => n,
            Ok(None) => return false,
            Err(e) => {
                warn!(node = name, error = %e, "reading the node for its wipe");
                return false;
            }
        };
        if node.lifecycle.state != State::Cleaning || node.lifecycle.op != op {
            debug!(node = name, op, "wipe superseded before it started");
            return false;
        }
        let cmd = wipe_command(&node, op, plan);
        info!(
            node = name,
            op,
            full = cmd.full,
            disks = cmd.disks.len(),
            "wipe handed to the agent"
        );
        self.forget_progress(name);
        lock(&self.commands).insert(name.to_string(), Command::Wipe(cmd));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Bmc, Disk, Partition, PowerDriver, Secret};

    fn node_with(disks: Vec<Disk>) -> Node {
        let bmc = Bmc {
            driver: PowerDriver::Fake,
            address: String::new(),
            port: 623,
            username: "u".into(),
            password: Secret::new("p"),
        };
        let mut n = Node::new("n1", vec![], bmc, 0);
        n.properties.disks = disks;
        n
    }

    fn disk(name: &str, serial: Option<&str>) -> Disk {
        Disk {
            name: name.into(),
            size_bytes: 8 << 30,
            model: None,
            serial: serial.map(Into::into),
            partitions: vec![Partition {
                start_bytes: 1 << 20,
                size_bytes: 1 << 30,
            }],
        }
    }

    #[test]
    fn command_carries_the_plan_with_serials() {
        let n = node_with(vec![disk("vda", Some("S1")), disk("vdb", None)]);
        let plan = WipePlan::for_disks(&n.properties.disks, false);
        let c = wipe_command(&n, 4, &plan);
        assert_eq!((c.op, c.full, c.disks.len()), (4, false, 2));
        assert_eq!(
            (c.disks[0].name.as_str(), c.disks[0].serial.as_str()),
            ("vda", "S1")
        );
        assert_eq!(
            (c.disks[1].name.as_str(), c.disks[1].serial.as_str()),
            ("vdb", "")
        );
        assert_eq!(c.disks[0].extents.len(), plan.disks[0].extents.len());
        assert!(!c.disks[0].extents.is_empty());
    }

    #[test]
    fn unidentifiable_disk_means_every_disk() {
        let n = node_with(vec![disk("vda", None), disk("", None)]);
        let plan = WipePlan::for_disks(&n.properties.disks, true);
        let c = wipe_command(&n, 1, &plan);
        assert!(c.full);
        assert!(c.disks.is_empty());
        // A declared disk with a serial is still identifiable.
        let n = node_with(vec![disk("", Some("S9"))]);
        let c = wipe_command(&n, 1, &WipePlan::for_disks(&n.properties.disks, false));
        assert_eq!(c.disks[0].serial, "S9");
    }
}
