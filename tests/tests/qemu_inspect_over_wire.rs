//! Issue 4 end to end: the seed meets machines. `seed daemon` joins a QEMU lab's wire through
//! its own userspace IP stack (smoltcp; no root, bridge or TAP). Two enrolled nodes are
//! inspected: the daemon sets bootdev pxe and powers them on through their virtual BMCs (IPMI
//! RMCP+), their iPXE ROMs DHCP from the seed, fetch their per-node script and the real deploy
//! ramdisk (Debian kernel + our initramfs) over HTTP, the agent reports facts over the same
//! wire, the nodes become `available` with facts that match the VMs, and the agent powers them
//! off. node1 takes the TFTP chain (`boot_chain: tftp`): its iPXE ROM loads `undionly.kpxe` by
//! TFTP first, and that iPXE continues by HTTP. A third, unknown machine is enrolled
//! automatically by DHCP discovery.
//! Needs `cargo xtask ramdisk` and `cargo xtask fetch` (run by `cargo xtask test`).

use qemu::ipmi::BootDevice;
use qemu::node::RunOptions;
use qemu::Lab;
use std::time::{Duration, Instant};

const TOKEN: &str = "inspect-over-wire";

/// The operators' API with this test's token: (status, body).
fn api(port: u16, method: &str, path: &str) -> (u16, String) {
    tests::api_call(port, TOKEN, method, path, None)
}

#[test]
fn qemu_two_nodes_inspected_over_the_wire_and_a_third_discovered() {
    tests::require("qemu-system-x86_64");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let plan = tests::test_plan("iw", 3, 512, &[2]);
    let lab = Lab::create(&d.join("lab"), &plan, RunOptions::default()).expect("lab");
    let specs = lab.file().nodes.clone();

    // node1 and node2 are enrolled with their BMCs, node1 taking the TFTP chain; node3 is a
    // stranger.
    let ws = tests::wire_seed::config(d, lab.file(), specs[..2].to_vec(), TOKEN);
    tests::wire_seed::enroll(&ws, std::slice::from_ref(&specs[0].name));
    let api_port = ws.api_port;
    let mut seed = tests::wire_seed::start(&ws, "info,netboot=debug,smoltcp=info");

    let consoles = || {
        specs
            .iter()
            .map(|s| {
                let n = lab.node(&s.name).unwrap().lock().unwrap().console_path();
                format!(
                    "--- {} console:\n{}",
                    s.name,
                    std::fs::read_to_string(n).unwrap_or_default()
                )
            })
            .collect::<String>()
    };

    let t0 = Instant::now();
    for s in &specs[..2] {
        let (code, body) = api(api_port, "POST", &format!("/v1/nodes/{}/inspect", s.name));
        assert_eq!(code, 202, "inspect {}: {body}", s.name);
    }
    // The stranger is switched on by hand (no BMC enrolled): discovery must enroll it.
    let stranger = &specs[2];
    lab.node(&stranger.name)
        .unwrap()
        .lock()
        .unwrap()
        .power_on(BootDevice::Pxe)
        .unwrap();

    let mut done: Vec<(String, f64)> = Vec::new();
    let deadline = t0 + Duration::from_secs(300);
    while done.len() < 2 {
        if Instant::now() >= deadline {
            if let Some(keep) = std::env::var_os("WIRE_TEST_PCAP") {
                let _ = std::fs::copy(d.join("state/wire.pcap"), keep);
            }
        }
        assert!(
            Instant::now() < deadline,
            "inspection did not finish within 300 s; done: {done:?}\nseed:\n{}\n{}",
            seed.output(),
            consoles()
        );
        assert!(seed.is_running(), "the daemon died:\n{}", seed.output());
        for s in &specs[..2] {
            if done.iter().any(|(n, _)| n == &s.name) {
                continue;
            }
            let (code, body) = api(api_port, "GET", &format!("/v1/nodes/{}", s.name));
            assert_eq!(code, 200, "{body}");
            let node: serde_json::Value = serde_json::from_str(&body).unwrap();
            if node["state"] == "available" {
                done.push((s.name.clone(), t0.elapsed().as_secs_f64()));
                println!(
                    "{}: power-on → inspected {:.1} s",
                    s.name,
                    t0.elapsed().as_secs_f64()
                );
                assert!(!body.contains(&s.bmc.password), "password leaked: {body}");
                let facts = node.to_string();
                assert!(
                    facts.contains(&s.macs[0].to_lowercase()),
                    "MAC in facts: {facts}"
                );
                assert!(
                    facts.contains("\"memory_mib\":512"),
                    "RAM in facts: {facts}"
                );
                assert!(
                    facts.contains(&format!("{}", 2u64 << 30)),
                    "2 GiB disk in facts: {facts}"
                );
            } else {
                assert!(
                    !node["state"].as_str().unwrap_or("").contains("failed"),
                    "{} failed: {body}\nseed:\n{}\n{}",
                    s.name,
                    seed.output(),
                    consoles()
                );
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    // node1 went through the TFTP chain; node2 straight to its script.
    let log = seed.output();
    let mac1 = specs[0].macs[0].to_lowercase();
    let mac2 = specs[1].macs[0].to_lowercase();
    let acks = |mac: &str, note: &str| {
        log.lines()
            .filter(|l| l.contains(mac) && l.contains("ACK") && l.contains(note))
            .count()
    };
    assert!(
        acks(&mac1, "file=undionly.kpxe chain=tftp:first") > 0,
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("TFTP transfer complete") && l.contains("undionly.kpxe")),
        "{log}"
    );
    assert!(acks(&mac1, "chain=tftp:chained") > 0, "{log}");
    assert_eq!(acks(&mac2, "chain=tftp"), 0, "{log}");
    assert!(acks(&mac2, "/ipxe/") > 0, "{log}");

    // After inspection the agent obeys power_off: the VMs stop by themselves.
    let off_deadline = Instant::now() + Duration::from_secs(90);
    for s in &specs[..2] {
        let node = lab.node(&s.name).unwrap().clone();
        while node.lock().unwrap().is_on() {
            assert!(
                Instant::now() < off_deadline,
                "{} not powered off\n{}",
                s.name,
                consoles()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    // Discovery enrolled the stranger.
    let name = format!("node-{}", stranger.macs[0].to_lowercase().replace(':', "-"));
    let disc_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = api(api_port, "GET", "/v1/nodes");
        assert_eq!(code, 200, "{body}");
        if body.contains(&name) {
            break;
        }
        assert!(
            Instant::now() < disc_deadline,
            "{name} not enrolled: {body}\nseed:\n{}",
            seed.output()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(lab);
}
