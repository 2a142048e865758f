//! The seed appliance (`cargo xtask appliance`, in `target/appliance/`) as a QEMU VM for the
//! `qemu_appliance_*` tests: booted from its ISO as a CD, the ISO as a USB stick, its disk
//! image, or PXE (the netboot form served by another seed), under SeaBIOS or OVMF.
//!
//! NIC 1 is on the provisioning wire (a lab's multicast wire), NIC 2 (optional) on the BMC
//! network, and a last NIC is QEMU's user network with `restrict=on` (nothing leaves the VM)
//! whose only use is a `hostfwd` from 127.0.0.1 to the appliance's API port, so the test can
//! call the API the way an operator's laptop on the management network would.

use crate::proc::Child;
use qemu::wire::WireAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `target/appliance/`, with a clear message when it was not built.
pub fn built() -> PathBuf {
    let d = crate::target_dir().join("appliance");
    assert!(
        d.join("seed-appliance.iso").is_file() && d.join("seed-appliance.initrd").is_file(),
        "{} has no appliance: run `cargo xtask appliance`",
        d.display()
    );
    d
}

/// How the appliance boots.
#[derive(Debug, Clone)]
pub enum Medium {
    /// The ISO as a CD (read-only: state in RAM).
    Cd(PathBuf),
    /// The ISO (or disk image) as a USB stick (writable: a copy, state persistent).
    Usb(PathBuf),
    /// The disk image as the machine's virtio disk.
    Disk(PathBuf),
    /// PXE from the provisioning wire (another seed serves the netboot form).
    Pxe,
}

/// One appliance VM.
pub struct Options {
    pub uefi: bool,
    pub medium: Medium,
    pub wire: WireAddr,
    pub mac: String,
    pub bmc_wire: Option<WireAddr>,
    pub memory_mib: u32,
}

pub struct ApplianceVm {
    pub dir: PathBuf,
    pub api_port: u16,
    pub started: Instant,
    _qemu: Child,
}

use qemu::node::{OVMF_CODE, OVMF_VARS};

