//! The seed daemon: the store, the lifecycle driver, the boot policy answered from node state
//! and the agent/REST API, wired to the netboot services.
//!
//! [`Daemon::apply`] is the one place events reach the lifecycle: under one lock it reads the
//! node, calls [`lifecycle::step`], persists the result with compare-and-swap (the lifecycle
//! orders `Persist` first, so the state is durable before any hardware is touched), refreshes the
//! in-memory boot table, and then hands the hardware actions to the node's worker task (one per
//! node, so a node's actions run in order and a slow BMC never blocks another node) and arms the
//! deadlines as tokio timers that feed [`Event::Timeout`] back.
//!
//! The PXE boot watchdog ([`lifecycle`] module doc): [`Daemon::boot_seen`] feeds
//! [`Event::BootSeen`] when a node whose boot deadline is armed has its iPXE script served
//! ([`BootPolicy::script_served`], from the HTTP boot server's `/ipxe/<mac>`) or makes an
//! authenticated agent call; a missed one is re-armed like the step deadlines, and each
//! power-cycle it causes is logged at warn and counted (`seed_pxe_boot_retries_total`).
//!
//! Power goes through an [`IpmiDriver`] built from the node's BMC fields, or a [`FakePower`]
//! when the node's driver is `fake`. A `power off` the lifecycle asks for is also offered to the
//! agent as its next heartbeat [`Command`], so a node still running the ramdisk can shut down
//! by itself.
//!
//! Store commits fsync. The node workers, the timers and the stack reconcile loop make theirs
//! on tokio's blocking pool ([`off_runtime`], `spawn_blocking`), never on a runtime worker
//! thread; so do the calls that only wait for the lifecycle lock, which another thread holds
//! across its commit.

pub mod admin;
pub mod agent_token;
pub mod api;
pub mod api_tls;
pub mod api_tokens;
pub mod clean;
pub mod config;
pub mod credentials;
pub mod deploy;
mod discovery;
pub mod fakeagent;
mod handout;
mod locks;
pub mod metadata;
pub mod metadata_api;
pub mod metrics;
pub mod policy;
pub mod stacks;
#[cfg(test)]
pub(crate) mod test_support;
mod worker;

use crate::inventory::{Bmc, Mac, Node, PowerDriver as DriverKind, Secret};
use crate::lifecycle::{self, Action, Event, LifecycleError, State, Timeouts};
use crate::power::PowerDriver;
use crate::store::{nodes, Expect, Op, Store, StoreError};
use ::api::Command;
use locks::{Guard, Rank, Ranked, RankedRw};
use netboot::boot::Chain;
use netboot::{BootAction, BootPolicy, MacAddr};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, MutexGuard};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// The store table holding the last facts report of each node (JSON, keyed by node name).
pub const FACTS: &str = "facts";

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("no node named {0:?}")]
    NotFound(String),
    /// The message carries the whole cause (the daemon logs these with `%e`, one line), so the
    /// store error is not also given as the source.
    #[error("store: {}", chain(.0))]
    Store(StoreError),
    #[error("refused by the lifecycle")]
    Refused(#[from] LifecycleError),
}

impl From<StoreError> for DaemonError {
    fn from(e: StoreError) -> Self {
        DaemonError::Store(e)
    }
}

/// `e: its source: its source …`: an error and its whole cause on one line.
pub(crate) use fsutil::error_chain as chain;

/// What the daemon needs besides its store.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The seed's address on the provisioning network (in `seed.url=`).
    pub server_ip: Ipv4Addr,
    /// The HTTP boot server's port (in `seed.url=`).
    pub http_port: u16,
    pub timeouts: Timeouts,
    pub heartbeat_secs: u64,
    pub provide_after_inspect: bool,
    /// The agents' HTTPS (`[agent] tls`), if on.
    pub agent_tls: Option<AgentTls>,
}

