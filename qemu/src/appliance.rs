//! The lab's appliance slot: one extra VM, "the seed machine", booted from a medium the
//! appliance build made, wired as a seed in a datacenter is.
//!
//! - NIC 1 on the provisioning wire (the nodes' wire), NIC 2 on the BMC network
//!   ([`crate::spec::BmcNetwork`]); no user-mode networking unless [`ApplianceSpec::forward`]
//!   asks for host ports, and then only through a third NIC with `restrict=on` (the guest
//!   cannot reach out through it): no route out of the lab.
//! - Its medium: an ISO as a CD-ROM, the same ISO (or any disk image) as a USB stick, a raw or
//!   qcow2 disk image, a kernel + initrd booted by QEMU (`-kernel`), or nothing (it PXE-boots
//!   from NIC 1, served by another seed). Writable media are attached through a copy-on-write
//!   overlay in the machine's directory (`medium.qcow2`), so the built file is never written;
//!   the overlay keeps the machine's writes across power cycles and is recreated when the
//!   medium file changes (size or mtime).
//! - SeaBIOS or OVMF, its own serial console log and QMP socket, and its own virtual BMC (on
//!   127.0.0.1 and, with a BMC network, at `.10`), so a later seed can enroll this machine.
//!
//! The appliance is a [`crate::node::Node`] whose command line is built here; the lab gives it
//! the directory `<lab>/<name>/` (`console.log`, `qmp.sock`, `qemu.pid`, `medium.qcow2`).

use crate::ipmi::BootDevice;
use crate::spec::{BmcLan, BmcSpec, Firmware, LabFile, NodeSpec};
use crate::wire::{fnv1a, WireAddr};
use crate::LabError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The appliance VM's default name, and its directory in the lab (not `seed`: `<lab>/seed/` is
/// the host-mode seed's, `seed lab up --seed`).
pub const DEFAULT_NAME: &str = "appliance";
/// Default RAM of the appliance VM, MiB (a parameter: the appliance build knows its size).
pub const DEFAULT_MEMORY_MIB: u32 = 1024;

/// What the seed machine boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Medium {
    /// An ISO image as a CD-ROM (read-only).
    Iso {
        /// The ISO file.
        path: PathBuf,
    },
    /// A disk image (the hybrid ISO `dd`'d to a stick, say) as a USB mass-storage device on an
    /// xHCI controller, through an overlay.
    Usb {
        /// The image (raw or qcow2).
        path: PathBuf,
    },
    /// A raw or qcow2 disk image as the first virtio disk, through an overlay.
    Disk {
        /// The image.
        path: PathBuf,
    },
    /// Kernel and initrd loaded by QEMU (`-kernel`): the netboot form, for development.
    Kernel {
        /// The kernel.
        kernel: PathBuf,
        /// The initrd.
        initrd: PathBuf,
        /// The kernel command line.
        #[serde(default)]
        append: String,
    },
    /// No medium: the machine PXE-boots from NIC 1 (the netboot form, served by another seed).
    Pxe,
}

/// Why `--appliance-kind KIND --appliance-medium PATH` names no medium.
#[derive(Debug, thiserror::Error)]
pub enum BadMedium {
    #[error("appliance kind {0} needs a medium path")]
    NeedsPath(String),
    #[error("no initrd.img or initrd in {}", .0.display())]
    NoInitrd(PathBuf),
    #[error("appliance kind pxe boots from the network: no medium")]
    PxeWithPath,
    #[error("appliance kind {0:?} is not one of iso, usb, disk, kernel, pxe")]
    Kind(String),
}

