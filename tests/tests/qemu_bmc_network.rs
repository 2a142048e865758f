//! The lab's BMC network and its seed-machine slot, end to end.
//!
//! Every virtual BMC also answers IPMI at its own address on the BMC network (10.81.0.0/24, a
//! second QEMU multicast wire). Nothing on the test machine can reach 10.81.x through the
//! kernel, so the seed's IPMI driver talks through a relay that joins that wire with the
//! seed's userspace stack (`tests::bmc_relay`, as 10.81.0.1): the driver powers node1 on by PXE
//! and off again through node1's BMC at 10.81.0.11, and QEMU starts and stops.
//!
//! The seed machine (`qemu::appliance`) boots its medium — here the kernel + initrd form, with
//! an init that counts its NICs — prints on its own console, has exactly two NICs (provisioning
//! wire, BMC network: no user-mode NIC, no route out), and its own BMC at 10.81.0.10 powers it
//! off over the BMC network.

use qemu::appliance::{ApplianceSpec, Medium};
use qemu::ipmi::BootDevice as QemuBoot;
use qemu::node::RunOptions;
use qemu::Lab;
use seed::power::{BootDevice, IpmiConfig, IpmiDriver, PowerAction, PowerDriver, PowerState};
use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
n=0
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat $d/vendor)" = 0x1af4 ] && [ "$(cat $d/class)" = 0x020000 ]; then n=$((n+1)); fi
done
echo "seed-machine: up with $n NICs"
while true; do sleep 60; done
"#;

fn driver(via: SocketAddr) -> IpmiDriver {
    let mut cfg = IpmiConfig::new(
        via.ip().to_string(),
        via.port(),
        "admin",
        "password".parse().unwrap(),
    );
    cfg.timeout = Duration::from_secs(2);
    cfg.retries = 2;
    IpmiDriver::new(cfg)
}

/// The seed machine's initrd: static busybox and the init above.
fn initrd(dir: &Path) -> std::path::PathBuf {
    let busybox = tests::static_busybox(&dir.join("bb"));
    let mut a = ramdisk::initramfs::cpio::Archive::default();
    for d in ["proc", "sys", "dev", "bin"] {
        a.dir(d);
    }
    a.file("bin/busybox", 0o755, std::fs::read(busybox).unwrap());
    a.file("init", 0o755, INIT.as_bytes().to_vec());
    let out = dir.join("initrd.zst");
    ramdisk::initramfs::write_zstd(&a, &out).unwrap();
    out
}

#[test]
fn qemu_bmc_network_powers_a_node_and_the_seed_machine() {
    tests::require("qemu-system-x86_64");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let plan = tests::test_plan("bn", 1, 256, &[]);
    let mut file = plan.lab_file();
    let mut seed_machine = ApplianceSpec::new(
        &file,
        Medium::Kernel {
            kernel: tests::ramdisk_dir().join("vmlinuz"),
            initrd: initrd(d),
            append: "console=ttyS0 panic=-1".into(),
        },
    );
    seed_machine.memory_mib = 256;
    file.appliance = Some(seed_machine);
    let lab = Lab::start(&d.join("lab"), file, RunOptions::default()).expect("lab");
    let f = lab.file().clone();
    let net = f.bmc_network.clone().expect("a BMC network");
    let lan = |b: &qemu::spec::BmcSpec| {
        let l = b.lan.clone().expect("a BMC LAN port");
        SocketAddrV4::new(l.address, l.port)
    };
    let appliance = f.appliance.clone().unwrap();
    let (node_bmc, seed_bmc) = (lan(&f.nodes[0].bmc), lan(&appliance.bmc));
    assert_eq!(node_bmc.to_string(), "10.81.0.11:623");
    assert_eq!(seed_bmc.to_string(), "10.81.0.10:623");
    let relay = tests::bmc_relay::BmcRelay::start(&net, None, &[node_bmc, seed_bmc]);
    let node = lab.node("node1").unwrap().clone();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // node1, through its BMC on the BMC network.
    rt.block_on(async {
        let d = driver(relay.local[0]);
        assert_eq!(d.status().await.unwrap(), PowerState::Off);
        d.set_boot_device(BootDevice::Pxe, false).await.unwrap();
        d.power(PowerAction::On).await.unwrap();
        assert!(node.lock().unwrap().is_on(), "node1's QEMU runs");
        assert_eq!(node.lock().unwrap().booted_from(), Some(QemuBoot::Pxe));
        assert_eq!(d.status().await.unwrap(), PowerState::On);
        d.power(PowerAction::Off).await.unwrap();
        assert!(!node.lock().unwrap().is_on(), "node1's QEMU is gone");
        d.close().await;
    });
    let lan_packets = lab
        .bmc("node1")
        .unwrap()
        .stats()
        .received
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(lan_packets > 0);

    // The seed machine boots its medium, with its two NICs and nothing else.
    let t0 = Instant::now();
    lab.power_on_appliance().unwrap();
    let seed = lab.appliance().unwrap().clone();
    let console = seed.lock().unwrap().console_path();
    let text = loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if text.contains("seed-machine: up") {
            break text;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the seed machine did not come up:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    println!(
        "seed machine: power-on → init {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(text.contains("seed-machine: up with 2 NICs"), "{text}");

    // Its own BMC, at 10.81.0.10, powers it off.
    rt.block_on(async {
        let d = driver(relay.local[1]);
        assert_eq!(d.status().await.unwrap(), PowerState::On);
        d.power(PowerAction::Off).await.unwrap();
        assert_eq!(d.status().await.unwrap(), PowerState::Off);
        d.close().await;
    });
    assert!(
        !seed.lock().unwrap().is_on(),
        "the seed machine's QEMU is gone"
    );
    drop(relay);
    drop(lab);
}
