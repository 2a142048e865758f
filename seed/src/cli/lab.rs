//! `seed lab`: the QEMU virtual datacenter — nodes with virtual BMCs on this machine.
//!
//! `up` creates (or re-opens) a lab and serves its BMCs in the foreground until Ctrl-C /
//! SIGTERM, or in the background with `--detach`; `status`, `down`, `destroy` and `fault`
//! work on a lab by its directory (see `qemu::lab` for the files they use).

use anyhow::{bail, Context, Result};
use qemu::node::{NicModel, RunOptions};
use qemu::spec::{self, LabFile};
use qemu::{lab, Faults, Lab};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Arguments of `seed lab`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which lab.
#[derive(Debug, Clone, clap::Args)]
struct Which {
    /// Lab name.
    #[arg(long, default_value = "default")]
    name: String,
    /// Lab directory (default: $SEED_LAB_DIR/NAME, else $XDG_STATE_HOME/seed/labs/NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl Which {
    fn dir(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| spec::default_dir(&self.name))
    }
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Create the lab (nodes powered off) and serve its virtual BMCs until Ctrl-C / SIGTERM.
    Up(Box<UpArgs>),
    /// Show the lab's nodes, BMCs and power states.
    Status(Which),
    /// Power every node off and stop the BMCs; keep the disks.
    Down(Which),
    /// Like down, then remove the lab directory.
    Destroy(Which),
    /// Make a node's BMC misbehave (applied by the running lab within a second).
    Fault(FaultArgs),
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    #[command(flatten)]
    which: Which,
    #[command(flatten)]
    shape: super::lab_up::Shape,
    /// Use KVM acceleration (default: TCG, works everywhere).
    #[arg(long)]
    kvm: bool,
    /// Emulate Intel e1000 NICs instead of virtio-net.
    #[arg(long)]
    e1000: bool,
    /// When the lab exists with other options: destroy it (disks included) and create it anew.
    #[arg(long)]
    recreate: bool,
    /// Run the lab in the background and return once it serves.
    #[arg(long)]
    detach: bool,
    #[command(flatten)]
    appliance: super::lab_up::ApplianceArgs,
    #[command(flatten)]
    management: super::lab_up::ManagementArgs,
    #[command(flatten)]
    seed: super::lab_seed::SeedArgs,
}

#[derive(Debug, clap::Args)]
struct FaultArgs {
    #[command(flatten)]
    which: Which,
    /// Node name (node1 …).
    node: String,
    /// Delay every BMC reply by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Drop every packet.
    #[arg(long)]
    unresponsive: bool,
    /// Drop this fraction of packets (0.0–1.0).
    #[arg(long, default_value_t = 0.0)]
    drop_fraction: f64,
    /// Accept power-on but leave the node off.
    #[arg(long)]
    fail_power_on: bool,
    /// Announce only IPMI 1.5, no RMCP+ (the seed's driver must refuse it).
    #[arg(long)]
    ipmi15_only: bool,
    /// Clear this node's faults (the default when no fault is given).
    #[arg(long)]
    clear: bool,
}

pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Up(a) => up(*a),
        Cmd::Status(w) => status(&w.dir()),
        Cmd::Down(w) => down(&w.dir()),
        Cmd::Destroy(w) => {
            let dir = w.dir();
            down(&dir)?;
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            println!("lab destroyed: {}", dir.display());
            Ok(())
        }
        Cmd::Fault(a) => fault(a),
    }
}

fn up(a: UpArgs) -> Result<()> {
    let dir = a.which.dir();
    if let Some(pid) = lab::server_pid(&dir) {
        bail!(
            "the lab in {} is already up (pid {pid}); `seed lab down` first",
            dir.display()
        );
    }
    // Decided before detaching, so that a refusal is printed here.
    let file = super::lab_up::resolve(
        &a.which.name,
        &dir,
        &a.shape,
        &a.appliance,
        &a.management,
        a.recreate,
    )?;
    if a.detach {
        return detach(&dir);
    }
    let run = RunOptions {
        kvm: a.kvm,
        nic: if a.e1000 {
            NicModel::E1000
        } else {
            NicModel::Virtio
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut lab = Lab::start(&dir, file, run).context("starting the lab")?;
    write_routed_nodes(&dir, lab.file())?;
    print_table(&dir, lab.file(), false);
    let _seed = if a.seed.seed {
        Some(super::lab_seed::start(&dir, lab.file(), &a.seed)?)
    } else {
        None
    };
    lab.power_on_appliance()
        .context("powering the seed machine on")?;
    // Written once everything serves (the seed's API included): `--detach` returns on it.
    let pid_file = dir.join(lab::SERVER_PID);
    std::fs::write(&pid_file, std::process::id().to_string())
        .with_context(|| format!("writing {}", pid_file.display()))?;
    println!("serving; Ctrl-C powers every node off and stops");
    let result = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {
                    if let Err(e) = lab.apply_faults_file() {
                        tracing::warn!("faults file ignored: {:#}", anyhow::Error::from(e));
                    }
                }
            }
        }
        anyhow::Ok(())
    });
    tracing::info!("stopping the lab");
    lab.shutdown();
    let _ = std::fs::remove_file(&pid_file);
    result
}