impl Medium {
    /// The kind's name, as `seed lab up --appliance-kind` spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Iso { .. } => "iso",
            Self::Usb { .. } => "usb",
            Self::Disk { .. } => "disk",
            Self::Kernel { .. } => "kernel",
            Self::Pxe => "pxe",
        }
    }

    /// The medium as `--appliance-kind KIND --appliance-medium PATH` gives it. `kernel` takes
    /// a directory holding `vmlinuz` and `initrd.img` (or `initrd`), and `cmdline` if the
    /// kernel needs arguments; `pxe` takes no path.
    pub fn from_kind(kind: &str, path: Option<&Path>) -> Result<Self, BadMedium> {
        let need = || {
            path.map(Path::to_path_buf)
                .ok_or_else(|| BadMedium::NeedsPath(kind.into()))
        };
        let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        Ok(match kind {
            "iso" => Self::Iso { path: abs(need()?) },
            "usb" => Self::Usb { path: abs(need()?) },
            "disk" => Self::Disk { path: abs(need()?) },
            "kernel" => {
                let dir = abs(need()?);
                let initrd = ["initrd.img", "initrd", "initramfs.zst", "initrd.zst"]
                    .iter()
                    .map(|n| dir.join(n))
                    .find(|p| p.is_file())
                    .ok_or_else(|| BadMedium::NoInitrd(dir.clone()))?;
                let append = std::fs::read_to_string(dir.join("cmdline"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                Self::Kernel {
                    kernel: dir.join("vmlinuz"),
                    initrd,
                    append,
                }
            }
            "pxe" => match path {
                None => Self::Pxe,
                Some(_) => return Err(BadMedium::PxeWithPath),
            },
            other => return Err(BadMedium::Kind(other.into())),
        })
    }

    /// The files the medium needs (checked before the lab starts).
    pub fn files(&self) -> Vec<&Path> {
        match self {
            Self::Iso { path } | Self::Usb { path } | Self::Disk { path } => vec![path],
            Self::Kernel { kernel, initrd, .. } => vec![kernel, initrd],
            Self::Pxe => vec![],
        }
    }

    /// The boot device a plain power-on uses: the medium (or the network for `Pxe`).
    pub fn boot_device(&self) -> BootDevice {
        match self {
            Self::Iso { .. } => BootDevice::Cdrom,
            Self::Pxe => BootDevice::Pxe,
            _ => BootDevice::Disk,
        }
    }
}

/// A host port forwarded into the appliance (`127.0.0.1:host` → guest `guest`, TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    /// Port on the host's 127.0.0.1.
    pub host: u16,
    /// Port in the guest.
    pub guest: u16,
}

/// The seed machine of a lab, as recorded in `lab.json` (`appliance`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplianceSpec {
    /// Machine name and directory in the lab ([`DEFAULT_NAME`]).
    pub name: String,
    /// What it boots.
    pub medium: Medium,
    /// Firmware.
    pub firmware: Firmware,
    /// RAM.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// MAC of NIC 1 (provisioning wire) and NIC 2 (BMC network, when the lab has one).
    pub macs: Vec<String>,
    /// Its own virtual BMC (127.0.0.1:port, and `.10` on the BMC network).
    pub bmc: BmcSpec,
    /// Blank qcow2 disks besides the medium (GiB each), after it in boot order.
    #[serde(default)]
    pub disks_gib: Vec<u32>,
    /// Host ports forwarded into the VM through a third NIC, user-mode with `restrict=on`;
    /// empty (the default): no such NIC at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward: Vec<PortForward>,
}

