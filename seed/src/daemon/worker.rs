//! The per-node workers: each node's hardware actions run in order on its own tokio task (so
//! a slow BMC never blocks another node), through the node's power driver (made on first use
//! and kept, so IPMI sessions and fake BMCs live on). What a worker does with the store (the
//! lifecycle events its results feed back, the deploy and wipe hand-over) runs on the blocking
//! pool ([`off_runtime`]).

use super::{fakeagent, lock, off_runtime, Daemon, DaemonError};
use crate::inventory::{Bmc, Node, PowerDriver as DriverKind};
use crate::lifecycle::{Action, BootDevice, Event, State};
use crate::power::{
    self, FakeBmc, FakePower, IpmiConfig, IpmiDriver, Password, PowerAction, PowerDriver,
    PowerState,
};
use crate::store::nodes;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{debug, warn};

impl Daemon {
    pub(super) fn enqueue(self: &Arc<Self>, name: &str, actions: Vec<Action>) {
        let mut workers = lock(&self.workers);
        let tx = workers.entry(name.to_string()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(self.clone().worker(name.to_string(), rx));
            tx
        });
        if tx.send(actions).is_err() {
            warn!(node = name, "node worker is gone; actions dropped");
        }
    }

    async fn worker(self: Arc<Self>, name: String, mut rx: mpsc::UnboundedReceiver<Vec<Action>>) {
        while let Some(batch) = rx.recv().await {
            self.execute(&name, batch).await;
        }
    }

    pub(super) fn driver(&self, name: &str, bmc: &Bmc) -> Arc<dyn PowerDriver> {
        let mut drivers = lock(&self.drivers);
        let timing = drivers.fake_timing;
        drivers
            .by_node
            .entry(name.to_string())
            .or_insert_with(|| match self.me.upgrade() {
                Some(me) if bmc.driver == DriverKind::Fake => {
                    let node = nodes::get(&*self.store, name)
                        .ok()
                        .flatten()
                        .map(|(n, _)| n);
                    node.and_then(|n| fakeagent::driver(&me, &n, timing))
                        .unwrap_or_else(|| build_driver(name, bmc))
                }
                _ => build_driver(name, bmc),
            })
            .clone()
    }

    /// Run one transition's hardware actions in order; the first failure fails the step.
    async fn execute(self: &Arc<Self>, name: &str, batch: Vec<Action>) {
        if !self.acting() {
            // A deposed leader: the new one re-derives the node's work from the store.
            warn!(
                node = name,
                actions = batch.len(),
                "not the leader: hardware actions dropped"
            );
            return;
        }
        let node = match nodes::get(&*self.store, name) {
            Ok(Some((n, _))) => n,
            Ok(None) => return,
            Err(e) => {
                warn!(node = name, error = %e, "reading node for its actions");
                return;
            }
        };
        let drv = self.driver(name, &node.bmc);
        let mut follow = None;
        // A deleting node's power-off done → torn down (cleaning starts).
        let tearing_down = node.lifecycle.state == State::Deleting
            && node.lifecycle.maintenance.is_none()
            && batch.contains(&Action::PowerOff);
        for action in batch {
            // Leadership can end mid-batch (a BMC call retries for up to 10 s): a deposed
            // leader must not send the rest, which the new leader re-derives from the store.
            if action_needs_leader(&action) && !self.acting() {
                warn!(
                    node = name,
                    ?action,
                    "no longer the leader: the rest of the batch dropped"
                );
                return;
            }
            let res = match &action {
                Action::VerifyPower => drv.status().await.map(|_| {
                    follow = Some(Event::Verified);
                }),
                Action::SetBootDevice(d) => {
                    let dev = match d {
                        BootDevice::Pxe => power::BootDevice::Pxe,
                        BootDevice::Disk => power::BootDevice::Disk,
                    };
                    drv.set_boot_device(dev, false).await
                }
                Action::PowerOn => drv.power(PowerAction::On).await,
                Action::PowerOff => drv.power(PowerAction::Off).await,
                Action::Reboot => {
                    let done = match drv.status().await {
                        Ok(PowerState::On) => drv.power(PowerAction::Cycle).await,
                        Ok(PowerState::Off) => drv.power(PowerAction::On).await,
                        Err(e) => Err(e),
                    };
                    if done.is_ok() {
                        self.rebooted(&node.macs);
                    }
                    done
                }
                Action::Deploy {
                    op,
                    image,
                    root_hint,
                } => {
                    // Checked before anything else of the batch: a refused image fails the
                    // step with nothing powered.
                    match self.prepare_deploy(name, *op, image, root_hint).await {
                        Ok(true) => Ok(()),
                        // The step moved on meanwhile: this batch is stale.
                        Ok(false) => return,
                        Err(refused) => {
                            let reason = refused.reason();
                            warn!(node = name, %reason, "deploy refused");
                            let ev = Event::ImageRefused { reason };
                            if let Err(e) = self.apply_blocking(name, ev).await {
                                debug!(node = name, error = %e, "refusal not recorded");
                            }
                            return;
                        }
                    }
                }
                Action::WipeDisks(plan) => {
                    // Queued before the node is powered into the ramdisk; a stale batch (the
                    // node moved on) stops here.
                    let (me, n, op, plan) = (
                        self.clone(),
                        name.to_string(),
                        node.lifecycle.op,
                        plan.clone(),
                    );
                    if !off_runtime(move || me.prepare_wipe(&n, op, &plan)).await {
                        return;
                    }
                    Ok(())
                }
                Action::Persist | Action::Deadline { .. } => Ok(()),
            };
            match res {
                Ok(()) => debug!(node = name, ?action, bmc = %drv.target(), "done"),
                Err(e) => {
                    warn!(node = name, ?action, error = %e, "power action failed");
                    let reason = format!("{action:?}: {e}");
                    if let Err(e) = self.apply_blocking(name, Event::Failed { reason }).await {
                        debug!(node = name, error = %e, "failure not recorded as a step failure");
                    }
                    return;
                }
            }
        }
        if tearing_down {
            let (me, n, op) = (self.clone(), name.to_string(), node.lifecycle.op);
            off_runtime(move || me.torn_down(&n, op)).await;
        }
        if let Some(ev) = follow {
            let (me, n) = (self.clone(), name.to_string());
            off_runtime(move || me.verified(&n, ev)).await;
        }
    }

    /// [`Daemon::apply`] on the blocking pool (for the node workers).
    async fn apply_blocking(
        self: &Arc<Self>,
        name: &str,
        event: Event,
    ) -> Result<Node, DaemonError> {
        let (me, name) = (self.clone(), name.to_string());
        off_runtime(move || me.apply(&name, event, vec![])).await
    }

    /// The BMC answered (`ev` is `verified`): record it (the lifecycle goes on to inspect when
    /// that was asked from `enroll`).
    fn verified(self: &Arc<Self>, name: &str, ev: Event) {
        if let Err(e) = self.apply(name, ev, vec![]) {
            warn!(node = name, error = %e, "verification result");
        }
    }
}

fn build_driver(name: &str, bmc: &Bmc) -> Arc<dyn PowerDriver> {
    let password = Password::new(bmc.password.expose());
    match bmc.driver {
        DriverKind::Ipmi => {
            let mut cfg = IpmiConfig::new(
                bmc.address.clone(),
                bmc.port,
                bmc.username.clone(),
                password,
            );
            cfg.allow_ipmi15 = bmc.allow_ipmi15;
            Arc::new(IpmiDriver::new(cfg))
        }
        DriverKind::Fake => {
            let fake = FakeBmc::new(name, bmc.username.clone(), password.clone());
            Arc::new(FakePower::new(fake, bmc.username.clone(), password))
        }
    }
}

/// Whether `action` touches the machine (its BMC or its agent's work), which only the leader
/// may do.
fn action_needs_leader(action: &Action) -> bool {
    !matches!(action, Action::Persist | Action::Deadline { .. })
}