/// Re-run this command without `--detach` in its own process group, output to
/// `server.log`, and wait until it serves.
fn detach(dir: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let log_path = dir.join("server.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let exe = std::env::current_exe().context("finding the seed binary")?;
    let args: Vec<_> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    let mut child = std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the lab server")?;
    let start = Instant::now();
    loop {
        if lab::server_pid(dir) == Some(child.id()) {
            break;
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("the lab server exited ({status}):\n{log}");
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            bail!(
                "the lab server did not come up within 60 s; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let file = spec::load(dir)?;
    print_table(dir, &file, false);
    println!(
        "running in the background (pid {}, log {}); `seed lab down --dir {}` stops it",
        child.id(),
        log_path.display(),
        dir.display()
    );
    Ok(())
}

/// The nodes as an instackenv with their BMCs at the management host's address (written by
/// `up` when the lab has one), and the seed machine's entry (Stage N: the cloud enrolls it).
const ROUTED_NODES: &str = "nodes.yaml";
const ROUTED_SEED_MACHINE: &str = "seed-machine.yaml";

/// Write [`ROUTED_NODES`] and [`ROUTED_SEED_MACHINE`] into `dir` when `file` has a
/// management host (BMC ports as bound).
fn write_routed_nodes(dir: &Path, file: &LabFile) -> Result<()> {
    let Some(m) = &file.management else {
        return Ok(());
    };
    let routed = |specs: &[spec::NodeSpec]| {
        let specs: Vec<_> = specs
            .iter()
            .map(|n| {
                let mut n = n.clone();
                n.bmc.address = m.address;
                // The provisioning NIC only: the seed machine's second NIC is on the BMC network.
                n.macs.truncate(1);
                n
            })
            .collect();
        super::lab_seed::instackenv(&specs, &[], "")
    };
    let nodes = dir.join(ROUTED_NODES);
    std::fs::write(&nodes, routed(&file.nodes))
        .with_context(|| format!("writing {}", nodes.display()))?;
    if let Some(a) = &file.appliance {
        let seed = dir.join(ROUTED_SEED_MACHINE);
        std::fs::write(&seed, routed(&[a.node_spec()]))
            .with_context(|| format!("writing {}", seed.display()))?;
    }
    Ok(())
}

fn print_table(dir: &Path, file: &LabFile, with_power: bool) {
    println!(
        "lab {}  dir {}  wire {}:{}",
        file.name,
        dir.display(),
        file.wire.group,
        file.wire.port
    );
    if let Some(net) = &file.bmc_network {
        println!(
            "BMC network {}/{} on wire {}:{} (BMCs answer IPMI at BMC LAN:623; the seed's own \
             address there: {})",
            net.network, net.prefix_len, net.wire.group, net.wire.port, net.seed_address
        );
    }
    let mut rows = vec![vec![
        "NODE".to_string(),
        "MACS".into(),
        "BMC".into(),
        "BMC LAN".into(),
        "FIRMWARE".into(),
        "RAM".into(),
        "CPUS".into(),
        "DISKS".into(),
    ]];
    if with_power {
        rows[0].push("POWER".into());
    }
    let appliance = file.appliance.as_ref().map(|a| a.node_spec());
    for n in file.nodes.iter().chain(appliance.as_ref()) {
        let mut row = vec![
            n.name.clone(),
            n.macs.join(","),
            format!("{}:{}", n.bmc.address, n.bmc.port),
            n.bmc
                .lan
                .as_ref()
                .map_or_else(|| "-".into(), |l| l.address.to_string()),
            format!("{:?}", n.firmware).to_lowercase(),
            format!("{}M", n.memory_mib),
            n.cpus.to_string(),
            if n.disks_gib.is_empty() {
                "-".into()
            } else {
                n.disks_gib
                    .iter()
                    .map(|g| format!("{g}G"))
                    .collect::<Vec<_>>()
                    .join(",")
            },
        ];
        if with_power {
            row.push(match lab::qemu_pid(dir, &n.name) {
                Some(pid) => format!("on (pid {pid})"),
                None => "off".into(),
            });
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    if let Some(a) = &file.appliance {
        println!(
            "{} is the seed machine: {} {}, console {}",
            a.name,
            a.medium.kind(),
            a.medium
                .files()
                .first()
                .map_or_else(|| "(network boot)".into(), |p| p.display().to_string()),
            dir.join(&a.name).join("console.log").display()
        );
    }
    if let Some(m) = &file.management {
        println!(
            "management host {}/{} on the provisioning wire: each BMC also answers at {}:<its \
             port> (the BMC network routed there); nodes as enrolled from it: {}",
            m.address,
            m.prefix_len,
            m.address,
            dir.join(ROUTED_NODES).display()
        );
        for f in &m.forwards {
            println!("  127.0.0.1:{} -> {} on the wire", f.host_port, f.to);
        }
    }
    if let Some(n) = file.nodes.first() {
        println!(
            "BMC credentials: {} / {}   e.g.\n  ipmitool -I lanplus -H {} -p {} -U {} -P {} power status",
            n.bmc.username,
            n.bmc.password,
            n.bmc.address,
            n.bmc.port,
            n.bmc.username,
            n.bmc.password
        );
    }
}

fn status(dir: &Path) -> Result<()> {
    let file = spec::load(dir).with_context(|| format!("no lab in {}", dir.display()))?;
    print_table(dir, &file, true);
    match lab::server_pid(dir) {
        Some(pid) => println!("BMCs: serving (pid {pid})"),
        None => println!("BMCs: not serving (`seed lab up --dir {}`)", dir.display()),
    }
    let faults = lab::read_faults(dir)?;
    for (node, f) in faults.iter().filter(|(_, f)| **f != Faults::default()) {
        println!("fault on {node}: {f:?}");
    }
    Ok(())
}

fn down(dir: &Path) -> Result<()> {
    let file = spec::load(dir).with_context(|| format!("no lab in {}", dir.display()))?;
    if let Some(pid) = lab::server_pid(dir) {
        lab::signal(pid, lab::SIGTERM).with_context(|| format!("stopping pid {pid}"))?;
        // Wait on the process, not on its pid file: the server removes that file after
        // powering the nodes off but before its runtime and the seed daemon have stopped.
        let start = Instant::now();
        while lab::pid_running(pid) && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if lab::pid_running(pid) {
            tracing::warn!("lab server {pid} ignored SIGTERM for 20 s; killing it");
            let _ = lab::signal(pid, lab::SIGKILL);
            let start = Instant::now();
            while lab::pid_running(pid) && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // Whatever survived (a killed server), by pid file.
    let machines = file.nodes.iter().map(|n| &n.name);
    for name in machines.chain(file.appliance.iter().map(|a| &a.name)) {
        if let Some(pid) = lab::qemu_pid(dir, name) {
            let _ = lab::signal(pid, lab::SIGKILL);
        }
    }
    let _ = std::fs::remove_file(dir.join(lab::SERVER_PID));
    println!(
        "lab {} is down (disks kept in {})",
        file.name,
        dir.display()
    );
    Ok(())
}

fn fault(a: FaultArgs) -> Result<()> {
    let dir = a.which.dir();
    let file = spec::load(&dir).with_context(|| format!("no lab in {}", dir.display()))?;
    let is_appliance = file.appliance.as_ref().is_some_and(|s| s.name == a.node);
    if !is_appliance && !file.nodes.iter().any(|n| n.name == a.node) {
        bail!("no node {} in lab {}", a.node, file.name);
    }
    if !(0.0..=1.0).contains(&a.drop_fraction) {
        bail!("--drop-fraction must be between 0 and 1");
    }
    let f = Faults {
        delay_ms: a.delay_ms,
        unresponsive: a.unresponsive,
        drop_fraction: a.drop_fraction,
        fail_power_on: a.fail_power_on,
        ipmi15_only: a.ipmi15_only,
    };
    let mut all = lab::read_faults(&dir)?;
    if a.clear || f == Faults::default() {
        all.remove(&a.node);
        println!("{}: faults cleared", a.node);
    } else {
        println!("{}: {f:?}", a.node);
        all.insert(a.node.clone(), f);
    }
    lab::write_faults(&dir, &all)?;
    Ok(())
}
