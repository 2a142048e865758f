//! The simulator core: a deterministic driver on virtual time that runs N nodes through the
//! real lifecycle ([`crate::lifecycle::step`]) and the real store, against fake machines
//! ([`world`]) that are slow, fail, or vanish according to [`Faults`] and a seeded RNG.
//!
//! Two halves share one queue of timed items:
//! - the **conductor** (the seed's side): it feeds events to the lifecycle, persists every
//!   transition with compare-and-swap, executes the actions against the world, arms
//!   deadlines, and decides what to ask next for each node (inspect, provide, deploy, retry up to
//!   `max_attempts`). Its decisions are level-triggered: a pure function of the stored node.
//! - the **world**: BMC replies and agent reports, which arrive later.
//!
//! A crash ([`SimConfig::crash_at`]) throws away everything the conductor holds in memory (its
//! node cache, armed timers, pending decisions) and rebuilds it from the store alone; the world
//! keeps running, as real machines would. Reports carry the node's `op` counter and the
//! machine's power epoch so that late reports from an abandoned attempt are dropped, not
//! applied twice.

pub mod world;

use crate::inventory::{Bmc, Node, PowerDriver, Secret};
use crate::lifecycle::{self, Action, BootDevice, DeployTarget, Event, State, Timeouts};
use crate::store::{nodes, Revision, Store, StoreError};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
pub use world::Faults;
use world::{Job, Machine, Outcome};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    pub faults: Faults,
    /// Attempts per step (verify, inspect, deploy) before a node is left in its failed state.
    pub max_attempts: u32,
    pub timeouts: Timeouts,
    /// The image every node is deployed with.
    pub image: String,
    /// Crash the conductor once, at this virtual time (ms).
    pub crash_at: Option<u64>,
    /// Stop after this many queue items, whatever happens (a bound, not an expectation).
    pub max_items: u64,
}

impl SimConfig {
    pub fn new(nodes: usize, seed: u64) -> SimConfig {
        SimConfig {
            nodes,
            seed,
            faults: Faults::none(),
            max_attempts: 3,
            // The sim's slow machines take up to 15 min to boot: no boot watchdog by default.
            timeouts: Timeouts {
                boot_ms: 0,
                ..Timeouts::default()
            },
            image: "overcloud-full".into(),
            crash_at: None,
            max_items: 10_000_000,
        }
    }
}

/// How long the conductor waits before acting on a node in a stable state (fixed, not random:
/// re-deriving a decision after a crash must not change any machine's random draws).
const THINK_MS: u64 = 1_000;

/// The end of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOutcome {
    pub name: String,
    pub state: String,
    pub reason: Option<String>,
    pub last_error: Option<String>,
    pub attempts: u32,
    pub inspections: u32,
    pub images_written: u32,
    pub wipes: u32,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct SimReport {
    pub nodes: Vec<NodeOutcome>,
    /// Virtual time when the queue drained (ms).
    pub end_ms: u64,
    pub items: u64,
    /// Reports dropped because they belonged to an abandoned attempt or a dead boot.
    pub stale_reports: u64,
    /// Requests the lifecycle refused (a bug in the policy if non-zero).
    pub refused: u64,
    pub crashes: u32,
    /// Conductor-side items (pending decisions, armed timers) the crash threw away.
    pub lost_in_crash: u64,
    /// The queue still had items when `max_items` was reached.
    pub stalled: bool,
}

impl SimReport {
    pub fn count(&self, state: &str) -> usize {
        self.nodes.iter().filter(|n| n.state == state).count()
    }
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("node {0} vanished from the store")]
    Lost(String),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    // Conductor side: lost in a crash.
    /// Look at the node and ask for its next step.
    Decide { node: usize },
    /// A deadline armed by the lifecycle.
    Timer { node: usize, at: u64 },
    // World side: survives a crash.
    /// A BMC reply or agent report for step `op` of the node.
    Report {
        node: usize,
        op: u64,
        epoch: u64,
        event: EventKey,
    },
    /// The machine finished booting from the network; its agent asks what to do.
    AgentBoot { node: usize, epoch: u64 },
}

impl Item {
    fn conductor_side(&self) -> bool {
        matches!(self, Item::Decide { .. } | Item::Timer { .. })
    }
}

