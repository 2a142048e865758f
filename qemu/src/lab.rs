//! A running lab: its nodes and their virtual BMCs, built from a [`LabFile`] in a lab
//! directory. Dropping a [`Lab`] stops the BMCs and powers every node off, pass or fail.
//!
//! Also the on-disk conventions other processes use to inspect or stop a lab: `server.pid`
//! (the `seed lab up` process), `<node>/qemu.pid`, and `faults.json` (faults per node name,
//! picked up by a running server).

use crate::bmc::{Faults, VirtualBmc};
use crate::ipmi::BmcConfig;
use crate::node::{Node, RunOptions};
use crate::spec::{self, LabFile, Plan};
use crate::wire::fnv1a;
use crate::LabError;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// File holding the pid of the process serving a lab's BMCs.
pub const SERVER_PID: &str = "server.pid";
/// File of faults to apply, by node name (`{"node1": {"unresponsive": true}}`).
pub const FAULTS_FILE: &str = "faults.json";

/// A lab with its BMCs serving.
#[derive(Debug)]
pub struct Lab {
    dir: PathBuf,
    file: LabFile,
    nodes: Vec<Arc<Mutex<Node>>>,
    bmcs: Vec<VirtualBmc>,
    /// The seed machine and its BMC, when `file.appliance` is set.
    appliance: Option<(Arc<Mutex<Node>>, VirtualBmc)>,
    /// The management host, when `file.management` is set.
    mgmt: Option<crate::mgmt::MgmtHost>,
}

impl Lab {
    /// Create a lab from `plan` in `dir` (nodes powered off).
    pub fn create(dir: &Path, plan: &Plan, run: RunOptions) -> Result<Self, LabError> {
        Self::start(dir, plan.lab_file(), run)
    }

