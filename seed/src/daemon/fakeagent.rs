//! In-process fake machines for nodes whose BMC driver is `fake`: the fake BMC plus the software
//! the machine would run when it boots, played through the daemon's real API handler.
//!
//! A node opts in with the capability `fake_agent:<behaviour>` (`ok`, `slow`, `fail`, `vanish`,
//! `dead`); without it a fake node only has a fake BMC and boots to nothing (tests that play
//! the agent themselves with curl rely on that). `fake_bmc_delay_ms:<n>` makes its BMC answer
//! after `n` ms.
//!
//! When the fake BMC starts the machine (power on, cycle, reset) the [`FakeMachine`] looks at
//! what it would boot, as real firmware and iPXE would:
//! - network boot, and the daemon's boot policy says the ramdisk → its iPXE script counts as
//!   served ([`BootPolicy::script_served`], the PXE boot watchdog is met) and the **ramdisk
//!   agent** runs (even a `dead` one got through PXE: its step times out, it is not re-powered):
//!   `POST /v1/agent/facts` with fake hardware derived from the node (its MACs, declared CPUs,
//!   RAM and disks, or defaults derived from its name), then heartbeats; a `Deploy` command is
//!   played as progress reports (partitioning, writing with bytes, finishing, done), after which
//!   the "disk" holds the credential it was given; a `Wipe` command (cleaning) is played as a
//!   wiping report then done, after which the disk is empty; `power_off`/`reboot` are obeyed;
//! - otherwise, a disk written by a deploy → the **deployed image** posts `/v1/node/booted`
//!   with `Authorization: Bearer <credential>`.
//!
//! Power off stops whatever runs. Every request goes through [`ApiHandler::handle`] with an
//! [`ApiRequest`], never a direct state change, so fake nodes exercise the same code as real
//! ones: the ramdisk agent takes its per-boot token from the `seed.token=` of the command line
//! the boot policy gave its MAC, as a real one reads `/proc/cmdline`, and sends it as
//! `Authorization: Bearer` on every agent call. Faults: `slow` multiplies every delay by [`Timing::slow_factor`]; `fail` reports
//! [`Phase::Failed`] while writing or wiping; `vanish` stops answering after the first deploy progress
//! report; `dead` never says anything (the step times out). Loops are bounded in count.

use super::api::Api;
use super::Daemon;
use crate::inventory::{Node, PowerDriver as DriverKind};
use crate::power::{
    BootDevice, BoxFuture, FakeBmc, FakePower, Password, PowerAction, PowerDriver, PowerError,
    PowerState,
};
use ::api::agent::{
    Ack, Command, DeployCommand, Heartbeat, KernelArgs, Phase, Progress, Report, WipeCommand,
};
use ::api::facts::{BootMode, Dmi, Facts, Nic};
use netboot::http::{ApiHandler, ApiRequest};
use netboot::{BootAction, BootPolicy, MacAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Why a fake agent's call got no answer it could use.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("the daemon is gone")]
    Gone,
    #[error("{status}: {body}")]
    Refused { status: u16, body: String },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// The capability that gives a fake node a fake agent, and its behaviour.
pub const CAPABILITY: &str = "fake_agent";
/// The capability that delays every answer of a fake node's BMC (milliseconds).
pub const BMC_DELAY_CAPABILITY: &str = "fake_bmc_delay_ms";

/// How a fake agent behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Does everything right, quickly.
    Ok,
    /// Does everything right, [`Timing::slow_factor`] times slower.
    Slow,
    /// Inspection works; every deploy fails while writing.
    Fail,
    /// Inspection works; a deploy goes silent after its first progress report.
    Vanish,
    /// Boots, then never says anything.
    Dead,
}

impl Behaviour {
    /// The behaviour a node asked for with `fake_agent:<b>`; `None` without the capability.
    /// An unknown value is treated as `ok` (with a warning) rather than silently dropped.
    pub fn of(node: &Node) -> Option<Behaviour> {
        let v = node.capabilities.0.get(CAPABILITY)?;
        Some(match v.as_str() {
            "slow" => Behaviour::Slow,
            "fail" | "failing" => Behaviour::Fail,
            "vanish" | "disappear" => Behaviour::Vanish,
            "dead" => Behaviour::Dead,
            "ok" | "on" | "yes" | "true" | "" => Behaviour::Ok,
            other => {
                warn!(node = %node.name, value = other, "unknown fake_agent behaviour; using ok");
                Behaviour::Ok
            }
        })
    }
}