/// Events as queue payload (ordered, so items can live in a heap).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EventKey {
    Verified,
    Inspected,
    Deployed,
    TornDown,
    Cleaned,
    Failed(String),
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    store: &'a dyn Store,
    machines: Vec<Machine>,
    names: Vec<String>,
    queue: BinaryHeap<Reverse<(u64, u64, Item)>>,
    seq: u64,
    now: u64,
    /// The conductor's memory: node records and the revision they were read at.
    cache: BTreeMap<usize, (Node, Revision)>,
    stale: u64,
    refused: u64,
}

/// Enroll `cfg.nodes` nodes in `store` and run them to the end.
pub fn run(cfg: &SimConfig, store: &dyn Store) -> Result<SimReport, SimError> {
    let machines: Vec<Machine> = (0..cfg.nodes)
        .map(|i| Machine::new(cfg.seed, i, &cfg.faults))
        .collect();
    let names: Vec<String> = (0..cfg.nodes).map(|i| format!("sim-{i:05}")).collect();
    let enrolled: Vec<Node> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mac =
                crate::inventory::Mac([0x52, 0x54, 0x00, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            Node::new(
                name.clone(),
                vec![mac],
                Bmc {
                    driver: PowerDriver::Ipmi,
                    address: "127.0.0.1".into(),
                    port: 6230 + (i % 1000) as u16,
                    username: "admin".into(),
                    password: Secret::new("password"),
                    allow_ipmi15: false,
                },
                0,
            )
        })
        .collect();
    nodes::create(store, &enrolled)?;

    let mut sim = Sim {
        cfg,
        store,
        machines,
        names,
        queue: BinaryHeap::new(),
        seq: 0,
        now: 0,
        cache: BTreeMap::new(),
        stale: 0,
        refused: 0,
    };
    sim.recover()?;
    let mut crashes = 0;
    let mut lost_in_crash = 0;
    let mut crash_at = cfg.crash_at;
    let mut items = 0;
    while let Some(Reverse((at, _, item))) = sim.queue.pop() {
        if let Some(c) = crash_at.filter(|c| at >= *c) {
            // Crash: the conductor's memory is gone; the machines keep going.
            crash_at = None;
            crashes += 1;
            sim.now = sim.now.max(c);
            sim.queue.push(Reverse((at, sim.seq, item)));
            sim.seq += 1;
            let before = sim.queue.len();
            sim.queue.retain(|Reverse((_, _, i))| !i.conductor_side());
            lost_in_crash += (before - sim.queue.len()) as u64;
            sim.cache.clear();
            tracing::debug!(at = sim.now, "simulated conductor crash");
            sim.recover()?;
            continue;
        }
        items += 1;
        if items > cfg.max_items {
            sim.queue.push(Reverse((at, 0, item)));
            break;
        }
        sim.now = at;
        sim.handle(item)?;
    }

    let mut out = Vec::with_capacity(cfg.nodes);
    for (i, name) in sim.names.iter().enumerate() {
        let (n, _) = nodes::get(store, name)?.ok_or_else(|| SimError::Lost(name.clone()))?;
        let m = &sim.machines[i];
        out.push(NodeOutcome {
            name: name.clone(),
            state: n.lifecycle.state.name().into(),
            reason: n.lifecycle.state.reason().map(String::from),
            last_error: n.lifecycle.last_error.clone(),
            attempts: n.lifecycle.attempts,
            inspections: m.inspections,
            images_written: m.images_written,
            wipes: m.wipes,
        });
    }
    Ok(SimReport {
        nodes: out,
        end_ms: sim.now,
        items,
        stale_reports: sim.stale,
        refused: sim.refused,
        crashes,
        lost_in_crash,
        stalled: !sim.queue.is_empty(),
    })
}

