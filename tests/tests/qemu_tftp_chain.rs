//! Issue 4's TFTP chain, end to end: one node enrolled with `boot_chain: tftp` is inspected by
//! `seed daemon` on the lab's wire (smoltcp). Its iPXE ROM DHCPs and is handed `undionly.kpxe`
//! by TFTP (next-server = the seed) as a vendor PXE ROM would be; the chainloaded iPXE DHCPs
//! again, is recognised as chained and gets its per-node script URL, then loads the real
//! ramdisk over HTTP; the agent reports and the node becomes `available`. Asserted in order on
//! the daemon's log: the first-stage ACK, the completed TFTP transfer of `undionly.kpxe`, the
//! chained ACK, the script fetched by HTTP; then the node's state over the API.
//! Needs `cargo xtask ramdisk` and `cargo xtask fetch` (the ipxe package), as `cargo xtask
//! test` runs them.

use qemu::node::RunOptions;
use qemu::Lab;
use std::process::Command;
use std::time::{Duration, Instant};
use tests::proc::Child;

const TOKEN: &str = "tftp-chain-token";

/// The operators' API with this test's token: (status, body).
fn api(port: u16, method: &str, path: &str) -> (u16, String) {
    tests::api_call(port, TOKEN, method, path, None)
}

/// The index of the first log line at or after `from` containing every needle.
fn find_line(log: &[&str], from: usize, needles: &[&str]) -> Option<usize> {
    (from..log.len()).find(|&i| needles.iter().all(|n| log[i].contains(n)))
}

/// Advance `seen` (seconds since `t0` each milestone was first seen) over `log`, each milestone
/// only after the previous one's line; `at_line` is where the next search starts.
fn track(
    log: &str,
    milestones: &[(&str, Vec<&str>)],
    seen: &mut Vec<f64>,
    at_line: &mut usize,
    t0: Instant,
) {
    let log: Vec<&str> = log.lines().collect();
    while let Some((_, needles)) = milestones.get(seen.len()) {
        match find_line(&log, *at_line, needles) {
            Some(i) => {
                *at_line = i + 1;
                seen.push(t0.elapsed().as_secs_f64());
            }
            None => break,
        }
    }
}