/// How long the fake machine takes for things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From power on to the agent's first request.
    pub boot: Duration,
    /// Each deploy phase.
    pub step: Duration,
    /// The longest wait between heartbeats (the seed's `heartbeat_secs` when shorter).
    pub tick: Duration,
    /// Multiplier of every delay for [`Behaviour::Slow`].
    pub slow_factor: u32,
    /// Heartbeats an agent sends before it gives up (a bound, so no task runs forever).
    pub max_heartbeats: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            boot: Duration::from_millis(50),
            step: Duration::from_millis(20),
            tick: Duration::from_millis(250),
            slow_factor: 10,
            max_heartbeats: 20_000,
        }
    }
}

/// The fake hardware of a node: its MACs, the CPUs/RAM/disks declared at enrollment, and
/// defaults derived from its name where nothing was declared (so different nodes differ, and
/// the same node always reports the same thing).
pub fn facts(node: &Node) -> Facts {
    let h = node.name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let p = &node.properties;
    let cpus = p.cpus.unwrap_or(2 << (h % 4)); // 2, 4, 8 or 16
    let memory_mib = p.memory_mib.unwrap_or(4096 << ((h >> 8) % 4)); // 4–32 GiB
    let mut disks: Vec<::api::facts::Disk> = p
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| ::api::facts::Disk {
            name: if d.name.is_empty() {
                format!("vd{}", (b'a' + i as u8) as char)
            } else {
                d.name.clone()
            },
            size_bytes: d.size_bytes,
            model: d.model.clone().unwrap_or_else(|| "FAKE DISK".into()),
            serial: d
                .serial
                .clone()
                .unwrap_or_else(|| format!("FAKE-{:08X}-{i}", h as u32)),
            rotational: false,
        })
        .collect();
    if disks.is_empty() {
        disks.push(::api::facts::Disk {
            name: "vda".into(),
            size_bytes: (40u64 << 30) << ((h >> 16) % 3), // 40, 80 or 160 GiB
            model: "FAKE DISK".into(),
            serial: format!("FAKE-{:08X}-0", h as u32),
            rotational: false,
        });
    }
    let nics = node
        .macs
        .iter()
        .enumerate()
        .map(|(i, m)| Nic {
            name: format!("eth{i}"),
            mac: m.to_string(),
            link: true,
            driver: "fake_net".into(),
        })
        .collect();
    Facts {
        cpus,
        cpu_model: "Fake CPU".into(),
        memory_mib,
        disks,
        nics,
        dmi: Dmi {
            vendor: "seed".into(),
            product: "fake machine".into(),
            serial: format!("FAKE{:08X}", h as u32),
            uuid: format!("{:016x}-{}", h, node.name),
        },
        boot_mode: match p.boot_mode {
            Some(crate::inventory::BootMode::Uefi) => BootMode::Uefi,
            _ => BootMode::Bios,
        },
    }
}

/// What the fake machine runs after a boot.
/// (No `Debug`: the image carries the node's credential.)
#[derive(Clone, PartialEq, Eq)]
enum Boot {
    /// The ramdisk, with the agent token of its command line (if any).
    Ramdisk {
        token: Option<String>,
    },
    Image {
        credential: String,
    },
    Nothing,
}

impl Boot {
    fn kind(&self) -> &'static str {
        match self {
            Boot::Ramdisk { .. } => "ramdisk",
            Boot::Image { .. } => "image",
            Boot::Nothing => "nothing",
        }
    }
}

/// One ramdisk boot of a fake machine: the MAC it reports as and the agent token its command
/// line gave. (No `Debug`: the token is secret.)
struct AgentBoot {
    mac: String,
    token: Option<String>,
}

/// (No `Debug`: `disk` is the node's credential.)
#[derive(Default)]
struct MachineState {
    /// Cancels what runs now.
    running: Option<CancellationToken>,
    /// The credential a completed deploy wrote on the disk.
    disk: Option<String>,
    /// The last deploy or wipe operation carried out (a repeated command is not replayed; ops
    /// are unique per node across steps).
    done_op: Option<u64>,
}

/// The power driver of a fake node: its [`FakePower`] plus the machine behind it.
pub struct FakeMachine {
    /// Itself, for the tasks a boot spawns.
    me: Weak<FakeMachine>,
    name: String,
    power: FakePower,
    daemon: Weak<Daemon>,
    timing: Timing,
    state: Mutex<MachineState>,
}

