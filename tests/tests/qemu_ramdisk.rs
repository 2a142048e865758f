//! The deploy ramdisk boots in a real QEMU VM (Debian's kernel, our initramfs) and its agent
//! reports facts that match the VM's configuration, then obeys a power-off command. Every call
//! carries the command line's `seed.token=` as `Authorization: Bearer`.
//!
//! Until the seed joins the lab wire (userspace stack), the VM reaches the test's agent API
//! through QEMU's user-mode network: the guest's 10.0.2.2 is the host's loopback, so the only
//! traffic is guest → QEMU → 127.0.0.1. Needs `cargo xtask ramdisk` (run by `cargo xtask test`).

use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tests::one_request::serve;

/// The per-boot agent token the test puts on the command line.
const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn qemu_ramdisk_boots_and_agent_reports_facts() {
    let qemu = tests::require("qemu-system-x86_64");
    let rd = tests::ramdisk_dir();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.qcow2");
    tests::qcow2(&disk, "1G");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mac = "52:54:00:5e:0a:01";
    let console = dir.path().join("console.log");
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-accel",
        "tcg",
        "-m",
        "512",
        "-smp",
        "2",
        "-display",
        "none",
        "-no-reboot",
    ])
    .args(["-kernel"])
    .arg(rd.join("vmlinuz"))
    .args(["-initrd"])
    .arg(rd.join("initramfs.zst"))
    .args([
        "-append",
        &format!(
            "console=ttyS0 panic=-1 seed.url=http://10.0.2.2:{port} seed.token={TOKEN} BOOTIF=01-{}",
            mac.replace(':', "-")
        ),
    ])
    .args([
        "-netdev",
        "user,id=n0",
        "-device",
        &format!("virtio-net-pci,netdev=n0,mac={mac}"),
    ])
    .args([
        "-drive",
        &format!("file={},if=none,id=d0,format=qcow2", disk.display()),
    ])
    .args(["-device", "virtio-blk-pci,drive=d0,serial=SEEDDISK01"])
    .args(["-serial", &format!("file:{}", console.display())]);
    let mut vm = tests::proc::Child::spawn("qemu", cmd);
    let start = Instant::now();

    // The agent's requests, served on a thread so a stuck guest cannot hang the test: the
    // channel wait below is bounded.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let facts = serve(&listener, r#"{"node":"ramdisk-test","heartbeat_secs":1}"#);
        let _ = tx.send(facts);
        let hb = serve(&listener, r#"{"command":"power_off"}"#);
        let _ = tx.send(hb);
    });
    let console_tail = || std::fs::read_to_string(&console).unwrap_or_default();
    let facts_req = rx
        .recv_timeout(Duration::from_secs(180))
        .unwrap_or_else(|_| panic!("no facts within 180 s; console:\n{}", console_tail()));
    println!(
        "power-on → facts received: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(facts_req.method_path(), ("POST", "/v1/agent/facts"));
    assert_eq!(
        facts_req.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let report: serde_json::Value = serde_json::from_str(&facts_req.body).unwrap();
    let facts = &report["facts"];
    assert_eq!(report["boot_mac"], mac, "{report}");
    assert_eq!(facts["cpus"], 2, "{facts}");
    assert_eq!(facts["memory_mib"], 512, "{facts}");
    assert_eq!(facts["boot_mode"], "bios");
    let disks = facts["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 1, "{facts}");
    assert_eq!(disks[0]["size_bytes"], 1u64 << 30);
    assert_eq!(disks[0]["serial"], "SEEDDISK01");
    let nics = facts["nics"].as_array().unwrap();
    assert_eq!(nics.len(), 1, "{facts}");
    assert_eq!(nics[0]["mac"], mac);
    assert_eq!(nics[0]["driver"], "virtio_net");
    assert_eq!(facts["dmi"]["vendor"], "QEMU");

    let hb = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no heartbeat; console:\n{}", console_tail()));
    assert_eq!(hb.method_path().1, "/v1/agent/heartbeat");
    assert_eq!(
        hb.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    // The agent powers the VM off: QEMU exits by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    while vm.is_running() {
        assert!(
            Instant::now() < deadline,
            "VM did not power off; console:\n{}",
            console_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(console_tail().contains("seed-agent: powering off as the seed asked"));
    assert!(
        !console_tail().contains("no seed.token="),
        "{}",
        console_tail()
    );
    println!(
        "power-on → powered off by command: {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