/// Where the agents reach the seed over HTTPS, and the CA they pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTls {
    /// The HTTPS port on the provisioning network.
    pub port: u16,
    /// The SHA-256 (hex) of the seed's CA certificate.
    pub ca_sha256: String,
}

impl Settings {
    /// The base URL the agents call (`seed.url=`, the identity's `seed_url`) and the CA pin
    /// that goes with it: HTTPS with the agents' TLS, else the boot server's plain HTTP.
    pub fn agent_url(&self) -> (String, Option<&str>) {
        match &self.agent_tls {
            Some(t) => (
                format!("https://{}:{}", self.server_ip, t.port),
                Some(t.ca_sha256.as_str()),
            ),
            None => (
                format!("http://{}:{}", self.server_ip, self.http_port),
                None,
            ),
        }
    }

    /// The boot server's plain HTTP base (image streams: verified by their sha256).
    pub fn http_url(&self) -> String {
        format!("http://{}:{}", self.server_ip, self.http_port)
    }
}

/// The daemon's shared state.
///
/// Its `impl` is spread by concern: this file (construction, [`Daemon::apply`], timers, the
/// boot table), `worker.rs` (the node workers and their power drivers), `deploy.rs` (images, the agent's deploy
/// command and progress, "booted"), `clean.rs` (tear-down and the wipe command) and `stacks.rs`
/// (stack records and the reconcile loop); `api.rs`, `metadata_api.rs` and `fakeagent.rs` only
/// call it.
///
/// # Locks
///
/// Six locks, each taken only while every lock the thread already holds comes earlier in this
/// list (debug builds check it on every acquisition and panic naming both locks, see `locks.rs`):
///
/// 1. `lifecycle_lock` — serialises every read-check-write of a node record: [`Daemon::apply`]
///    (read → [`lifecycle::step`] → commit → refresh), enrollment, stack allocation and release,
///    and handing an agent its deploy or wipe command only if the node is still on that op. It
///    is held across store commits, so it is taken off the runtime's worker threads except by
///    the API handlers. Its data: the nodes to inspect once their BMC is verified.
/// 2. `drivers` — each node's power driver (made on first use, kept so IPMI sessions and fake
///    BMCs live on) and the fake machines' timing.
/// 3. `boot` (read-write) — the boot table: each MAC's boot action and chain, and the nodes
///    whose boot watchdog is armed. Written by `refresh` under `lifecycle_lock` on every write of
///    a node; read by netboot (DHCP, TFTP, HTTP) and fake machines without any other lock.
/// 4. `commands` — each agent's next heartbeat command (memory only).
/// 5. `deploy.progress` — each agent's last progress report (memory only).
/// 6. `workers` — each node's worker queue (made on first use).
///
/// In practice only `lifecycle_lock` is held while taking another (`boot`, `commands`,
/// `deploy.progress`); the others are taken alone. Locks inside other parts are leaves, taken
/// last and holding nothing else: the store's own, `metrics`' histograms, the metadata
/// notifier's map, a fake machine's state. No lock is held across an `.await` (the guards are
/// `!Send`).
pub struct Daemon {
    /// Itself, for drivers and tasks that call back into the daemon (fake machines).
    me: std::sync::Weak<Daemon>,
    store: Arc<dyn Store>,
    settings: Settings,
    /// MAC → boot action and chain, and who awaits a boot; rebuilt for a node on every write.
    boot: RankedRw<BootTable>,
    /// Serialises read-step-persist of every node; holds who inspects after verification.
    lifecycle_lock: Ranked<Sequencing>,
    /// What each node's agent gets on its next heartbeat.
    commands: Ranked<HashMap<String, Command>>,
    /// One power driver per node, kept so IPMI sessions (and fake BMC state) live on.
    drivers: Ranked<Drivers>,
    /// One worker per node executing its hardware actions in order.
    workers: Ranked<HashMap<String, mpsc::UnboundedSender<Vec<Action>>>>,
    /// Step durations and counts for `/metrics`.
    metrics: metrics::DaemonMetrics,
    /// Wakes metadata long-polls and whoever waits for signals.
    metadata_notify: metadata::Notifier,
    /// Wakes the stack reconcile loop (a node changed, a stack was asked for).
    stacks_wake: tokio::sync::Notify,
    /// The image store and the agents' last deploy progress ([`deploy`]).
    deploy: deploy::DeployState,
    /// Mints and checks the ramdisk agents' per-boot tokens.
    agent_tokens: agent_token::AgentTokens,
    /// In HA: whether this daemon leads right now ([`Daemon::set_leader_gate`]); unset, it
    /// always acts (one daemon on its own store).
    leader_gate: std::sync::OnceLock<LeaderGate>,
}