impl ApplianceSpec {
    /// The seed machine of `lab`, booting `medium`: the nodes' firmware, [`DEFAULT_MEMORY_MIB`],
    /// 1 vCPU, no extra disk, NIC 2 and a BMC LAN port at `.10` when the lab has a BMC network,
    /// and its BMC on 127.0.0.1 at the port after the nodes' highest (any free port when the
    /// nodes' ports are chosen at start).
    pub fn new(lab: &LabFile, medium: Medium) -> Self {
        let net = lab.bmc_network.as_ref();
        let ports: Vec<u16> = lab.nodes.iter().map(|n| n.bmc.port).collect();
        let port = match ports.iter().max() {
            Some(&max) if !ports.contains(&0) => max.saturating_add(1),
            Some(_) => 0,
            None => crate::spec::DEFAULT_BMC_PORT,
        };
        Self {
            name: DEFAULT_NAME.into(),
            medium,
            firmware: lab.nodes.first().map_or(Firmware::Bios, |n| n.firmware),
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: 1,
            macs: (0..if net.is_some() { 2 } else { 1 })
                .map(|nic| mac(&lab.name, nic))
                .collect(),
            bmc: BmcSpec {
                address: std::net::Ipv4Addr::LOCALHOST,
                port,
                username: crate::spec::DEFAULT_USER.into(),
                password: crate::spec::DEFAULT_PASSWORD.into(),
                lan: net.and_then(|n| BmcLan::new(&lab.name, n, 0)),
            },
            disks_gib: vec![],
            forward: vec![],
        }
    }

    /// The node view of this machine (name, MACs, BMC, firmware, size) for [`crate::node`].
    pub fn node_spec(&self) -> NodeSpec {
        NodeSpec {
            name: self.name.clone(),
            macs: self.macs.clone(),
            bmc: self.bmc.clone(),
            firmware: self.firmware,
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            disks_gib: self.disks_gib.clone(),
        }
    }
}

/// The MAC of the seed machine's NIC `nic`: the nodes' scheme with node byte 0.
pub fn mac(lab: &str, nic: usize) -> String {
    let h = fnv1a(lab.as_bytes());
    format!("52:54:00:{:02x}:00:{:02x}", h as u8, nic as u8)
}

/// What makes a node the appliance (kept by [`crate::node::Node`]).
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub medium: Medium,
    /// The BMC network's wire, for NIC 2.
    pub bmc_wire: Option<WireAddr>,
    pub forward: Vec<PortForward>,
}

/// The overlay of a writable medium, in the machine's directory.
pub fn overlay_path(dir: &Path) -> PathBuf {
    dir.join("medium.qcow2")
}

impl Machine {
    /// Create (or recreate, when the medium changed) the overlay of a writable medium.
    pub(crate) fn prepare(&self, dir: &Path) -> Result<(), LabError> {
        for f in self.medium.files() {
            if !f.is_file() {
                return Err(LabError::Io {
                    what: "finding the appliance medium",
                    path: f.to_path_buf(),
                    source: std::io::ErrorKind::NotFound.into(),
                });
            }
        }
        let (Medium::Usb { path } | Medium::Disk { path }) = &self.medium else {
            return Ok(());
        };
        let meta = std::fs::metadata(path).map_err(|source| LabError::Io {
            what: "reading",
            path: path.clone(),
            source,
        })?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let id = format!("{} {} {mtime}\n", path.display(), meta.len());
        let overlay = overlay_path(dir);
        let id_file = dir.join("medium.id");
        if overlay.exists() && std::fs::read_to_string(&id_file).ok().as_deref() == Some(&id) {
            return Ok(());
        }
        let _ = std::fs::remove_file(&overlay);
        let mut create = Command::new("qemu-img");
        create
            .args([
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                image_format(path),
                "-b",
            ])
            .arg(path)
            .arg(&overlay);
        crate::node::qemu_img_create(&mut create, overlay)?;
        std::fs::write(&id_file, id).map_err(|source| LabError::Io {
            what: "writing",
            path: id_file,
            source,
        })
    }

