//! One lab node: a QEMU process with its disks, NICs on the wire, serial console and QMP
//! socket, powered on and off the way its BMC asks.

use crate::ipmi::BootDevice;
use crate::qmp::Qmp;
use crate::spec::{Firmware, NodeSpec};
use crate::wire::WireAddr;
use crate::LabError;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// OVMF code, mapped read-only.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable store template, copied per node.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// NIC model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NicModel {
    /// virtio-net-pci.
    #[default]
    Virtio,
    /// Intel e1000.
    E1000,
}

impl NicModel {
    fn device(self) -> &'static str {
        match self {
            Self::Virtio => "virtio-net-pci",
            Self::E1000 => "e1000",
        }
    }
}

/// How nodes run (not part of `lab.json`: chosen at `lab up`).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Use KVM instead of TCG.
    pub kvm: bool,
    /// NIC model.
    pub nic: NicModel,
}

/// A node: its spec, its directory and, while powered, its QEMU process.
#[derive(Debug)]
pub struct Node {
    spec: NodeSpec,
    dir: PathBuf,
    wire: WireAddr,
    run: RunOptions,
    child: Option<Child>,
    booted_from: Option<BootDevice>,
    /// Set for the lab's seed machine: its medium and second wire.
    appliance: Option<crate::appliance::Machine>,
    /// TAP interfaces for NICs 1, 2, … instead of the wire (see [`Node::set_taps`]).
    taps: Vec<String>,
}

impl Node {
    /// A powered-off node living in `dir`.
    pub fn new(spec: NodeSpec, dir: PathBuf, wire: WireAddr, run: RunOptions) -> Self {
        Self {
            spec,
            dir,
            wire,
            run,
            child: None,
            booted_from: None,
            appliance: None,
            taps: Vec::new(),
        }
    }

    /// Put NIC `i` on the existing TAP interface `taps[i]` (QEMU opens it, with the kernel's
    /// offloads: `vnet_hdr` as QEMU defaults) instead of the lab's wire; NICs past the list
    /// stay on the wire. For a node on a real bridge, in a test's network namespace (QEMU is
    /// started in the namespace of the thread that powers the node on: its BMC's).
    pub fn set_taps(&mut self, taps: Vec<String>) {
        self.taps = taps;
    }

    /// The TAP interface of NIC `i`, if it has one.
    pub(crate) fn tap(&self, i: usize) -> Option<&str> {
        self.taps.get(i).map(String::as_str)
    }

    /// The lab's seed machine `spec` (powered off) living in `dir`, NIC 1 on `wire`, NIC 2 on
    /// `bmc_wire` (see [`crate::appliance`]).
    pub fn appliance(
        spec: &crate::appliance::ApplianceSpec,
        dir: PathBuf,
        wire: WireAddr,
        bmc_wire: Option<WireAddr>,
        run: RunOptions,
    ) -> Self {
        let mut node = Self::new(spec.node_spec(), dir, wire, run);
        node.appliance = Some(crate::appliance::Machine {
            medium: spec.medium.clone(),
            bmc_wire,
            forward: spec.forward.clone(),
        });
        node
    }

    /// Whether this is the lab's seed machine.
    pub fn is_appliance(&self) -> bool {
        self.appliance.is_some()
    }

    /// Its spec.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The QMP socket path.
    pub fn qmp_path(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    /// The serial console log.
    pub fn console_path(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// Disk `i`'s path.
    pub fn disk_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("disk{i}.qcow2"))
    }