/// "Do I lead now?", asked before each hardware action (see [`Daemon::acting`]).
pub type LeaderGate = Arc<dyn Fn() -> bool + Send + Sync>;

/// What the boot table holds (under `Daemon::boot`).
#[derive(Default)]
struct BootTable {
    /// MAC → boot action and chain.
    by_mac: HashMap<MacAddr, policy::BootEntry>,
    /// Nodes whose boot watchdog is armed (kept by `refresh`), so that script fetches and
    /// agent calls only take the lifecycle lock when there is a deadline to meet.
    awaiting_boot: HashSet<String>,
    /// Who may get each MAC's agent token ([`handout`]).
    handouts: handout::Handouts,
}

/// What the lifecycle lock holds besides the right to step nodes.
#[derive(Default)]
struct Sequencing {
    /// DHCP discovery's enrolment budget.
    discovery: discovery::Budget,
}

/// The power drivers (under `Daemon::drivers`).
#[derive(Default)]
struct Drivers {
    by_node: HashMap<String, Arc<dyn PowerDriver>>,
    /// How fast fake machines (`fake_agent` nodes) made from now on boot and report.
    fake_timing: fakeagent::Timing,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Take one of the daemon's mutexes (in the order [`Daemon`] documents).
fn lock<T>(m: &Ranked<T>) -> Guard<MutexGuard<'_, T>> {
    m.lock()
}

/// Run `f` on tokio's blocking pool and wait for it: what the node workers and timers do with
/// the store (commits fsync, and the lifecycle lock is held across them) must not block a
/// runtime worker thread. A panic in `f` resumes here.
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Cancelled: the runtime is shutting down, and this task goes with it.
            Err(_) => std::future::pending().await,
        },
    }
}

/// Milliseconds since the Unix epoch: the lifecycle's clock (`created_ms`, deadlines).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether `c` is the agent's work still to do in step `lc` (a deploy whose image is not
/// written yet, a wipe), not a command a new boot must forget.
fn step_command(c: &Command, lc: &lifecycle::Lifecycle) -> bool {
    match c {
        Command::Deploy(d) => d.op == lc.op && !lc.image_written,
        Command::Wipe(w) => w.op == lc.op,
        Command::None | Command::PowerOff | Command::Reboot => false,
    }
}

fn to_netboot(mac: Mac) -> MacAddr {
    MacAddr(mac.0)
}

impl Daemon {
    /// A daemon over `store`; the boot table is filled from the stored nodes.
    pub fn new(store: Arc<dyn Store>, settings: Settings) -> Result<Arc<Daemon>, DaemonError> {
        let agent_tokens = agent_token::AgentTokens::load_or_create(&*store)?;
        let d = Arc::new_cyclic(|me| Daemon {
            me: me.clone(),
            store,
            settings,
            boot: RankedRw::new(Rank::Boot, BootTable::default()),
            lifecycle_lock: Ranked::new(Rank::Lifecycle, Sequencing::default()),
            commands: Ranked::new(Rank::Commands, HashMap::new()),
            drivers: Ranked::new(Rank::Drivers, Drivers::default()),
            workers: Ranked::new(Rank::Workers, HashMap::new()),
            metrics: metrics::DaemonMetrics::default(),
            metadata_notify: metadata::Notifier::default(),
            stacks_wake: tokio::sync::Notify::new(),
            deploy: deploy::DeployState::default(),
            agent_tokens,
            leader_gate: std::sync::OnceLock::new(),
        });
        for (n, _) in nodes::list(&*d.store)? {
            d.refresh(&n);
        }
        Ok(d)
    }

    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Step durations and counts (rendered at `/metrics`).
    pub fn metrics(&self) -> &metrics::DaemonMetrics {
        &self.metrics
    }

