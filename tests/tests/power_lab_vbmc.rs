//! The seed's IPMI power driver against the lab's own virtual BMC: the two halves of this
//! project written separately, meeting on RMCP+ over 127.0.0.1. A QEMU node really starts and
//! stops; the boot device the driver sets is the one QEMU boots from.

use qemu::node::RunOptions;
use qemu::Lab;
use seed::power::{
    BootDevice, IpmiConfig, IpmiDriver, Password, PowerAction, PowerDriver, PowerError, PowerState,
};
use std::time::Duration;

fn driver(port: u16, password: &str) -> IpmiDriver {
    let mut cfg = IpmiConfig::new(
        "127.0.0.1",
        port,
        "admin",
        password.parse::<Password>().unwrap(),
    );
    cfg.timeout = Duration::from_secs(2);
    cfg.retries = 1;
    IpmiDriver::new(cfg)
}

#[test]
fn qemu_seed_driver_controls_a_lab_node_through_its_virtual_bmc() {
    tests::require("qemu-system-x86_64");
    let tmp = tempfile::tempdir().unwrap();
    let plan = tests::test_plan("pv", 1, 256, &[]);
    let lab = Lab::create(tmp.path(), &plan, RunOptions::default()).expect("lab");
    let port = lab.file().nodes[0].bmc.port;
    let node = lab.node("node1").unwrap().clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let d = driver(port, "password");
        assert_eq!(d.status().await.unwrap(), PowerState::Off);
        d.set_boot_device(BootDevice::Pxe, false).await.unwrap();
        d.power(PowerAction::On).await.unwrap();
        assert_eq!(d.status().await.unwrap(), PowerState::On);
        assert!(node.lock().unwrap().is_on(), "QEMU process runs");
        assert_eq!(
            node.lock().unwrap().booted_from(),
            Some(qemu::ipmi::BootDevice::Pxe)
        );
        d.set_boot_device(BootDevice::Disk, true).await.unwrap();
        d.power(PowerAction::Cycle).await.unwrap();
        assert_eq!(
            node.lock().unwrap().booted_from(),
            Some(qemu::ipmi::BootDevice::Disk)
        );
        d.power(PowerAction::Off).await.unwrap();
        assert_eq!(d.status().await.unwrap(), PowerState::Off);
        assert!(!node.lock().unwrap().is_on(), "QEMU process gone");
        d.close().await;

        let wrong = driver(port, "not-the-password");
        match wrong.status().await {
            Err(PowerError::Credentials { .. }) => {}
            other => panic!("wrong password: expected a credentials error, got {other:?}"),
        }
    });
}
