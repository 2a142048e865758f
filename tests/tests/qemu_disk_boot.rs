//! A disk written by the agent's deploy boots by itself, under SeaBIOS (gptmbr.bin → extlinux →
//! kernel) and under OVMF (systemd-boot as `EFI/BOOT/BOOTX64.EFI` → kernel), with the command line
//! the deploy wrote (`root=UUID=<root>`).
//!
//! The image is built here: Debian's kernel (from `cargo xtask ramdisk`, which `cargo xtask test`
//! runs) and an initrd whose `/init` prints `seed-image: tiny` and the command line, then powers
//! off. It is written onto a loop disk with the deploy library, converted to qcow2 and booted as a
//! lab node (`qemu::node::Node`, no NICs). Root, and TCG: minutes, so `qemu` is in the names.
//!
//! `qemu_disk_boot_tiny_image` does the same with the real golden image (`cargo xtask image build
//! tiny`): its init mounts the state partition by name and greets with the node name it read
//! from the identity file.
//!
//! `qemu_ramdisk_deploys_then_disk_boots` deploys the tiny image through the real ramdisk: its
//! agent is told to deploy by a stand-in for the seed's agent API (on 127.0.0.1, reached from the guest through
//! QEMU's user-mode network as 10.0.2.2), writes the VM's disk, reports progress and `done`, is
//! powered off by the next heartbeat's answer, and the disk then boots.

mod deploy_common;