    /// How fast fake machines created from now on boot and report.
    pub fn set_fake_timing(&self, timing: fakeagent::Timing) {
        lock(&self.drivers).fake_timing = timing;
    }

    /// Re-arm the deadlines (the step's and the boot watchdog's) of nodes that were busy when
    /// the daemon last stopped (needs a tokio runtime); returns how many nodes. A deadline
    /// already past fires at once: the lifecycle fails the step, or power-cycles a node whose
    /// PXE boot never reached the seed. A step whose PXE boot was not seen yet gets it ordered
    /// again at once.
    pub fn resume(self: &Arc<Self>) -> Result<usize, DaemonError> {
        self.resume_deploys()?;
        self.resume_cleaning()?;
        let mut armed = 0;
        for (n, _) in nodes::list(&*self.store)? {
            let lc = &n.lifecycle;
            if !lc.state.is_busy() || lc.maintenance.is_some() {
                continue;
            }
            // A verification in flight when the last daemon (or leader) stopped is asked
            // again: reading the power state changes nothing, and its answer may carry an
            // inspection (`inspect_after_verify`) that would otherwise wait out the deadline.
            if lc.state == State::Verifying {
                self.enqueue(&n.name, vec![Action::VerifyPower]);
            }
            // An inspection or a cleaning whose PXE boot has not reached the seed yet: the
            // power cycle may have died with the daemon that ordered it (its hardware actions
            // were in memory); ordered again now rather than at the boot watchdog (deploys:
            // `resume_deploys`). A node that reached the seed is left to its agent.
            let pxe_step = matches!(lc.state, State::Inspecting | State::Cleaning);
            if pxe_step
                && lc.boot_deadline_ms.is_some()
                && n.bmc.driver == crate::inventory::PowerDriver::Ipmi
            {
                info!(node = %n.name, state = %lc.state, "resumed: its PXE boot ordered again (not seen yet)");
                self.rearm_on_reboot(&n.macs);
                self.enqueue(
                    &n.name,
                    vec![
                        Action::SetBootDevice(crate::lifecycle::BootDevice::Pxe),
                        Action::Reboot,
                    ],
                );
            }
            // The step's deadline and the boot watchdog's, whichever are armed.
            let mut any = false;
            for at in [lc.deadline_ms, lc.boot_deadline_ms].into_iter().flatten() {
                self.arm(&n.name, at);
                any = true;
            }
            armed += usize::from(any);
        }
        Ok(armed)
    }

    /// In HA: act (power, the agents' commands) only while `gate` says this daemon leads. Its
    /// store writes are fenced anyway; this keeps a deposed leader's queued hardware actions
    /// from running. Only the first call counts.
    pub fn set_leader_gate(&self, gate: LeaderGate) {
        let _ = self.leader_gate.set(gate);
    }

    /// Whether this daemon may act on hardware now: always on its own store, only while it
    /// leads in HA.
    pub fn acting(&self) -> bool {
        self.leader_gate.get().is_none_or(|g| g())
    }

    /// This daemon starts to lead (HA): what another daemon did meanwhile is in the store
    /// only, so the boot table is rebuilt from it, the agents' commands are re-derived and
    /// every deadline re-armed ([`Daemon::resume`]). Returns how many deadlines.
    pub fn take_over(self: &Arc<Self>) -> Result<usize, DaemonError> {
        lock(&self.commands).clear();
        for (n, _) in nodes::list(&*self.store)? {
            self.refresh(&n);
        }
        self.resume()
    }

