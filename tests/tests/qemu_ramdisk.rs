//! The deploy ramdisk boots in a real QEMU VM (Debian's kernel, our initramfs) and its agent
//! reports facts that match the VM's configuration, then obeys a power-off command. Every call
//! carries the command line's `seed.token=` as `Authorization: Bearer`.
//!
//! Until the seed joins the lab wire (userspace stack), the VM reaches the test's agent API
//! through QEMU's user-mode network: the guest's 10.0.2.2 is the host's loopback, so the only
//! traffic is guest → QEMU → 127.0.0.1. Needs `cargo xtask ramdisk` (run by `cargo xtask test`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn ramdisk_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tests::workspace_root().join("target"));
    let dir = target.join("ramdisk");
    assert!(
        dir.join("vmlinuz").is_file() && dir.join("initramfs.zst").is_file(),
        "no ramdisk in {}: run `cargo xtask ramdisk` (cargo xtask test does)",
        dir.display()
    );
    dir
}

/// One HTTP/1.1 request: (method, path, body, Authorization header). Answers with
/// `Connection: close`.
fn serve_one(
    listener: &TcpListener,
    answer: impl Fn(&str, &str) -> String,
) -> (String, String, String, String) {
    let (mut s, _) = listener.accept().expect("accept");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut len = 0usize;
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("authorization") {
                auth = v.trim().to_string();
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    let body = String::from_utf8_lossy(&body).into_owned();
    let reply = answer(&method, &path);
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )
    .unwrap();
    (method, path, body, auth)
}

/// The per-boot agent token the test puts on the command line.
const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn qemu_ramdisk_boots_and_agent_reports_facts() {
    let qemu = tests::require("qemu-system-x86_64");
    let qemu_img = tests::require("qemu-img");
    let rd = ramdisk_dir();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.qcow2");
    let st = Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("1G")
        .status()
        .unwrap();
    assert!(st.success());
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
        let facts = serve_one(&listener, |_, _| {
            r#"{"node":"ramdisk-test","heartbeat_secs":1}"#.into()
        });
        let _ = tx.send(facts);
        let hb = serve_one(&listener, |_, _| r#"{"command":"power_off"}"#.into());
        let _ = tx.send(hb);
    });
    let console_tail = || std::fs::read_to_string(&console).unwrap_or_default();
    let (method, path, body, auth) = rx
        .recv_timeout(Duration::from_secs(180))
        .unwrap_or_else(|_| panic!("no facts within 180 s; console:\n{}", console_tail()));
    println!(
        "power-on → facts received: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/v1/agent/facts")
    );
    assert_eq!(auth, format!("Bearer {TOKEN}"));
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
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

    let (_, path, _, auth) = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no heartbeat; console:\n{}", console_tail()));
    assert_eq!(path, "/v1/agent/heartbeat");
    assert_eq!(auth, format!("Bearer {TOKEN}"));
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