impl std::fmt::Debug for FakeMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeMachine")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The driver of a fake node (`None` if the node's driver is not `fake`): with a machine that
/// runs a fake agent when the node asks for one, else the bare fake BMC.
pub fn driver(daemon: &Arc<Daemon>, node: &Node, timing: Timing) -> Option<Arc<dyn PowerDriver>> {
    if node.bmc.driver != DriverKind::Fake {
        return None;
    }
    let password = Password::new(node.bmc.password.expose());
    let bmc = FakeBmc::new(&node.name, node.bmc.username.clone(), password.clone());
    if let Some(ms) = node
        .capabilities
        .0
        .get(BMC_DELAY_CAPABILITY)
        .and_then(|v| v.parse::<u64>().ok())
    {
        bmc.set_delay(Duration::from_millis(ms));
    }
    let power = FakePower::new(bmc, node.bmc.username.clone(), password);
    if Behaviour::of(node).is_none() {
        return Some(Arc::new(power));
    }
    Some(Arc::new_cyclic(|me| FakeMachine {
        me: me.clone(),
        name: node.name.clone(),
        power,
        daemon: Arc::downgrade(daemon),
        timing,
        state: Mutex::new(MachineState::default()),
    }))
}

impl FakeMachine {
    fn lock(&self) -> MutexGuard<'_, MachineState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stop what runs (power went away).
    fn stop(&self) {
        if let Some(t) = self.lock().running.take() {
            t.cancel();
        }
    }

    /// The machine just started: decide what it runs, as firmware + iPXE would.
    fn booted(self: &Arc<Self>) {
        self.stop();
        let Some(daemon) = self.daemon.upgrade() else {
            return;
        };
        let Ok(Some((node, _))) = crate::store::nodes::get(daemon.store(), &self.name) else {
            return;
        };
        let Some(behaviour) = Behaviour::of(&node) else {
            return;
        };
        let via_network = matches!(
            self.power.bmc().last_boot_device(),
            Some(BootDevice::Pxe) | None
        );
        let policy = node
            .macs
            .first()
            .and_then(|m| daemon.boot_action(MacAddr(m.0)));
        let disk = self.lock().disk.clone();
        let boot = match (via_network, policy, disk) {
            (true, Some(BootAction::Kernel { cmdline, .. }), _) => Boot::Ramdisk {
                token: KernelArgs::parse(&cmdline).token,
            },
            // iPXE exits (or the firmware boots the disk): a deployed disk boots its image.
            (_, _, Some(credential)) => Boot::Image { credential },
            _ => Boot::Nothing,
        };
        debug!(node = %self.name, ?behaviour, boot = boot.kind(), "fake machine booted");
        if let (Boot::Ramdisk { .. }, Some(mac)) = (&boot, node.macs.first()) {
            // Its iPXE fetched the script, as a real one would (meets the boot watchdog).
            daemon.script_served(MacAddr(mac.0));
        }
        if boot == Boot::Nothing || behaviour == Behaviour::Dead {
            return;
        }
        let token = CancellationToken::new();
        self.lock().running = Some(token.clone());
        let me = self.clone();
        let boot_mac = node
            .macs
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        let hw = facts(&node);
        tokio::spawn(async move {
            let run = async {
                match boot {
                    Boot::Ramdisk { token } => {
                        let agent = AgentBoot {
                            mac: boot_mac,
                            token,
                        };
                        me.ramdisk(behaviour, &agent, hw).await
                    }
                    Boot::Image { credential } => me.image(behaviour, &credential).await,
                    Boot::Nothing => {}
                }
            };
            tokio::select! {
                _ = token.cancelled() => {}
                _ = run => {}
            }
        });
    }

    fn scale(&self, b: Behaviour, d: Duration) -> Duration {
        if b == Behaviour::Slow {
            d * self.timing.slow_factor
        } else {
            d
        }
    }

