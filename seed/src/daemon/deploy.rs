//! The seed's side of deploy: the image store served under the HTTP root, the agent's deploy
//! command, its progress reports and the deployed image's "booted".
//!
//! Flow (see [`crate::lifecycle`] for the states):
//! 1. `deploy` (REST or CLI) → the lifecycle's first hardware action is [`Action::Deploy`]
//!    (`crate::lifecycle::Action::Deploy`): [`Daemon::prepare_deploy`] verifies the image with
//!    [`ImageStore::verify`] (re-hashed unless unchanged since the last check), issues the
//!    node's credential and queues [`Command::Deploy`] for the agent's next heartbeat. Only then
//!    does the node worker set PXE and power the node on, so a missing or corrupted image fails
//!    the step (`image refused`) with nothing powered.
//! 2. The agent GETs `stream_url` (`http://<server_ip>:<http_port>/<images path>/<sha256>/<file>`,
//!    plain files of the HTTP server, Range/HEAD included; the root resolver refuses `..` and
//!    symlinks out) and posts [`Progress`]; reports of another op than the node's current one
//!    are dropped. `done` → [`Event::ImageWritten`] (boot from disk, power-cycle), `failed` →
//!    [`Event::Failed`] with the agent's reason.
//! 3. The image's first boot posts `booted` with its credential → [`Event::Deployed`]: active.
//!
//! The deploy command is repeated on every heartbeat until the image is written (a rebooted
//! agent picks its work up again; the agent ignores an op it is already running). The
//! credential is a secret: it is in the command only, never in logs or node views. It is
//! derived from the seed's key and (node, op), so a seed restarted or a new leader hands the
//! same command back ([`Daemon::resume_deploys`]): deploys in flight continue, never restart.

use super::locks::{Rank, Ranked};
use super::{chain, credentials, lock, off_runtime, Daemon, DaemonError};
use crate::inventory::Node;
use crate::lifecycle::{Action, DeployTarget, Event, State};
use crate::store::{nodes, StoreError};
use ::api::agent::{Command, DeployCommand, Phase, Progress};
use images::ImageStore;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use tracing::{debug, info};

/// The daemon's deploy state: the image store (set once at start) and the last progress of
/// each node's agent (memory only: it is for people watching, the lifecycle is in the store).
#[derive(Debug)]
pub struct DeployState {
    images: OnceLock<Images>,
    progress: Ranked<HashMap<String, Progress>>,
}

impl Default for DeployState {
    fn default() -> Self {
        DeployState {
            images: OnceLock::new(),
            progress: Ranked::new(Rank::Progress, HashMap::new()),
        }
    }
}

#[derive(Debug)]
struct Images {
    store: Arc<ImageStore>,
    /// The store's path under the HTTP root, `/`-separated, no leading or trailing `/`.
    url_path: String,
}

/// A root-device hint that is none of the shapes the agent reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("root hint {0:?}: expected size>=GIB, serial=…, model=… or name=…")]
pub struct BadRootHint(pub String);

/// Check a root-device hint's shape (`size>=N` GiB, optionally `G`/`GiB`, `serial=…`,
/// `model=…`, `name=…`), the same grammar the agent parses, so a typo is a 400 now rather than
/// a failed deploy later.
pub fn check_root_hint(hint: &str) -> Result<(), BadRootHint> {
    let hint = hint.trim();
    let bad = || Err(BadRootHint(hint.into()));
    if let Some(n) = hint.strip_prefix("size>=") {
        let n = n.trim().trim_end_matches("GiB").trim_end_matches('G');
        return n.parse::<u64>().map(|_| ()).or_else(|_| bad());
    }
    match hint.split_once('=') {
        Some((k, v)) if !v.is_empty() && matches!(k.trim(), "serial" | "model" | "name") => Ok(()),
        _ => bad(),
    }
}