    /// Feed `event` to node `name` now. `extra` writes go into the same commit as the node, so
    /// they happen only if the lifecycle accepts the event. Returns the node as stored.
    pub fn apply(
        self: &Arc<Self>,
        name: &str,
        event: Event,
        extra: Vec<Op>,
    ) -> Result<Node, DaemonError> {
        self.apply_if(name, event, extra, &|_| true)
            .map(|n| n.expect("an always-true condition holds"))
    }

    /// [`Daemon::apply`] only if `cond` holds for the stored node, checked under the same lock
    /// (e.g. "still the operation this report belongs to"); `None` when it does not.
    pub fn apply_if(
        self: &Arc<Self>,
        name: &str,
        event: Event,
        extra: Vec<Op>,
        cond: &dyn Fn(&Node) -> bool,
    ) -> Result<Option<Node>, DaemonError> {
        let event_name = event.name();
        let (node, actions) = {
            let _g = lock(&self.lifecycle_lock);
            let (mut node, rev) = nodes::get(&*self.store, name)?
                .ok_or_else(|| DaemonError::NotFound(name.into()))?;
            if !cond(&node) {
                return Ok(None);
            }
            let before = node.lifecycle.state.clone();
            let retries_before = node.lifecycle.boot_retries;
            let now = now_ms();
            let actions = lifecycle::step(&mut node, event, now, &self.settings.timeouts)?;
            if actions.is_empty() {
                return Ok(Some(node));
            }
            debug_assert_eq!(actions.first(), Some(&Action::Persist));
            let value = nodes::encode(&node)?;
            let mut ops = vec![Op::put(nodes::NODES, name, value, Expect::Revision(rev))];
            ops.extend(extra);
            self.store.commit(ops)?;
            self.refresh(&node);
            self.metrics
                .transition(name, &before, &node.lifecycle.state, now);
            self.stacks_wake.notify_one();
            self.after_deploy_transition(&node);
            if node.lifecycle.boot_retries > retries_before && node.lifecycle.state == before {
                self.metrics.pxe_boot_retry();
                warn!(
                    node = name,
                    state = %before,
                    retry = node.lifecycle.boot_retries,
                    max = self.settings.timeouts.boot_retries_max,
                    within_ms = self.settings.timeouts.boot_ms,
                    "no PXE boot reached the seed in time: power-cycling again"
                );
            }
            (node, actions)
        };
        info!(node = name, event = event_name, state = %node.lifecycle.state, "lifecycle");
        let mut hardware = Vec::new();
        for a in actions {
            match a {
                Action::Persist => {}
                Action::Deadline { at_ms } => self.arm(name, at_ms),
                other => {
                    // The agent's next command follows the power the lifecycle wants, set now
                    // (not when the BMC answers) so a heartbeat right after sees it.
                    match other {
                        Action::PowerOff => {
                            lock(&self.commands).insert(name.into(), Command::PowerOff);
                        }
                        Action::PowerOn | Action::Reboot => {
                            // A power-on for the step under way (the boot watchdog's retry)
                            // keeps the step's command: the ramdisk it boots must still get it.
                            let mut commands = lock(&self.commands);
                            if !commands
                                .get(name)
                                .is_some_and(|c| step_command(c, &node.lifecycle))
                            {
                                commands.remove(name);
                            }
                        }
                        _ => {}
                    }
                    hardware.push(other);
                }
            }
        }
        if !hardware.is_empty() {
            self.enqueue(name, hardware);
        }
        Ok(Some(node))
    }

    /// The command waiting for node `name`'s agent.
    pub fn pending_command(&self, name: &str) -> Command {
        lock(&self.commands)
            .get(name)
            .cloned()
            .unwrap_or(Command::None)
    }