    /// One request through the daemon's API handler: (status, body).
    async fn call(
        &self,
        path: &str,
        body: Vec<u8>,
        bearer: Option<&str>,
    ) -> Option<(u16, bytes::Bytes)> {
        let daemon = self.daemon.upgrade()?;
        // The agent endpoints need no operator token; the API object is only a dispatcher.
        let api = Api::new(daemon, String::new());
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if let Some(t) = bearer {
            if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {t}")) {
                headers.insert(http::header::AUTHORIZATION, v);
            }
        }
        let resp = api
            .handle(ApiRequest {
                method: http::Method::POST,
                path: path.into(),
                query: None,
                headers,
                body: body.into(),
                peer: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            })
            .await;
        Some((resp.status.as_u16(), bytes::Bytes::from(resp.body)))
    }

    /// An agent call (JSON both ways) with this boot's token.
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        agent: &AgentBoot,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, CallError> {
        let body = serde_json::to_vec(body)?;
        match self.call(path, body, agent.token.as_deref()).await {
            None => Err(CallError::Gone),
            Some((200..=299, b)) => Ok(serde_json::from_slice(&b)?),
            Some((status, b)) => Err(CallError::Refused {
                status,
                body: String::from_utf8_lossy(&b).into_owned(),
            }),
        }
    }

    /// The deploy ramdisk: report, heartbeat, obey.
    async fn ramdisk(self: &Arc<Self>, b: Behaviour, agent: &AgentBoot, hw: Facts) {
        tokio::time::sleep(self.scale(b, self.timing.boot)).await;
        if agent.token.is_none() {
            // As the real agent: an older seed gives none; go on without.
            warn!(node = %self.name, "fake agent: no seed.token= on the command line");
        }
        let report = Report {
            boot_mac: agent.mac.clone(),
            facts: hw,
        };
        let ack: Ack = match self.post(agent, "/v1/agent/facts", &report).await {
            Ok(a) => a,
            Err(e) => {
                // A real agent would retry; the seed refusing facts is final for this boot (it
                // does so during a deploy: the facts are only taken while inspecting).
                debug!(node = %self.name, error = %e, "fake agent: facts refused");
                Ack {
                    node: self.name.clone(),
                    heartbeat_secs: 1,
                }
            }
        };
        let tick = self
            .timing
            .tick
            .min(Duration::from_secs(ack.heartbeat_secs.max(1)));
        let hb = Heartbeat {
            boot_mac: agent.mac.clone(),
        };
        for _ in 0..self.timing.max_heartbeats {
            let cmd = match self
                .post::<Command>(agent, "/v1/agent/heartbeat", &hb)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    debug!(node = %self.name, error = %e, "fake agent: heartbeat");
                    Command::None
                }
            };
            if !self.obey(b, agent, cmd).await {
                return;
            }
            tokio::time::sleep(self.scale(b, tick)).await;
        }
        warn!(node = %self.name, "fake agent: heartbeat bound reached, stopping");
    }

    /// Carry out one command; false when the agent is done (powered off, rebooted, silent).
    async fn obey(self: &Arc<Self>, b: Behaviour, agent: &AgentBoot, cmd: Command) -> bool {
        match cmd {
            Command::None => true,
            Command::PowerOff => {
                self.power_self(PowerAction::Off).await;
                false
            }
            Command::Reboot => {
                self.power_self(PowerAction::Cycle).await;
                false
            }
            Command::Deploy(d) => {
                if self.lock().done_op == Some(d.op) {
                    return true;
                }
                match self.deploy(b, agent, &d).await {
                    Some(next) => Box::pin(self.obey(b, agent, next)).await,
                    None => false,
                }
            }
            Command::Wipe(w) => {
                if self.lock().done_op == Some(w.op) {
                    return true;
                }
                match self.wipe(b, agent, &w).await {
                    Some(next) => Box::pin(self.obey(b, agent, next)).await,
                    None => false,
                }
            }
        }
    }

    /// The machine powers itself off or reboots (the agent's own request, not the BMC's).
    async fn power_self(self: &Arc<Self>, action: PowerAction) {
        if let Err(e) = self.power(action).await {
            debug!(node = %self.name, error = %e, "fake agent: own power action");
        }
    }

    /// Play a deploy as progress reports. `Some(next command)` after the last report; `None`
    /// when the agent went silent.
    async fn deploy(&self, b: Behaviour, agent: &AgentBoot, d: &DeployCommand) -> Option<Command> {
        // The stream's size from the manifest (an image with none still shows progress).
        let total = if d.manifest.stream.size > 0 {
            d.manifest.stream.size
        } else {
            512 << 20
        };
        let step = self.scale(b, self.timing.step);
        let report = |phase: Phase, bytes: u64, error: Option<String>| Progress {
            boot_mac: agent.mac.clone(),
            op: d.op,
            phase,
            bytes,
            total,
            error,
        };
        let mut plan = vec![report(Phase::Partitioning, 0, None)];
        for i in 1..=4 {
            plan.push(report(Phase::Writing, total * i / 4, None));
        }
        plan.push(report(Phase::Finishing, total, None));
        plan.push(report(Phase::Done, total, None));
        if b == Behaviour::Fail {
            plan.truncate(3);
            plan.push(report(
                Phase::Failed,
                total / 2,
                Some("fake fault: write error on vda at sector 2048".into()),
            ));
        }
        let mut last = Command::None;
        for (i, p) in plan.into_iter().enumerate() {
            tokio::time::sleep(step).await;
            if b == Behaviour::Vanish && i == 1 {
                info!(node = %self.name, "fake agent: vanishing mid-deploy");
                std::future::pending::<()>().await;
            }
            let phase = p.phase;
            if phase == Phase::Done {
                // Written and synced before it is reported: the seed's power cycle that
                // follows the report must find the image on the disk.
                let mut s = self.lock();
                s.disk = Some(d.credential.expose().to_string());
                s.done_op = Some(d.op);
            }
            match self.post::<Command>(agent, "/v1/agent/progress", &p).await {
                Ok(c) => last = c,
                Err(e) => {
                    warn!(node = %self.name, ?phase, error = %e, "fake agent: progress refused");
                    return Some(Command::None);
                }
            }
        }
        Some(last)
    }

    /// Play a wipe: one `wiping` report, then `done` (the disk is empty from then on) or, with
    /// the `fail` fault, `failed`. `Some(next command)` after the last report.
    async fn wipe(&self, b: Behaviour, agent: &AgentBoot, w: &WipeCommand) -> Option<Command> {
        let total = if w.full { 8 << 30 } else { 8 << 20 };
        let report = |phase: Phase, bytes: u64, error: Option<String>| Progress {
            boot_mac: agent.mac.clone(),
            op: w.op,
            phase,
            bytes,
            total,
            error,
        };
        let last = if b == Behaviour::Fail {
            report(
                Phase::Failed,
                total / 2,
                Some("fake fault: zeroing vda: Input/output error".into()),
            )
        } else {
            report(Phase::Done, total, None)
        };
        let mut next = Command::None;
        for p in [report(Phase::Wiping, 0, None), last] {
            tokio::time::sleep(self.scale(b, self.timing.step)).await;
            if p.phase == Phase::Done {
                let mut s = self.lock();
                s.disk = None;
                s.done_op = Some(w.op);
            }
            match self.post::<Command>(agent, "/v1/agent/progress", &p).await {
                Ok(c) => next = c,
                Err(e) => {
                    warn!(node = %self.name, phase = ?p.phase, error = %e, "fake agent: progress refused");
                    return Some(Command::None);
                }
            }
        }
        Some(next)
    }

    /// The deployed image's first boot: tell the seed, with the node's credential.
    async fn image(&self, b: Behaviour, credential: &str) {
        tokio::time::sleep(self.scale(b, self.timing.boot)).await;
        for attempt in 0..5u32 {
            match self
                .call("/v1/node/booted", b"{}".to_vec(), Some(credential))
                .await
            {
                None => return,
                Some((200..=299, _)) => {
                    debug!(node = %self.name, "fake image: booted reported");
                    return;
                }
                Some((code, body)) => {
                    debug!(node = %self.name, code, body = %String::from_utf8_lossy(&body), attempt, "fake image: booted refused");
                }
            }
            tokio::time::sleep(self.scale(b, self.timing.tick)).await;
        }
    }
}

/// Wraps [`FakePower`]: every accepted start of the machine boots it, every power off stops it.
impl PowerDriver for FakeMachine {
    fn target(&self) -> String {
        self.power.target()
    }

    fn power(&self, action: PowerAction) -> BoxFuture<'_, Result<(), PowerError>> {
        Box::pin(async move {
            let before = self.power.bmc().boots();
            self.power.power(action).await?;
            if self.power.bmc().power_state() == PowerState::Off {
                self.stop();
            } else if self.power.bmc().boots() > before {
                if let Some(me) = self.me.upgrade() {
                    me.booted();
                }
            }
            Ok(())
        })
    }

    fn status(&self) -> BoxFuture<'_, Result<PowerState, PowerError>> {
        self.power.status()
    }

    fn set_boot_device(
        &self,
        device: BootDevice,
        persistent: bool,
    ) -> BoxFuture<'_, Result<(), PowerError>> {
        self.power.set_boot_device(device, persistent)
    }
}

#[cfg(test)]
mod tests;