impl Sim<'_> {
    fn push(&mut self, at: u64, item: Item) {
        self.queue.push(Reverse((at, self.seq, item)));
        self.seq += 1;
    }

    /// Rebuild the conductor's memory from the store: re-arm the deadlines of busy nodes and
    /// reconsider every stable one.
    fn recover(&mut self) -> Result<(), SimError> {
        for i in 0..self.names.len() {
            let (n, rev) = nodes::get(self.store, &self.names[i])?
                .ok_or_else(|| SimError::Lost(self.names[i].clone()))?;
            if n.lifecycle.state.is_busy() {
                for at in [n.lifecycle.deadline_ms, n.lifecycle.boot_deadline_ms]
                    .into_iter()
                    .flatten()
                {
                    self.push(at, Item::Timer { node: i, at });
                }
            } else {
                self.push(self.now + THINK_MS, Item::Decide { node: i });
            }
            self.cache.insert(i, (n, rev));
        }
        Ok(())
    }

    fn node(&self, i: usize) -> &Node {
        &self.cache[&i].0
    }

    fn handle(&mut self, item: Item) -> Result<(), SimError> {
        match item {
            Item::Decide { node } => {
                if let Some(ev) = self.decide(node) {
                    self.feed(node, ev)?;
                }
            }
            Item::Timer { node, at } => {
                let lc = &self.node(node).lifecycle;
                if lc.deadline_ms == Some(at) || lc.boot_deadline_ms == Some(at) {
                    self.feed(node, Event::Timeout)?;
                }
            }
            Item::Report {
                node,
                op,
                epoch,
                event,
            } => {
                let stale_boot = matches!(
                    event,
                    EventKey::Inspected | EventKey::Deployed | EventKey::Cleaned
                ) && self.machines[node].epoch != epoch;
                // Late (abandoned attempt, dead boot) or a second report for a step that has
                // already ended.
                let current =
                    self.node(node).lifecycle.op == op && self.node(node).lifecycle.state.is_busy();
                if stale_boot || !current {
                    self.stale += 1;
                    return Ok(());
                }
                let ev = match event {
                    EventKey::Verified => Event::Verified,
                    EventKey::Inspected => Event::Inspected(self.machines[node].hardware.clone()),
                    EventKey::Deployed => Event::Deployed,
                    EventKey::TornDown => Event::TornDown,
                    EventKey::Cleaned => Event::Cleaned,
                    EventKey::Failed(reason) => Event::Failed { reason },
                };
                self.feed(node, ev)?;
            }
            Item::AgentBoot { node, epoch } => self.agent_boot(node, epoch)?,
        }
        Ok(())
    }

    /// The conductor's policy: what to ask for next, from the node alone.
    fn decide(&self, i: usize) -> Option<Event> {
        let lc = &self.node(i).lifecycle;
        let retry = lc.attempts < self.cfg.max_attempts;
        let inspected = self
            .node(i)
            .properties
            .disks
            .iter()
            .any(|d| d.serial.is_some());
        match &lc.state {
            State::Enroll if lc.last_error.is_none() || retry => Some(Event::Manage),
            State::Manageable if !inspected => Some(Event::Inspect),
            State::Manageable => Some(Event::Provide),
            State::InspectFailed { .. } if retry => Some(Event::Inspect),
            State::Available | State::DeployFailed { .. }
                if lc.state == State::Available || retry =>
            {
                Some(Event::Deploy(DeployTarget {
                    image: self.cfg.image.clone(),
                    root_hint: None,
                }))
            }
            _ => None,
        }
    }

    /// Give one event to the lifecycle, persist, and carry out the actions.
    fn feed(&mut self, i: usize, event: Event) -> Result<(), SimError> {
        let (mut node, rev) = self.cache[&i].clone();
        let actions = match lifecycle::step(&mut node, event, self.now, &self.cfg.timeouts) {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(node = %node.name, "refused: {e}");
                self.refused += 1;
                return Ok(());
            }
        };
        let mut rev = rev;
        // Like a real executor, stop touching the hardware after the first failed command
        // (its failure is already on its way); deadlines are still armed.
        let mut hardware_ok = true;
        for a in actions {
            match a {
                Action::Persist => {
                    rev = nodes::update(self.store, &node, rev)?;
                    self.cache.insert(i, (node.clone(), rev));
                }
                a @ Action::Deadline { .. } => {
                    self.execute(i, &node, a);
                }
                other if hardware_ok => hardware_ok = self.execute(i, &node, other),
                _ => {}
            }
        }
        if !node.lifecycle.state.is_busy() {
            self.push(self.now + THINK_MS, Item::Decide { node: i });
        }
        Ok(())
    }

    fn report(&mut self, i: usize, node: &Node, after: u64, event: EventKey) {
        let (op, epoch) = (node.lifecycle.op, self.machines[i].epoch);
        self.push(
            self.now + after,
            Item::Report {
                node: i,
                op,
                epoch,
                event,
            },
        );
    }

    /// A BMC command; a failure fails the running step (and only a running one).
    fn bmc(&mut self, i: usize, node: &Node, what: &str) -> bool {
        match self.machines[i].bmc(&self.cfg.faults, what) {
            Outcome::Fail(after, reason) if node.lifecycle.state.is_busy() => {
                self.report(i, node, after, EventKey::Failed(reason));
                false
            }
            _ => true,
        }
    }

    /// Carry out one action; false if a BMC command failed.
    fn execute(&mut self, i: usize, node: &Node, action: Action) -> bool {
        match action {
            Action::Persist => unreachable!("handled by feed"),
            Action::VerifyPower => match self.machines[i].bmc(&self.cfg.faults, "power status") {
                Outcome::Ok(after) => self.report(i, node, after, EventKey::Verified),
                Outcome::Fail(after, reason) => {
                    self.report(i, node, after, EventKey::Failed(reason))
                }
                Outcome::Silent => {}
            },
            Action::SetBootDevice(dev) => {
                if !self.bmc(i, node, "set boot device") {
                    return false;
                }
                self.machines[i].boot_device = dev;
            }
            Action::PowerOn | Action::Reboot => {
                if !self.bmc(i, node, "power on") {
                    return false;
                }
                {
                    let m = &mut self.machines[i];
                    m.powered = true;
                    m.epoch += 1;
                    if m.boot_device == BootDevice::Pxe {
                        let (epoch, t) = (m.epoch, m.boot_time());
                        self.push(self.now + t, Item::AgentBoot { node: i, epoch });
                    }
                }
            }
            Action::PowerOff => {
                if !self.bmc(i, node, "power off") {
                    return false;
                }
                {
                    let m = &mut self.machines[i];
                    m.powered = false;
                    m.epoch += 1;
                    if node.lifecycle.state == State::Deleting {
                        self.report(i, node, 0, EventKey::TornDown);
                    }
                }
            }
            // The agent reads its work from the store when it boots (as it would from the
            // agent API), so handing it over needs nothing here.
            Action::Deploy { .. } | Action::WipeDisks(_) => {}
            Action::Deadline { at_ms } => self.push(at_ms, Item::Timer { node: i, at: at_ms }),
        }
        true
    }

    /// A machine booted into the ramdisk: the agent asks what to do, from the stored state
    /// (as the netboot policy and agent API would), and does it.
    fn agent_boot(&mut self, i: usize, epoch: u64) -> Result<(), SimError> {
        let m = &self.machines[i];
        if m.epoch != epoch || !m.powered {
            self.stale += 1;
            return Ok(());
        }
        let (node, _) = nodes::get(self.store, &self.names[i])?
            .ok_or_else(|| SimError::Lost(self.names[i].clone()))?;
        // The agent running means the script was served: meets the boot watchdog, if armed.
        if node.lifecycle.boot_deadline_ms.is_some() {
            self.feed(i, Event::BootSeen)?;
        }
        let (job, ok) = match node.lifecycle.state {
            State::Inspecting => (Job::Inspect, EventKey::Inspected),
            State::Deploying => (Job::Deploy, EventKey::Deployed),
            State::Cleaning => (Job::Clean, EventKey::Cleaned),
            // Nothing to do: it boots from disk.
            _ => return Ok(()),
        };
        match self.machines[i].agent(&self.cfg.faults, job) {
            Outcome::Ok(after) => self.report(i, &node, after, ok),
            Outcome::Fail(after, reason) => self.report(i, &node, after, EventKey::Failed(reason)),
            Outcome::Silent => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemStore;

    fn faulty(nodes: usize, seed: u64) -> SimConfig {
        let mut cfg = SimConfig::new(nodes, seed);
        cfg.faults = Faults {
            bmc_error: 0.05,
            agent_error: 0.15,
            agent_vanish: 0.05,
            slow_machines: 0.1,
            broken_machines: 0.05,
        };
        cfg
    }

    #[test]
    fn hundred_nodes_reach_active() {
        let store = MemStore::new();
        let r = run(&SimConfig::new(100, 1), &store).unwrap();
        assert!(!r.stalled);
        assert_eq!(r.count("active"), 100, "{:?}", r.nodes);
        assert_eq!(r.refused, 0);
        for n in &r.nodes {
            assert_eq!((n.inspections, n.images_written), (1, 1), "{n:?}");
            assert_eq!(n.last_error, None);
        }
        // The store agrees, and the inspected hardware was recorded.
        let stored = nodes::list(&store).unwrap();
        assert_eq!(stored.len(), 100);
        assert!(stored.iter().all(|(n, _)| n.properties.memory_mib.is_some()
            && n.lifecycle.target.as_ref().unwrap().image == "overcloud-full"));
    }

    #[test]
    fn faults_bounded_retries_and_reasons_kept() {
        let cfg = faulty(200, 7);
        let r = run(&cfg, &MemStore::new()).unwrap();
        eprintln!(
            "{} active, {} stale reports, end {} s; not active: {:?}",
            r.count("active"),
            r.stale_reports,
            r.end_ms / 1000,
            r.nodes
                .iter()
                .filter(|n| n.state != "active")
                .map(|n| (&n.state, &n.last_error))
                .collect::<Vec<_>>()
        );
        assert!(!r.stalled);
        assert_eq!(r.refused, 0);
        assert!(r.stale_reports > 0, "late reports were seen and dropped");
        let active = r.count("active");
        let failed: Vec<&NodeOutcome> = r.nodes.iter().filter(|n| n.state != "active").collect();
        assert!(active > 100, "most nodes get through: {active}");
        assert!(!failed.is_empty(), "with broken machines some must fail");
        for n in &r.nodes {
            assert!(n.attempts <= cfg.max_attempts, "{n:?}");
            assert!(n.images_written <= cfg.max_attempts, "{n:?}");
        }
        for n in failed {
            // Ended in a failed state (or enroll after failed verification), with a reason.
            assert!(
                matches!(
                    n.state.as_str(),
                    "inspect failed" | "deploy failed" | "enroll"
                ),
                "{n:?}"
            );
            assert_eq!(
                n.attempts, cfg.max_attempts,
                "gave up only after all attempts: {n:?}"
            );
            let err = n.last_error.as_deref().unwrap();
            assert!(!err.is_empty());
            if let Some(reason) = &n.reason {
                assert!(err.ends_with(reason.as_str()), "{err} / {reason}");
            }
        }
        // Timeouts happened (slow or vanished machines) and late reports were dropped.
        assert!(r.nodes.iter().any(|n| n
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out"))
            || n.reason.as_deref().is_some_and(|e| e.contains("timed out"))));
    }

    #[test]
    fn deterministic_for_a_seed() {
        let a = run(&faulty(50, 3), &MemStore::new()).unwrap();
        let b = run(&faulty(50, 3), &MemStore::new()).unwrap();
        assert_eq!(a.nodes, b.nodes);
        assert_eq!(a.end_ms, b.end_ms);
        let c = run(&faulty(50, 4), &MemStore::new()).unwrap();
        assert_ne!(a.nodes, c.nodes, "another seed, another story");
    }

    #[test]
    fn crash_midway_reaches_the_same_end() {
        for faults in [false, true] {
            let base = if faults {
                faulty(100, 11)
            } else {
                SimConfig::new(100, 11)
            };
            let clean = run(&base, &MemStore::new()).unwrap();
            for crash_at in [clean.end_ms / 4, clean.end_ms / 2] {
                let mut cfg = base.clone();
                cfg.crash_at = Some(crash_at);
                let crashed = run(&cfg, &MemStore::new()).unwrap();
                assert_eq!(crashed.crashes, 1);
                assert!(crashed.lost_in_crash > 0, "the crash threw work away");
                assert!(!crashed.stalled);
                // No node lost, none processed twice: the same end, machine by machine.
                assert_eq!(
                    crashed.nodes, clean.nodes,
                    "faults {faults}, crash at {crash_at}"
                );
            }
            if !faults {
                assert_eq!(clean.count("active"), 100);
            }
        }
    }

    #[test]
    fn runs_on_the_embedded_store_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::redb::RedbStore::open(&dir.path().join("sim.redb")).unwrap();
        let mut cfg = SimConfig::new(10, 5);
        cfg.crash_at = Some(200_000);
        let r = run(&cfg, &store).unwrap();
        assert_eq!(r.count("active"), 10);
        assert_eq!(r.crashes, 1);
    }
}