/// Why a deploy was refused before anything was powered: the reason of `image refused`.
#[derive(Debug, thiserror::Error)]
pub enum DeployRefused {
    #[error("no image store is configured ([images] dir)")]
    NoImageStore,
    #[error("checking image {image}")]
    Check {
        image: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error(transparent)]
    Image(#[from] images::store::StoreError),
    #[error("reading the node")]
    ReadNode(#[source] StoreError),
    #[error("issuing the node's credential")]
    Credential(#[source] StoreError),
}

impl DeployRefused {
    /// The whole chain, for the node's `deploy failed` reason.
    pub fn reason(&self) -> String {
        chain(self)
    }
}

impl Daemon {
    /// Use `store`, served at `http://…/<url_path>/`, for deploys. Only the first call counts
    /// (returns false otherwise).
    pub fn set_images(&self, store: ImageStore, url_path: &str) -> bool {
        self.deploy
            .images
            .set(Images {
                store: Arc::new(store),
                url_path: url_path.trim_matches('/').to_string(),
            })
            .is_ok()
    }

    /// The image store, if one was set.
    pub fn images(&self) -> Option<&Arc<ImageStore>> {
        self.deploy.images.get().map(|i| &i.store)
    }

    /// The last progress node `name`'s agent reported for its current deploy.
    pub fn last_progress(&self, name: &str) -> Option<Progress> {
        lock(&self.deploy.progress).get(name).cloned()
    }

    /// Drop node `name`'s last agent progress (a new step starts).
    pub(super) fn forget_progress(&self, name: &str) {
        lock(&self.deploy.progress).remove(name);
    }

    /// Operator request `deploy`.
    pub fn request_deploy(
        self: &Arc<Self>,
        name: &str,
        target: DeployTarget,
    ) -> Result<Node, DaemonError> {
        let n = self.apply(name, Event::Deploy(target), vec![])?;
        lock(&self.deploy.progress).remove(name);
        Ok(n)
    }

    /// Operator request `undeploy`: power off, tear down and clean; the node's credential is
    /// revoked so the old image can no longer act as the node.
    pub fn request_undeploy(
        self: &Arc<Self>,
        name: &str,
        full_wipe: bool,
    ) -> Result<Node, DaemonError> {
        self.apply(name, Event::Delete { full_wipe }, vec![])
    }

    /// After every committed transition (under the lifecycle lock): a node being torn down
    /// (whoever asked: operator, stack) loses its credential, so the old image can no longer
    /// act as the node, and its deploy progress.
    pub(super) fn after_deploy_transition(&self, node: &Node) {
        if node.lifecycle.state == State::Deleting {
            if let Err(e) = credentials::revoke(&*self.store, &node.name) {
                tracing::warn!(node = %node.name, error = %e, "revoking the node's credential");
            }
            lock(&self.deploy.progress).remove(&node.name);
        }
    }

    /// At start, and when this daemon starts to lead: deploys whose image was not yet written
    /// get their agent command back, the very one the agent may already be carrying out (same
    /// op, same derived credential, see [`super::agent_token::AgentTokens::credential`]): the
    /// agent, which kept retrying while the seed was away, goes on where its progress is (it
    /// ignores a command for the op it is running). A node whose boot toward the seed was not
    /// seen yet (its boot watchdog still armed) gets its PXE power cycle ordered again: the
    /// daemon that ordered it kept its hardware actions in memory and may have died before
    /// acting, and waiting for the watchdog ([`Daemon::resume`] re-arms it) would cost minutes.
    /// A node that did reach the seed is never power-cycled here. A failover or a restart does
    /// not start deploys over.
    ///
    /// The exception is a node on the `fake` driver: its agent ran inside the seed process
    /// that stopped, so nothing carries on; it fails now with a reason saying to deploy again,
    /// rather than at its deadline. A written image gets its boot from disk ordered again.
    pub(super) fn resume_deploys(self: &Arc<Self>) -> Result<(usize, usize), DaemonError> {
        let (mut resumed, mut failed) = (0, 0);
        for (n, _) in nodes::list(&*self.store)? {
            let lc = &n.lifecycle;
            if lc.state != State::Deploying || lc.maintenance.is_some() {
                continue;
            }
            if lc.image_written {
                // The image is written; the boot into it may have been lost with the daemon
                // that ordered it (its hardware actions were in memory): order it again. A node
                // already running its image is rebooted into it once more, nothing is
                // rewritten, and its first-boot service says "booted" again.
                if n.bmc.driver == crate::inventory::PowerDriver::Ipmi {
                    info!(node = %n.name, op = lc.op, "deploy resumed: boot from disk ordered again");
                    self.enqueue(
                        &n.name,
                        vec![
                            Action::SetBootDevice(crate::lifecycle::BootDevice::Disk),
                            Action::Reboot,
                        ],
                    );
                    resumed += 1;
                }
                continue;
            }
            match (&n.bmc.driver, &lc.target) {
                (crate::inventory::PowerDriver::Ipmi, Some(t)) => {
                    let mut actions = vec![Action::Deploy {
                        op: lc.op,
                        image: t.image.clone(),
                        root_hint: t.root_hint.clone(),
                    }];
                    if lc.boot_deadline_ms.is_some() {
                        info!(node = %n.name, op = lc.op, "deploy resumed: the agent's op is handed back, its PXE boot ordered again (not seen yet)");
                        self.rearm_on_reboot(&n.macs);
                        actions.extend([
                            Action::SetBootDevice(crate::lifecycle::BootDevice::Pxe),
                            Action::Reboot,
                        ]);
                    } else {
                        info!(node = %n.name, op = lc.op, "deploy resumed: the agent's op is handed back");
                    }
                    self.enqueue(&n.name, actions);
                    resumed += 1;
                }
                _ => {
                    let reason = "the seed restarted before the image was written; deploy again";
                    self.apply(
                        &n.name,
                        Event::Failed {
                            reason: reason.into(),
                        },
                        vec![],
                    )?;
                    failed += 1;
                }
            }
        }
        Ok((resumed, failed))
    }

    /// Whether a facts report from node `name`'s agent is just the ramdisk saying it is up for
    /// another step (deploying, cleaning): acknowledged without touching the lifecycle, so the
    /// agent moves on to heartbeats (a refusal would keep it re-reporting).
    pub fn facts_are_no_inspection(&self, name: &str) -> Result<bool, DaemonError> {
        let (n, _) =
            nodes::get(&*self.store, name)?.ok_or_else(|| DaemonError::NotFound(name.into()))?;
        Ok(matches!(
            n.lifecycle.state,
            State::Deploying | State::Cleaning
        ))
    }

    /// Carry out [`crate::lifecycle::Action::Deploy`]: verify the image, issue the credential,
    /// queue the agent's command. `Ok(false)`: the node is no longer on deploy `op` (stale
    /// batch); `Err`: refused, nothing was done.
    pub(super) async fn prepare_deploy(
        self: &Arc<Self>,
        name: &str,
        op: u64,
        image: &str,
        root_hint: &Option<String>,
    ) -> Result<bool, DeployRefused> {
        let Some(imgs) = self.deploy.images.get() else {
            return Err(DeployRefused::NoImageStore);
        };
        let store = imgs.store.clone();
        let image_name = image.to_string();
        // Hashing a large stream is blocking work.
        let img = tokio::task::spawn_blocking(move || store.verify(&image_name))
            .await
            .map_err(|source| DeployRefused::Check {
                image: image.into(),
                source,
            })??;
        let (me, name, image, root_hint) = (
            self.clone(),
            name.to_string(),
            image.to_string(),
            root_hint.clone(),
        );
        // The lifecycle lock and a store commit (the credential): off the runtime's threads.
        off_runtime(move || me.hand_over_deploy(&name, op, &image, root_hint, img)).await
    }

    /// The locked half of [`Daemon::prepare_deploy`], once the image is verified: if the node
    /// is still on deploy `op`, issue its credential and queue the agent's command.
    fn hand_over_deploy(
        &self,
        name: &str,
        op: u64,
        image: &str,
        root_hint: Option<String>,
        img: images::store::Image,
    ) -> Result<bool, DeployRefused> {
        let Some(imgs) = self.deploy.images.get() else {
            return Err(DeployRefused::NoImageStore);
        };
        let (seed_url, seed_ca) = self.settings.agent_url();
        let seed_ca = seed_ca.map(str::to_string);
        let http_url = self.settings.http_url();
        let _g = lock(&self.lifecycle_lock);
        let current = match nodes::get(&*self.store, name) {
            Ok(Some((n, _))) => n,
            Ok(None) => return Ok(false),
            Err(e) => return Err(DeployRefused::ReadNode(e)),
        };
        if current.lifecycle.state != State::Deploying || current.lifecycle.op != op {
            debug!(node = name, op, "deploy superseded before it started");
            return Ok(false);
        }
        // Derived from (node, op): handing the same deploy over again (after a restart or a
        // failover) gives the agent the same credential, and rewrites nothing.
        let credential = self.agent_tokens.credential(name, op);
        credentials::issue_token(&*self.store, name, &credential)
            .map_err(DeployRefused::Credential)?;
        // Plain HTTP like every file a node fetches: the agent checks the stream's sha256, which
        // the command (over the agents' HTTPS, when on) carries.
        let stream_url = format!("{http_url}/{}/{}", imgs.url_path, img.relative);
        info!(
            node = name,
            op,
            image,
            sha256 = %img.manifest.stream.sha256,
            %stream_url,
            "deploy handed to the agent"
        );
        let cmd = DeployCommand {
            op,
            node: name.to_string(),
            manifest: img.manifest,
            stream_url,
            root_hint,
            credential: credential.into(),
            seed_url,
            seed_ca,
        };
        lock(&self.deploy.progress).remove(name);
        lock(&self.commands).insert(name.to_string(), Command::Deploy(Box::new(cmd)));
        Ok(true)
    }

    /// A progress report from node `name`'s agent, for its deploy or its cleaning. Returns
    /// false when it was dropped (not the node's current deploy or cleaning op). `done` moves
    /// the lifecycle on (image written, or cleaned), `failed` fails the step with the reason.
    pub fn agent_progress(self: &Arc<Self>, name: &str, p: Progress) -> Result<bool, DaemonError> {
        let op = p.op;
        let (n, _) =
            nodes::get(&*self.store, name)?.ok_or_else(|| DaemonError::NotFound(name.into()))?;
        let cleaning = n.lifecycle.state == State::Cleaning;
        // Re-checked under the lifecycle lock by `apply_if`.
        let current = move |n: &Node| {
            let step = if cleaning {
                State::Cleaning
            } else {
                State::Deploying
            };
            n.lifecycle.state == step && n.lifecycle.op == op
        };
        let accepted = match p.phase {
            Phase::Done => {
                let ev = if cleaning {
                    Event::Cleaned
                } else {
                    Event::ImageWritten
                };
                self.apply_if(name, ev, vec![], &current)?.is_some()
            }
            Phase::Failed => {
                let reason = match p.error.as_deref().map(str::trim) {
                    Some(e) if !e.is_empty() => e.to_string(),
                    _ => format!("the agent failed in {:?} without a reason", p.phase),
                };
                self.apply_if(name, Event::Failed { reason }, vec![], &current)?
                    .is_some()
            }
            _ => current(&n),
        };
        if accepted {
            debug!(node = name, op, phase = ?p.phase, bytes = p.bytes, total = p.total, "agent progress");
            lock(&self.deploy.progress).insert(name.to_string(), p);
        } else {
            info!(node = name, op, phase = ?p.phase, "progress of another op dropped");
        }
        Ok(accepted)
    }

    /// "booted" from the deployed image of node `name` (whose credential it presented).
    /// Repeating it once active is fine (the first-boot service may retry).
    pub fn node_booted(self: &Arc<Self>, name: &str) -> Result<Node, DaemonError> {
        let (n, _) =
            nodes::get(&*self.store, name)?.ok_or_else(|| DaemonError::NotFound(name.into()))?;
        if n.lifecycle.state == State::Active {
            return Ok(n);
        }
        self.apply(name, Event::Deployed, vec![])
    }
}

#[cfg(test)]
mod tests {
    use super::check_root_hint;

    #[test]
    fn root_hints() {
        for ok in [
            "size>=4",
            "serial=D1",
            "model=QEMU HARDDISK",
            "name=vda",
            " size>= 20 ",
        ] {
            assert_eq!(check_root_hint(ok), Ok(()), "{ok}");
        }
        for bad in [
            "size>=x",
            "size>=4T",
            "serial=",
            "vda",
            "size<=4",
            "colour=red",
            "",
        ] {
            assert!(check_root_hint(bad).is_err(), "{bad}");
        }
    }
}