impl ApplianceVm {
    pub fn boot(dir: &Path, o: &Options) -> ApplianceVm {
        crate::require("qemu-system-x86_64");
        std::fs::create_dir_all(dir).unwrap();
        let api_port = crate::free_port();
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-name", "seed-appliance", "-accel", "tcg", "-smp", "1"]);
        c.arg("-m").arg(o.memory_mib.to_string());
        c.args(["-display", "none", "-vga", "std", "-nodefaults"]);
        c.args(["-device", "virtio-rng-pci"]);
        c.arg("-serial")
            .arg(format!("file:{}", dir.join("console.log").display()));
        if o.uefi {
            let vars = dir.join("OVMF_VARS.fd");
            std::fs::copy(OVMF_VARS, &vars).expect("OVMF (cargo xtask deps installs ovmf)");
            c.args(["-machine", "q35"]);
            c.arg("-drive").arg(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
            ));
            c.arg("-drive").arg(format!(
                "if=pflash,format=raw,unit=1,file={}",
                vars.display()
            ));
        } else {
            c.args(["-machine", "pc"]);
        }
        let nic_boot = if matches!(o.medium, Medium::Pxe) {
            ",bootindex=0"
        } else {
            ""
        };
        c.arg("-netdev").arg(o.wire.netdev("prov"));
        c.arg("-device").arg(format!(
            "virtio-net-pci,netdev=prov,mac={}{nic_boot}",
            o.mac
        ));
        if let Some(b) = o.bmc_wire {
            c.arg("-netdev").arg(b.netdev("bmc"));
            c.args(["-device", "virtio-net-pci,netdev=bmc,romfile="]);
        }
        c.arg("-netdev").arg(format!(
            "user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{api_port}-:6385"
        ));
        c.args(["-device", "virtio-net-pci,netdev=mgmt,romfile="]);
        match &o.medium {
            Medium::Cd(iso) => {
                c.arg("-drive").arg(format!(
                    "if=none,id=cd,media=cdrom,readonly=on,format=raw,file={}",
                    iso.display()
                ));
                let bus = if o.uefi { "ide-cd,bus=ide.0" } else { "ide-cd" };
                c.arg("-device").arg(format!("{bus},drive=cd,bootindex=0"));
            }
            Medium::Usb(img) => {
                let copy = dir.join("stick.img");
                std::fs::copy(img, &copy).unwrap();
                c.args(["-device", "qemu-xhci,id=xhci"]);
                c.arg("-drive").arg(format!(
                    "if=none,id=stick,format=raw,file={}",
                    copy.display()
                ));
                c.args(["-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"]);
            }
            Medium::Disk(img) => {
                let copy = dir.join("disk.img");
                std::fs::copy(img, &copy).unwrap();
                c.arg("-drive").arg(format!(
                    "if=none,id=disk,format=raw,file={}",
                    copy.display()
                ));
                c.args(["-device", "virtio-blk-pci,drive=disk,bootindex=0"]);
            }
            Medium::Pxe => {}
        }
        let started = Instant::now();
        let qemu = Child::spawn("appliance-qemu", c);
        ApplianceVm {
            dir: dir.to_path_buf(),
            api_port,
            started,
            _qemu: qemu,
        }
    }

    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("console.log")).unwrap_or_default())
            .into_owned()
    }

    /// Wait (bounded) until the console has a line containing `needle`; that line.
    pub fn wait_console(&self, needle: &str, secs: u64) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.console().lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "no {needle:?} on the appliance's console after {secs} s:\n{}",
                tail(&self.console(), 60)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The API token the appliance generated and showed once on its console.
    pub fn console_token(&self) -> String {
        let l = self.wait_console("API token (generated now, shown this once): ", 5);
        l.rsplit(": ").next().unwrap().trim().to_string()
    }

    /// `curl` the API through the management hostfwd: (status, body).
    pub fn api(&self, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, String) {
        let mut c = Command::new(crate::require("curl"));
        c.args([
            "-s",
            "-m",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ]);
        c.arg("-H").arg(format!("Authorization: Bearer {token}"));
        if let Some(b) = body {
            c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        c.arg(format!("http://127.0.0.1:{}{path}", self.api_port));
        let out = c.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Byte offset and size of MBR partition `n` (1-based) of a disk image (the hybrid ISO's
/// MBR lists the appended partitions: 2 EFI, 3 SEEDCFG, 4 seed-state).
pub fn partition(img: &Path, n: usize) -> (u64, u64) {
    let mut mbr = [0u8; 512];
    std::io::Read::read_exact(&mut std::fs::File::open(img).unwrap(), &mut mbr).unwrap();
    assert_eq!(mbr[510..512], [0x55, 0xaa], "{} has an MBR", img.display());
    let e = &mbr[446 + 16 * (n - 1)..446 + 16 * n];
    let start = u32::from_le_bytes(e[8..12].try_into().unwrap());
    let size = u32::from_le_bytes(e[12..16].try_into().unwrap());
    assert!(size > 0, "{} has no partition {n}", img.display());
    (u64::from(start) * 512, u64::from(size) * 512)
}

/// A copy of the ISO whose SEEDCFG partition holds `seed.toml` = `toml` (and `nodes.yaml`),
/// written with mtools (no mount), as a person edits the stick.
pub fn iso_with_config(iso: &Path, dir: &Path, toml: &str, nodes: Option<&str>) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let copy = dir.join("configured.iso");
    std::fs::copy(iso, &copy).unwrap();
    let (offset, _) = partition(&copy, 3);
    let mut files = vec![("seed.toml", toml)];
    if let Some(n) = nodes {
        files.push(("nodes.yaml", n));
    }
    for (name, text) in files {
        let src = dir.join(name);
        std::fs::write(&src, text).unwrap();
        let out = Command::new(crate::require("mcopy"))
            .arg("-o")
            .arg("-i")
            .arg(format!("{}@@{offset}", copy.display()))
            .arg(&src)
            .arg(format!("::{name}"))
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .expect("mcopy");
        assert!(
            out.status.success(),
            "mcopy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    copy
}
