//! Issue 18, hole 2: the IPMI driver refuses a BMC that offers only IPMI 1.5 (where the
//! password goes out in clear or as an MD5 hash, and nothing is encrypted) before sending it
//! any credential, unless the node's BMC entry allows it. Against the project's own virtual BMC
//! with its `ipmi15_only` fault; no QEMU (the node is never powered).

use qemu::ipmi::BmcConfig;
use qemu::node::{Node, RunOptions};
use qemu::spec::Plan;
use qemu::{Faults, VirtualBmc};
use seed::power::{IpmiConfig, IpmiDriver, Password, PowerDriver, PowerError, PowerState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn bmc(dir: &std::path::Path) -> VirtualBmc {
    let lab = Plan::new(&format!("i15-{}", std::process::id()), 1).lab_file();
    let node = Node::new(
        lab.nodes[0].clone(),
        dir.join("node1"),
        lab.wire,
        RunOptions::default(),
    );
    let config = BmcConfig {
        username: "admin".into(),
        password: "password".into(),
        guid: [0; 16],
    };
    VirtualBmc::start(
        "127.0.0.1:0".parse().unwrap(),
        config,
        Arc::new(Mutex::new(node)),
    )
    .expect("virtual BMC")
}

fn driver(port: u16, allow_ipmi15: bool) -> IpmiDriver {
    let mut cfg = IpmiConfig::new("127.0.0.1", port, "admin", Password::new("password"));
    cfg.timeout = Duration::from_millis(500);
    cfg.retries = 0;
    cfg.allow_ipmi15 = allow_ipmi15;
    IpmiDriver::new(cfg)
}

#[test]
fn power_ipmi15_only_bmc_is_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let bmc = bmc(tmp.path());
    let port = bmc.addr().port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // An honest IPMI 2.0 BMC: the check costs nothing.
        let d = driver(port, false);
        assert_eq!(d.status().await.unwrap(), PowerState::Off);
        d.close().await;

        // Downgraded to 1.5 only: refused, naming the way out, with no 1.5 session asked for
        // (the user name and password never left).
        bmc.set_fault(Faults {
            ipmi15_only: true,
            ..Faults::default()
        });
        let e = driver(port, false).status().await.unwrap_err();
        match &e {
            PowerError::Unsupported { what, .. } => {
                assert!(what.contains("IPMI 1.5"), "{e}");
                assert!(what.contains("allow_ipmi15"), "{e}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(
            bmc.ipmi15_session_requests(),
            0,
            "a 1.5 session was attempted"
        );

        // Allowed for this node: the driver goes on to a 1.5 session (which this BMC does not
        // implement, so it fails, but only after asking for it).
        let _ = driver(port, true).status().await;
        assert!(bmc.ipmi15_session_requests() > 0);
    });
}
