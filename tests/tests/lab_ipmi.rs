//! The QEMU lab driven by a real IPMI client: ipmitool (lanplus, cipher suite 3) against the
//! virtual BMCs, QEMU processes powered on and off, a PXE boot seen on the lab's wire, wrong
//! credentials refused, fault controls, and the `seed lab` command line.
//!
//! Everything binds 127.0.0.1 (BMC ports chosen free) or the lab's multicast group on
//! loopback; labs are dropped (QEMU killed) when a test ends, pass or fail.

use qemu::ipmi::BootDevice;
use qemu::node::RunOptions;
use qemu::spec::{parse_mac, Plan};
use qemu::wire::Wire;
use qemu::{Faults, Lab};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A lab of `nodes` small diskless nodes with BMCs on free ports, named uniquely so parallel
/// tests get different wires.
fn small_lab(dir: &Path, nodes: usize) -> Lab {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut plan = Plan::new(&name, nodes);
    plan.memory_mib = 256;
    plan.disks_gib = vec![];
    plan.bmc_base_port = 0;
    Lab::create(dir, &plan, RunOptions::default()).expect("lab")
}

fn ipmitool(port: u16, password: &str, extra: &[&str], cmd: &[&str]) -> Output {
    let out = Command::new(tests::require("ipmitool"))
        .args(["-I", "lanplus", "-H", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "admin", "-P", password])
        .args(extra)
        .args(cmd)
        .output()
        .expect("running ipmitool");
    eprintln!(
        "ipmitool {cmd:?} -> {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run an ipmitool command that must succeed; its stdout.
fn ok(port: u16, cmd: &[&str]) -> String {
    let out = ipmitool(port, "password", &[], cmd);
    assert!(out.status.success(), "ipmitool {cmd:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait (bounded) for a DHCPDISCOVER (UDP 68→67, option 53 = 1) from `mac` on the wire.
fn wait_for_discover(wire: &Wire, mac: [u8; 6], timeout: Duration) -> bool {
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while start.elapsed() < timeout {
        let Some(n) = wire
            .recv_frame(&mut buf, Duration::from_millis(500))
            .expect("wire receive")
        else {
            continue;
        };
        if is_discover_from(&buf[..n], mac) {
            return true;
        }
    }
    false
}

fn is_discover_from(f: &[u8], mac: [u8; 6]) -> bool {
    if f.len() < 14 + 20 || f[6..12] != mac || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return false;
    }
    let udp = 14 + (f[14] & 0x0f) as usize * 4;
    if f.len() < udp + 8 + 240 || f[udp..udp + 4] != [0, 68, 0, 67] {
        return false;
    }
    let bootp = &f[udp + 8..];
    if bootp[236..240] != [99, 130, 83, 99] {
        return false;
    }
    let mut opts = &bootp[240..];
    while opts.len() >= 2 && opts[0] != 255 {
        if opts[0] == 0 {
            opts = &opts[1..];
            continue;
        }
        let len = opts[1] as usize;
        if opts[0] == 53 && len == 1 && opts.len() > 2 {
            return opts[2] == 1;
        }
        opts = &opts[(2 + len).min(opts.len())..];
    }
    false
}

#[test]
fn qemu_ipmitool_powers_a_node_and_pxe_boots_it() {
    tests::require("qemu-system-x86_64");
    let tmp = tempfile::tempdir().unwrap();
    let lab = small_lab(tmp.path(), 1);
    let spec = lab.file().nodes[0].clone();
    let port = spec.bmc.port;
    let node = lab.node("node1").unwrap().clone();

    assert!(ok(port, &["power", "status"]).contains("Chassis Power is off"));

    // power on: a QEMU process exists and QMP says it runs.
    ok(port, &["power", "on"]);
    let pid1 = node
        .lock()
        .unwrap()
        .pid()
        .expect("QEMU running after power on");
    assert!(qemu::lab::pid_running(pid1));
    assert_eq!(
        node.lock().unwrap().qmp().unwrap().status().unwrap(),
        "running"
    );
    assert!(ok(port, &["power", "status"]).contains("Chassis Power is on"));

    // bootdev pxe + power cycle: a new QEMU booting from the network, seen on the wire.
    assert!(ok(port, &["chassis", "bootdev", "pxe"]).contains("Set Boot Device to pxe"));
    ok(port, &["power", "cycle"]);
    let pid2 = node
        .lock()
        .unwrap()
        .pid()
        .expect("QEMU running after power cycle");
    assert_ne!(pid1, pid2, "power cycle restarts the machine");
    assert!(!qemu::lab::pid_running(pid1), "the old QEMU is gone");
    // Joined only now, so every frame heard comes from the new QEMU (the old one, diskless,
    // was PXE-booting too). iPXE repeats its DISCOVER for seconds; we cannot miss them all.
    let wire = Wire::join(lab.file().wire).unwrap();
    assert_eq!(node.lock().unwrap().booted_from(), Some(BootDevice::Pxe));
    let mac = parse_mac(&spec.macs[0]).unwrap();
    assert!(
        wait_for_discover(&wire, mac, Duration::from_secs(90)),
        "no DHCPDISCOVER from {} on the wire within 90 s; console:\n{}",
        spec.macs[0],
        std::fs::read_to_string(node.lock().unwrap().console_path()).unwrap_or_default()
    );

    // power off: the process is gone.
    ok(port, &["power", "off"]);
    assert!(
        !qemu::lab::pid_running(pid2),
        "QEMU still running after power off"
    );
    assert!(ok(port, &["power", "status"]).contains("Chassis Power is off"));
    assert!(
        lab.bmc("node1")
            .unwrap()
            .stats()
            .replied
            .load(Ordering::Relaxed)
            > 10
    );
}

#[test]
fn qemu_uefi_node_pxe_boots_after_bootdev_pxe_efiboot() {
    tests::require("qemu-system-x86_64");
    let tmp = tempfile::tempdir().unwrap();
    static N: AtomicU32 = AtomicU32::new(0);
    let mut plan = Plan::new(
        &format!(
            "u{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ),
        1,
    );
    plan.memory_mib = 256;
    plan.disks_gib = vec![];
    plan.bmc_base_port = 0;
    plan.firmware = qemu::Firmware::Uefi;
    let lab = Lab::create(tmp.path(), &plan, RunOptions::default()).unwrap();
    let spec = lab.file().nodes[0].clone();
    let port = spec.bmc.port;
    assert!(
        tmp.path().join("node1/OVMF_VARS.fd").is_file(),
        "per-node UEFI variables"
    );

    ok(port, &["chassis", "bootdev", "pxe", "options=efiboot"]);
    let wire = Wire::join(lab.file().wire).unwrap();
    ok(port, &["power", "on"]);
    let node = lab.node("node1").unwrap().clone();
    assert_eq!(node.lock().unwrap().booted_from(), Some(BootDevice::Pxe));
    let mac = parse_mac(&spec.macs[0]).unwrap();
    assert!(
        wait_for_discover(&wire, mac, Duration::from_secs(120)),
        "no DHCPDISCOVER from the UEFI node within 120 s"
    );
    let pid = node.lock().unwrap().pid().unwrap();
    drop(lab);
    assert!(
        !qemu::lab::pid_running(pid),
        "dropping the lab kills its QEMU"
    );
}

#[test]
fn ipmitool_with_wrong_credentials_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = small_lab(tmp.path(), 1);
    let port = lab.file().nodes[0].bmc.port;
    let node = lab.node("node1").unwrap().clone();

    let out = ipmitool(port, "not-the-password", &["-v"], &["power", "on"]);
    assert!(!out.status.success(), "wrong password accepted");
    // ipmitool finds our RAKP 2 auth code does not match its password (and says so with -v).
    assert!(String::from_utf8_lossy(&out.stderr).contains("RAKP 2 HMAC is invalid"));

    let out = Command::new(tests::require("ipmitool"))
        .args(["-I", "lanplus", "-H", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "root", "-P", "password", "-v", "power", "on"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "unknown user accepted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unauthorized name"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !node.lock().unwrap().is_on(),
        "refused logins power nothing on"
    );
    // The right password still works afterwards.
    assert!(ok(port, &["power", "status"]).contains("off"));
}

#[test]
fn ipmitool_gives_up_on_an_unresponsive_bmc_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = small_lab(tmp.path(), 1);
    let port = lab.file().nodes[0].bmc.port;
    let bmc = lab.bmc("node1").unwrap();

    bmc.set_fault(Faults {
        unresponsive: true,
        ..Faults::default()
    });
    let out = ipmitool(
        port,
        "password",
        &["-R", "1", "-N", "1"],
        &["power", "status"],
    );
    assert!(!out.status.success(), "an unresponsive BMC answered");
    assert!(bmc.stats().fault_dropped.load(Ordering::Relaxed) > 0);
    assert_eq!(bmc.stats().replied.load(Ordering::Relaxed), 0);

    // Slow, but within ipmitool's patience: still works.
    bmc.set_fault(Faults {
        delay_ms: 200,
        ..Faults::default()
    });
    assert!(ok(port, &["power", "status"]).contains("off"));

    bmc.set_fault(Faults::default());
    assert!(ok(port, &["power", "status"]).contains("off"));
}

#[test]
fn a_node_that_fails_to_power_on_stays_off() {
    let tmp = tempfile::tempdir().unwrap();
    let lab = small_lab(tmp.path(), 1);
    let port = lab.file().nodes[0].bmc.port;
    lab.bmc("node1").unwrap().set_fault(Faults {
        fail_power_on: true,
        ..Faults::default()
    });
    // Like a dead PSU: the command is acknowledged, the machine stays off.
    ok(port, &["power", "on"]);
    assert!(ok(port, &["power", "status"]).contains("Chassis Power is off"));
    assert!(!lab.node("node1").unwrap().lock().unwrap().is_on());
}

/// Stops a detached `seed lab up` whatever happens to the test.
struct LabDown<'a>(&'a Path);

impl Drop for LabDown<'_> {
    fn drop(&mut self) {
        let _ = Command::new(tests::seed_bin())
            .args(["lab", "down", "--dir"])
            .arg(self.0)
            .output();
        if let Some(pid) = qemu::lab::server_pid(self.0) {
            let _ = qemu::lab::signal(pid, qemu::lab::SIGKILL);
        }
    }
}

fn seed_lab(args: &[&str], dir: &Path) -> String {
    let out = Command::new(tests::seed_bin())
        .arg("lab")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("running seed");
    let text = tests::printed(&out);
    assert!(out.status.success(), "seed lab {args:?} failed:\n{text}");
    text
}

#[test]
fn qemu_seed_lab_cli_up_detach_status_fault_down_destroy() {
    tests::require("qemu-system-x86_64");
    tests::require("qemu-img");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cli-lab");
    let _down = LabDown(&dir);
    let name = format!("cli{}", std::process::id());
    let up = seed_lab(
        &[
            "up",
            "--detach",
            "--nodes",
            "2",
            "--name",
            &name,
            "--memory",
            "256",
            "--disks",
            "1",
            "--bmc-port",
            "0",
        ],
        &dir,
    );
    assert!(
        up.contains("node2") && up.contains("ipmitool -I lanplus"),
        "{up}"
    );
    let lab = qemu::spec::load(&dir).unwrap();
    assert_eq!(lab.nodes.len(), 2);
    assert!(dir.join("node1/disk0.qcow2").is_file());
    let port = lab.nodes[0].bmc.port;

    ok(port, &["power", "on"]);
    let status = seed_lab(&["status"], &dir);
    assert!(
        status.contains("on (pid") && status.contains("BMCs: serving"),
        "{status}"
    );
    let qemu_pid = qemu::lab::qemu_pid(&dir, "node1").expect("node1's QEMU");

    // A fault set from the command line reaches the running lab within its 1 s poll.
    seed_lab(&["fault", "node1", "--unresponsive"], &dir);
    let start = Instant::now();
    let mut refused = false;
    while start.elapsed() < Duration::from_secs(10) && !refused {
        refused = !ipmitool(
            port,
            "password",
            &["-R", "1", "-N", "1"],
            &["power", "status"],
        )
        .status
        .success();
    }
    assert!(
        refused,
        "the BMC kept answering with the unresponsive fault set"
    );
    seed_lab(&["fault", "node1", "--clear"], &dir);

    let server = qemu::lab::server_pid(&dir).expect("server running");
    assert!(seed_lab(&["down"], &dir).contains("is down"));
    assert!(
        !qemu::lab::pid_running(server),
        "lab server still running after down"
    );
    assert!(
        !qemu::lab::pid_running(qemu_pid),
        "QEMU still running after down"
    );
    assert!(dir.join("node1/disk0.qcow2").is_file(), "down keeps disks");
    assert!(seed_lab(&["status"], &dir).contains("not serving"));

    seed_lab(&["destroy"], &dir);
    assert!(!dir.exists());
}