    /// Create the directory, missing qcow2 disks (`qemu-img create`) and, for UEFI, the
    /// node's own copy of the OVMF variable store. Existing disks are kept.
    pub fn prepare(&self) -> Result<(), LabError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| LabError::Io {
            what: "creating",
            path: self.dir.clone(),
            source,
        })?;
        for (i, gib) in self.spec.disks_gib.iter().enumerate() {
            let p = self.disk_path(i);
            if p.exists() {
                continue;
            }
            let mut create = Command::new("qemu-img");
            create.args(["create", "-q", "-f", "qcow2"]);
            create.arg(&p).arg(format!("{gib}G"));
            qemu_img_create(&mut create, p)?;
        }
        if self.spec.firmware == Firmware::Uefi {
            let vars = self.dir.join("OVMF_VARS.fd");
            if !vars.exists() {
                std::fs::copy(OVMF_VARS, &vars).map_err(|source| LabError::Io {
                    what: "copying OVMF variables to",
                    path: vars,
                    source,
                })?;
            }
        }
        if let Some(a) = &self.appliance {
            a.prepare(&self.dir)?;
        }
        Ok(())
    }

    /// The QEMU command line for a boot from `boot` (boot order via `bootindex`, which both
    /// SeaBIOS and OVMF honour).
    pub fn command(&self, boot: BootDevice) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        c.arg("-name").arg(&self.spec.name);
        match self.spec.firmware {
            Firmware::Bios => c.args(["-machine", "pc"]),
            Firmware::Uefi => c
                .args(["-machine", "q35"])
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    self.dir.join("OVMF_VARS.fd").display()
                )),
        };
        c.args(["-accel", if self.run.kvm { "kvm" } else { "tcg" }]);
        c.arg("-m").arg(self.spec.memory_mib.to_string());
        c.arg("-smp").arg(self.spec.cpus.to_string());
        c.args(["-display", "none", "-vga", "std", "-nodefaults"]);
        // Servers have a hardware RNG; without one a fresh guest under TCG can wait minutes
        // for the kernel's entropy pool (the deploy agent once stalled 127 s in getrandom).
        c.args(["-device", "virtio-rng-pci"]);
        c.arg("-serial")
            .arg(format!("file:{}", self.console_path().display()));
        c.arg("-qmp").arg(format!(
            "unix:{},server=on,wait=off",
            self.qmp_path().display()
        ));
        if let Some(a) = &self.appliance {
            a.devices(&mut c, self, &self.wire, self.run.nic.device(), boot);
            return c;
        }
        let (nic_first, disk_first) = match boot {
            BootDevice::Pxe => (1, 1 + self.spec.macs.len()),
            _ => (1 + self.spec.disks_gib.len(), 1),
        };
        for (i, mac) in self.spec.macs.iter().enumerate() {
            let id = format!("n{i}");
            match self.taps.get(i) {
                Some(tap) => c
                    .arg("-netdev")
                    .arg(format!("tap,id={id},ifname={tap},script=no,downscript=no")),
                None => c.arg("-netdev").arg(self.wire.netdev(&id)),
            };
            c.arg("-device").arg(format!(
                "{},netdev={id},mac={mac},bootindex={}",
                self.run.nic.device(),
                nic_first + i
            ));
        }
        for i in 0..self.spec.disks_gib.len() {
            c.arg("-drive").arg(format!(
                "if=none,id=d{i},format=qcow2,file={}",
                self.disk_path(i).display()
            ));
            c.arg("-device").arg(format!(
                "virtio-blk-pci,drive=d{i},bootindex={}",
                disk_first + i
            ));
        }
        match boot {
            BootDevice::Cdrom => {
                c.args(["-drive", "if=none,id=cd0,media=cdrom"]);
                c.args(["-device", "ide-cd,drive=cd0,bootindex=0"]);
            }
            BootDevice::Bios => {
                c.args(["-boot", "menu=on,splash-time=30000"]);
            }
            _ => {}
        }
        c
    }

    /// Whether QEMU is running.
    pub fn is_on(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id while powered.
    pub fn pid(&mut self) -> Option<u32> {
        if self.is_on() {
            self.child.as_ref().map(Child::id)
        } else {
            None
        }
    }

    /// The boot device of the current (or last) power-on.
    pub fn booted_from(&self) -> Option<BootDevice> {
        self.booted_from
    }

    /// Start QEMU booting from `boot`; nothing happens if it already runs.
    pub fn power_on(&mut self, boot: BootDevice) -> Result<(), LabError> {
        if self.is_on() {
            return Ok(());
        }
        self.prepare()?;
        let _ = std::fs::remove_file(self.qmp_path());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("qemu.log"))
            .map_err(|source| LabError::Io {
                what: "opening",
                path: self.dir.join("qemu.log"),
                source,
            })?;
        let mut cmd = self.command(boot);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|source| LabError::Spawn {
                program: "qemu-system-x86_64",
                source,
            })?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        // QEMU dies with the thread that started it, so a crashed lab leaves no VM behind
        // (a clean shutdown powers nodes off explicitly before that).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        tracing::info!(node = %self.spec.name, ?boot, "power on");
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            program: "qemu-system-x86_64",
            source,
        })?;
        // Written here rather than with QEMU's -pidfile so it exists as soon as power-on
        // returns (other processes read it: `seed lab status|down`).
        let pid_file = self.dir.join("qemu.pid");
        if let Err(e) = std::fs::write(&pid_file, child.id().to_string()) {
            tracing::warn!(path = %pid_file.display(), error = %e, "writing the pid file");
        }
        self.child = Some(child);
        self.booted_from = Some(boot);
        Ok(())
    }

    /// A QMP session with the running QEMU.
    pub fn qmp(&self) -> Result<Qmp, LabError> {
        Ok(Qmp::connect(&self.qmp_path(), Duration::from_secs(5))?)
    }

    /// Hard power off: QMP `quit`, then SIGKILL if QEMU has not exited within 3 s.
    pub fn power_off(&mut self) -> Result<(), LabError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if matches!(child.try_wait(), Ok(None)) {
            tracing::info!(node = %self.spec.name, "power off");
            if let Ok(mut q) = Qmp::connect(&self.qmp_path(), Duration::from_millis(500)) {
                let _ = q.execute("quit");
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(self.dir.join("qemu.pid"));
        let _ = std::fs::remove_file(self.qmp_path());
        Ok(())
    }

    /// Hard reset (QMP `system_reset`).
    pub fn reset(&mut self) -> Result<(), LabError> {
        tracing::info!(node = %self.spec.name, "reset");
        self.qmp()?.execute("system_reset")?;
        Ok(())
    }

    /// ACPI power button (QMP `system_powerdown`); the guest decides what to do.
    pub fn soft_off(&mut self) -> Result<(), LabError> {
        tracing::info!(node = %self.spec.name, "soft off (ACPI)");
        self.qmp()?.execute("system_powerdown")?;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = std::fs::remove_file(self.dir.join("qemu.pid"));
        }
    }
}

