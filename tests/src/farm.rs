//! A farm of fake machines in a process of its own (`seed-fake-farm`), reached the way real
//! machines are: each has an IPMI BMC on UDP (the lab's sans-IO [`BmcCore`], RMCP+ with its
//! credentials) and, when powered on, runs what real firmware would: it fetches its iPXE script
//! from the seed (`GET /ipxe/<mac>`); a script that boots the ramdisk gives it `seed.url=` and
//! `seed.token=`, and it runs a fake deploy agent over HTTP (facts, heartbeats, deploy progress,
//! wipe, power off/reboot obeyed); a script that boots the disk (or a disk boot device) runs the
//! deployed image, which reports `POST /v1/node/booted` with the credential the deploy wrote.
//!
//! The farm outlives the seed: a seed killed and restarted (or a failover to another daemon)
//! finds its machines where they were, agents retrying, deploys going on — which is what the
//! HA and crash tests need to tell "continued" from "started over". It counts per node what the
//! tests ask about (power-ons, ramdisk boots, deploy commands received, deploys finished, image
//! boots reported) into a JSON status file, rewritten atomically every 100 ms.
//!
//! Threads, not a runtime: one per BMC, one per running machine; every loop is bounded.

use qemu::ipmi::{BmcConfig, BmcCore, BootDevice, PowerAction};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod agent;

use agent::{image, ramdisk};

/// The farm's configuration (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FarmSpec {
    /// Where the machines' firmware fetches iPXE scripts (the seed's floating address in HA).
    pub seed_url: String,
    pub nodes: Vec<FarmNode>,
    /// From power on to the first request (ms).
    #[serde(default = "default_boot")]
    pub boot_ms: u64,
    /// Each deploy phase (ms).
    #[serde(default = "default_step")]
    pub step_ms: u64,
    /// Between heartbeats at most (ms).
    #[serde(default = "default_tick")]
    pub tick_ms: u64,
}

impl FarmSpec {
    /// `nodes` whose firmware fetches from `seed_url`: booting 50 ms after power-on, deploy
    /// phases of `step_ms`, a heartbeat every 200 ms at most.
    pub fn new(seed_url: String, nodes: Vec<FarmNode>, step_ms: u64) -> Self {
        FarmSpec {
            seed_url,
            nodes,
            boot_ms: 50,
            step_ms,
            tick_ms: 200,
        }
    }
}

fn default_boot() -> u64 {
    50
}
fn default_step() -> u64 {
    100
}
fn default_tick() -> u64 {
    200
}

/// One machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FarmNode {
    pub name: String,
    pub mac: String,
    /// Where its BMC listens.
    pub bmc: SocketAddr,
    pub user: String,
    pub password: String,
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    #[serde(default = "default_ram")]
    pub memory_mib: u64,
    /// The address its firmware has (what the seed's DHCP gave it, or its reservation): its
    /// iPXE script is fetched from there. None: from the namespace's own address.
    #[serde(default)]
    pub ip: Option<std::net::Ipv4Addr>,
}

fn default_cpus() -> u32 {
    4
}
fn default_ram() -> u64 {
    8192
}

/// What happened to one machine (the status file holds one per node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub powered: bool,
    pub power_ons: u64,
    pub ramdisk_boots: u64,
    /// Deploy commands the agent received (each a new op: a repeat of the running one is not
    /// counted).
    pub deploy_commands: u64,
    pub deploys_done: u64,
    pub wipes_done: u64,
    pub image_boots_reported: u64,
    /// Agent requests that failed (seed unreachable or refusing): retried.
    pub agent_errors: u64,
}

#[derive(Default)]
struct Counters {
    power_ons: AtomicU64,
    ramdisk_boots: AtomicU64,
    deploy_commands: AtomicU64,
    deploys_done: AtomicU64,
    wipes_done: AtomicU64,
    image_boots_reported: AtomicU64,
    agent_errors: AtomicU64,
}