    /// Publish `data` as node `node`'s metadata (the stack engine's and the operator's way in)
    /// and wake the node's long-polls. Returns the counter (unchanged data keeps it). Logs the
    /// node and counter only: metadata carries secrets.
    pub fn publish_metadata(
        &self,
        node: &str,
        data: serde_json::Value,
    ) -> Result<u64, DaemonError> {
        let counter = metadata::set(&*self.store, node, data)?;
        self.metadata_notify.changed(node, counter);
        // Every reconcile pass re-publishes (unchanged data keeps its counter): debug only.
        debug!(node, counter, "metadata published");
        Ok(counter)
    }

    /// Store a node's signal and wake whoever waits for signals
    /// ([`metadata::Notifier::subscribe_signals`]).
    pub fn store_signal(&self, node: &str, signal: &metadata::Signal) -> Result<(), DaemonError> {
        metadata::put_signal(&*self.store, node, signal)?;
        self.metadata_notify.signalled();
        self.stacks_wake.notify_one();
        info!(node, deployment = %signal.deployment, status = ?signal.status, counter = signal.counter, "signal");
        Ok(())
    }

    /// The metadata change notifier (long-polls subscribe here).
    pub fn metadata_notifier(&self) -> &metadata::Notifier {
        &self.metadata_notify
    }

    /// Operator request `inspect`: from `enroll` the BMC is verified first, and the inspection
    /// starts when it answers (the lifecycle keeps that wish in the node's record).
    pub fn request_inspect(self: &Arc<Self>, name: &str) -> Result<Node, DaemonError> {
        self.apply(name, Event::Inspect, vec![])
    }

    /// Node `name` showed it booted toward the seed (its iPXE script was served, or its agent
    /// called in): meet its boot watchdog. Cheap and a no-op unless one is armed.
    pub fn boot_seen(self: &Arc<Self>, name: &str) {
        if !self.boot.read().awaiting_boot.contains(name) {
            return;
        }
        match self.apply(name, Event::BootSeen, vec![]) {
            Ok(_) => debug!(node = name, "boot seen"),
            Err(e) => debug!(node = name, error = %e, "boot seen not recorded"),
        }
    }

    /// Rebuild the boot table entries of `node` (with its current agent token, if any).
    fn refresh(&self, node: &Node) {
        let token = self.agent_tokens.current(&node.name, &node.lifecycle);
        let mut table = self.boot.write();
        if node.lifecycle.boot_deadline_ms.is_some() {
            table.awaiting_boot.insert(node.name.clone());
        } else {
            table.awaiting_boot.remove(&node.name);
        }
        for &mac in &node.macs {
            let mac = to_netboot(mac);
            table.by_mac.insert(
                mac,
                policy::entry(node, mac, &self.settings, token.as_deref()),
            );
        }
    }

    /// Whether `presented` is node `name`'s current agent token (its ramdisk boot for the step
    /// it is in; compared in constant time). False for an unknown node.
    pub fn agent_token_ok(&self, name: &str, presented: &str) -> Result<bool, DaemonError> {
        Ok(nodes::get(&*self.store, name)?
            .is_some_and(|(n, _)| self.agent_tokens.verify(&n, presented)))
    }