use deploy_common::*;
use qemu::ipmi::BootDevice;
use qemu::node::{Node, RunOptions};
use qemu::spec::{BmcSpec, Firmware, NodeSpec};
use ramdisk::agent::{Phase, Progress};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
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
    let scratch = tempfile::tempdir().unwrap();
    let busybox = tests::static_busybox(scratch.path());
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
            lan: None,
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
        // panic=-1 reboots the guest: a panic would loop until the deadline, so stop at once.
        if want.iter().all(|w| log.contains(w)) || log.contains("Kernel panic") {
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

/// What the stand-in seed saw.
#[derive(Default)]
struct Seen {
    facts: bool,
    heartbeats_after_done: u32,
    progress: Vec<Progress>,
    image_gets: u32,
}

/// The agent API and the image, one request per connection, until `stop`.
fn api_server(
    listener: TcpListener,
    deploy: serde_json::Value,
    image: Vec<u8>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    listener.set_nonblocking(true).unwrap();
    let mut deploy_sent = false;
    let until = Instant::now() + Duration::from_secs(900);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
        let Ok((s, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        if r.read_line(&mut line).is_err() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        let _ = r.read_exact(&mut body);
        let mut seen = seen.lock().unwrap();
        let reply: Vec<u8> = match (method.as_str(), path.as_str()) {
            ("POST", "/v1/agent/facts") => {
                seen.facts = true;
                br#"{"node":"disk-boot","heartbeat_secs":1}"#.to_vec()
            }
            ("POST", "/v1/agent/heartbeat") => {
                let done = seen.progress.iter().any(|p| p.phase == Phase::Done);
                if done {
                    seen.heartbeats_after_done += 1;
                    br#"{"command":"power_off"}"#.to_vec()
                } else if !deploy_sent {
                    deploy_sent = true;
                    serde_json::to_vec(&deploy).unwrap()
                } else {
                    br#"{"command":"none"}"#.to_vec()
                }
            }
            ("POST", "/v1/agent/progress") => {
                if let Ok(p) = serde_json::from_slice::<Progress>(&body) {
                    seen.progress.push(p);
                }
                br#"{"command":"none"}"#.to_vec()
            }
            ("GET", p) if p.starts_with("/images/") => {
                seen.image_gets += 1;
                image.clone()
            }
            _ => b"{}".to_vec(),
        };
        drop(seen);
        let mut s = s;
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            reply.len()
        );
        let _ = s.write_all(&reply);
    }
}

#[test]
fn qemu_ramdisk_deploys_then_disk_boots() {
    let qemu = tests::require("qemu-system-x86_64");
    let rd = kernel().parent().unwrap().to_path_buf();
    let initramfs = rd.join("initramfs.zst");
    assert!(initramfs.is_file(), "run `cargo xtask ramdisk`");
    let (m, image) = tiny();
    let greeting = format!("seed-image: tiny {} booted node-1", m.version);
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.qcow2");
    tests::qcow2(&disk, "1G");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut cmd = command(
        m,
        &format!("http://10.0.2.2:{port}/images/x/rootfs.tar.zst"),
        "x",
    );
    cmd.root_hint = Some("serial=SEEDDISK01".into());
    let deploy = serde_json::to_value(ramdisk::agent::Command::Deploy(Box::new(cmd))).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || api_server(listener, deploy, image, seen, stop))
    };

    let mac = "52:54:00:5e:0a:02";
    let console = dir.path().join("console.log");
    let mut c = Command::new(qemu);
    c.args([
        "-accel", "tcg", "-m", "512", "-smp", "2", "-display", "none",
    ])
    .arg("-no-reboot")
    .arg("-kernel")
    .arg(rd.join("vmlinuz"))
    .arg("-initrd")
    .arg(&initramfs)
    .arg("-append")
    .arg(format!(
        "console=ttyS0 panic=-1 seed.url=http://10.0.2.2:{port} BOOTIF=01-{}",
        mac.replace(':', "-")
    ))
    .args(["-netdev", "user,id=n0", "-device"])
    .arg(format!("virtio-net-pci,netdev=n0,mac={mac}"))
    .arg("-drive")
    .arg(format!(
        "file={},if=none,id=d0,format=qcow2",
        disk.display()
    ))
    .args(["-device", "virtio-blk-pci,drive=d0,serial=SEEDDISK01"])
    .arg("-serial")
    .arg(format!("file:{}", console.display()));
    let mut vm = tests::proc::Child::spawn("qemu", c);
    let start = Instant::now();
    let console_tail = || std::fs::read_to_string(&console).unwrap_or_default();
    // The agent powers the VM off once the deploy is done: QEMU exits by itself.
    while vm.is_running() {
        assert!(
            start.elapsed() < Duration::from_secs(400),
            "the VM did not deploy and power off; console:\n{}",
            console_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
    let log = console_tail();
    let seen = seen.lock().unwrap();
    assert!(seen.facts, "{log}");
    assert_eq!(seen.image_gets, 1, "{log}");
    let phases: Vec<Phase> = seen.progress.iter().map(|p| p.phase).collect();
    let last = seen
        .progress
        .last()
        .unwrap_or_else(|| panic!("no progress; console:\n{log}"));
    assert_eq!(
        last.phase,
        Phase::Done,
        "{:?} {:?}\n{log}",
        phases,
        last.error
    );
    assert_eq!(last.op, 7);
    assert_eq!(last.bytes, last.total);
    assert!(phases.contains(&Phase::Partitioning) && phases.contains(&Phase::Writing));
    assert!(
        seen.heartbeats_after_done >= 1,
        "kept heartbeating after done"
    );
    let line = log
        .lines()
        .find(|l| l.contains("seed-agent: deploy done"))
        .unwrap_or_else(|| panic!("no deploy line; console:\n{log}"));
    eprintln!(
        "power-on → deployed and off: {:.1} s; {line}",
        start.elapsed().as_secs_f64()
    );
    for l in log.lines().filter(|l| {
        l.contains("seed-agent:")
            || l.contains("seed-ramdisk:")
            || l.contains("crng")
            || l.contains("random")
    }) {
        eprintln!("  console: {l}");
    }
    drop(seen);
    let want = [greeting.as_str()];
    boot(Firmware::Bios, &disk, &want);
    boot(Firmware::Uefi, &disk, &want);
}

/// The tiny golden image: its manifest and stream.
fn tiny() -> (images::Manifest, Vec<u8>) {
    let dir = tests::built_image("tiny");
    let m: images::Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let image = std::fs::read(dir.join(&m.stream.file)).unwrap();
    (m, image)
}

#[test]
fn qemu_disk_boot_tiny_image() {
    tests::require("qemu-system-x86_64");
    let (m, image) = tiny();
    let http = Http::serve(image);
    let disk = LoopDisk::new(m.min_disk_mib.max(300));
    let work = tempfile::tempdir().unwrap();
    let version = m.version.clone();
    let cmd = command(m, &http.url, &disk.name());
    let d =
        ramdisk::agent::deploy::deploy(&cmd, &[disk.facts()], &env(work.path()), &mut |_, _, _| {})
            .unwrap_or_else(|e| panic!("deploy: {}", ramdisk::agent::deploy::reason(&e)));
    eprintln!(
        "tiny: {} bytes written in {:.2} s ({:.1} MB/s)",
        d.bytes,
        d.write_secs,
        d.bytes as f64 / d.write_secs / 1e6
    );
    let greeting = format!("seed-image: tiny {version} booted node-1");
    let want = [greeting.as_str()];
    boot(Firmware::Bios, &disk.file, &want);
    boot(Firmware::Uefi, &disk.file, &want);
}