    /// Bring up the lab described by `file` in `dir`: node directories and disks, one BMC per
    /// node (ports 0 become the ports bound; each also on the BMC network when the lab has
    /// one), the seed machine and its BMC when `file.appliance` is set (powered off, as the
    /// nodes), and `lab.json` written with the result.
    pub fn start(dir: &Path, mut file: LabFile, run: RunOptions) -> Result<Self, LabError> {
        std::fs::create_dir_all(dir).map_err(|source| LabError::Io {
            what: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
        let mut lab = Self {
            dir: dir.to_path_buf(),
            file: file.clone(),
            nodes: vec![],
            bmcs: vec![],
            appliance: None,
            mgmt: None,
        };
        let net = file.bmc_network.clone();
        for spec in &mut file.nodes {
            let node = Node::new(spec.clone(), dir.join(&spec.name), file.wire, run.clone());
            node.prepare()?;
            let node = Arc::new(Mutex::new(node));
            let bmc = start_bmc(
                &file.name,
                &mut spec.bmc,
                &spec.name,
                net.as_ref(),
                node.clone(),
            )?;
            lab.nodes.push(node);
            lab.bmcs.push(bmc);
        }
        if let Some(a) = &mut file.appliance {
            let node = Node::appliance(
                a,
                dir.join(&a.name),
                file.wire,
                net.as_ref().map(|n| n.wire),
                run.clone(),
            );
            node.prepare()?;
            let node = Arc::new(Mutex::new(node));
            let bmc = start_bmc(&file.name, &mut a.bmc, &a.name, net.as_ref(), node.clone())?;
            lab.appliance = Some((node, bmc));
        }
        if let Some(m) = &file.management {
            let mut bmcs: Vec<_> = lab
                .bmcs
                .iter()
                .map(|b| (b.addr().port(), b.shared()))
                .collect();
            bmcs.extend(
                lab.appliance
                    .as_ref()
                    .map(|(_, b)| (b.addr().port(), b.shared())),
            );
            lab.mgmt = Some(crate::mgmt::MgmtHost::start(m, file.wire, bmcs).map_err(
                |source| LabError::Io {
                    what: "starting the management host at",
                    path: PathBuf::from(m.address.to_string()),
                    source,
                },
            )?);
        }
        lab.file = file;
        spec::save(dir, &lab.file)?;
        tracing::info!(lab = %lab.file.name, dir = %dir.display(), nodes = lab.nodes.len(), appliance = lab.appliance.is_some(), "lab up");
        Ok(lab)
    }

    /// The lab directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lab description (with the ports actually bound).
    pub fn file(&self) -> &LabFile {
        &self.file
    }

    /// Node by name.
    pub fn node(&self, name: &str) -> Option<&Arc<Mutex<Node>>> {
        let i = self.file.nodes.iter().position(|n| n.name == name)?;
        self.nodes.get(i)
    }

    /// BMC of a node, by node name.
    pub fn bmc(&self, name: &str) -> Option<&VirtualBmc> {
        let i = self.file.nodes.iter().position(|n| n.name == name)?;
        self.bmcs.get(i)
    }

    /// The seed machine (appliance VM), if the lab has one.
    pub fn appliance(&self) -> Option<&Arc<Mutex<Node>>> {
        self.appliance.as_ref().map(|(n, _)| n)
    }

    /// The seed machine's own BMC.
    pub fn appliance_bmc(&self) -> Option<&VirtualBmc> {
        self.appliance.as_ref().map(|(_, b)| b)
    }

    /// Power the seed machine on from its medium (what `seed lab up` does for it); nothing
    /// if the lab has none or it already runs.
    pub fn power_on_appliance(&self) -> Result<(), LabError> {
        let (Some((node, _)), Some(spec)) = (&self.appliance, &self.file.appliance) else {
            return Ok(());
        };
        let mut node = node.lock().unwrap_or_else(|e| e.into_inner());
        node.power_on(spec.medium.boot_device())
    }

    /// Read `faults.json` and apply it: nodes not named get their faults cleared. A missing
    /// file clears every fault.
    pub fn apply_faults_file(&self) -> Result<(), LabError> {
        let faults = read_faults(&self.dir)?;
        for (spec, bmc) in self.file.nodes.iter().zip(&self.bmcs) {
            let f = faults.get(&spec.name).cloned().unwrap_or_default();
            if bmc.faults() != f {
                bmc.set_fault(f);
            }
        }
        if let (Some(spec), Some((_, bmc))) = (&self.file.appliance, &self.appliance) {
            let f = faults.get(&spec.name).cloned().unwrap_or_default();
            if bmc.faults() != f {
                bmc.set_fault(f);
            }
        }
        Ok(())
    }

    /// Stop every BMC and power every node off (idempotent).
    pub fn shutdown(&mut self) {
        if let Some(m) = &mut self.mgmt {
            m.stop();
        }
        for b in &mut self.bmcs {
            b.stop();
        }
        if let Some((node, bmc)) = &mut self.appliance {
            bmc.stop();
            let _ = node.lock().unwrap_or_else(|e| e.into_inner()).power_off();
        }
        for n in &self.nodes {
            let mut n = n.lock().unwrap_or_else(|e| e.into_inner());
            let _ = n.power_off();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Start the BMC of machine `name` (127.0.0.1, and its LAN port on `net` when it has one);
/// a port 0 in `bmc` becomes the port bound.
fn start_bmc(
    lab: &str,
    bmc: &mut spec::BmcSpec,
    name: &str,
    net: Option<&spec::BmcNetwork>,
    node: Arc<Mutex<Node>>,
) -> Result<VirtualBmc, LabError> {
    let bind = SocketAddr::from((bmc.address, bmc.port));
    let config = BmcConfig {
        username: bmc.username.clone(),
        password: bmc.password.clone(),
        guid: guid(lab, name),
    };
    let mut v = VirtualBmc::start(bind, config, node)
        .map_err(|source| LabError::Bind { addr: bind, source })?;
    bmc.port = v.addr().port();
    if let (Some(lan), Some(net)) = (&bmc.lan, net) {
        v.start_lan(lan, net).map_err(|source| LabError::Io {
            what: "joining the BMC network for the BMC of",
            path: PathBuf::from(name),
            source,
        })?;
    }
    Ok(v)
}

/// A stable system GUID per node.
fn guid(lab: &str, node: &str) -> [u8; 16] {
    let a = fnv1a(lab.as_bytes()).to_le_bytes();
    let b = fnv1a(node.as_bytes()).to_le_bytes();
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&a);
    g[4..8].copy_from_slice(&b);
    g[8..12].copy_from_slice(b"seed");
    g[12..].copy_from_slice(&fnv1a(&[a, b].concat()).to_le_bytes());
    g
}

/// Faults by node name from `dir/faults.json` (empty when there is no file).
pub fn read_faults(dir: &Path) -> Result<BTreeMap<String, Faults>, LabError> {
    let p = dir.join(FAULTS_FILE);
    match std::fs::read_to_string(&p) {
        Ok(t) => serde_json::from_str(&t).map_err(|source| LabError::LabFile { path: p, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(LabError::Io {
            what: "reading",
            path: p,
            source,
        }),
    }
}

/// Write `dir/faults.json`.
pub fn write_faults(dir: &Path, faults: &BTreeMap<String, Faults>) -> Result<(), LabError> {
    let p = dir.join(FAULTS_FILE);
    fsutil::write(
        &p,
        serde_json::to_string_pretty(faults)
            .expect("serializable")
            .as_bytes(),
    )
    .map_err(|source| LabError::Io {
        what: "writing",
        path: p,
        source,
    })
}

/// The pid in `path` if that process is alive and its command line contains `needle`
/// (guards against a recycled pid).
pub fn live_pid(path: &Path, needle: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    (pid_running(pid) && String::from_utf8_lossy(&cmdline).contains(needle)).then_some(pid)
}

/// Whether process `pid` exists and is not a zombie (a zombie has exited but has not
/// been reaped yet).
pub fn pid_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit(')').next()?.split_whitespace().next()?;
            Some(state != "Z")
        })
        .unwrap_or(false)
}

/// The `seed lab up` process serving the lab in `dir`, if running.
pub fn server_pid(dir: &Path) -> Option<u32> {
    live_pid(&dir.join(SERVER_PID), "lab")
}

/// The QEMU process of node `name` in the lab in `dir`, if running.
pub fn qemu_pid(dir: &Path, name: &str) -> Option<u32> {
    live_pid(&dir.join(name).join("qemu.pid"), "qemu")
}

/// Send `signal` to `pid` (for stopping a lab served by another process).
pub fn signal(pid: u32, signal: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let r = unsafe { libc::kill(pid as libc::pid_t, signal) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// SIGTERM.
pub const SIGTERM: i32 = libc::SIGTERM;
/// SIGKILL.
pub const SIGKILL: i32 = libc::SIGKILL;

/// A two-node lab in `dir` for unit tests: BMCs on ephemeral ports, no disks, named after
/// `prefix` and this process (so parallel test binaries do not collide).
#[cfg(test)]
pub(crate) fn test_lab(dir: &Path, prefix: &str) -> Lab {
    let mut plan = Plan::new(&format!("{prefix}-{}", std::process::id()), 2);
    plan.bmc_base_port = 0;
    plan.disks_gib = vec![];
    Lab::create(dir, &plan, RunOptions::default()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_binds_bmcs_writes_lab_json_and_applies_faults() {
        let tmp = tempfile::tempdir().unwrap();
        let lab = test_lab(tmp.path(), "unit");
        let on_disk = spec::load(tmp.path()).unwrap();
        assert_eq!(&on_disk, lab.file());
        assert!(on_disk.nodes.iter().all(|n| n.bmc.port != 0));
        assert_ne!(on_disk.nodes[0].bmc.port, on_disk.nodes[1].bmc.port);
        assert_eq!(
            lab.bmc("node2").unwrap().addr().port(),
            on_disk.nodes[1].bmc.port
        );

        let mut f = BTreeMap::new();
        f.insert(
            "node2".to_string(),
            Faults {
                unresponsive: true,
                ..Faults::default()
            },
        );
        write_faults(tmp.path(), &f).unwrap();
        lab.apply_faults_file().unwrap();
        assert!(lab.bmc("node2").unwrap().faults().unresponsive);
        assert_eq!(lab.bmc("node1").unwrap().faults(), Faults::default());
        std::fs::remove_file(tmp.path().join(FAULTS_FILE)).unwrap();
        lab.apply_faults_file().unwrap();
        assert_eq!(lab.bmc("node2").unwrap().faults(), Faults::default());
    }

    #[test]
    fn pid_files_of_dead_or_foreign_processes_are_not_live() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.pid");
        std::fs::write(&p, std::process::id().to_string()).unwrap();
        assert_eq!(live_pid(&p, "no-such-program-name-zz"), None);
        std::fs::write(&p, "4194304999").unwrap();
        assert_eq!(live_pid(&p, ""), None);
        assert_eq!(server_pid(tmp.path()), None);
    }
}