#[test]
fn qemu_node_takes_the_tftp_chain_then_http_to_inspection() {
    tests::require("qemu-system-x86_64");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let plan = tests::test_plan("tc", 1, 512, &[2]);
    let lab = Lab::create(&d.join("lab"), &plan, RunOptions::default()).expect("lab");
    let spec = lab.file().nodes[0].clone();
    let mac = spec.macs[0].to_lowercase();
    let script_path = format!("path=/ipxe/{}", mac.replace(':', "-"));

    let ws = tests::wire_seed::config(d, lab.file(), vec![spec.clone()], TOKEN);
    tests::wire_seed::enroll(&ws, std::slice::from_ref(&spec.name));
    let api_port = ws.api_port;
    let mut seed = tests::wire_seed::start(&ws, "info,netboot=debug,smoltcp=info");

    let console = || {
        let p = lab.node(&spec.name).unwrap().lock().unwrap().console_path();
        std::fs::read_to_string(p).unwrap_or_default()
    };

    // The daemon powers the node on through its vBMC with bootdev pxe.
    let t0 = Instant::now();
    let (code, body) = api(
        api_port,
        "POST",
        &format!("/v1/nodes/{}/inspect", spec.name),
    );
    assert_eq!(code, 202, "inspect: {body}");

    // Milestones, in order, each first seen at some time after power-on.
    let milestones: [(&str, Vec<&str>); 4] = [
        (
            "ACK undionly.kpxe",
            vec![&mac, "ACK", "file=undionly.kpxe", "chain=tftp:first"],
        ),
        (
            "TFTP undionly.kpxe",
            vec!["TFTP transfer complete", "undionly.kpxe"],
        ),
        (
            "chained ACK",
            vec![&mac, "ACK", "/ipxe/", "chain=tftp:chained"],
        ),
        (
            "script by HTTP",
            vec!["HTTP request", &script_path, "status=200"],
        ),
    ];
    let mut seen: Vec<f64> = Vec::new();
    let mut at_line = 0;
    let mut inspected = None;
    let deadline = t0 + Duration::from_secs(300);
    while inspected.is_none() {
        assert!(
            Instant::now() < deadline,
            "not inspected within 300 s; milestones seen: {seen:?} of {:?}\nseed:\n{}\nconsole:\n{}",
            milestones.iter().map(|m| m.0).collect::<Vec<_>>(),
            seed.output(),
            console()
        );
        assert!(seed.is_running(), "the daemon died:\n{}", seed.output());
        track(&seed.output(), &milestones, &mut seen, &mut at_line, t0);
        let (code, body) = api(api_port, "GET", &format!("/v1/nodes/{}", spec.name));
        assert_eq!(code, 200, "{body}");
        let node: serde_json::Value = serde_json::from_str(&body).unwrap();
        let state = node["state"].as_str().unwrap_or("").to_string();
        assert!(
            !state.contains("failed"),
            "{body}\nseed:\n{}\nconsole:\n{}",
            seed.output(),
            console()
        );
        if state == "available" {
            inspected = Some(t0.elapsed().as_secs_f64());
            let facts = node.to_string();
            assert!(facts.contains(&mac), "MAC in facts: {facts}");
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    assert_eq!(
        seen.len(),
        milestones.len(),
        "inspected, but not through the chain in order: saw {seen:?}\nseed:\n{}",
        seed.output()
    );
    // The ROM's iPXE never got the script directly: every script URL went out chained.
    let out = seed.output();
    assert!(
        !out.lines().any(|l| l.contains("ACK")
            && l.contains("/ipxe/")
            && !l.contains("chain=tftp:chained")),
        "a script URL was handed out without the chain:\n{out}"
    );
    let t = |i: usize| seen[i];
    println!(
        "{}: power-on → ACK undionly.kpxe {:.1} s → TFTP done {:.1} s → chained ACK {:.1} s → \
         script fetched {:.1} s → inspected {:.1} s",
        spec.name,
        t(0),
        t(1),
        t(2),
        t(3),
        inspected.unwrap()
    );
    if let Some(keep) = std::env::var_os("WIRE_TEST_PCAP") {
        let _ = std::fs::copy(d.join("state/wire.pcap"), keep);
    }
    drop(lab);
}

/// UEFI, with the standalone `seed netboot` and its static `[[nodes]] chain = "tftp"`: OVMF's
/// iPXE ROM gets `snponly.efi` by TFTP, and the iPXE it loads fetches its script by HTTP.
#[test]
fn qemu_uefi_node_takes_the_tftp_chain_with_seed_netboot() {
    tests::require("qemu-system-x86_64");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let root = d.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(
        tests::ipxe_file("snponly.efi", &d.join("ipxe")),
        root.join("snponly.efi"),
    )
    .unwrap();
    let mut plan = tests::test_plan("tu", 1, 512, &[]);
    plan.firmware = qemu::spec::Firmware::Uefi;
    let lab = Lab::create(&d.join("lab"), &plan, RunOptions::default()).expect("lab");
    let spec = lab.file().nodes[0].clone();
    let wire = lab.file().wire;
    let mac = spec.macs[0].to_lowercase();
    let script_path = format!("path=/ipxe/{}", mac.replace(':', "-"));
    let config = d.join("netboot.toml");
    std::fs::write(
        &config,
        tests::wire_config_head("10.82.0.1", &d.join("state"), &wire, true)
            + &format!(
                r#"
[dhcp]
subnet = "10.82.0.0/24"
router = "10.82.0.1"
lease_time = 600

[tftp]
root = {root:?}

[http]
root = {root:?}
port = 8080

[[nodes]]
mac = "{mac}"
ip = "10.82.0.10"
hostname = "node1"
chain = "tftp"
"#,
            ),
    )
    .unwrap();
    let mut cmd = Command::new(tests::seed_bin());
    cmd.args(["netboot", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,netboot=debug,smoltcp=info");
    let mut seed = Child::spawn("seed-netboot", cmd);
    seed.wait_for_log("HTTP listening on the wire", Duration::from_secs(60));

    let node = lab.node(&spec.name).unwrap().clone();
    let t0 = Instant::now();
    node.lock()
        .unwrap()
        .power_on(qemu::ipmi::BootDevice::Pxe)
        .unwrap();
    let milestones: [(&str, Vec<&str>); 4] = [
        (
            "ACK snponly.efi",
            vec![
                &mac,
                "ACK",
                "arch=UEFI-x64",
                "file=snponly.efi",
                "chain=tftp:first",
            ],
        ),
        (
            "TFTP snponly.efi",
            vec!["TFTP transfer complete", "snponly.efi"],
        ),
        (
            "chained ACK",
            vec![&mac, "ACK", "/ipxe/", "chain=tftp:chained"],
        ),
        (
            "script by HTTP",
            vec!["HTTP request", &script_path, "status=200"],
        ),
    ];
    let (mut seen, mut at_line) = (Vec::new(), 0);
    let deadline = t0 + Duration::from_secs(240);
    while seen.len() < milestones.len() {
        assert!(
            Instant::now() < deadline,
            "no chain within 240 s; milestones seen: {seen:?} of {:?}\nseed:\n{}\nconsole:\n{}",
            milestones.iter().map(|m| m.0).collect::<Vec<_>>(),
            seed.output(),
            std::fs::read_to_string(node.lock().unwrap().console_path()).unwrap_or_default()
        );
        assert!(seed.is_running(), "seed netboot died:\n{}", seed.output());
        track(&seed.output(), &milestones, &mut seen, &mut at_line, t0);
        std::thread::sleep(Duration::from_millis(300));
    }
    println!(
        "{} (UEFI): power-on → ACK snponly.efi {:.1} s → TFTP done {:.1} s → chained ACK {:.1} s \
         → script fetched {:.1} s",
        spec.name, seen[0], seen[1], seen[2], seen[3]
    );
    drop(lab);
}
