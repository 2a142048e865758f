//! The laptop NIC end to end: `seed daemon` with `[netboot.wire] kind = "af-packet"` on one
//! end of a veth pair that has no address at all (the seed owns 10.80.0.1 on its own stack);
//! the other end is in a bridge with a TAP, and a QEMU node's NIC is that TAP (QEMU's default
//! `vnet_hdr`: the guest's checksum offloads reach the kernel, as a laptop's own VMs do).
//! Everything lives in one network namespace the test created; the node's virtual BMC and the
//! daemon's API are on that namespace's loopback.
//!
//! The node PXE-boots through the bridge, is inspected by the real ramdisk and deployed with the
//! tiny image; then `ip addr` on the seed's veth still shows no IPv4 address, and the daemon's
//! counters show the frames whose checksum the kernel had left to compute.
//! Needs `cargo xtask ramdisk` and `cargo xtask image build tiny`.

use qemu::node::RunOptions;
use qemu::Lab;
use std::time::{Duration, Instant};
use tests::netns::Netns;

const TOKEN: &str = "laptop-lab-token";
const SEED_IF: &str = "veth-seed";

fn api(ns: &Netns, port: u16, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    tests::curl(
        ns.cmd(tests::require("curl")),
        method,
        &format!("http://127.0.0.1:{port}{path}"),
        Some(TOKEN),
        body,
        20,
    )
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn laptop_qemu_node_inspected_and_deployed_through_af_packet() {
    tests::require("qemu-system-x86_64");
    let tiny = tests::tiny_manifest();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    // The namespace: br0 joins tap0 (the node) and veth-br; veth-seed (the seed) has no address.
    let ns = Netns::new("lap");
    ns.ip(&["link", "add", "br0", "type", "bridge"]);
    ns.ip(&[
        "link", "add", "veth-br", "type", "veth", "peer", "name", SEED_IF,
    ]);
    ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    for (l, up) in [("veth-br", "br0"), ("tap0", "br0")] {
        ns.ip(&["link", "set", l, "master", up]);
    }
    for l in ["br0", "veth-br", "tap0", SEED_IF] {
        ns.ip(&["link", "set", l, "up"]);
    }

    // The lab, made from a thread inside the namespace: the BMC's socket is on the
    // namespace's loopback, and QEMU, started by the BMC's thread, opens tap0 there.
    let mut plan = tests::test_plan("lap", 1, 512, &[2]);
    plan.bmc_network = false;
    let lab_dir = d.join("lab");
    let lab = std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter();
            Lab::create(&lab_dir, &plan, RunOptions::default()).expect("lab")
        })
        .join()
        .unwrap()
    });
    let spec = lab.file().nodes[0].clone();
    let node = lab.node("node1").unwrap().clone();
    node.lock().unwrap().set_taps(vec!["tap0".into()]);

    // The seed: the lab's configuration, on AF_PACKET instead of the QEMU wire.
    let ws = tests::wire_seed::config(d, lab.file(), vec![spec.clone()], TOKEN);
    images::ImageStore::open(ws.images())
        .unwrap()
        .import(&tiny)
        .expect("importing tiny");
    tests::wire_seed::enroll(&ws, &[]);
    let wire = format!(
        "kind = \"qemu-mcast\"\ngroup = \"{}\"\nport = {}\n",
        ws.wire.group, ws.wire.port
    );
    let config = ws.config().unwrap();
    assert!(config.contains(&wire), "{config}");
    let config = config.replace(
        &wire,
        &format!("kind = \"af-packet\"\nifname = \"{SEED_IF}\"\n"),
    );
    std::fs::create_dir_all(ws.dir.join("http")).unwrap();
    let cfg = ws.dir.join("seed.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut cmd = ns.cmd(tests::seed_bin());
    cmd.args(["daemon", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info,seed::daemon=debug");
    let mut seed = tests::proc::Child::spawn("seed-daemon", cmd);
    seed.wait_for_log("HTTP listening on the wire", Duration::from_secs(120));
    let port = ws.api_port;
    let console =
        || std::fs::read_to_string(node.lock().unwrap().console_path()).unwrap_or_default();
    let wait_for = |want: &str, secs: u64, t0: Instant| -> f64 {
        loop {
            let (code, body) = api(&ns, port, "GET", "/v1/nodes/node1", None);
            assert_eq!(code, 200, "{body}");
            let n: serde_json::Value = serde_json::from_str(&body).unwrap();
            if n["state"] == want {
                return t0.elapsed().as_secs_f64();
            }
            assert!(
                !n["state"].as_str().unwrap_or("").contains("failed")
                    && t0.elapsed() < Duration::from_secs(secs),
                "node1 not {want}: {n}\nseed:\n{}\nconsole:\n{}",
                seed.output(),
                console()
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    };

    let t0 = Instant::now();
    let (code, body) = api(&ns, port, "POST", "/v1/nodes/node1/inspect", None);
    assert_eq!(code, 202, "{body}");
    let inspected = wait_for("available", 300, t0);
    println!("laptop: power-on → inspected {inspected:.1} s");
    let t1 = Instant::now();
    let (code, body) = api(
        &ns,
        port,
        "POST",
        "/v1/nodes/node1/deploy",
        Some(r#"{"image": "tiny", "root_hint": "size>=1"}"#),
    );
    assert_eq!(code, 202, "{body}");
    let deployed = wait_for("active", 400, t1);
    println!("laptop: deploy → active {deployed:.1} s");
    assert!(console().contains("seed-image: tiny"), "{}", console());

    // The seed's NIC: still no IPv4 address; the offloaded frames were completed.
    let out = ns
        .cmd("ip")
        .args(["-4", "addr", "show", "dev", SEED_IF])
        .output()
        .unwrap();
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !addrs.contains("inet "), "{addrs}");
    let (_, metrics) = api(&ns, port, "GET", "/metrics", None);
    let completed = metric(&metrics, "wire_rx_csum_completed_total");
    println!("laptop: {completed} frames with offloaded checksums completed");
    assert!(completed > 0, "{metrics}");
    drop(seed);
    drop(lab);
}
