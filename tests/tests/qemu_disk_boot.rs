//! A disk written by the agent's deploy boots by itself, under SeaBIOS (gptmbr.bin → extlinux →
//! kernel) and under OVMF (systemd-boot as `EFI/BOOT/BOOTX64.EFI` → kernel), with the command line
//! the deploy wrote (`root=UUID=<root>`).
//!
//! The image is built here: Debian's kernel (from `cargo xtask ramdisk`, which `cargo xtask test`
//! runs) and an initrd whose `/init` prints `seed-image: tiny` and the command line, then powers
//! off. It is written onto a loop disk with the deploy library, converted to qcow2 and booted as a
//! lab node (`qemu::node::Node`, no NICs). Root, and TCG: minutes, so `qemu` is in the names.

mod deploy_common;

use deploy_common::*;
use qemu::ipmi::BootDevice;
use qemu::node::{Node, RunOptions};
use qemu::spec::{BmcSpec, Firmware, NodeSpec};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const INIT: &str = "#!/bin/sh
/bin/busybox mount -t proc proc /proc
echo \"seed-image: tiny\"
echo \"seed-image cmdline: $(/bin/busybox cat /proc/cmdline)\"
/bin/busybox sync
/bin/busybox poweroff -f
";

fn kernel() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tests::workspace_root().join("target"));
    let k = target.join("ramdisk/vmlinuz");
    assert!(
        k.is_file(),
        "no {}: run `cargo xtask ramdisk` (cargo xtask test does)",
        k.display()
    );
    k
}

/// The test image: kernel, an initrd with busybox and the init above, a hostname.
fn boot_image() -> Vec<u8> {
    let busybox = tests::require("busybox");
    let mut a = ramdisk::initramfs::cpio::Archive::default();
    for d in ["proc", "sys", "dev"] {
        a.dir(d);
    }
    a.file("bin/busybox", 0o755, std::fs::read(&busybox).unwrap());
    a.symlink("bin/sh", "busybox");
    a.file("init", 0o755, INIT.as_bytes().to_vec());
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.zst");
    ramdisk::initramfs::write_zstd(&a, &initrd).unwrap();

    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    add("boot/vmlinuz", &std::fs::read(kernel()).unwrap());
    add("boot/initrd.img", &std::fs::read(&initrd).unwrap());
    add("etc/hostname", b"tiny\n");
    zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
}

fn boot(firmware: Firmware, disk_file: &std::path::Path, want: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let spec = NodeSpec {
        name: format!("disk-boot-{firmware:?}").to_lowercase(),
        macs: vec![],
        bmc: BmcSpec {
            address: "127.0.0.1".parse().unwrap(),
            port: 0,
            username: "admin".into(),
            password: "password".into(),
        },
        firmware,
        memory_mib: 512,
        cpus: 1,
        disks_gib: vec![1],
    };
    let mut node = Node::new(
        spec,
        dir.path().join("node"),
        qemu::wire::WireAddr::for_lab("disk-boot-unused"),
        RunOptions::default(),
    );
    std::fs::create_dir_all(node.dir()).unwrap();
    let st = Command::new(tests::require("qemu-img"))
        .args(["convert", "-q", "-O", "qcow2"])
        .arg(disk_file)
        .arg(node.disk_path(0))
        .status()
        .unwrap();
    assert!(st.success());
    node.prepare().unwrap();
    node.power_on(BootDevice::Disk).unwrap();
    let started = Instant::now();
    let console = node.console_path();
    let mut log = String::new();
    while started.elapsed() < Duration::from_secs(300) {
        log = std::fs::read_to_string(&console).unwrap_or_default();
        if want.iter().all(|w| log.contains(w)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = node.power_off();
    for w in want {
        assert!(
            log.contains(w),
            "{firmware:?}: {w:?} not on the console after {:?}:\n{log}",
            started.elapsed()
        );
    }
    eprintln!(
        "{firmware:?}: booted from disk to the image's init in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn qemu_disk_boot_bios_and_uefi() {
    tests::require("qemu-system-x86_64");
    let image = boot_image();
    let http = Http::serve(image.clone());
    let disk = LoopDisk::new(300);
    let work = tempfile::tempdir().unwrap();
    let mut m = manifest("tiny", &image, None);
    m.boot.cmdline = "console=ttyS0 panic=-1".into();
    let cmd = command(m, &http.url, &disk.name());
    let d =
        ramdisk::agent::deploy::deploy(&cmd, &[disk.facts()], &env(work.path()), &mut |_, _, _| {})
            .unwrap_or_else(|e| panic!("deploy: {}", ramdisk::agent::deploy::reason(&e)));
    let root = format!("root=UUID={} ro", d.root_uuid);
    let want = ["seed-image: tiny", root.as_str()];
    // Each boot gets its own qcow2 copy of the written disk.
    boot(Firmware::Bios, &disk.file, &want);
    boot(Firmware::Uefi, &disk.file, &want);
}