    /// The appliance's devices: NICs, the medium, extra disks (boot order by `bootindex`:
    /// the medium first, or NIC 1 first for a PXE boot).
    pub(crate) fn devices(
        &self,
        c: &mut Command,
        node: &crate::node::Node,
        wire: &WireAddr,
        nic_model: &str,
        boot: BootDevice,
    ) {
        let spec = node.spec();
        let pxe_first = boot == BootDevice::Pxe || self.medium == Medium::Pxe;
        // "Boot from disk" on a machine booted from a CD is its hard disks first (IPMI's disk
        // is not the CD): the seed machine deployed by the cloud it bootstrapped (Stage N)
        // boots what was written, the CD still in its drive. A USB stick or a disk medium is
        // the first disk itself.
        let disks = spec.disks_gib.len();
        let disks_first =
            boot == BootDevice::Disk && disks > 0 && matches!(self.medium, Medium::Iso { .. });
        let (nic_index, medium_index, disk_index) = if pxe_first {
            (1, 2, 3)
        } else if disks_first {
            (disks + 2, disks + 1, 1)
        } else {
            (2, 1, 3)
        };
        if let Some(mac) = spec.macs.first() {
            match node.tap(0) {
                Some(tap) => c
                    .arg("-netdev")
                    .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no")),
                None => c.arg("-netdev").arg(wire.netdev("n0")),
            };
            c.arg("-device").arg(format!(
                "{nic_model},netdev=n0,mac={mac},bootindex={nic_index}"
            ));
        }
        if let (Some(w), Some(mac)) = (self.bmc_wire, spec.macs.get(1)) {
            // Never a boot device: no option ROM.
            c.arg("-netdev").arg(w.netdev("n1"));
            c.arg("-device")
                .arg(format!("{nic_model},netdev=n1,mac={mac},romfile="));
        }
        if !self.forward.is_empty() {
            let fwd: String = self
                .forward
                .iter()
                .map(|f| format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest))
                .collect();
            c.arg("-netdev")
                .arg(format!("user,id=fwd,restrict=on{fwd}"));
            c.arg("-device")
                .arg(format!("{nic_model},netdev=fwd,romfile="));
        }
        let overlay = overlay_path(node.dir());
        match &self.medium {
            Medium::Iso { path } => {
                c.arg("-drive").arg(format!(
                    "if=none,id=m0,media=cdrom,readonly=on,format=raw,file={}",
                    path.display()
                ));
                c.arg("-device")
                    .arg(format!("ide-cd,drive=m0,bootindex={medium_index}"));
            }
            Medium::Usb { .. } => {
                c.args(["-device", "qemu-xhci,id=xhci"]);
                c.arg("-drive").arg(format!(
                    "if=none,id=m0,format=qcow2,file={}",
                    overlay.display()
                ));
                c.arg("-device").arg(format!(
                    "usb-storage,bus=xhci.0,drive=m0,removable=on,bootindex={medium_index}"
                ));
            }
            Medium::Disk { .. } => {
                c.arg("-drive").arg(format!(
                    "if=none,id=m0,format=qcow2,file={}",
                    overlay.display()
                ));
                c.arg("-device")
                    .arg(format!("virtio-blk-pci,drive=m0,bootindex={medium_index}"));
            }
            Medium::Kernel {
                kernel,
                initrd,
                append,
            } => {
                c.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd);
                if !append.is_empty() {
                    c.arg("-append").arg(append);
                }
            }
            Medium::Pxe => {}
        }
        for i in 0..spec.disks_gib.len() {
            c.arg("-drive").arg(format!(
                "if=none,id=d{i},format=qcow2,file={}",
                node.disk_path(i).display()
            ));
            c.arg("-device").arg(format!(
                "virtio-blk-pci,drive=d{i},bootindex={}",
                disk_index + i
            ));
        }
    }
}