/// (No `Debug`: the disk holds the node's credential.)
#[derive(Default)]
struct Machine {
    powered: bool,
    /// Bumped on every power change: a running boot whose generation is old stops.
    generation: u64,
    /// The credential a finished deploy wrote on the disk.
    disk: Option<String>,
    /// The last deploy or wipe op carried out, and the one in progress.
    done_op: Option<u64>,
    doing_op: Option<u64>,
    /// The BMC's boot device override, as last set (what a reset the machine does itself
    /// boots from).
    device: Option<BootDevice>,
}

struct Node {
    spec: FarmNode,
    seed_url: String,
    timing: (Duration, Duration, Duration),
    machine: Mutex<Machine>,
    counters: Counters,
    stop: Arc<AtomicBool>,
}

/// The HTTP client of every machine: 3 s per call, answers of any status read, no proxy.
fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .new_agent()
}

fn lock(m: &Mutex<Machine>) -> std::sync::MutexGuard<'_, Machine> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run the farm until `stop` is set, rewriting `status` (JSON: name → [`NodeStatus`]).
pub fn run(spec: &FarmSpec, status: &Path, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    let nodes: Vec<Arc<Node>> = spec
        .nodes
        .iter()
        .map(|n| {
            Arc::new(Node {
                spec: n.clone(),
                seed_url: spec.seed_url.trim_end_matches('/').to_string(),
                timing: (
                    Duration::from_millis(spec.boot_ms),
                    Duration::from_millis(spec.step_ms),
                    Duration::from_millis(spec.tick_ms),
                ),
                machine: Mutex::new(Machine::default()),
                counters: Counters::default(),
                stop: stop.clone(),
            })
        })
        .collect();
    let mut threads = vec![];
    for n in &nodes {
        let sock = UdpSocket::bind(n.spec.bmc)?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let n = n.clone();
        threads.push(std::thread::spawn(move || bmc(&n, &sock)));
    }
    while !stop.load(Ordering::Relaxed) {
        write_status(&nodes, status)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    write_status(&nodes, status)?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn write_status(nodes: &[Arc<Node>], path: &Path) -> std::io::Result<()> {
    let all: BTreeMap<String, NodeStatus> = nodes
        .iter()
        .map(|n| {
            let c = &n.counters;
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            (
                n.spec.name.clone(),
                NodeStatus {
                    powered: lock(&n.machine).powered,
                    power_ons: get(&c.power_ons),
                    ramdisk_boots: get(&c.ramdisk_boots),
                    deploy_commands: get(&c.deploy_commands),
                    deploys_done: get(&c.deploys_done),
                    wipes_done: get(&c.wipes_done),
                    image_boots_reported: get(&c.image_boots_reported),
                    agent_errors: get(&c.agent_errors),
                },
            )
        })
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&all).expect("status serialises"),
    )?;
    std::fs::rename(&tmp, path)
}

/// Read a farm's status file (empty if not written yet).
pub fn read_status(path: &Path) -> BTreeMap<String, NodeStatus> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The farm's status once all `n` machines show their image's boot, or as it stands after 5 s.
/// A machine counts its boot when the daemon's answer is back and the file is rewritten every
/// 100 ms, so a stack can be complete a moment before the file says so.
pub fn read_status_booted(path: &Path, n: usize) -> BTreeMap<String, NodeStatus> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = read_status(path);
        let booted = st.len() == n && st.values().all(|s| s.image_boots_reported >= 1);
        if booted || Instant::now() >= deadline {
            return st;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The BMC: RMCP+ in, power actions onto the machine.
fn bmc(n: &Arc<Node>, sock: &UdpSocket) {
    let mut core = BmcCore::new(
        BmcConfig {
            username: n.spec.user.clone(),
            password: n.spec.password.clone(),
            guid: [7; 16],
        },
        rand::random(),
    );
    let mut buf = [0u8; 1024];
    while !n.stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let powered = lock(&n.machine).powered;
        let out = core.handle(&buf[..len], Instant::now(), powered);
        lock(&n.machine).device = core.boot_override().map(|o| o.device);
        if let Some(action) = out.action {
            let on = match action {
                PowerAction::Off | PowerAction::Soft => Some(false),
                PowerAction::On => (!powered).then_some(true),
                PowerAction::Cycle | PowerAction::Reset => Some(true),
            };
            match on {
                Some(true) => {
                    let device = core.take_boot_device();
                    power_on(n, device);
                }
                Some(false) => power_off(n),
                None => {}
            }
        }
        if let Some(reply) = out.reply {
            let _ = sock.send_to(&reply, from);
        }
    }
}