    fn arm(self: &Arc<Self>, name: &str, at_ms: u64) {
        let me = self.clone();
        let name = name.to_string();
        let wait = std::time::Duration::from_millis(at_ms.saturating_sub(now_ms()));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let node = name.clone();
            match off_runtime(move || me.apply(&node, Event::Timeout, vec![])).await {
                Ok(_) => {}
                Err(e) => debug!(node = %name, error = %e, "timeout not applied"),
            }
        });
    }

    /// Enroll `new` nodes (all or none) and answer for their MACs from now on.
    pub fn enroll(&self, new: &[Node]) -> Result<(), DaemonError> {
        let _g = lock(&self.lifecycle_lock);
        nodes::create(&*self.store, new)?;
        for n in new {
            self.refresh(n);
        }
        Ok(())
    }

    /// Enroll a node for a MAC that DHCP discovery saw: `node-<mac-hyphens>`, no BMC yet.
    /// `false` when refused for now by the discovery rate limit or cap ([`discovery`]).
    fn enroll_discovered(&self, mac: MacAddr) -> Result<bool, DaemonError> {
        let mut seq = lock(&self.lifecycle_lock);
        if !seq.discovery.admit(std::time::Instant::now()) {
            return Ok(false);
        }
        let pending = nodes::list(&*self.store)?
            .iter()
            .filter(|(n, _)| discovery::pending(n))
            .count();
        if pending >= discovery::MAX_PENDING {
            seq.discovery.full(pending);
            return Ok(false);
        }
        let name = format!("node-{}", mac.hyphenated());
        let node = Node::new(
            name.clone(),
            vec![Mac(mac.0)],
            Bmc {
                // Unknown until an operator fills it in: verification fails clearly meanwhile.
                driver: DriverKind::Ipmi,
                address: String::new(),
                port: 623,
                username: String::new(),
                password: Secret::new(""),
                allow_ipmi15: false,
            },
            now_ms(),
        );
        nodes::create(&*self.store, std::slice::from_ref(&node))?;
        self.refresh(&node);
        drop(seq);
        info!(node = %name, %mac, "discovered and enrolled");
        Ok(true)
    }
}

impl BootPolicy for Daemon {
    fn boot_action(&self, mac: MacAddr) -> Option<BootAction> {
        self.boot.read().by_mac.get(&mac).map(|e| e.action.clone())
    }

    fn chain(&self, mac: MacAddr) -> Chain {
        self.boot
            .read()
            .by_mac
            .get(&mac)
            .map_or(Chain::Direct, |e| e.chain)
    }

    fn script_served(&self, mac: MacAddr) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        if self.boot.read().awaiting_boot.is_empty() {
            return;
        }
        match nodes::by_mac(&*self.store, Mac(mac.0)) {
            Ok(Some(name)) => me.boot_seen(&name),
            Ok(None) => {}
            Err(e) => debug!(%mac, error = %e, "script served: node not read"),
        }
    }

    fn script_for(&self, mac: MacAddr, peer: std::net::IpAddr) -> Option<BootAction> {
        self.script_action(mac, peer)
    }

    fn address_seen(&self, mac: MacAddr, ip: Ipv4Addr) {
        self.note_address(mac, ip);
    }

    fn discovered(&self, mac: MacAddr) -> bool {
        match self.enroll_discovered(mac) {
            Ok(taken) => taken,
            Err(e) => {
                // A conflict means someone enrolled it meanwhile: fine.
                debug!(%mac, error = %e, "discovered MAC not enrolled");
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_shows_its_cause_in_one_line() {
        let source = serde_json::from_str::<u8>("x").unwrap_err();
        let e = DaemonError::from(StoreError::Decode {
            table: "nodes".into(),
            key: "n1".into(),
            source,
        });
        assert_eq!(
            e.to_string(),
            "store: record nodes/n1 does not decode: expected value at line 1 column 1"
        );
        assert!(
            std::error::Error::source(&e).is_none(),
            "not repeated as a source"
        );
    }

    #[test]
    fn a_stacks_store_error_and_a_500_show_the_cause_too() {
        let decode = || StoreError::Decode {
            table: "stacks".into(),
            key: "s1".into(),
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        };
        let want = "record stacks/s1 does not decode: expected value at line 1 column 1";
        let e = stacks::StacksError::from(decode());
        assert_eq!(e.to_string(), format!("store: {want}"));
        assert!(std::error::Error::source(&e).is_none());
        let answer = api::ApiError::from(decode());
        assert_eq!(
            answer.to_string(),
            format!("500 Internal Server Error: {want}")
        );
    }
}