/// Run a `qemu-img create` command that makes `path`; what qemu-img said is in the error.
pub(crate) fn qemu_img_create(cmd: &mut Command, path: PathBuf) -> Result<(), LabError> {
    let out = cmd.output().map_err(|source| LabError::Spawn {
        program: "qemu-img",
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(LabError::QemuImg {
        path,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// A command's arguments joined with spaces, for tests that check a QEMU command line.
#[cfg(test)]
pub(crate) fn args(c: &Command) -> String {
    c.get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Plan;

    #[test]
    fn command_line_follows_spec_and_boot_device() {
        let lab = Plan::new("t", 1).lab_file();
        let spec = lab.nodes[0].clone();
        let node = Node::new(
            spec.clone(),
            "/x/node1".into(),
            lab.wire,
            RunOptions::default(),
        );
        let pxe = args(&node.command(BootDevice::Pxe));
        assert!(
            pxe.contains(&format!("mac={},bootindex=1", spec.macs[0])),
            "{pxe}"
        );
        assert!(pxe.contains("virtio-blk-pci,drive=d0,bootindex=2"), "{pxe}");
        assert!(pxe.contains(&lab.wire.netdev("n0")));
        assert!(pxe.contains("-qmp unix:/x/node1/qmp.sock,server=on,wait=off"));
        assert!(pxe.contains("-serial file:/x/node1/console.log"));
        assert!(pxe.contains("-accel tcg") && pxe.contains("-m 512"));
        assert!(!pxe.contains("-no-reboot"));
        let disk = args(&node.command(BootDevice::Disk));
        assert!(
            disk.contains("bootindex=2") && disk.contains("drive=d0,bootindex=1"),
            "{disk}"
        );

        let mut plan = Plan::new("t", 1);
        plan.firmware = Firmware::Uefi;
        let spec = plan.lab_file().nodes[0].clone();
        let run = RunOptions {
            kvm: true,
            nic: NicModel::E1000,
        };
        let uefi = args(&Node::new(spec, "/x/n".into(), lab.wire, run).command(BootDevice::Pxe));
        assert!(
            uefi.contains("readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"),
            "{uefi}"
        );
        assert!(uefi.contains("file=/x/n/OVMF_VARS.fd") && uefi.contains("-accel kvm"));
        assert!(uefi.contains("-device e1000,"));

        let mut tapped = Node::new(
            lab.nodes[0].clone(),
            "/x/t".into(),
            lab.wire,
            RunOptions::default(),
        );
        tapped.set_taps(vec!["tap7".into()]);
        let t = args(&tapped.command(BootDevice::Pxe));
        assert!(
            t.contains("-netdev tap,id=n0,ifname=tap7,script=no,downscript=no"),
            "{t}"
        );
        assert!(!t.contains("mcast="), "{t}");
    }
}