fn power_off(n: &Node) {
    let mut m = lock(&n.machine);
    m.powered = false;
    m.generation += 1;
    // A deploy under way dies with the power; a finished one stays on the disk.
    m.doing_op = None;
}

fn power_on(n: &Arc<Node>, device: Option<BootDevice>) {
    let generation = {
        let mut m = lock(&n.machine);
        m.powered = true;
        m.generation += 1;
        m.doing_op = None;
        m.generation
    };
    n.counters.power_ons.fetch_add(1, Ordering::Relaxed);
    let n = n.clone();
    std::thread::spawn(move || boot(&n, generation, device));
}

/// Still this boot (not powered off or restarted since), and the farm still running.
fn current(n: &Node, generation: u64) -> bool {
    !n.stop.load(Ordering::Relaxed) && lock(&n.machine).generation == generation
}

/// Sleep `d` unless the boot ends meanwhile; false when it ended.
fn pause(n: &Node, generation: u64, d: Duration) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if !current(n, generation) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
    }
    current(n, generation)
}

/// What firmware + iPXE would run.
fn boot(n: &Arc<Node>, generation: u64, device: Option<BootDevice>) {
    let (boot_wait, _, tick) = n.timing;
    if !pause(n, generation, boot_wait) {
        return;
    }
    if device == Some(BootDevice::Disk) {
        return image(n, generation);
    }
    // PXE: the script, retried while the seed does not answer (as iPXE retries DHCP/HTTP).
    let url = format!("{}/ipxe/{}", n.seed_url, n.spec.mac);
    let mut script = None;
    for _ in 0..600 {
        if !current(n, generation) {
            return;
        }
        let answer = match n.spec.ip {
            Some(src) => crate::bound_get::get(src, &url, Duration::from_secs(3)).ok(),
            None => http().get(&url).call().ok().and_then(|mut r| {
                let body = r.body_mut().read_to_string().ok()?;
                Some((r.status().as_u16(), body))
            }),
        };
        match answer {
            Some((200..=299, body)) => {
                script = Some(body);
                break;
            }
            _ => {
                n.counters.agent_errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(tick);
            }
        }
    }
    let Some(script) = script else { return };
    if let Some(line) = script.lines().find(|l| l.starts_with("kernel ")) {
        let args = api::agent::KernelArgs::parse(line);
        n.counters.ramdisk_boots.fetch_add(1, Ordering::Relaxed);
        let url = args.url.unwrap_or_else(|| n.seed_url.clone());
        ramdisk(n, generation, &url, args.token.as_deref());
    } else if script.contains("sanboot") {
        image(n, generation);
    }
}

/// Write `spec` to `dir/farm.json` and run `command`: the farm binary (an integration test's
/// `env!("CARGO_BIN_EXE_seed-fake-farm")`, perhaps through a namespace's `ip netns exec`),
/// given the spec and the status file `dir/farm-status.json`.
pub fn spawn(
    mut command: std::process::Command,
    spec: &FarmSpec,
    dir: &Path,
) -> (crate::proc::Child, PathBuf) {
    let spec_path = dir.join("farm.json");
    std::fs::write(&spec_path, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
    let status = dir.join("farm-status.json");
    command.arg(&spec_path).arg(&status);
    (crate::proc::Child::spawn("farm", command), status)
}