/// `qcow2` if the file starts with qcow2's magic, else `raw`.
fn image_format(path: &Path) -> &'static str {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let is_qcow2 = std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"QFI\xfb";
    if is_qcow2 {
        "qcow2"
    } else {
        "raw"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{args, Node, RunOptions};
    use crate::spec::Plan;

    fn machine(medium: Medium) -> (crate::LabFile, ApplianceSpec, Node) {
        let lab = Plan::new("ap", 2).lab_file();
        let spec = ApplianceSpec::new(&lab, medium);
        let net = lab.bmc_network.clone().unwrap();
        let node = Node::appliance(
            &spec,
            "/l/seed".into(),
            lab.wire,
            Some(net.wire),
            RunOptions::default(),
        );
        (lab, spec, node)
    }

    #[test]
    fn the_seed_machine_has_its_own_bmc_two_nics_and_no_route_out() {
        let (lab, spec, node) = machine(Medium::Iso {
            path: "/m/seed.iso".into(),
        });
        assert_eq!(spec.bmc.port, 6233, "after node2's 6232");
        assert_eq!(
            spec.bmc.lan.as_ref().unwrap().address.to_string(),
            "10.81.0.10"
        );
        assert_eq!(spec.macs.len(), 2);
        assert!(!lab.nodes.iter().any(|n| n.macs.contains(&spec.macs[0])));
        let a = args(&node.command(spec.medium.boot_device()));
        let net = lab.bmc_network.as_ref().unwrap();
        assert!(a.contains(&lab.wire.netdev("n0")), "{a}");
        assert!(a.contains(&net.wire.netdev("n1")), "{a}");
        assert!(
            a.contains(&format!("mac={},bootindex=2", spec.macs[0])),
            "{a}"
        );
        assert!(a.contains(&format!("mac={},romfile=", spec.macs[1])), "{a}");
        assert!(
            a.contains("media=cdrom,readonly=on,format=raw,file=/m/seed.iso"),
            "{a}"
        );
        assert!(a.contains("ide-cd,drive=m0,bootindex=1"), "{a}");
        assert!(a.contains("-serial file:/l/seed/console.log"), "{a}");
        assert!(a.contains("-nodefaults") && !a.contains("user"), "{a}");
        // A PXE boot puts NIC 1 first.
        let pxe = args(&node.command(BootDevice::Pxe));
        assert!(
            pxe.contains(&format!("mac={},bootindex=1", spec.macs[0])),
            "{pxe}"
        );
    }

    #[test]
    fn each_medium_attaches_as_its_kind_says() {
        let (_, _, usb) = machine(Medium::Usb {
            path: "/m/seed.iso".into(),
        });
        let a = args(&usb.command(BootDevice::Disk));
        assert!(a.contains("qemu-xhci"), "{a}");
        assert!(a.contains("format=qcow2,file=/l/seed/medium.qcow2"), "{a}");
        assert!(a.contains("usb-storage,bus=xhci.0,drive=m0"), "{a}");
        let (_, _, disk) = machine(Medium::Disk {
            path: "/m/seed.img".into(),
        });
        let a = args(&disk.command(BootDevice::Disk));
        assert!(a.contains("virtio-blk-pci,drive=m0,bootindex=1"), "{a}");
        let (_, _, k) = machine(Medium::Kernel {
            kernel: "/m/vmlinuz".into(),
            initrd: "/m/initrd.img".into(),
            append: "console=ttyS0 seed.x=1".into(),
        });
        let a = args(&k.command(BootDevice::Disk));
        assert!(
            a.contains("-kernel /m/vmlinuz -initrd /m/initrd.img -append console=ttyS0 seed.x=1"),
            "{a}"
        );
        let (lab, mut spec, _) = machine(Medium::Pxe);
        spec.forward = vec![PortForward {
            host: 16385,
            guest: 6385,
        }];
        spec.firmware = Firmware::Uefi;
        let n = Node::appliance(
            &spec,
            "/l/seed".into(),
            lab.wire,
            None,
            RunOptions::default(),
        );
        let a = args(&n.command(spec.medium.boot_device()));
        assert!(
            a.contains("user,id=fwd,restrict=on,hostfwd=tcp:127.0.0.1:16385-:6385"),
            "{a}"
        );
        assert!(a.contains("OVMF_CODE") && a.contains("bootindex=1"), "{a}");
        assert!(!a.contains("netdev=n1"), "no BMC wire given: {a}");
    }

    /// Deployed by the cloud it bootstrapped (Stage N), the CD machine boots its disk when told
    /// "disk", the CD still in; on a test switch its NIC is a TAP.
    #[test]
    fn a_cd_machine_told_disk_boots_its_hard_disk_first() {
        let (lab, mut spec, _) = machine(Medium::Iso {
            path: "/m/seed.iso".into(),
        });
        spec.disks_gib = vec![3];
        let mut n = Node::appliance(
            &spec,
            "/l/seed".into(),
            lab.wire,
            None,
            RunOptions::default(),
        );
        let a = args(&n.command(BootDevice::Disk));
        assert!(a.contains("virtio-blk-pci,drive=d0,bootindex=1"), "{a}");
        assert!(a.contains("ide-cd,drive=m0,bootindex=2"), "{a}");
        assert!(
            a.contains(&format!("mac={},bootindex=3", spec.macs[0])),
            "{a}"
        );
        let cd = args(&n.command(BootDevice::Cdrom));
        assert!(cd.contains("ide-cd,drive=m0,bootindex=1"), "{cd}");
        assert!(cd.contains("drive=d0,bootindex=3"), "{cd}");
        n.set_taps(vec!["tap5".into()]);
        let t = args(&n.command(BootDevice::Pxe));
        assert!(t.contains("tap,id=n0,ifname=tap5,script=no"), "{t}");
        assert!(!t.contains(&lab.wire.netdev("n0")), "{t}");
    }

    #[test]
    fn kinds_parse_as_the_cli_spells_them() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(Medium::from_kind("pxe", None).unwrap(), Medium::Pxe);
        assert!(Medium::from_kind("iso", None)
            .unwrap_err()
            .to_string()
            .contains("needs"));
        assert!(Medium::from_kind("floppy", Some(tmp.path()))
            .unwrap_err()
            .to_string()
            .contains("not one of"));
        assert!(Medium::from_kind("kernel", Some(tmp.path()))
            .unwrap_err()
            .to_string()
            .contains("initrd"));
        std::fs::write(tmp.path().join("initrd.img"), "i").unwrap();
        std::fs::write(tmp.path().join("cmdline"), "console=ttyS0\n").unwrap();
        let k = Medium::from_kind("kernel", Some(tmp.path())).unwrap();
        assert_eq!(
            k,
            Medium::Kernel {
                kernel: tmp.path().join("vmlinuz"),
                initrd: tmp.path().join("initrd.img"),
                append: "console=ttyS0".into()
            }
        );
        let iso = Medium::from_kind("iso", Some(Path::new("rel/seed.iso"))).unwrap();
        assert!(iso.files()[0].is_absolute());
        assert_eq!(iso.boot_device(), BootDevice::Cdrom);
    }

    /// The overlay keeps the medium untouched and follows it when it is rebuilt.
    #[test]
    fn writable_media_get_an_overlay_renewed_when_the_medium_changes() {
        if Command::new("qemu-img").arg("--version").output().is_err() {
            panic!("qemu-img is not installed: run `cargo xtask deps`");
        }
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("seed.img");
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
        let m = Machine {
            medium: Medium::Usb { path: img.clone() },
            bmc_wire: None,
            forward: vec![],
        };
        let dir = tmp.path().join("seed");
        std::fs::create_dir_all(&dir).unwrap();
        m.prepare(&dir).unwrap();
        let overlay = overlay_path(&dir);
        let first = std::fs::metadata(&overlay).unwrap().modified().unwrap();
        m.prepare(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&overlay).unwrap().modified().unwrap(),
            first
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&img, vec![1u8; 2 << 20]).unwrap();
        m.prepare(&dir).unwrap();
        assert_ne!(
            std::fs::metadata(&overlay).unwrap().modified().unwrap(),
            first
        );
        assert_eq!(std::fs::read(&img).unwrap().len(), 2 << 20);
        let gone = Machine {
            medium: Medium::Iso {
                path: tmp.path().join("missing.iso"),
            },
            bmc_wire: None,
            forward: vec![],
        };
        assert!(crate::ErrorChain(&gone.prepare(&dir).unwrap_err())
            .to_string()
            .contains("missing.iso"));
    }
}
